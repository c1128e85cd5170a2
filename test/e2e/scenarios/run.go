package scenarios

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2" //nolint:revive // Ginkgo's DSL
	. "github.com/onsi/gomega"    //nolint:revive // Gomega's DSL

	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	mongostore "github.com/capstanhq/capstan/pkg/store/mongo"

	"github.com/capstanhq/capstan/test/e2e/api"
	"github.com/capstanhq/capstan/test/e2e/cluster"
)

// run is one scenario: its own database on the cluster's store, the
// replicas it started and a store client for the checks.
type run struct {
	ctx   context.Context
	c     cluster.Cluster
	db    string
	st    store.Store
	modes []string
	args  []string

	mu       sync.Mutex
	replicas map[string]cluster.Replica // the current incarnation of each name
	all      []cluster.Replica          // every incarnation, for the logs
}

// newRun opens a fresh database for the scenario name and registers the
// cleanup: replicas are removed, and their logs are printed if the spec
// failed.
func newRun(ctx context.Context, c cluster.Cluster, name string, modes []string, args ...string) *run {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	r := &run{ctx: ctx, c: c, db: "e2e_" + name + "_" + hex.EncodeToString(b), modes: modes, args: args,
		replicas: map[string]cluster.Replica{}}
	var err error
	r.st, err = mongostore.Open(ctx, c.StoreURI(), api.NewScheme(), mongostore.Options{Database: r.db, Timeout: 10 * time.Second})
	Expect(err).NotTo(HaveOccurred(), "open the store at %s", c.StoreURI())
	DeferCleanup(func(ctx context.Context) {
		r.mu.Lock()
		all := r.all
		r.mu.Unlock()
		for _, rep := range all {
			_ = rep.Close(ctx)
		}
		if CurrentSpecReport().Failed() {
			for _, rep := range all {
				fmt.Fprintf(GinkgoWriter, "\n===== logs of replica %s (last 150 lines) =====\n%s\n", rep.Name(), tail(rep.Logs(), 150))
			}
		}
		if dir := os.Getenv(LogDirEnv); dir != "" {
			saveLogs(filepath.Join(dir, r.db), all)
		}
		_ = r.st.Close(ctx)
	}, NodeTimeout(2*time.Minute))
	return r
}

// LogDirEnv names the environment variable that, when set, makes every
// spec save its replicas' complete logs under that directory.
const LogDirEnv = "CAPSTAN_E2E_LOG_DIR"

func saveLogs(dir string, replicas []cluster.Replica) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(GinkgoWriter, "saving logs: %v\n", err)
		return
	}
	for i, rep := range replicas {
		path := filepath.Join(dir, fmt.Sprintf("%02d-%s.log", i, rep.Name()))
		if err := os.WriteFile(path, []byte(rep.Logs()), 0o644); err != nil {
			fmt.Fprintf(GinkgoWriter, "saving logs: %v\n", err)
		}
	}
	fmt.Fprintf(GinkgoWriter, "replica logs saved in %s\n", dir)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// start starts the named replicas (in parallel) and waits until each has
// registered.
func (r *run) start(names ...string) {
	var wg sync.WaitGroup
	failures := make([]error, len(names))
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer GinkgoRecover()
			rep, err := r.c.StartReplica(r.ctx, cluster.ReplicaSpec{Name: name, Database: r.db, Modes: r.modes, Args: r.args})
			if err != nil {
				failures[i] = err
				return
			}
			r.mu.Lock()
			r.replicas[name] = rep
			r.all = append(r.all, rep)
			r.mu.Unlock()
		}()
	}
	wg.Wait()
	for i, err := range failures {
		Expect(err).NotTo(HaveOccurred(), "start replica %s", names[i])
	}
}

// replica returns the current incarnation of name.
func (r *run) replica(name string) cluster.Replica {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := r.replicas[name]
	Expect(rep).NotTo(BeNil(), "replica %s", name)
	return rep
}

// replace removes the (stopped or killed) current incarnation of name and
// starts a new one.
func (r *run) replace(name string) {
	old := r.replica(name)
	Expect(old.Close(r.ctx)).To(Succeed())
	r.start(name)
}

// step logs a timed milestone.
func step(format string, args ...any) {
	By(fmt.Sprintf(format, args...))
}

// measure records a measured duration in the report and the spec's output.
func measure(name string, d time.Duration) {
	AddReportEntry(name, d.Round(time.Millisecond).String())
	fmt.Fprintf(GinkgoWriter, "MEASURE %s = %v\n", name, d.Round(time.Millisecond))
}

// waitFor polls cond every poll until it holds and returns how long that
// took; it fails the spec after timeout. cond's error is remembered for
// the failure message, not fatal.
func (r *run) waitFor(what string, timeout, poll time.Duration, cond func() (bool, error)) time.Duration {
	start := time.Now()
	deadline := start.Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return time.Since(start)
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			Fail(fmt.Sprintf("timed out after %v waiting until %s (last error: %v)", timeout, what, last))
		}
		select {
		case <-time.After(poll):
		case <-r.ctx.Done():
			Fail(fmt.Sprintf("stopped waiting until %s: %v", what, r.ctx.Err()))
		}
	}
}

// milestone is one condition of waitAll.
type milestone struct {
	what string
	cond func() (bool, error)
}

// waitAll polls every condition every poll until each has held once, and
// returns how long after since each was first seen to hold (they are
// watched together, so one slow condition does not delay the measurement
// of the others).
func (r *run) waitAll(since time.Time, timeout, poll time.Duration, ms ...milestone) []time.Duration {
	start := time.Now()
	took := make([]time.Duration, len(ms))
	done := make([]bool, len(ms))
	left := len(ms)
	lastErr := make([]error, len(ms))
	for left > 0 {
		for i, m := range ms {
			if done[i] {
				continue
			}
			ok, err := m.cond()
			if ok {
				done[i], took[i] = true, time.Since(since)
				left--
			} else if err != nil {
				lastErr[i] = err
			}
		}
		if left == 0 {
			break
		}
		if time.Since(start) > timeout {
			for i, m := range ms {
				if !done[i] {
					Fail(fmt.Sprintf("timed out after %v waiting until %s (last error: %v)", timeout, m.what, lastErr[i]))
				}
			}
		}
		select {
		case <-time.After(poll):
		case <-r.ctx.Done():
			Fail(fmt.Sprintf("stopped waiting: %v", r.ctx.Err()))
		}
	}
	return took
}

// get reads one object; NotFound gives false.
func (r *run) get(name string, obj meta.Object) (bool, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	err := r.st.Get(ctx, meta.Key{Namespace: api.Namespace, Name: name}, obj)
	if errs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// list lists every object of T in the test namespace.
func list[T any, PT interface {
	*T
	meta.Object
}](r *run) ([]PT, error) {
	ctx, cancel := context.WithTimeout(r.ctx, 20*time.Second)
	defer cancel()
	items, _, err := store.ListOf[T, PT](ctx, r.st, store.ListOptions{Namespace: api.Namespace})
	return items, err
}

// mustList is list that fails the spec on error.
func mustList[T any, PT interface {
	*T
	meta.Object
}](r *run) []PT {
	var items []PT
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if items, err = list[T, PT](r); err == nil {
			return items
		}
		time.Sleep(time.Second)
	}
	Expect(err).NotTo(HaveOccurred())
	return items
}

// reports returns the replicas' Reports by replica name.
func (r *run) reports() (map[string]*api.Report, error) {
	reps, err := list[api.Report](r)
	if err != nil {
		return nil, err
	}
	out := map[string]*api.Report{}
	for _, rep := range reps {
		out[rep.Name] = rep
	}
	return out, nil
}

// replicaOfMember returns the replica that registered member ("" if
// unknown).
func (r *run) replicaOfMember(member string) (string, error) {
	reps, err := r.reports()
	if err != nil {
		return "", err
	}
	for name, rep := range reps {
		for _, m := range rep.Status.Members {
			if m == member {
				return name, nil
			}
		}
	}
	return "", nil
}

// members returns the live Members' names.
func (r *run) members() (map[string]bool, error) {
	ms, err := list[coordination.Member](r)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, m := range ms {
		if m.DeletionTimestamp == nil {
			out[m.Name] = true
		}
	}
	return out, nil
}

// shardHolders returns the holder of each shard lease of the Item
// controller ("" if released).
func (r *run) shardHolders(shards int) (map[int]string, error) {
	leases, err := list[coordination.Lease](r)
	if err != nil {
		return nil, err
	}
	out := map[int]string{}
	for i := 0; i < shards; i++ {
		out[i] = ""
	}
	for _, l := range leases {
		var i int
		if _, err := fmt.Sscanf(l.Name, api.ShardedController+"-shard-%d", &i); err == nil && i < shards {
			out[i] = l.Spec.HolderIdentity
		}
	}
	return out, nil
}

// spread reports whether every shard is held by a live Member of one of
// the replicas in want (current Members, per their Reports), and each of
// them holds at least one.
func (r *run) spread(shards int, want ...string) (bool, error) {
	holders, err := r.shardHolders(shards)
	if err != nil {
		return false, err
	}
	reps, err := r.reports()
	if err != nil {
		return false, err
	}
	live, err := r.members()
	if err != nil {
		return false, err
	}
	memberOf := map[string]string{}
	for _, name := range want {
		rep := reps[name]
		if rep == nil || !live[rep.Status.Member] {
			return false, nil
		}
		memberOf[rep.Status.Member] = name
	}
	count := map[string]int{}
	for shard, h := range holders {
		name, ok := memberOf[h]
		if !ok {
			return false, fmt.Errorf("shard %d is held by %q, not by a current member of %v", shard, h, want)
		}
		count[name]++
	}
	return len(count) == len(want), nil
}

// createItems creates n Items with value 1.
func (r *run) createItems(n int) {
	for i := 0; i < n; i++ {
		it := &api.Item{ObjectMeta: meta.ObjectMeta{Namespace: api.Namespace, Name: fmt.Sprintf("item-%03d", i)}, Spec: api.ItemSpec{Value: 1}}
		Expect(r.st.Create(r.ctx, it)).To(Succeed())
	}
}

// bumpItem adds delta to an Item's spec.value (compare-and-swap, retried).
func (r *run) bumpItem(name string, delta int64) error {
	for attempt := 0; ; attempt++ {
		it := &api.Item{}
		if _, err := r.get(name, it); err != nil {
			return err
		}
		it.Spec.Value += delta
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		err := r.st.Update(ctx, it)
		cancel()
		if err == nil || !errs.IsConflict(err) || attempt == 10 {
			return err
		}
	}
}

// unreconciled lists the Items whose status does not describe their spec.
func (r *run) unreconciled() ([]string, error) {
	items, err := list[api.Item](r)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, it := range items {
		if it.Status.ObservedGeneration != it.Generation || it.Status.ObservedValue != it.Spec.Value {
			out = append(out, fmt.Sprintf("%s(gen %d/%d value %d/%d)", it.Name, it.Status.ObservedGeneration, it.Generation, it.Status.ObservedValue, it.Spec.Value))
		}
	}
	return out, nil
}

// allReconciled is a waitFor condition: every Item's status describes its
// spec.
func (r *run) allReconciled() (bool, error) {
	left, err := r.unreconciled()
	if err != nil {
		return false, err
	}
	if len(left) > 0 {
		return false, fmt.Errorf("%d items not reconciled: %v", len(left), left[:min(len(left), 5)])
	}
	return true, nil
}

// noteFenceMode reports who checked the fenced writes (the store, or the
// operator on a store that does not check fences yet), per the Reports.
func (r *run) noteFenceMode() {
	reps, err := r.reports()
	if err != nil {
		return
	}
	modes := map[string]bool{}
	for _, rep := range reps {
		if rep.Status.FenceMode != "" {
			modes[rep.Status.FenceMode] = true
		}
	}
	AddReportEntry("fenced writes checked by", strings.Join(sortedKeys(modes), ","))
	fmt.Fprintf(GinkgoWriter, "fenced writes checked by: %v\n", sortedKeys(modes))
}

// refusals returns the recorded Refusals.
func (r *run) refusals() []*api.Refusal { return mustList[api.Refusal](r) }

// records returns every reconcile record.
func (r *run) records() []Record { return Records(mustList[api.ReconcileLog](r)) }

// lock reads the Lock of the lock loop.
func (r *run) lock() (*coordination.Lock, error) {
	lk := &coordination.Lock{}
	ok, err := r.get(api.LockName, lk)
	if !ok {
		return nil, err
	}
	return lk, nil
}

// ledger reads the Ledger's entries.
func (r *run) ledger() ([]api.LedgerEntry, error) {
	l := &api.Ledger{}
	ok, err := r.get(api.LedgerName, l)
	if !ok {
		return nil, err
	}
	return l.Spec.Entries, nil
}

// sectionOf returns the Ledger's section of token (nil if none).
func sectionOf(entries []api.LedgerEntry, token int64) *Section {
	sections, _ := CheckLedger(entries)
	for i := range sections {
		if sections[i].Token == token {
			return &sections[i]
		}
	}
	return nil
}

// completeSections counts the complete sections in entries.
func completeSections(entries []api.LedgerEntry) int {
	n := 0
	for _, e := range entries {
		if e.Final {
			n++
		}
	}
	return n
}

// holderMidSection waits until the lock's holder is in the middle of its
// critical section (its last accepted write is not its final one) and
// returns the lock and the holding replica.
func (r *run) holderMidSection() (*coordination.Lock, string) {
	var lk *coordination.Lock
	var holder string
	r.waitFor("a lock holder is in the middle of its critical section", 60*time.Second, pollGet, func() (bool, error) {
		var err error
		if lk, err = r.lock(); lk == nil || lk.Spec.Holder == "" {
			return false, err
		}
		entries, err := r.ledger()
		if err != nil || len(entries) == 0 {
			return false, err
		}
		last := entries[len(entries)-1]
		if last.Token != lk.Spec.Token || last.Final || last.Member != lk.Spec.Holder {
			return false, nil
		}
		holder = last.Replica
		return true, nil
	})
	return lk, holder
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
