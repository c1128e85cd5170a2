package resource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/builder"
	"github.com/capstanhq/capstan/pkg/controller/controllerutil"
	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
	"github.com/capstanhq/capstan/pkg/loadtest/gun"
	"github.com/capstanhq/capstan/pkg/loadtest/schedule"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// Finalizer is put on a LoadTest when its run is planned, so that a
// deleted LoadTest's parts are stopped before it disappears. It is
// removed once every part has ended.
const Finalizer = "capstan.dev/loadtest-run"

// LabelLoadTest is set on every LoadTestPart to its LoadTest's name, for
// selecting them (capstan get loadtestparts -l capstan.dev/loadtest=NAME).
const LabelLoadTest = "capstan.dev/loadtest"

// partOwnerIndex indexes cached LoadTestParts by their LoadTest's uid.
const partOwnerIndex = "capstan.dev/loadtest-uid"

// Defaults of Options.
const (
	// DefaultMembershipNamespace holds the runners' Members.
	DefaultMembershipNamespace = "default"
	// DefaultMembershipGroup is the runners' Member group.
	DefaultMembershipGroup = "loadtest"
	// DefaultStartDelay is how far ahead a parallel run's start is set.
	DefaultStartDelay = 3 * time.Second
	// DefaultProgressInterval is how often a runner writes progress.
	DefaultProgressInterval = time.Second
)

// Options configure the LoadTest controllers.
type Options struct {
	// Membership lists the processes that run parts: every process that
	// calls SetupWithManager with the same store, namespace and group
	// runs the parts assigned to its Member. Nil makes one in
	// MembershipNamespace with group MembershipGroup and adds it to the
	// manager; a Membership passed in must be added by the caller.
	Membership *coordination.Membership
	// MembershipNamespace is where the made Membership registers;
	// default DefaultMembershipNamespace.
	MembershipNamespace string
	// MembershipGroup is the made Membership's group; default
	// DefaultMembershipGroup.
	MembershipGroup string
	// Guns resolves gun types; default gun.NewRegistry().
	Guns *gun.Registry
	// Dir is the directory files named in specs (ammo files, descriptor
	// sets, TLS files) are read from: their paths must be relative and
	// stay inside it, symbolic links included (the runners open them
	// through an os.Root). Empty (the default) reads no files: specs that
	// name one fail validation. `capstan run --loadtest-dir` sets it.
	Dir string
	// StartDelay is how far ahead of planning a run of several parts
	// starts, so that every member sees its part in time; default
	// DefaultStartDelay. A run of one part starts at once.
	StartDelay time.Duration
	// ProgressInterval is how often runners write progress; default
	// DefaultProgressInterval.
	ProgressInterval time.Duration
	// Controller configures the LoadTest controller (leader-elected by
	// default). The part runner runs on every replica.
	Controller controller.Options
	// Logger is the runner's logger; default the manager's.
	Logger logr.Logger
}

// SetupWithManager adds to mgr the LoadTest controller ("loadtest"),
// which plans runs, assigns parts to members and merges their results,
// and the part runner ("loadtestpart-runner", on every replica), which
// runs the parts assigned to this process's Member. The store's scheme
// must hold the LoadTest kinds (AddToScheme) and, unless opts.Membership
// is given, the coordination kinds.
func SetupWithManager(mgr *manager.Manager, opts Options) error {
	scheme := mgr.Store().Scheme()
	for _, k := range []string{KindLoadTest, KindLoadTestPart} {
		if _, err := scheme.Kind(k); err != nil {
			return errs.Wrap(errs.FailedPrecondition, err, "the store's scheme lacks the LoadTest kinds (resource.AddToScheme)")
		}
	}
	if opts.StartDelay < 0 {
		return errs.Invalid("startDelay", "must not be negative")
	}
	if opts.ProgressInterval < 0 {
		return errs.Invalid("progressInterval", "must not be negative")
	}
	if opts.StartDelay == 0 {
		opts.StartDelay = DefaultStartDelay
	}
	if opts.ProgressInterval == 0 {
		opts.ProgressInterval = DefaultProgressInterval
	}
	if opts.Guns == nil {
		opts.Guns = gun.NewRegistry()
	}
	if opts.Dir != "" {
		dir, err := filepath.Abs(opts.Dir)
		if err == nil {
			var root *files.Root
			if root, err = files.OpenRoot(dir); err == nil {
				root.Close()
			}
		}
		if err != nil {
			return errs.Invalid("dir", "the files directory: %v", err)
		}
		opts.Dir = dir
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = mgr.Logger().WithName("loadtestpart-runner")
	}
	if opts.Membership == nil {
		ns, group := opts.MembershipNamespace, opts.MembershipGroup
		if ns == "" {
			ns = DefaultMembershipNamespace
		}
		if group == "" {
			group = DefaultMembershipGroup
		}
		m, err := coordination.NewMembership(coordination.MembershipConfig{
			Store: mgr.Store(), Namespace: ns, Group: group, Logger: mgr.Logger().WithName("loadtest-members"),
		})
		if err != nil {
			return err
		}
		if err := mgr.Add(m); err != nil {
			return err
		}
		opts.Membership = m
	}
	cache := mgr.Cache()
	err := cache.IndexField(KindLoadTestPart, partOwnerIndex, func(obj meta.Object) []string {
		if ref := obj.GetObjectMeta().ControllerRef(); ref != nil && ref.Kind == KindLoadTest {
			return []string{ref.UID}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c := &coordinator{st: mgr.Store(), cache: cache, members: opts.Membership,
		guns: opts.Guns, dir: opts.Dir, startDelay: opts.StartDelay, every: opts.ProgressInterval,
		now: meta.Now, mirrored: map[string]time.Time{}}
	err = builder.ControllerManagedBy(mgr).
		Named("loadtest").
		For(&LoadTest{}).
		Owns(&LoadTestPart{}).
		WatchesRawSource(memberChanges{members: opts.Membership, cache: cache}).
		WithOptions(opts.Controller).
		Complete(c)
	if err != nil {
		return err
	}
	r := newRunner(mgr.Store(), cache, opts)
	if err := mgr.Add(r); err != nil {
		return err
	}
	everyReplica := false
	return builder.ControllerManagedBy(mgr).
		Named("loadtestpart-runner").
		For(&LoadTestPart{}).
		WithOptions(controller.Options{NeedLeaderElection: &everyReplica, MaxConcurrentReconciles: 2}).
		Complete(r)
}

// memberChanges enqueues every LoadTest that is not finished (or is being
// deleted) when a member joins or leaves: pending tests may start, and
// parts of a member that left are interrupted.
type memberChanges struct {
	members *coordination.Membership
	cache   *source.Cache
}

// Start implements source.Source.
func (s memberChanges) Start(ctx context.Context, q source.Queue) error {
	inf, err := s.cache.Informer(KindLoadTest)
	if err != nil {
		return err
	}
	ch := s.members.Changes()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				for _, o := range inf.List("", nil) {
					lt := o.(*LoadTest)
					if !lt.Status.Phase.Final() || lt.IsBeingDeleted() {
						q.Add(meta.KeyOf(lt))
					}
				}
			}
		}
	}()
	return nil
}

// coordinator reconciles LoadTests: it validates, plans the run, creates
// the parts, interrupts the parts of members that are gone, forwards
// cancels, mirrors progress and merges results.
type coordinator struct {
	st         store.Store
	cache      *source.Cache
	members    *coordination.Membership
	guns       *gun.Registry
	dir        string
	startDelay time.Duration
	every      time.Duration
	now        func() time.Time

	mu       sync.Mutex
	mirrored map[string]time.Time // by LoadTest uid: when progress was last mirrored
}

// progressWait returns how long to wait before mirroring status when
// only its progress changed: progress of many parts is written at most
// once per interval, not once per part.
func (c *coordinator) progressWait(lt *LoadTest, status *LoadTestStatus, now time.Time) time.Duration {
	only := *status
	only.Progress = lt.Status.Progress
	if reflect.DeepEqual(status, &lt.Status) || !reflect.DeepEqual(&only, &lt.Status) {
		return 0 // nothing to write, or more than progress changed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if wait := c.mirrored[lt.UID].Add(c.every).Sub(now); wait > 0 {
		return wait
	}
	c.mirrored[lt.UID] = now
	return 0
}

// progressDone forgets a test whose progress is no longer mirrored.
func (c *coordinator) progressDone(lt *LoadTest) {
	c.mu.Lock()
	delete(c.mirrored, lt.UID)
	c.mu.Unlock()
}

// membersReady reports whether the membership has registered and listed
// the members: before that, every member would look gone.
func (c *coordinator) membersReady() bool {
	select {
	case <-c.members.Ready():
		return true
	default:
		return false
	}
}

// Reconcile implements controller.Reconciler.
func (c *coordinator) Reconcile(ctx context.Context, req controller.Request) (controller.Result, error) {
	lt := &LoadTest{}
	if err := c.cache.Get(ctx, req, lt); err != nil {
		if errs.IsNotFound(err) {
			return controller.Result{}, nil
		}
		return controller.Result{}, err
	}
	status := meta.DeepCopyValue(lt.Status)
	status.ObservedGeneration = lt.Generation
	// Planning and judging liveness need the member list: until the
	// membership has listed the members, every member would look gone.
	needMembers := status.Phase == PhaseRunning || (!lt.IsBeingDeleted() && !status.Phase.Final())
	if needMembers && !c.membersReady() {
		return controller.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	switch {
	case status.Phase == PhaseRunning:
		return c.running(ctx, lt, &status)
	case lt.IsBeingDeleted():
		// Nothing runs: let it go.
		return c.release(ctx, lt)
	case status.Phase.Final():
		if status.Phase == PhaseFailed && status.Reason == ReasonInvalidSpec && status.RunGeneration == 0 &&
			lt.Generation != lt.Status.ObservedGeneration {
			// Rejected before it ran, and the spec changed: try again.
			return c.plan(ctx, lt, &LoadTestStatus{ObservedGeneration: lt.Generation})
		}
		if err := c.writeStatus(ctx, lt, &status); err != nil {
			return retryLater(err)
		}
		return c.release(ctx, lt)
	default:
		return c.plan(ctx, lt, &status)
	}
}

// plan validates a test that has not started and, when enough members
// are live, stores the plan (the parts, their members and the start) in
// its status, marking it Running, and then creates the parts from it.
func (c *coordinator) plan(ctx context.Context, lt *LoadTest, status *LoadTestStatus) (controller.Result, error) {
	now := c.now()
	err := lt.Spec.Validate()
	if err == nil {
		err = checkRunnable(&lt.Spec.Spec, c.guns.Types(), c.dir)
	}
	if err != nil {
		msg := err.Error()
		status.Phase, status.Reason, status.Message = PhaseFailed, ReasonInvalidSpec, msg
		status.EndTime = now
		setConditions(status, lt.Generation, meta.ConditionFalse, ReasonInvalidSpec, msg, meta.ConditionTrue, ReasonInvalidSpec, msg)
		if werr := c.writeStatus(ctx, lt, status); werr != nil {
			return retryLater(werr)
		}
		// Nothing helps until the spec changes, which enqueues it again.
		return controller.Result{}, controller.TerminalError(err)
	}
	if lt.Spec.Cancel {
		msg := "cancelled before it started"
		status.Phase, status.Reason, status.Message = PhaseCancelled, ReasonCancelled, msg
		status.EndTime = now
		setConditions(status, lt.Generation, meta.ConditionFalse, ReasonCancelled, msg, meta.ConditionTrue, ReasonCancelled, msg)
		return retryLater(c.writeStatus(ctx, lt, status))
	}
	n := lt.Spec.Parts()
	live := c.members.Live()
	if len(live) < n {
		msg := fmt.Sprintf("needs %d live members to run %d parts, sees %d", n, n, len(live))
		status.Phase, status.Reason, status.Message = PhasePending, ReasonWaitingForMembers, msg
		setConditions(status, lt.Generation, meta.ConditionFalse, ReasonWaitingForMembers, msg, meta.ConditionFalse, ReasonWaitingForMembers, msg)
		// Membership changes enqueue it again.
		return retryLater(c.writeStatus(ctx, lt, status))
	}
	if controllerutil.AddFinalizer(lt, Finalizer) {
		if err := c.st.Update(ctx, lt); err != nil {
			return retryLater(err)
		}
	}
	start := now
	if n > 1 {
		start = now.Add(c.startDelay)
	}
	status.Phase, status.Reason, status.Message = PhaseRunning, ReasonAssigned, ""
	status.RunGeneration = lt.Generation
	status.StartTime, status.EndTime = start, time.Time{}
	status.Progress, status.Results, status.Verdict = nil, nil, nil
	status.Parts = nil
	for i, m := range pick(live, n, lt.UID) {
		status.Parts = append(status.Parts, PartRef{Index: int64(i), Name: partName(lt.Name, i), Member: m})
	}
	msg := fmt.Sprintf("%d part(s) assigned, starting at %s", n, start.Format(time.RFC3339Nano))
	setConditions(status, lt.Generation, meta.ConditionTrue, ReasonAssigned, msg, meta.ConditionFalse, ReasonRunning, "the test runs")
	if err := c.writeStatus(ctx, lt, status); err != nil {
		return retryLater(err)
	}
	// The plan is stored (lt has it): create the parts now rather than
	// after the write comes back through the cache.
	running := meta.DeepCopyValue(lt.Status)
	return c.running(ctx, lt, &running)
}

// pick chooses n of the live members, starting at a place that depends on
// the test's uid so that tests spread over the members.
func pick(live []string, n int, uid string) []string {
	sorted := append([]string(nil), live...)
	sort.Strings(sorted)
	h := fnv.New32a()
	h.Write([]byte(uid))
	off := int(h.Sum32() % uint32(len(sorted)))
	out := make([]string, n)
	for i := range out {
		out[i] = sorted[(off+i)%len(sorted)]
	}
	return out
}

// partName is the name of part i of the LoadTest name: "name-i", with the
// name shortened (and made unique by a hash) when that would be too long.
func partName(name string, i int) string {
	suffix := "-" + strconv.Itoa(i)
	if len(name)+len(suffix) <= 253 {
		return name + suffix
	}
	sum := sha256.Sum256([]byte(name))
	short := strings.TrimRight(name[:253-len(suffix)-9], "-.")
	return short + "-" + hex.EncodeToString(sum[:4]) + suffix
}

// partView is one planned part as the coordinator sees it.
type partView struct {
	ref  *PartRef
	part *LoadTestPart // nil if missing
	// lost is set when the part is missing for good.
	lost string
}

func (v *partView) phase() Phase {
	switch {
	case v.lost != "":
		return PhaseFailed
	case v.part == nil:
		return ""
	case v.part.Status.Phase == "":
		return PhasePending
	}
	return v.part.Status.Phase
}

// running drives a test whose parts are assigned: it creates missing
// parts, interrupts parts of members that are gone, forwards stops to the
// parts, mirrors progress, and once every part ended merges the results.
func (c *coordinator) running(ctx context.Context, lt *LoadTest, status *LoadTestStatus) (controller.Result, error) {
	log := controller.LoggerFrom(ctx)
	now := c.now()
	objs, err := c.cache.ListByIndex(ctx, KindLoadTestPart, partOwnerIndex, lt.UID)
	if err != nil {
		return controller.Result{}, err
	}
	byName := map[string]*LoadTestPart{}
	for _, o := range objs {
		p := o.(*LoadTestPart)
		byName[p.Name] = p
	}
	// A part of a parallel run that was not created by the start time
	// plus StartDelay is lost: the run fails rather than merge shares that
	// did not run together.
	n := len(status.Parts)
	views := make([]*partView, n)
	for i := range status.Parts {
		ref := &status.Parts[i]
		v := &partView{ref: ref, part: byName[ref.Name]}
		views[i] = v
		if v.part != nil || lt.IsBeingDeleted() {
			continue
		}
		// The cache may lag behind a part just created: ask the store.
		p := &LoadTestPart{}
		err := c.st.Get(ctx, meta.Key{Namespace: lt.Namespace, Name: ref.Name}, p)
		if err != nil && !errs.IsNotFound(err) {
			return controller.Result{}, err
		}
		if err == nil {
			if cr := p.ControllerRef(); cr != nil && cr.UID == lt.UID {
				v.part = p
				continue
			}
		}
		switch {
		case ref.Phase != "":
			v.lost = fmt.Sprintf("part %s disappeared while it ran", ref.Name)
		case n > 1 && now.After(status.StartTime.Add(c.startDelay)):
			v.lost = fmt.Sprintf("part %s was not created before the start time", ref.Name)
		default:
			p, err := c.createPart(ctx, lt, status, ref)
			if err != nil {
				return retryLater(err)
			}
			v.part = p
		}
	}

	live := map[string]bool{}
	for _, m := range c.members.Live() {
		live[m] = true
	}
	// Parts whose member is gone will never be ended by their runner.
	for _, v := range views {
		p := v.part
		if p == nil || p.Status.Phase.Final() || live[p.Spec.Member] {
			continue
		}
		// Another replica may have planned on a member this one has not
		// seen yet: only the store says it is gone.
		alive, err := c.members.Alive(ctx, p.Spec.Member, "")
		if err != nil {
			return controller.Result{}, err
		}
		if alive {
			continue
		}
		fresh, err := updatePartObject(ctx, c.st, meta.KeyOf(p), p.UID, true, func(p *LoadTestPart) bool {
			if p.Status.Phase.Final() {
				return false // its runner ended it after all
			}
			p.Status.Phase, p.Status.Reason = PhaseFailed, ReasonInterrupted
			p.Status.Message = fmt.Sprintf("member %s is gone", p.Spec.Member)
			p.Status.EndTime = now
			return true
		})
		if err != nil {
			return retryLater(err)
		}
		v.part = fresh
		log.Info("part interrupted: its member is gone", "part", p.Name, "member", p.Spec.Member)
	}

	// Stop the parts when asked to, or when one part ended the run for
	// all: it failed, was lost, or an autostop rule fired.
	stop := lt.Spec.Cancel || lt.IsBeingDeleted()
	for _, v := range views {
		ph := v.phase()
		stop = stop || ph == PhaseFailed || (v.part != nil && v.part.Status.Stop == engine.StopAutostop)
	}
	allFinal := true
	for _, v := range views {
		ph := v.phase()
		if ph != "" {
			v.ref.Phase = ph
		}
		if ph.Final() || (v.part == nil && lt.IsBeingDeleted()) {
			continue
		}
		allFinal = false
		if stop && v.part != nil && !v.part.Spec.Cancel {
			fresh, err := updatePartObject(ctx, c.st, meta.KeyOf(v.part), v.part.UID, false, func(p *LoadTestPart) bool {
				if p.Spec.Cancel || p.Status.Phase.Final() {
					return false
				}
				p.Spec.Cancel = true
				return true
			})
			if err != nil {
				return retryLater(err)
			}
			v.part = fresh
		}
	}

	var progress []*Progress
	var first time.Time
	for _, v := range views {
		if v.part == nil {
			continue
		}
		progress = append(progress, v.part.Status.Progress)
		if st := v.part.Status.StartTime; !st.IsZero() && (first.IsZero() || st.Before(first)) {
			first = st
		}
	}
	if p := sumProgress(progress); p != nil {
		status.Progress = p
	}
	if !first.IsZero() && n == 1 {
		// A single part starts when its runner gets it; parallel parts
		// start at the planned common start, which status keeps.
		status.StartTime = first
	}
	if !allFinal {
		status.Reason = ReasonRunning
		if wait := c.progressWait(lt, status, now); wait > 0 {
			return controller.Result{RequeueAfter: wait}, nil
		}
		return retryLater(c.writeStatus(ctx, lt, status))
	}
	c.progressDone(lt)
	if err := c.finish(lt, status, views, now); err != nil {
		return controller.Result{}, err
	}
	if err := c.writeStatus(ctx, lt, status); err != nil {
		return retryLater(err)
	}
	log.Info("load test ended", "phase", status.Phase, "reason", status.Reason)
	return c.release(ctx, lt)
}

// createPart creates the part ref describes, or adopts it if it exists.
func (c *coordinator) createPart(ctx context.Context, lt *LoadTest, status *LoadTestStatus, ref *PartRef) (*LoadTestPart, error) {
	n := int64(len(status.Parts))
	p := &LoadTestPart{
		ObjectMeta: meta.ObjectMeta{Namespace: lt.Namespace, Name: ref.Name, Labels: map[string]string{LabelLoadTest: truncLabel(lt.Name)}},
		Spec: LoadTestPartSpec{
			LoadTest: lt.Name, Member: ref.Member,
			Share: schedule.Share{Index: ref.Index, Count: n},
			Test:  meta.DeepCopyValue(lt.Spec.Spec),
		},
	}
	if n > 1 {
		p.Spec.StartAt = status.StartTime
	}
	if err := controllerutil.SetControllerReference(lt, p, c.st.Scheme()); err != nil {
		return nil, err
	}
	err := c.st.Create(ctx, p)
	if err == nil {
		return p, nil
	}
	if !errs.IsAlreadyExists(err) {
		return nil, err
	}
	cur := &LoadTestPart{}
	if err := c.st.Get(ctx, meta.KeyOf(p), cur); err != nil {
		return nil, err
	}
	if ref := cur.ControllerRef(); ref != nil && ref.UID == lt.UID {
		return cur, nil // created before; the cache lags
	}
	// A leftover of an earlier LoadTest of the same name, which the
	// garbage collector has not removed yet.
	err = c.st.Delete(ctx, cur, store.WithPreconditions(store.Preconditions{UID: cur.UID}))
	if err != nil && !errs.IsNotFound(err) {
		return nil, err
	}
	return nil, errs.New(errs.Conflict, "removed a leftover part %s of an earlier LoadTest", cur.Name)
}

// truncLabel fits a name into a label value (at most 63 characters).
func truncLabel(s string) string {
	if len(s) <= 63 {
		return s
	}
	return strings.TrimRight(s[:63], "-.")
}

// finish sets the final phase, results and verdict of a test whose parts
// all ended.
func (c *coordinator) finish(lt *LoadTest, status *LoadTestStatus, views []*partView, now time.Time) error {
	outcomes := make([]partOutcome, 0, len(views))
	var failed *partView
	for _, v := range views {
		if v.phase() == PhaseFailed && failed == nil {
			failed = v
		}
		if v.part == nil {
			continue
		}
		ps := &v.part.Status
		o := partOutcome{index: v.ref.Index, stop: ps.Stop, interrupted: ps.Interrupted, failures: ps.Failures}
		if len(ps.Result) > 0 {
			r, err := decodePartResult(ps.Result)
			if err != nil {
				return errs.WithField(err, "part "+v.part.Name)
			}
			o.result = r
		}
		outcomes = append(outcomes, o)
	}
	spec := &lt.Spec.Spec
	if len(views) > 0 && views[0].part != nil {
		spec = &views[0].part.Spec.Test // the spec that ran
	}
	results, verdict, err := judge(spec, outcomes)
	if err != nil {
		return err
	}
	status.Results, status.Verdict = results, verdict
	status.EndTime = now
	if status.Progress != nil {
		status.Progress.InFlight = 0
	}
	autostopped := false
	for _, o := range outcomes {
		autostopped = autostopped || o.stop == engine.StopAutostop
	}
	var cancelled *partView
	for _, v := range views {
		if v.phase() == PhaseCancelled && cancelled == nil {
			cancelled = v
		}
	}
	switch {
	case failed != nil:
		status.Phase, status.Reason = PhaseFailed, ReasonRunFailed
		msg := failed.lost
		if failed.lost != "" {
			status.Reason = ReasonPartLost
		} else {
			ps := &failed.part.Status
			if ps.Reason != "" {
				status.Reason = ps.Reason
			}
			msg = fmt.Sprintf("part %d on member %s: %s", failed.ref.Index, failed.part.Spec.Member, ps.Message)
		}
		status.Message = msg
	case lt.Spec.Cancel:
		status.Phase, status.Reason, status.Message = PhaseCancelled, ReasonCancelled, "cancelled by spec.cancel"
	case lt.IsBeingDeleted():
		status.Phase, status.Reason, status.Message = PhaseCancelled, ReasonCancelled, "deleted"
	case autostopped && verdict != nil:
		status.Phase, status.Reason = PhaseFailed, ReasonAutostopped
		status.Message = strings.Join(verdict.Failures, "; ")
	case cancelled != nil:
		// Cancelled directly (its spec.cancel), not by this controller.
		status.Phase, status.Reason = PhaseCancelled, ReasonCancelled
		status.Message = fmt.Sprintf("part %d was cancelled", cancelled.ref.Index)
	case verdict == nil:
		status.Phase, status.Reason, status.Message = PhaseFailed, ReasonRunFailed, "no part produced results"
	case !verdict.Passed:
		status.Phase, status.Reason = PhaseFailed, ReasonThresholdsFailed
		status.Message = strings.Join(verdict.Failures, "; ")
	default:
		status.Phase, status.Reason = PhaseSucceeded, ReasonPassed
		status.Message = fmt.Sprintf("%d requests at %.1f rps, %d errors", results.Requests, results.RPS, results.Errors)
	}
	readyReason, readyMsg := ReasonAssigned, "the parts ran"
	if cond := meta.FindCondition(status.Conditions, ConditionReady); cond != nil && cond.Message != "" {
		readyMsg = cond.Message
	}
	setConditions(status, lt.Generation, meta.ConditionTrue, readyReason, readyMsg, meta.ConditionTrue, status.Reason, status.Message)
	return nil
}

// release removes the finalizer once nothing runs.
func (c *coordinator) release(ctx context.Context, lt *LoadTest) (controller.Result, error) {
	if !controllerutil.RemoveFinalizer(lt, Finalizer) {
		return controller.Result{}, nil
	}
	if err := c.st.Update(ctx, lt); err != nil {
		return retryLater(err)
	}
	return controller.Result{}, nil
}

// writeStatus writes status unless lt already has it. A stale lt is
// errs.Conflict (retryLater requeues it).
func (c *coordinator) writeStatus(ctx context.Context, lt *LoadTest, status *LoadTestStatus) error {
	if reflect.DeepEqual(&lt.Status, status) {
		return nil
	}
	old := lt.Status
	lt.Status = *status
	if err := c.st.UpdateStatus(ctx, lt); err != nil {
		lt.Status = old
		return err
	}
	return nil
}

// retryLater turns a lost compare-and-swap into a requeue (the object
// changed; the next reconcile sees the change) and a vanished object into
// nothing to do.
func retryLater(err error) (controller.Result, error) {
	switch {
	case err == nil:
		return controller.Result{}, nil
	case errs.IsConflict(err):
		return controller.Result{Requeue: true}, nil
	case errs.IsNotFound(err):
		return controller.Result{}, nil
	}
	return controller.Result{}, err
}

// setConditions sets Ready and Complete.
func setConditions(s *LoadTestStatus, gen int64, ready meta.ConditionStatus, readyReason, readyMsg string,
	complete meta.ConditionStatus, completeReason, completeMsg string) {
	meta.SetCondition(&s.Conditions, meta.Condition{Type: ConditionReady, Status: ready, ObservedGeneration: gen, Reason: readyReason, Message: readyMsg})
	meta.SetCondition(&s.Conditions, meta.Condition{Type: ConditionComplete, Status: complete, ObservedGeneration: gen, Reason: completeReason, Message: completeMsg})
}
