package coordination

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capstanhq/capstan/internal/runtimetest"
	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/handler"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/source"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/memory"
)

// item is the kind the sharded test controllers reconcile.
type item struct {
	meta.ObjectMeta `json:"metadata"`
	Spec            struct {
		N int `json:"n"`
	} `json:"spec"`
}

const itemKind = "Item"

func newShardStore(t testing.TB) *memory.Store {
	t.Helper()
	s := store.NewScheme()
	if err := AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	store.MustRegister[item](s, itemKind)
	return runtimetest.Memory(t, s)
}

func createItems(t testing.TB, st store.Store, names ...string) []meta.Key {
	t.Helper()
	var keys []meta.Key
	for _, n := range names {
		it := &item{ObjectMeta: meta.ObjectMeta{Namespace: testNS, Name: n}}
		if err := st.Create(context.Background(), it); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, it.Key())
	}
	return keys
}

// tracker sees every reconcile of every replica: it proves that no key is
// reconciled by two replicas at once and records who reconciled what.
type tracker struct {
	mu         sync.Mutex
	current    map[meta.Key]string
	reconciled map[meta.Key]string // since the last reset: key → replica
	violations []string
}

func newTracker() *tracker {
	return &tracker{current: map[meta.Key]string{}, reconciled: map[meta.Key]string{}}
}

func (tr *tracker) enter(replica string, k meta.Key) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if other, ok := tr.current[k]; ok {
		tr.violations = append(tr.violations, fmt.Sprintf("%s reconciles %s while %s does", replica, k, other))
		return
	}
	tr.current[k] = replica
}

func (tr *tracker) leave(replica string, k meta.Key) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.current[k] == replica {
		delete(tr.current, k)
	}
	tr.reconciled[k] = replica
}

func (tr *tracker) reset() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	clear(tr.reconciled)
}

func (tr *tracker) check(t testing.TB) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.violations) > 0 {
		t.Fatalf("%d overlapping reconciles, first: %s", len(tr.violations), tr.violations[0])
	}
}

// allReconciled waits until every key was reconciled since the last reset.
func (tr *tracker) allReconciled(t testing.TB, keys []meta.Key, what string) {
	t.Helper()
	eventually(t, what, func() (bool, string) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		var missing []string
		for _, k := range keys {
			if _, ok := tr.reconciled[k]; !ok {
				missing = append(missing, k.Name)
			}
		}
		return len(missing) == 0, fmt.Sprintf("not reconciled: %v", missing)
	})
}

// replica is one process running a sharded controller: membership,
// sharder, cache and controller, stopped together as a manager would.
type replica struct {
	name   string
	m      *Membership
	s      *Sharder
	cancel context.CancelFunc
	errs   chan error
	n      int
}

type shardOpts struct {
	shards      int
	lease       time.Duration
	rebalance   time.Duration
	workers     int
	memberStore store.Store // default: the shared store
}

func startReplica(t testing.TB, st store.Store, name string, o shardOpts, reconcile func(ctx context.Context, req controller.Request) (controller.Result, error)) *replica {
	t.Helper()
	mst := o.memberStore
	if mst == nil {
		mst = st
	}
	m, err := NewMembership(MembershipConfig{Store: mst, Namespace: testNS, Group: "shards", LeaseDuration: memberLease, RenewInterval: memberRenew})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSharder(ShardingConfig{Store: st, Membership: m, Name: "items", Shards: o.shards, LeaseDuration: o.lease, RebalanceInterval: o.rebalance})
	if err != nil {
		t.Fatal(err)
	}
	cache := source.NewCache(st, source.CacheOptions{Namespace: testNS})
	no := false
	c, err := controller.New("items-"+name, s.Wrap(controller.Func(reconcile)), controller.Options{
		MaxConcurrentReconciles: max(o.workers, 1), NeedLeaderElection: &no})
	if err != nil {
		t.Fatal(err)
	}
	src, err := source.Kind(cache, itemKind, handler.EnqueueRequestForObject{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Watch(src); err != nil {
		t.Fatal(err)
	}
	inf, err := cache.Informer(itemKind)
	if err != nil {
		t.Fatal(err)
	}
	s.Bind(c, func() []meta.Key {
		var keys []meta.Key
		for _, o := range inf.List(testNS, nil) {
			keys = append(keys, meta.KeyOf(o))
		}
		return keys
	})
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{name: name, m: m, s: s, cancel: cancel, errs: make(chan error, 4)}
	for _, st := range []starter{cache, m, s, c} {
		r.n++
		go func() { r.errs <- st.Start(ctx) }()
	}
	t.Cleanup(func() { r.stop(t) })
	runtimetest.Recv(t, m.Ready(), "membership of "+name)
	return r
}

// stop stops the whole replica and waits for everything to return.
func (r *replica) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	for ; r.n > 0; r.n-- {
		if err := runtimetest.Recv(t, r.errs, r.name+" to stop"); err != nil {
			t.Errorf("%s: %v", r.name, err)
		}
	}
}

// checkSplit waits until the replicas hold every shard between them, each
// ⌊n/m⌋ or ⌈n/m⌉, with the lease records agreeing.
func checkSplit(t testing.TB, st store.Store, shards int, rs ...*replica) {
	t.Helper()
	lo, hi := shards/len(rs), (shards+len(rs)-1)/len(rs)
	eventually(t, fmt.Sprintf("an even split over %d replicas", len(rs)), func() (bool, string) {
		owner := map[int]string{}
		var counts []string
		for _, r := range rs {
			held := r.s.Held()
			counts = append(counts, fmt.Sprintf("%s:%v", r.name, held))
			if len(held) < lo || len(held) > hi {
				return false, strings.Join(counts, " ")
			}
			for _, sh := range held {
				if o, dup := owner[sh]; dup {
					return false, fmt.Sprintf("shard %d held by %s and %s", sh, o, r.name)
				}
				owner[sh] = r.m.Session().Name
			}
		}
		if len(owner) != shards {
			return false, strings.Join(counts, " ")
		}
		for sh, o := range owner {
			l := &Lease{}
			if err := st.Get(context.Background(), meta.Key{Namespace: testNS, Name: fmt.Sprintf("items-shard-%d", sh)}, l); err != nil {
				return false, err.Error()
			}
			if l.Spec.HolderIdentity != o {
				return false, fmt.Sprintf("lease of shard %d names %q, held by %s", sh, l.Spec.HolderIdentity, o)
			}
		}
		return true, ""
	})
}

func TestSharderConfigValidation(t *testing.T) {
	st := newShardStore(t)
	m, err := NewMembership(MembershipConfig{Store: st, Namespace: testNS, Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	ok := ShardingConfig{Store: st, Membership: m, Name: "ctl", Shards: 8, LeaseDuration: time.Second, RebalanceInterval: 100 * time.Millisecond}
	for _, tc := range []struct {
		name  string
		mod   func(*ShardingConfig)
		field string
	}{
		{"no store", func(c *ShardingConfig) { c.Store = nil }, "store"},
		{"no membership", func(c *ShardingConfig) { c.Membership = nil }, "membership"},
		{"bad name", func(c *ShardingConfig) { c.Name = "Bad_Name" }, "name"},
		{"too long a name", func(c *ShardingConfig) { c.Name = strings.Repeat("n", 250) }, "name"},
		{"negative shards", func(c *ShardingConfig) { c.Shards = -1 }, "shards"},
		{"too many shards", func(c *ShardingConfig) { c.Shards = 5000 }, "shards"},
		{"negative lease", func(c *ShardingConfig) { c.LeaseDuration = -1 }, "leaseDuration"},
		{"rebalance over half the lease", func(c *ShardingConfig) { c.RebalanceInterval = 600 * time.Millisecond }, "rebalanceInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			if _, err := NewSharder(cfg); !errs.IsInvalidArgument(err) || errs.FieldOf(err) != tc.field {
				t.Fatalf("NewSharder = %v (field %q), want InvalidArgument on %q", err, errs.FieldOf(err), tc.field)
			}
		})
	}
	s, err := NewSharder(ShardingConfig{Store: st, Membership: m, Name: "ctl"})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Shards != 32 || s.cfg.LeaseDuration != DefaultLeaseDuration || s.cfg.RebalanceInterval != DefaultLeaseDuration/3 {
		t.Fatalf("defaults = %+v", s.cfg)
	}
}

func TestShardOf(t *testing.T) {
	counts := make([]int, 8)
	for i := range 8000 {
		sh := ShardOf(meta.Key{Namespace: "ns", Name: fmt.Sprintf("obj-%d", i)}, 8)
		if sh < 0 || sh >= 8 {
			t.Fatalf("shard %d out of range", sh)
		}
		counts[sh]++
	}
	for sh, n := range counts {
		if n < 800 || n > 1200 {
			t.Fatalf("shard %d got %d of 8000 keys: %v", sh, n, counts)
		}
	}
	a := meta.Key{Namespace: "a", Name: "b"}
	if ShardOf(a, 1<<20) != ShardOf(a, 1<<20) {
		t.Fatal("not deterministic")
	}
}

// Replicas join and leave while every key is reconciled continuously
// (slowly, so hand-overs meet reconciles in flight): the shards are
// always split evenly, every key keeps being reconciled, and no key is
// ever reconciled by two replicas at once.
func TestSharderJoinAndLeave(t *testing.T) {
	checkLeaks(t)
	st := newShardStore(t)
	var names []string
	for i := range 30 {
		names = append(names, fmt.Sprintf("item-%02d", i))
	}
	keys := createItems(t, st, names...)
	tr := newTracker()
	o := shardOpts{shards: 10, lease: 2 * time.Second, rebalance: 100 * time.Millisecond, workers: 3}
	rec := func(name string) func(context.Context, controller.Request) (controller.Result, error) {
		return func(ctx context.Context, req controller.Request) (controller.Result, error) {
			var wo store.WriteOptions
			FenceFrom(ctx)(&wo)
			if wo.Fence == nil || !strings.HasPrefix(wo.Fence.Name, "Lease/"+testNS+"/items-shard-") || wo.Fence.Token < 1 {
				t.Errorf("fence in a sharded reconcile = %+v", wo.Fence)
			}
			tr.enter(name, req)
			time.Sleep(10 * time.Millisecond)
			tr.leave(name, req)
			return controller.Result{RequeueAfter: 30 * time.Millisecond}, nil
		}
	}

	r1 := startReplica(t, st, "r1", o, rec("r1"))
	checkSplit(t, st, o.shards, r1)
	tr.allReconciled(t, keys, "every key by one replica")

	r2 := startReplica(t, st, "r2", o, rec("r2"))
	checkSplit(t, st, o.shards, r1, r2)
	tr.reset()
	tr.allReconciled(t, keys, "every key by two replicas")

	r3 := startReplica(t, st, "r3", o, rec("r3"))
	checkSplit(t, st, o.shards, r1, r2, r3)
	tr.reset()
	tr.allReconciled(t, keys, "every key by three replicas")
	tr.check(t)

	r1.stop(t)
	checkSplit(t, st, o.shards, r2, r3)
	tr.reset()
	tr.allReconciled(t, keys, "every key after r1 left")
	// Reconciled by the replica holding its shard.
	tr.mu.Lock()
	for k, who := range tr.reconciled {
		if who == "r1" {
			t.Errorf("%s reconciled by the stopped replica", k)
		}
	}
	tr.mu.Unlock()

	r2.stop(t)
	checkSplit(t, st, o.shards, r3)
	tr.reset()
	tr.allReconciled(t, keys, "every key after r2 left")
	tr.check(t)
}

// keyInShard returns a name whose key falls into shard.
func keyInShard(shard, shards int, prefix string) string {
	for i := 0; ; i++ {
		n := fmt.Sprintf("%s-%d", prefix, i)
		if ShardOf(meta.Key{Namespace: testNS, Name: n}, shards) == shard {
			return n
		}
	}
}

// A shard is handed over only after its reconciles in flight have
// finished, however long they take (longer than the lease: its holder
// keeps renewing it meanwhile), both when a replica joins and when the
// holder stops.
func TestSharderHandsOverAfterInFlight(t *testing.T) {
	checkLeaks(t)
	st := newShardStore(t)
	const shards = 2
	lease := memberLease
	o := shardOpts{shards: shards, lease: lease, rebalance: 100 * time.Millisecond, workers: 2}
	names := []string{keyInShard(0, shards, "k"), keyInShard(1, shards, "k")}
	keys := createItems(t, st, names...)
	tr := newTracker()
	var gateMu sync.Mutex
	gates := map[meta.Key]chan struct{}{}
	entered := make(chan meta.Key, 16)
	for _, k := range keys {
		gates[k] = make(chan struct{})
	}
	blocking := func(ctx context.Context, req controller.Request) (controller.Result, error) {
		tr.enter("r1", req)
		defer tr.leave("r1", req)
		entered <- req
		gateMu.Lock()
		g := gates[req]
		gateMu.Unlock()
		<-g
		return controller.Result{}, nil
	}
	recording := func(ctx context.Context, req controller.Request) (controller.Result, error) {
		tr.enter("r2", req)
		tr.leave("r2", req)
		return controller.Result{}, nil
	}
	r1 := startReplica(t, st, "r1", o, blocking)
	runtimetest.Recv(t, entered, "first reconcile")
	runtimetest.Recv(t, entered, "second reconcile")

	renewals := func(shard int) (int64, string) {
		l := &Lease{}
		if err := st.Get(context.Background(), meta.Key{Namespace: testNS, Name: fmt.Sprintf("items-shard-%d", shard)}, l); err != nil {
			return 0, ""
		}
		rv, _ := meta.ParseResourceVersion(l.ResourceVersion)
		return int64(rv), l.Spec.HolderIdentity
	}
	// heldPastLease waits until shard's lease has been rewritten by r1 for
	// longer than the lease duration, checking all along that r2 does not
	// hold it.
	heldPastLease := func(r2 *replica, shard int, what string) {
		t.Helper()
		writes := 0
		last, _ := renewals(shard)
		eventually(t, what, func() (bool, string) {
			if slices.Contains(r2.s.Held(), shard) {
				t.Fatalf("r2 took shard %d while r1 still reconciles it", shard)
			}
			rv, holder := renewals(shard)
			if holder != r1.m.Session().Name {
				t.Fatalf("shard %d's lease names %q", shard, holder)
			}
			if rv != last {
				writes++
				last = rv
			}
			return writes > int(2*lease/o.rebalance), fmt.Sprint(writes)
		})
	}

	// r2 joins: one shard is r2's now, but r1 is busy with its key.
	r2 := startReplica(t, st, "r2", o, recording)
	var moving int
	eventually(t, "r1 to start handing a shard over", func() (bool, string) {
		held := r1.s.Held()
		if len(held) == 1 {
			moving = 1 - held[0]
			return true, ""
		}
		return false, fmt.Sprint(held)
	})
	staying := 1 - moving
	heldPastLease(r2, moving, "r1 to keep the moving shard past its lease")
	if !slices.Equal(r1.s.Held(), []int{staying}) {
		t.Fatalf("r1 holds %v", r1.s.Held())
	}
	tr.reset()
	gateMu.Lock()
	close(gates[keys[moving]])
	gateMu.Unlock()
	eventually(t, "r2 to take the shard once free", func() (bool, string) {
		return slices.Equal(r2.s.Held(), []int{moving}), fmt.Sprint(r2.s.Held())
	})
	tr.allReconciled(t, keys[moving:moving+1], "r2 to reconcile the moved key (requeued on take)")

	// r1 stops while its other key is still in flight: its member stays
	// and its lease is renewed until the reconcile returns.
	r1Name := r1.m.Session().Name
	stopped := make(chan struct{})
	go func() { r1.stop(t); close(stopped) }()
	heldPastLease(r2, staying, "r1 to keep its last shard while stopping")
	if getMember(t, st, r1Name) == nil {
		t.Fatal("r1's member went away while its reconcile was in flight")
	}
	if done(stopped) {
		t.Fatal("r1 stopped with a reconcile in flight")
	}
	gateMu.Lock()
	close(gates[keys[staying]])
	gateMu.Unlock()
	runtimetest.Recv(t, stopped, "r1 to stop")
	if getMember(t, st, r1Name) != nil {
		t.Fatal("r1's member outlived it")
	}
	checkSplit(t, st, shards, r2)
	tr.check(t)
}

// A replica whose Member is deleted drops its shards at once; the others
// (and the replica, under its new session) share them again.
func TestSharderSessionLoss(t *testing.T) {
	checkLeaks(t)
	st := newShardStore(t)
	o := shardOpts{shards: 6, lease: 2 * time.Second, rebalance: 100 * time.Millisecond}
	noop := func(context.Context, controller.Request) (controller.Result, error) { return controller.Result{}, nil }
	r1 := startReplica(t, st, "r1", o, noop)
	r2 := startReplica(t, st, "r2", o, noop)
	checkSplit(t, st, o.shards, r1, r2)
	old := r1.m.Session()
	deleteMember(t, st, old.Name)
	runtimetest.Recv(t, old.Done(), "r1's session to end")
	eventually(t, "r1 back under a new name", func() (bool, string) {
		s := r1.m.Session()
		return s != nil && s.Name != old.Name && s.Err() == nil && !done(s.Done()), ""
	})
	checkSplit(t, st, o.shards, r1, r2)
}

func TestFenceFrom(t *testing.T) {
	var o store.WriteOptions
	FenceFrom(context.Background())(&o)
	if o.Fence != nil {
		t.Fatalf("fence outside a sharded reconcile: %+v", o.Fence)
	}
	ctx := context.WithValue(context.Background(), fenceKey{}, &store.Fence{Name: "Lease/ns/x-shard-1", Token: 4})
	FenceFrom(ctx)(&o)
	if o.Fence == nil || o.Fence.Name != "Lease/ns/x-shard-1" || o.Fence.Token != 4 {
		t.Fatalf("fence = %+v", o.Fence)
	}
}

// Leases taken under a session that has ended are not renewed under the
// next one (the loop may miss the end of a session that ends while it
// balances): they are taken afresh, under the new name and a new token.
func TestSharderDropsLeasesOfAnEndedSession(t *testing.T) {
	checkLeaks(t)
	st := newShardStore(t)
	p := newMembership(t, st, "shards")
	s, err := NewSharder(ShardingConfig{Store: st, Membership: p.m, Name: "items", Shards: 3, LeaseDuration: 2 * time.Second, RebalanceInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s1 := p.m.Session()
	s.balance(ctx, s1)
	if got := s.Held(); len(got) != 3 {
		t.Fatalf("held %v under the first session", got)
	}
	deleteMember(t, st, s1.Name)
	runtimetest.Recv(t, s1.Done(), "the first session to end")
	s2, err := p.m.WaitSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new member in the cache", func() (bool, string) {
		return slices.Equal(p.m.Live(), []string{s2.Name}), fmt.Sprint(p.m.Live())
	})
	s.balance(ctx, s2)
	for sh := range 3 {
		l := &Lease{}
		if err := st.Get(ctx, meta.Key{Namespace: testNS, Name: fmt.Sprintf("items-shard-%d", sh)}, l); err != nil {
			t.Fatal(err)
		}
		if l.Spec.HolderIdentity != s2.Name || l.Spec.LeaseTransitions != 2 {
			t.Errorf("shard %d: lease %+v, want held by %s with token 2", sh, l.Spec, s2.Name)
		}
	}
	if got := s.Held(); len(got) != 3 {
		t.Fatalf("held %v under the new session", got)
	}
}
