// Package scenarios holds the coordination end-to-end scenarios, written
// once and registered by both suites: test/e2e/process (operator replicas
// as host processes) and test/e2e/containers (replicas as containers on a
// private network). Each scenario gets its own store (a fresh `capstan
// run`), starts its replicas, disturbs them (kill -9, SIGSTOP/SIGCONT, a
// network cut, a rolling restart), and then checks from the store what the
// replicas recorded: who led, who held the lock and wrote the Ledger,
// which replica reconciled which key when, which writes were refused. The
// checks are in checks.go, as pure functions with their own unit tests.
package scenarios

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2" //nolint:revive // Ginkgo's DSL
	. "github.com/onsi/gomega"    //nolint:revive // Gomega's DSL

	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/meta"

	"github.com/capstanhq/capstan/test/e2e/api"
	"github.com/capstanhq/capstan/test/e2e/cluster"
)

// Durations the replicas run with: short, so that the scenarios finish
// quickly, but long enough for a loaded CI machine. The store serializes
// writes and every write wakes every replica's oplog tail, so the
// scenarios also keep the write rate low: few shards, slow renewals of
// what does not need fast failover, a few Jobs and Item changes a second.
const (
	leaseDuration = 3 * time.Second
	renewDeadline = 2 * time.Second
	retryPeriod   = 500 * time.Millisecond
	memberLease   = 8 * time.Second
	memberRenew   = 2 * time.Second
	lockTTL       = 3 * time.Second
	shardLease    = 6 * time.Second
	shards        = 6
)

// timingArgs passes the durations above to the operator.
func timingArgs() []string {
	return []string{
		"--lease", leaseDuration.String(), "--renew-deadline", renewDeadline.String(), "--retry", retryPeriod.String(),
		"--member-lease", memberLease.String(), "--member-renew", memberRenew.String(),
		"--lock-ttl", lockTTL.String(), "--lock-hold", "1200ms", "--lock-gap", "600ms",
		"--shard-lease", shardLease.String(), "--shards", fmt.Sprint(shards),
	}
}

// Polling intervals of the checks. The store is shared with the
// replicas, and a list costs it a scan, so the checks read sparingly:
// single objects often when a moment is being measured, lists rarely.
const (
	pollGet     = 25 * time.Millisecond
	pollMeasure = 100 * time.Millisecond
	pollList    = 250 * time.Millisecond
)

// failoverBound is the longest a new leader may take after the leader was
// killed, as the check sees it: LeaseDuration + RetryPeriod, as the issue
// of the feature states it, plus what the check itself adds (it reads the
// lease every pollGet, and a read is a round trip to the loaded store).
// A follower watches the lease, so it starts the lease duration of the
// leader's last renewal when the event reaches it, at most RetryPeriod
// before the kill plus the watch latency after it, and tries the
// takeover the moment that duration ends.
const failoverBound = leaseDuration + retryPeriod + 4*pollGet

// lockTakeoverBound is the longest another replica may take to acquire the
// lock of a paused holder. A waiter takes the lock the TTL after it first
// saw the holder's last renewal, which the holder wrote before it was
// paused; a renewal interval (TTL/3) and a second cover a waiter that saw
// it late and the store's round trips on a loaded machine.
const lockTakeoverBound = lockTTL + lockTTL/3 + time.Second

// NewCluster starts a fresh cluster (its own store) for one spec and
// registers its removal with DeferCleanup.
type NewCluster func(ctx context.Context) cluster.Cluster

// Register adds the scenarios to the suite; each spec runs on its own
// cluster from newCluster. Call it at package level:
// var _ = scenarios.Register(...).
func Register(newCluster NewCluster) bool {
	return Describe("coordination", func() {
		It("kill -9 of the leader: a new leader within the lease duration and the leader-elected work continues",
			func(ctx SpecContext) { leaderFailover(ctx, newCluster(ctx)) }, SpecTimeout(5*time.Minute))
		It("SIGSTOP of a lock holder past its TTL: another replica acquires, and the paused holder's fenced writes are refused after SIGCONT",
			func(ctx SpecContext) { pausedLockHolder(ctx, newCluster(ctx)) }, SpecTimeout(5*time.Minute))
		It("negative control: without fencing, the same pause lets the stale holder's write land after its successor's, and the checker reports it",
			func(ctx SpecContext) { unfencedControl(ctx, newCluster(ctx)) }, SpecTimeout(5*time.Minute))
		It("a replica cut off from the network: its member, lock and shards move to the others, and after reconnecting it stops acting as holder",
			func(ctx SpecContext) { partitionedReplica(ctx, newCluster(ctx)) }, SpecTimeout(6*time.Minute))
		It("rolling restart of three sharded replicas under a steady write load: every object reconciled, no key reconciled by two replicas at once",
			func(ctx SpecContext) { rollingRestart(ctx, newCluster(ctx)) }, SpecTimeout(6*time.Minute))
	})
}

// replicaOfIdentity returns the replica of an elector identity
// (<replica>-<random>).
func replicaOfIdentity(id string) string {
	if i := strings.LastIndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return id
}

// jobFeed creates Jobs at a steady rate.
type jobFeed struct {
	r       *run
	mu      sync.Mutex
	created map[string]int64 // name → Unix nanoseconds just before Create
	n       int
	stopCh  chan struct{}
	done    chan struct{}
}

func (r *run) startJobs(every time.Duration) *jobFeed {
	f := &jobFeed{r: r, created: map[string]int64{}, stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer GinkgoRecover()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-f.stopCh:
				return
			case <-r.ctx.Done():
				return
			case <-t.C:
				f.create()
			}
		}
	}()
	DeferCleanup(f.stop)
	return f
}

// create creates the next Job and returns its name ("" if the store
// refused; the feed goes on).
func (f *jobFeed) create() string {
	f.mu.Lock()
	f.n++
	name := fmt.Sprintf("job-%05d", f.n)
	f.mu.Unlock()
	at := time.Now().UnixNano()
	ctx, cancel := context.WithTimeout(f.r.ctx, 10*time.Second)
	defer cancel()
	if err := f.r.st.Create(ctx, &api.Job{ObjectMeta: meta.ObjectMeta{Namespace: api.Namespace, Name: name}}); err != nil {
		fmt.Fprintf(GinkgoWriter, "creating %s: %v\n", name, err)
		return ""
	}
	f.mu.Lock()
	f.created[name] = at
	f.mu.Unlock()
	return name
}

func (f *jobFeed) stop() {
	select {
	case <-f.stopCh:
	default:
		close(f.stopCh)
	}
	<-f.done
}

func (f *jobFeed) createdAt() map[string]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int64, len(f.created))
	for k, v := range f.created {
		out[k] = v
	}
	return out
}

// leaderFailover kills the leader three times (starting a replacement each
// time) while Jobs keep coming, and measures how long the others take to
// elect a new leader and to get the work going again.
func leaderFailover(ctx context.Context, c cluster.Cluster) {
	r := newRun(ctx, c, "leader", []string{"leader"}, timingArgs()...)
	step("start three replicas of a leader-elected controller")
	r.start("r1", "r2", "r3")
	jobs := r.startJobs(400 * time.Millisecond)

	var kills []Kill
	for round := 1; round <= 3; round++ {
		var lease *coordination.Lease
		r.waitFor("a leader leads, has recorded its term and does jobs", 60*time.Second, pollList, func() (bool, error) {
			l := &coordination.Lease{}
			ok, err := r.get(api.LeaderLease, l)
			if !ok || l.Spec.HolderIdentity == "" {
				return false, err
			}
			if ok, err := r.get(api.TermName(l.Spec.LeaseTransitions), &api.Term{}); !ok {
				return false, err
			}
			js, err := list[api.Job](r)
			if err != nil {
				return false, err
			}
			for _, j := range js {
				if j.Status.Done && j.Status.Token == l.Spec.LeaseTransitions {
					lease = l
					return true, nil
				}
			}
			return false, nil
		})
		victim, oldToken := replicaOfIdentity(lease.Spec.HolderIdentity), lease.Spec.LeaseTransitions
		step("round %d: kill -9 the leader %s (token %d)", round, victim, oldToken)
		at := time.Now()
		Expect(r.replica(victim).Kill(ctx)).To(Succeed())
		kills = append(kills, Kill{Token: oldToken, At: at.UnixNano()})

		var next coordination.Lease
		r.waitFor("another replica takes the lease", 60*time.Second, pollGet, func() (bool, error) {
			ok, err := r.get(api.LeaderLease, &next)
			return ok && next.Spec.HolderIdentity != "" && next.Spec.LeaseTransitions > oldToken, err
		})
		failover := time.Since(at)
		Expect(replicaOfIdentity(next.Spec.HolderIdentity)).NotTo(Equal(victim))
		marker := ""
		for marker == "" {
			marker = jobs.create()
		}
		r.waitFor("a job created after the kill is done by the new leader", 60*time.Second, pollGet, func() (bool, error) {
			j := &api.Job{}
			ok, err := r.get(marker, j)
			return ok && j.Status.Done && j.Status.Token > oldToken, err
		})
		resumed := time.Since(at)
		measure(fmt.Sprintf("failover %d: kill -9 of the leader → new leader", round), failover)
		measure(fmt.Sprintf("failover %d: kill -9 of the leader → first new job done", round), resumed)
		Expect(failover).To(BeNumerically("<=", failoverBound),
			"a new leader within lease duration %v + retry period %v (+ %v for the check's reads)", leaseDuration, retryPeriod, 4*pollGet)

		step("round %d: start a replacement for %s", round, victim)
		r.replace(victim)
	}

	jobs.stop()
	step("check: every job done once, by the leader its token names; no job created after a kill done by the killed leader")
	r.waitFor("every job is done", 90*time.Second, pollList, func() (bool, error) {
		js, err := list[api.Job](r)
		if err != nil {
			return false, err
		}
		for _, j := range js {
			if !j.Status.Done {
				return false, fmt.Errorf("%s is not done", j.Name)
			}
		}
		return len(js) > 0, nil
	})
	allJobs := mustList[api.Job](r)
	terms := mustList[api.Term](r)
	Expect(CheckJobs(allJobs, jobs.createdAt(), terms, kills)).To(BeEmpty())
	Expect(r.refusals()).To(BeEmpty(), "no leader's fenced write was refused")
	fmt.Fprintf(GinkgoWriter, "jobs: %d, terms: %d\n", len(allJobs), len(terms))
	r.noteFenceMode()
}

// pausedLockHolder stops the lock holder in the middle of its critical
// section, waits until another replica holds the lock and has written,
// resumes the paused one and checks that its next write was refused and
// that the Ledger shows no overlapping sections.
func pausedLockHolder(ctx context.Context, c cluster.Cluster) {
	r := newRun(ctx, c, "lock", []string{"lock"}, timingArgs()...)
	step("start three replicas taking turns at a TTL lock")
	r.start("r1", "r2", "r3")
	r.waitFor("three critical sections are complete", 60*time.Second, pollMeasure, func() (bool, error) {
		entries, err := r.ledger()
		return completeSections(entries) >= 3, err
	})

	lk, victim, successor, takeover := r.pauseHolderUntilSuccessorWrites()
	measure("SIGSTOP of the lock holder → lock acquired by another replica", takeover)
	Expect(takeover).To(BeNumerically("<=", lockTakeoverBound), "the lock moves within its TTL %v (+ a renewal interval and a second)", lockTTL)

	step("SIGCONT %s: its next fenced write must be refused", victim)
	Expect(r.replica(victim).Resume(ctx)).To(Succeed())
	var refusal *api.Refusal
	refused := r.waitFor("the resumed holder records the refusal of its stale write", 60*time.Second, pollList, func() (bool, error) {
		rs, err := list[api.Refusal](r)
		for _, x := range rs {
			if x.Spec.Replica == victim && x.Spec.Token == lk.Spec.Token && x.Spec.Fence == "Lock/"+api.Namespace+"/"+api.LockName {
				refusal = x
				return true, nil
			}
		}
		return false, err
	})
	measure("SIGCONT → stale holder's write refused", refused)
	fmt.Fprintf(GinkgoWriter, "refused: %s token %d (successor %s token %d): %s\n", victim, lk.Spec.Token, successor.Spec.Holder, successor.Spec.Token, refusal.Spec.Error)

	entries, err := r.ledger()
	Expect(err).NotTo(HaveOccurred())
	before := completeSections(entries)
	r.waitFor("the replicas keep taking turns", 60*time.Second, pollMeasure, func() (bool, error) {
		entries, err := r.ledger()
		return completeSections(entries) >= before+2, err
	})

	step("check: the Ledger's critical sections do not overlap")
	entries, err = r.ledger()
	Expect(err).NotTo(HaveOccurred())
	sections, problems := CheckLedger(entries)
	Expect(problems).To(BeEmpty())
	s := sectionOf(entries, lk.Spec.Token)
	Expect(s).NotTo(BeNil())
	Expect(s.Complete).To(BeFalse(), "the paused holder's section was cut: its later writes were refused")
	fmt.Fprintf(GinkgoWriter, "critical sections: %d (%d complete), ledger entries: %d, overlaps: 0\n", len(sections), completeSections(entries), len(entries))
	AddReportEntry("critical sections checked", len(sections))
	r.noteFenceMode()
}

// pauseHolderUntilSuccessorWrites pauses the lock holder in the middle of
// its critical section (retrying if it finished the section just before
// the signal), waits until another replica holds the lock and has written
// the Ledger, and returns the paused holder's lock, the replica, the
// successor's lock and how long after the pause the successor acquired.
func (r *run) pauseHolderUntilSuccessorWrites() (*coordination.Lock, string, coordination.Lock, time.Duration) {
	var (
		lk       *coordination.Lock
		victim   string
		pausedAt time.Time
	)
	for attempt := 1; ; attempt++ {
		lk, victim = r.holderMidSection()
		step("SIGSTOP the holder %s in its critical section (token %d)", victim, lk.Spec.Token)
		pausedAt = time.Now()
		Expect(r.replica(victim).Pause(r.ctx)).To(Succeed())
		time.Sleep(200 * time.Millisecond) // let a write already on the wire land
		entries, err := r.ledger()
		Expect(err).NotTo(HaveOccurred())
		if s := sectionOf(entries, lk.Spec.Token); s != nil && !s.Complete {
			break
		}
		// It wrote its last entry just before the signal: try again.
		Expect(r.replica(victim).Resume(r.ctx)).To(Succeed())
		Expect(attempt).To(BeNumerically("<", 5), "could not pause a holder in the middle of its critical section")
	}
	var successor coordination.Lock
	r.waitFor("another replica acquires the lock", 60*time.Second, pollGet, func() (bool, error) {
		l, err := r.lock()
		if l != nil {
			successor = *l
		}
		return l != nil && l.Spec.Token > lk.Spec.Token && l.Spec.Holder != "" && l.Spec.Holder != lk.Spec.Holder, err
	})
	takeover := time.Since(pausedAt)
	r.waitFor("the successor writes the ledger", 30*time.Second, pollGet, func() (bool, error) {
		entries, err := r.ledger()
		return len(entries) > 0 && entries[len(entries)-1].Token > lk.Spec.Token, err
	})
	return lk, victim, successor, takeover
}

// unfencedControl is the negative control of pausedLockHolder: the same
// pause, with replicas that append to the Ledger without the lock's
// token. The paused holder's write must then land after its successor's,
// and CheckLedger must report it: the lock scenario can fail, and it is
// the fencing that makes it pass.
func unfencedControl(ctx context.Context, c cluster.Cluster) {
	r := newRun(ctx, c, "unfenced", []string{"lock"}, append(timingArgs(), "--unfenced-lock")...)
	step("start two replicas taking turns at a TTL lock, writing without its token")
	r.start("r1", "r2")
	r.waitFor("two critical sections are complete", 60*time.Second, pollMeasure, func() (bool, error) {
		entries, err := r.ledger()
		return completeSections(entries) >= 2, err
	})
	lk, victim, _, _ := r.pauseHolderUntilSuccessorWrites()
	step("SIGCONT %s: without fencing, its stale write lands after its successor's", victim)
	Expect(r.replica(victim).Resume(ctx)).To(Succeed())
	var problems []string
	r.waitFor("the checker reports the stale write", 60*time.Second, pollMeasure, func() (bool, error) {
		entries, err := r.ledger()
		_, problems = CheckLedger(entries)
		return len(problems) > 0, err
	})
	fmt.Fprintf(GinkgoWriter, "without fencing the checker reports: %q\n", problems)
	// The paused holder's section began before its successor's, so its
	// late write shows as a section resumed after another began.
	Expect(problems[0]).To(And(ContainSubstring(fmt.Sprintf("token %d (%s) writes again", lk.Spec.Token, victim)),
		ContainSubstring("overlapping critical sections")))
	Expect(r.refusals()).To(BeEmpty(), "nothing refuses an unfenced write")
}

// partitionedReplica cuts the lock holder (which also holds shards) off
// from the store, checks that its Member, lock and shards move to the
// others and that the work goes on, then reconnects it and checks that it
// lets go of what it held.
func partitionedReplica(ctx context.Context, c cluster.Cluster) {
	r := newRun(ctx, c, "partition", []string{"lock", "shard"}, timingArgs()...)
	r.createItems(18)
	step("start three replicas running the lock loop and the sharded controller")
	r.start("r1", "r2", "r3")
	r.waitFor("the shards are spread over the three replicas and every item is reconciled", 90*time.Second, pollList, func() (bool, error) {
		if ok, err := r.spread(shards, "r1", "r2", "r3"); !ok {
			return false, err
		}
		return r.allReconciled()
	})

	others := func(victim string) []string {
		var out []string
		for _, n := range []string{"r1", "r2", "r3"} {
			if n != victim {
				out = append(out, n)
			}
		}
		return out
	}
	var (
		lk     *coordination.Lock
		victim string
		member string
		cutAt  time.Time
	)
	for attempt := 1; ; attempt++ {
		lk, victim = r.holderMidSection()
		member = lk.Spec.Holder
		step("cut %s (member %s, lock token %d) off from the store", victim, member, lk.Spec.Token)
		cutAt = time.Now()
		Expect(r.replica(victim).Disconnect(ctx)).To(Succeed())
		time.Sleep(200 * time.Millisecond) // let a write already on the wire land
		entries, err := r.ledger()
		Expect(err).NotTo(HaveOccurred())
		if s := sectionOf(entries, lk.Spec.Token); s != nil && !s.Complete {
			break
		}
		// It finished its section just before the cut: try again.
		Expect(r.replica(victim).Reconnect(ctx)).To(Succeed())
		Expect(attempt).To(BeNumerically("<", 5), "could not cut a holder off in the middle of its critical section")
		r.waitFor("the replica is back", 60*time.Second, pollList, func() (bool, error) {
			return r.spread(shards, "r1", "r2", "r3")
		})
	}

	took := r.waitAll(cutAt, 60*time.Second, pollMeasure,
		milestone{"the others delete its Member", func() (bool, error) {
			live, err := r.members()
			return err == nil && !live[member], err
		}},
		milestone{"another replica holds the lock and writes the ledger", func() (bool, error) {
			l, err := r.lock()
			if l == nil || l.Spec.Token <= lk.Spec.Token || l.Spec.Holder == member || l.Spec.Holder == "" {
				return false, err
			}
			entries, err := r.ledger()
			return len(entries) > 0 && entries[len(entries)-1].Token > lk.Spec.Token, err
		}},
		milestone{"the others hold all its shards", func() (bool, error) {
			return r.spread(shards, others(victim)...)
		}},
	)
	measure("network cut → member deleted by the others", took[0])
	measure("network cut → lock held and ledger written by another replica", took[1])
	measure("network cut → its shards held by the others", took[2])

	step("the work of its former shards goes on: change every item")
	for i := 0; i < 18; i++ {
		Expect(r.bumpItem(fmt.Sprintf("item-%03d", i), 1000)).To(Succeed())
	}
	r.waitFor("every item is reconciled by the others", 60*time.Second, pollList, r.allReconciled)
	for _, it := range mustList[api.Item](r) {
		Expect(it.Status.Replica).NotTo(Equal(victim), "item %s reconciled by the cut-off replica", it.Name)
	}

	step("reconnect %s", victim)
	Expect(r.replica(victim).Reconnect(ctx)).To(Succeed())
	reconnectedAt := time.Now()
	r.waitFor("the reconnected replica registers anew and claims nothing it lost", 90*time.Second, pollList, func() (bool, error) {
		reps, err := r.reports()
		if err != nil {
			return false, err
		}
		rep := reps[victim]
		if rep == nil || rep.Status.Member == "" || rep.Status.Member == member || rep.Status.UpdatedNanos < reconnectedAt.UnixNano() {
			return false, nil
		}
		if rep.Status.LockToken == lk.Spec.Token {
			return false, fmt.Errorf("%s still believes it holds lock token %d", victim, lk.Spec.Token)
		}
		holders, err := r.shardHolders(shards)
		if err != nil {
			return false, err
		}
		for _, s := range rep.Status.Shards {
			if holders[s] != rep.Status.Member {
				return false, fmt.Errorf("%s claims shard %d, held by %q", victim, s, holders[s])
			}
		}
		return true, nil
	})
	measure("reconnect → the replica re-registered and dropped what it lost", time.Since(reconnectedAt))

	// It was cut in the middle of its section and retries its next write
	// until the store answers: that write must be refused.
	r.waitFor("the reconnected replica's stale ledger write is refused", 60*time.Second, pollList, func() (bool, error) {
		rs, err := list[api.Refusal](r)
		for _, x := range rs {
			if x.Spec.Replica == victim && x.Spec.Token == lk.Spec.Token {
				return true, nil
			}
		}
		return false, err
	})

	step("the shards are spread over all three again and the work goes on")
	r.waitFor("the shards are spread over the three replicas again", 90*time.Second, pollList, func() (bool, error) {
		return r.spread(shards, "r1", "r2", "r3")
	})
	for i := 0; i < 18; i++ {
		Expect(r.bumpItem(fmt.Sprintf("item-%03d", i), 1000)).To(Succeed())
	}
	r.waitFor("every item is reconciled", 60*time.Second, pollList, r.allReconciled)

	step("check: no stale write accepted after a newer holder's, in the Ledger and in the Items")
	entries, err := r.ledger()
	Expect(err).NotTo(HaveOccurred())
	sections, problems := CheckLedger(entries)
	Expect(problems).To(BeEmpty())
	records := r.records()
	Expect(CheckItemWrites(records)).To(BeEmpty())
	overlaps := CheckOverlaps(records)
	for _, o := range overlaps {
		// While cut off, a replica may still be inside a reconcile that
		// its successor also runs; its write is then refused or lands
		// before the successor's (CheckItemWrites). Only the cut-off
		// replica may be part of such an overlap.
		Expect(o.Involves(victim)).To(BeTrue(), "an overlap without the cut-off replica: %s", o)
	}
	fmt.Fprintf(GinkgoWriter, "critical sections: %d, reconciles: %d, wall-clock overlaps involving the cut-off replica: %d, refusals: %d\n",
		len(sections), len(records), len(overlaps), len(r.refusals()))
	noteTokensAcrossMembers(records)
	r.noteFenceMode()
}

// rollingRestart restarts three sharded replicas one after the other while
// the Items keep changing, then checks that every Item was reconciled and
// that no two reconciles of one key ever overlapped.
func rollingRestart(ctx context.Context, c cluster.Cluster) {
	const items = 18
	r := newRun(ctx, c, "rolling", []string{"shard"}, timingArgs()...)
	r.createItems(items)
	step("start three replicas of the sharded controller")
	names := []string{"r1", "r2", "r3"}
	r.start(names...)
	r.waitFor("the shards are spread over the three replicas and every item is reconciled", 90*time.Second, pollList, func() (bool, error) {
		if ok, err := r.spread(shards, names...); !ok {
			return false, err
		}
		return r.allReconciled()
	})

	step("write load: change an item every 200ms")
	load := r.startLoad(items, 200*time.Millisecond)
	for _, name := range names {
		var others []string
		for _, n := range names {
			if n != name {
				others = append(others, n)
			}
		}
		step("stop %s (SIGTERM)", name)
		at := time.Now()
		Expect(r.replica(name).Stop(ctx)).To(Succeed())
		Expect(r.replica(name).Exited()).To(BeTrue())
		stopped := time.Since(at)
		r.waitFor("the others hold every shard", 60*time.Second, pollMeasure, func() (bool, error) {
			return r.spread(shards, others...)
		})
		measure(fmt.Sprintf("rolling restart: %s stopped", name), stopped)
		measure(fmt.Sprintf("rolling restart: SIGTERM to %s → its shards held by the others", name), time.Since(at))
		step("start %s again", name)
		r.replace(name)
		r.waitFor("the shards are spread over the three replicas again", 90*time.Second, pollList, func() (bool, error) {
			return r.spread(shards, names...)
		})
	}
	updates := load.stop()

	step("check: every item reconciled, no key reconciled by two replicas at once")
	r.waitFor("every item is reconciled", 90*time.Second, pollList, r.allReconciled)
	// The replicas write their records every second.
	time.Sleep(2500 * time.Millisecond)
	records := r.records()
	Expect(Strings(CheckOverlaps(records))).To(BeEmpty())
	Expect(CheckItemWrites(records)).To(BeEmpty())
	Expect(r.refusals()).To(BeEmpty(), "a refused write means a replica acted on a shard its successor had already written")
	perReplica := map[string]int{}
	written := 0
	for _, rec := range records {
		perReplica[rec.Replica]++
		if rec.Outcome == api.OutcomeWritten {
			written++
		}
	}
	fmt.Fprintf(GinkgoWriter, "spec updates: %d, reconciles: %d (%d written), per replica: %v, overlaps: 0\n", updates, len(records), written, perReplica)
	noteTokensAcrossMembers(records)
	AddReportEntry("reconciles checked", len(records))
	r.noteFenceMode()
	Expect(written).To(BeNumerically(">=", items), "every item was written at least once")
}

// noteTokensAcrossMembers prints the shard tokens one process used under
// two Members (see TokensAcrossMembers).
func noteTokensAcrossMembers(records []Record) {
	for _, t := range TokensAcrossMembers(records) {
		fmt.Fprintf(GinkgoWriter, "NOTE shard token kept across a new registration: %s\n", t)
	}
}

// loadFeed changes random Items at a steady rate.
type loadFeed struct {
	stopCh  chan struct{}
	done    chan struct{}
	updates int
}

func (r *run) startLoad(items int, every time.Duration) *loadFeed {
	f := &loadFeed{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		defer GinkgoRecover()
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-f.stopCh:
				return
			case <-r.ctx.Done():
				return
			case <-t.C:
			}
			// A fixed stride visits every item, in an order that mixes
			// the shards.
			name := fmt.Sprintf("item-%03d", (i*7)%items)
			if err := r.bumpItem(name, 1); err != nil {
				fmt.Fprintf(GinkgoWriter, "load: %s: %v\n", name, err)
				continue
			}
			f.updates++
		}
	}()
	DeferCleanup(func() { f.stop() })
	return f
}

func (f *loadFeed) stop() int {
	select {
	case <-f.stopCh:
	default:
		close(f.stopCh)
	}
	<-f.done
	return f.updates
}
