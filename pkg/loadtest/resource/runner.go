package resource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
	"github.com/capstanhq/capstan/pkg/loadtest/files"
	"github.com/capstanhq/capstan/pkg/loadtest/gun"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
)

// Why a run was stopped (the cause of its context).
var (
	errCancelRequested = errors.New("the part was cancelled")
	errPartDeleted     = errors.New("the part was deleted")
	errSessionLost     = errors.New("this process's member session ended")
	errStopping        = errors.New("the process is stopping")
)

// noFiles is the files of a runner without a files directory: none.
type noFiles struct{}

// Open implements files.FS.
func (noFiles) Open(name string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("%q: LoadTests may name files only when the runners have a files directory (capstan run --loadtest-dir DIR)", name)
}

// finalWriteTimeout bounds the final status write of a run that ends
// because the process stops.
const finalWriteTimeout = 10 * time.Second

// runner runs the parts assigned to this process's Member, each in a
// goroutine it owns, and writes their progress and results. It is both a
// manager runnable (Start owns the runs' lifetime: when it stops, the runs
// stop and report themselves interrupted) and the reconciler of the
// "loadtestpart-runner" controller.
type runner struct {
	st      store.Store
	cache   *source.Cache
	members *coordination.Membership
	guns    *gun.Registry
	dir     string
	every   time.Duration
	log     logr.Logger

	mu       sync.Mutex
	ctx      context.Context // set by Start
	stopping bool
	runs     map[meta.Key]*partRun
	finished map[meta.Key]string // parts whose final status this process wrote, by key → uid
	wg       sync.WaitGroup
}

// partRun is one part being run.
type partRun struct {
	uid    string
	cancel context.CancelCauseFunc
}

func newRunner(st store.Store, cache *source.Cache, opts Options) *runner {
	return &runner{st: st, cache: cache, members: opts.Membership, guns: opts.Guns, dir: opts.Dir,
		every: opts.ProgressInterval, log: opts.Logger,
		runs: map[meta.Key]*partRun{}, finished: map[meta.Key]string{}}
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica runs its parts.
func (r *runner) NeedLeaderElection() bool { return false }

// Start lets runs start until ctx ends, then stops them and waits until
// each has written its final status.
func (r *runner) Start(ctx context.Context) error {
	r.mu.Lock()
	if r.ctx != nil {
		r.mu.Unlock()
		return errs.New(errs.FailedPrecondition, "the load test runner already started")
	}
	r.ctx = ctx
	r.mu.Unlock()
	<-ctx.Done()
	r.mu.Lock()
	r.stopping = true
	for _, run := range r.runs {
		run.cancel(errStopping)
	}
	r.mu.Unlock()
	r.wg.Wait()
	return nil
}

// Reconcile starts, cancels or ignores one part.
func (r *runner) Reconcile(ctx context.Context, req controller.Request) (controller.Result, error) {
	r.mu.Lock()
	base, stopping := r.ctx, r.stopping
	r.mu.Unlock()
	if stopping {
		return controller.Result{}, nil
	}
	if base == nil {
		return controller.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	part := &LoadTestPart{}
	if err := r.cache.Get(ctx, req, part); err != nil {
		if !errs.IsNotFound(err) {
			return controller.Result{}, err
		}
		r.mu.Lock()
		if run := r.runs[req]; run != nil {
			run.cancel(errPartDeleted)
		}
		delete(r.finished, req)
		r.mu.Unlock()
		return controller.Result{}, nil
	}
	sess := r.members.Session()
	if sess == nil {
		// Not registered yet: nothing can be ours, but a part may have been
		// assigned to us in the moment before the session was recorded.
		return controller.Result{RequeueAfter: 200 * time.Millisecond}, nil
	}
	if part.Spec.Member != sess.Name {
		return controller.Result{}, nil
	}
	stop := part.Spec.Cancel || part.IsBeingDeleted()

	r.mu.Lock()
	if run := r.runs[req]; run != nil && run.uid == part.UID {
		if stop {
			run.cancel(errCancelRequested)
		}
		r.mu.Unlock()
		return controller.Result{}, nil
	}
	if r.finished[req] == part.UID || part.Status.Phase.Final() {
		r.mu.Unlock()
		return controller.Result{}, nil
	}
	if stop || part.Status.Phase == PhaseRunning || r.stopping {
		r.mu.Unlock()
		// Never started here (a Running part without a run here lost its
		// runner): end it without running.
		phase, reason, msg := PhaseCancelled, ReasonCancelled, "cancelled before it started"
		if !stop {
			phase, reason, msg = PhaseFailed, ReasonInterrupted, "its runner lost track of it"
		}
		err := r.updatePart(ctx, req, part.UID, func(s *LoadTestPartStatus) bool {
			if s.Phase.Final() {
				return false
			}
			s.Phase, s.Reason, s.Message, s.EndTime = phase, reason, msg, meta.Now()
			return true
		})
		if errs.IsNotFound(err) {
			return controller.Result{}, nil
		}
		return controller.Result{}, err
	}
	// Only the runner stops a run (Start when the process stops, with its
	// reason), not the end of the context it was started from.
	runCtx, cancel := context.WithCancelCause(context.WithoutCancel(base))
	r.runs[req] = &partRun{uid: part.UID, cancel: cancel}
	r.wg.Add(1)
	r.mu.Unlock()
	go r.execute(runCtx, cancel, sess, part)
	return controller.Result{}, nil
}

// execute runs part until it ends or runCtx is canceled, then writes its
// final status.
func (r *runner) execute(ctx context.Context, cancel context.CancelCauseFunc, sess *coordination.Session, part *LoadTestPart) {
	key, uid := meta.KeyOf(part), part.UID
	log := r.log.WithValues("part", key.String(), "share", part.Spec.Share.Index)
	final := &LoadTestPartStatus{}
	defer func() {
		cancel(nil)
		if final != nil {
			r.writeFinal(key, uid, final, log)
		}
		r.mu.Lock()
		delete(r.runs, key)
		r.finished[key] = uid
		r.mu.Unlock()
		r.wg.Done()
	}()
	// Work bound to a session stops when it ends: the coordinator will
	// take this part for interrupted.
	go func() {
		select {
		case <-sess.Done():
			if sess.Err() == nil {
				cancel(errStopping) // a clean stop ends the session
			} else {
				cancel(errSessionLost)
			}
		case <-ctx.Done():
		}
	}()

	marked := false
	err := r.updatePart(ctx, key, uid, func(s *LoadTestPartStatus) bool {
		if s.Phase != "" && s.Phase != PhasePending {
			return false
		}
		s.Phase, s.Reason, s.Message = PhaseRunning, ReasonRunning, ""
		marked = true
		return true
	})
	switch {
	case errs.IsNotFound(err):
		final = nil // deleted: nothing to report to
		return
	case err != nil:
		final = stopped(context.Cause(ctx), err)
		return
	case !marked:
		final = nil // it ended meanwhile (its member was taken for gone)
		return
	}

	var latest atomic.Pointer[engine.Progress]
	// Parts are written by the coordinator, but whoever can write one
	// must not get more from this runner than a LoadTest would.
	err = checkRunnable(&part.Spec.Test, r.guns.Types(), r.dir)
	var eng *engine.Engine
	var fsys files.FS = noFiles{}
	if err == nil && r.dir != "" {
		// Every file of the run is opened inside the files directory,
		// whatever its path says or its symbolic links point to.
		var root *files.Root
		if root, err = files.OpenRoot(r.dir); err != nil {
			err = errs.Wrap(errs.FailedPrecondition, err, "the files directory")
		} else {
			defer root.Close()
			fsys = root
		}
	}
	if err == nil {
		eng, err = engine.New(ctx, &part.Spec.Test, engine.Options{
			Registry: r.guns, Files: fsys, Share: part.Spec.Share, StartAt: part.Spec.StartAt,
			Observer:         func(p engine.Progress) { latest.Store(&p) },
			ProgressInterval: r.every,
		})
		err = errs.WithField(err, "spec")
	}
	if err != nil {
		final.Phase, final.Reason = PhaseFailed, ReasonRunFailed
		if errs.IsInvalidArgument(err) {
			final.Reason = ReasonInvalidSpec
		}
		final.Message = err.Error()
		log.Info("part cannot run", "error", err.Error())
		return
	}
	if at := part.Spec.StartAt; !at.IsZero() {
		log.Info("running part", "startAt", at)
	} else {
		log.Info("running part")
	}

	// Progress goes to the part every interval, not per shot.
	progStop, progDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(progDone)
		t := time.NewTicker(r.every)
		defer t.Stop()
		for {
			select {
			case <-progStop:
				return
			case <-t.C:
			}
			p := latest.Swap(nil)
			if p == nil {
				continue
			}
			now := meta.Now()
			prog := progressOf(*p, now)
			start := now.Add(-p.Elapsed).Truncate(time.Millisecond)
			err := r.updatePart(ctx, key, uid, func(s *LoadTestPartStatus) bool {
				if s.Phase.Final() {
					return false
				}
				if s.StartTime.IsZero() {
					s.StartTime = start
				}
				s.Progress = prog
				return true
			})
			if err != nil && ctx.Err() == nil {
				log.Error(err, "writing progress")
			}
		}
	}()
	res, runErr := eng.Run(ctx)
	close(progStop)
	<-progDone

	if res == nil {
		// Stopped before the start time.
		final = stopped(context.Cause(ctx), runErr)
		return
	}
	final.StartTime = res.Start.UTC().Truncate(time.Millisecond)
	final.Stop, final.Interrupted, final.Failures = res.Stop, res.Interrupted, res.Verdict.Failures
	done := eng.Progress()
	done.Done = true
	final.Progress = progressOf(done, meta.Now())
	final.Progress.InFlight = 0
	if final.Result, err = encodePartResult(res.Result); err != nil {
		final.Phase, final.Reason, final.Message = PhaseFailed, ReasonRunFailed, err.Error()
		return
	}
	switch {
	case res.Stop == engine.StopCanceled:
		s := stopped(context.Cause(ctx), nil)
		final.Phase, final.Reason, final.Message = s.Phase, s.Reason, s.Message
	case runErr != nil:
		final.Phase, final.Reason, final.Message = PhaseFailed, ReasonRunFailed, runErr.Error()
	default:
		final.Phase, final.Reason = PhaseSucceeded, stopReasons[res.Stop]
	}
	log.Info("part ended", "phase", final.Phase, "stop", res.Stop, "requests", res.Total.Count)
}

// stopReasons are the reasons of parts that ended on their own.
var stopReasons = map[string]string{engine.StopDone: "Done", engine.StopDuration: "Duration", engine.StopAutostop: ReasonAutostopped}

// stopped is the final status of a run stopped for cause (or, without a
// cause, failed with err).
func stopped(cause, err error) *LoadTestPartStatus {
	switch {
	case errors.Is(cause, errCancelRequested), errors.Is(cause, errPartDeleted):
		return &LoadTestPartStatus{Phase: PhaseCancelled, Reason: ReasonCancelled, Message: cause.Error()}
	case cause != nil:
		return &LoadTestPartStatus{Phase: PhaseFailed, Reason: ReasonInterrupted, Message: cause.Error()}
	case err != nil:
		return &LoadTestPartStatus{Phase: PhaseFailed, Reason: ReasonRunFailed, Message: err.Error()}
	}
	return &LoadTestPartStatus{Phase: PhaseFailed, Reason: ReasonRunFailed, Message: "the run ended without a result"}
}

// writeFinal writes a run's final status: retried until it is stored or
// the part is gone, or, once the process is stopping, for at most
// finalWriteTimeout. A part that already ended (the coordinator found
// this member gone) keeps its status.
func (r *runner) writeFinal(key meta.Key, uid string, final *LoadTestPartStatus, log logr.Logger) {
	r.mu.Lock()
	base := r.ctx
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(context.WithoutCancel(base))
	defer cancel()
	// Once the process stops, the write has a deadline.
	defer context.AfterFunc(base, func() { time.AfterFunc(finalWriteTimeout, cancel) })()
	final.EndTime = meta.Now()
	delay := 50 * time.Millisecond
	for {
		err := r.updatePart(ctx, key, uid, func(s *LoadTestPartStatus) bool {
			if s.Phase.Final() {
				return false
			}
			if final.Progress == nil {
				final.Progress = s.Progress
			}
			if final.StartTime.IsZero() {
				final.StartTime = s.StartTime
			}
			*s = *final
			return true
		})
		if err == nil || errs.IsNotFound(err) {
			return
		}
		if ctx.Err() != nil {
			log.Error(err, "could not write the part's final status; the coordinator will find it interrupted")
			return
		}
		log.Error(err, "writing the part's final status; retrying")
		if !sleep(ctx, delay) {
			return
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// updatePart applies mutate to the stored status of the part key with uid
// and writes it; see updatePartObject.
func (r *runner) updatePart(ctx context.Context, key meta.Key, uid string, mutate func(*LoadTestPartStatus) bool) error {
	_, err := updatePartObject(ctx, r.st, key, uid, true, func(p *LoadTestPart) bool { return mutate(&p.Status) })
	return err
}

// updatePartObject applies mutate to a fresh read of the part key with
// uid and writes it (its status if status is set, else its spec),
// retrying lost compare-and-swaps from a fresh read: parts are written
// often (progress), so a cached copy is usually stale. A mutate that
// returns false writes nothing. It returns the part as stored. Another
// incarnation of the part is errs.NotFound.
func updatePartObject(ctx context.Context, st store.Store, key meta.Key, uid string, status bool, mutate func(*LoadTestPart) bool) (*LoadTestPart, error) {
	delay := 5 * time.Millisecond
	for {
		p := &LoadTestPart{}
		if err := st.Get(ctx, key, p); err != nil {
			return nil, err
		}
		if p.UID != uid {
			return nil, errs.New(errs.NotFound, "LoadTestPart %s was replaced", key)
		}
		if !mutate(p) {
			return p, nil
		}
		var err error
		if status {
			err = st.UpdateStatus(ctx, p)
		} else {
			err = st.Update(ctx, p)
		}
		if !errs.IsConflict(err) {
			return p, err
		}
		if !sleep(ctx, delay/2+rand.N(delay)) {
			return nil, err
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// sleep waits d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
