package coordination

import (
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// ShardingConfig configures a Sharder.
type ShardingConfig struct {
	// Store holds the shard Leases.
	Store store.Store
	// Membership is this process's membership: the live members of its
	// group share the shards.
	Membership *Membership
	// Name names the sharded controller; shard leases are
	// Name-shard-<i>.
	Name string
	// Shards is the fixed number of shards; default 32.
	Shards int
	// LeaseDuration: a shard whose holder stops renewing for this long
	// (on the observer's clock) is taken over; default 15s.
	LeaseDuration time.Duration
	// RebalanceInterval is how often assignments are re-checked besides
	// membership changes; default LeaseDuration/3.
	RebalanceInterval time.Duration
	// Logger receives shard movements.
	Logger logr.Logger
	// Metrics, if set, records shards owned.
	Metrics *Metrics
}

// Sharder runs a controller active/active: keys hash into a fixed number of
// shards, the live members share the shards (each holding a fenced Lease
// per shard), and each replica reconciles only the keys of shards it
// holds. A shard is handed over only after its in-flight reconciles have
// finished — its lease is renewed meanwhile — or, if its holder stopped,
// after its lease expired. It is a manager runnable that runs on every
// replica; it keeps the Membership's registration until its shards are
// handed over, so that stopping a replica's manager hands its work over
// cleanly.
type Sharder struct {
	cfg   ShardingConfig
	clock *versionClock
	kick  chan struct{} // a draining shard has no reconciles left

	mu       sync.Mutex
	held     map[int]*Lease    // shard → the lease as last written
	renewed  map[int]time.Time // shard → start of this replica's last write of its lease
	draining map[int]bool      // held shards that take no new work
	inflight map[int]int
	requeue  func(shard int)
}

// NewSharder validates cfg and returns a Sharder.
func NewSharder(cfg ShardingConfig) (*Sharder, error) {
	if cfg.Store == nil {
		return nil, errs.Invalid("store", "store is required")
	}
	if cfg.Membership == nil {
		return nil, errs.Invalid("membership", "membership is required")
	}
	if err := meta.ValidateName("name", cfg.Name+"-shard-0"); err != nil {
		return nil, err
	}
	if cfg.Shards == 0 {
		cfg.Shards = 32
	}
	if cfg.Shards < 1 || cfg.Shards > 4096 {
		return nil, errs.Invalid("shards", "shards must be between 1 and 4096, got %d", cfg.Shards)
	}
	if err := meta.ValidateName("name", fmt.Sprintf("%s-shard-%d", cfg.Name, cfg.Shards-1)); err != nil {
		return nil, err
	}
	if cfg.LeaseDuration < 0 {
		return nil, errs.Invalid("leaseDuration", "lease duration must not be negative")
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RebalanceInterval < 0 || cfg.RebalanceInterval > cfg.LeaseDuration/2 {
		return nil, errs.Invalid("rebalanceInterval", "rebalance interval %v must be at most half the lease duration %v", cfg.RebalanceInterval, cfg.LeaseDuration)
	}
	if cfg.RebalanceInterval == 0 {
		cfg.RebalanceInterval = cfg.LeaseDuration / 3
	}
	if err := requireKind(cfg.Store, KindLease); err != nil {
		return nil, err
	}
	if cfg.Logger.GetSink() == nil {
		cfg.Logger = logr.Discard()
	}
	return &Sharder{cfg: cfg, clock: newVersionClock(), kick: make(chan struct{}, 1),
		held: map[int]*Lease{}, renewed: map[int]time.Time{}, draining: map[int]bool{}, inflight: map[int]int{}}, nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica takes part.
func (s *Sharder) NeedLeaderElection() bool { return false }

// ShardOf returns the shard of key among n shards (FNV-1a of
// "namespace/name").
func ShardOf(key meta.Key, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key.Namespace))
	_, _ = h.Write([]byte{'/'})
	_, _ = h.Write([]byte(key.Name))
	return int(h.Sum32() % uint32(n))
}

// Held returns the shards this replica holds and is not handing over.
func (s *Sharder) Held() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for i := 0; i < s.cfg.Shards; i++ {
		if s.held[i] != nil && !s.draining[i] {
			out = append(out, i)
		}
	}
	return out
}

type fenceKey struct{}

// FenceFrom returns the write option that fences a write with the shard
// lease of the reconcile in ctx; outside a sharded reconcile it is an
// option that does nothing. Writes guarded by it fail with errs.Conflict
// once another replica has taken the shard over and written the same
// object.
func FenceFrom(ctx context.Context) store.WriteOption {
	f, _ := ctx.Value(fenceKey{}).(*store.Fence)
	if f == nil {
		return func(*store.WriteOptions) {}
	}
	return store.WithFence(f.Name, f.Token)
}

// Wrap returns a reconciler that runs r only for keys of shards this
// replica holds, counting in-flight reconciles per shard so that a shard
// is released only when they are done. Keys of other shards are dropped:
// the replica that holds their shard reconciles them, and a replica that
// takes a shard over requeues its keys (Bind).
func (s *Sharder) Wrap(r controller.Reconciler) controller.Reconciler {
	return controller.Func(func(ctx context.Context, req controller.Request) (controller.Result, error) {
		shard := ShardOf(req, s.cfg.Shards)
		s.mu.Lock()
		l := s.held[shard]
		if l == nil || s.draining[shard] {
			s.mu.Unlock()
			return controller.Result{}, nil
		}
		if time.Since(s.renewed[shard]) > s.cfg.LeaseDuration*2/3 {
			// The lease may have expired on the others' clocks (this
			// process was paused or cut off): do not act until a renewal
			// succeeds; if it fails, the new holder reconciles the key.
			s.mu.Unlock()
			return controller.Result{RequeueAfter: s.cfg.RebalanceInterval}, nil
		}
		s.inflight[shard]++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inflight[shard]--
			drained := s.draining[shard] && s.inflight[shard] == 0
			s.mu.Unlock()
			if drained {
				select {
				case s.kick <- struct{}{}:
				default:
				}
			}
		}()
		ctx = context.WithValue(ctx, fenceKey{}, &store.Fence{Name: "Lease/" + l.Key().String(), Token: l.Spec.LeaseTransitions})
		return r.Reconcile(ctx, req)
	})
}

// Bind makes the Sharder enqueue, into c, every key of a shard it
// acquires (and, at once, of the shards it already holds); keys lists the
// candidate keys (usually every cached object of the controller's kind).
func (s *Sharder) Bind(c *controller.Controller, keys func() []meta.Key) {
	requeue := func(shards ...int) {
		want := map[int]bool{}
		for _, sh := range shards {
			want[sh] = true
		}
		for _, k := range keys() {
			if want[ShardOf(k, s.cfg.Shards)] {
				c.Queue().Add(k)
			}
		}
	}
	s.mu.Lock()
	s.requeue = func(shard int) { requeue(shard) }
	var held []int
	for i, l := range s.held {
		if l != nil && !s.draining[i] {
			held = append(held, i)
		}
	}
	s.mu.Unlock()
	if len(held) > 0 {
		requeue(held...)
	}
}

func (s *Sharder) leaseKey(shard int) meta.Key {
	return meta.Key{Namespace: s.cfg.Membership.cfg.Namespace, Name: fmt.Sprintf("%s-shard-%d", s.cfg.Name, shard)}
}

// Start balances shards until ctx ends, then hands every held shard over
// once its in-flight reconciles finished, renewing it meanwhile.
func (s *Sharder) Start(ctx context.Context) error {
	release := s.cfg.Membership.hold()
	defer release()
	changes, unsubscribe := s.cfg.Membership.subscribe()
	defer unsubscribe()
	t := time.NewTicker(s.cfg.RebalanceInterval)
	defer t.Stop()
	defer s.releaseAll()
	var last *Session
	for {
		sess, err := s.cfg.Membership.WaitSession(ctx)
		if err != nil {
			return nil
		}
		if last != nil && sess != last {
			// The session ended while balancing (and the select below
			// took another case): leases taken under it are not ours.
			s.dropAll()
		}
		last = sess
		s.balance(ctx, sess)
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
			s.dropAll() // our member is gone: our leases are no longer ours
		case <-changes:
		case <-s.kick:
		case <-t.C:
		}
	}
}

// assigned returns the shards the live members' sorted order gives to
// self: shard i goes to member i mod len(live).
func (s *Sharder) assigned(self string) map[int]bool {
	live := s.cfg.Membership.Live()
	idx := -1
	for i, m := range live {
		if m == self {
			idx = i
		}
	}
	out := map[int]bool{}
	if idx < 0 {
		return out
	}
	for i := 0; i < s.cfg.Shards; i++ {
		if i%len(live) == idx {
			out[i] = true
		}
	}
	return out
}

func (s *Sharder) balance(ctx context.Context, sess *Session) {
	want := s.assigned(sess.Name)
	for shard := 0; shard < s.cfg.Shards; shard++ {
		s.mu.Lock()
		l, draining := s.held[shard], s.draining[shard]
		if l != nil && l.Spec.HolderIdentity != sess.Name {
			// Taken under an earlier session: no longer ours.
			delete(s.held, shard)
			delete(s.draining, shard)
			l = nil
		}
		if l != nil && want[shard] && draining {
			delete(s.draining, shard) // wanted again: keep it
		}
		requeue := s.requeue
		s.mu.Unlock()
		switch {
		case l != nil && !want[shard]:
			s.handOver(ctx, shard)
		case l != nil:
			s.renew(ctx, shard, l)
			if draining && requeue != nil {
				requeue(shard) // keys dropped while it was draining
			}
		case want[shard]:
			s.tryTake(ctx, sess, shard)
		}
	}
	s.cfg.Metrics.setShards(s.cfg.Name, len(s.Held()))
}

func (s *Sharder) tryTake(ctx context.Context, sess *Session, shard int) {
	key := s.leaseKey(shard)
	now := meta.Now()
	cur := &Lease{}
	start := time.Now()
	err := s.cfg.Store.Get(ctx, key, cur)
	if errs.IsNotFound(err) {
		l := &Lease{ObjectMeta: meta.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
			Spec: LeaseSpec{HolderIdentity: sess.Name, LeaseDurationMillis: millis(s.cfg.LeaseDuration), AcquireTime: now, RenewTime: now, LeaseTransitions: 1}}
		if err := s.cfg.Store.Create(ctx, l); err == nil {
			s.took(shard, l, start)
		}
		return
	}
	if err != nil {
		return
	}
	if h := cur.Spec.HolderIdentity; h != "" && h != sess.Name {
		alive, err := s.cfg.Membership.Alive(ctx, h, "")
		if err != nil {
			return
		}
		if alive && s.clock.expiresIn(cur, fromMillis(cur.Spec.LeaseDurationMillis)) > 0 {
			return // held by a live member that keeps renewing
		}
	}
	next := meta.DeepCopy(cur)
	next.Spec = LeaseSpec{HolderIdentity: sess.Name, LeaseDurationMillis: millis(s.cfg.LeaseDuration),
		AcquireTime: now, RenewTime: now, LeaseTransitions: cur.Spec.LeaseTransitions + 1}
	if err := s.cfg.Store.Update(ctx, next); err == nil {
		s.took(shard, next, start)
	}
}

func (s *Sharder) took(shard int, l *Lease, start time.Time) {
	s.clock.observe(l)
	s.mu.Lock()
	s.held[shard] = l
	s.renewed[shard] = start
	delete(s.draining, shard)
	requeue := s.requeue
	s.mu.Unlock()
	s.cfg.Logger.Info("took shard", "controller", s.cfg.Name, "shard", shard, "token", l.Spec.LeaseTransitions)
	if requeue != nil {
		requeue(shard)
	}
}

// renew writes the lease of a held shard; if another replica took it, the
// shard is dropped.
func (s *Sharder) renew(ctx context.Context, shard int, l *Lease) {
	next := meta.DeepCopy(l)
	next.Spec.RenewTime = meta.Now()
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RebalanceInterval)
	err := s.cfg.Store.Update(rctx, next)
	cancel()
	switch {
	case err == nil:
		s.mu.Lock()
		if s.held[shard] == l {
			s.held[shard] = next
			s.renewed[shard] = start
		}
		s.mu.Unlock()
	case errs.IsConflict(err), errs.IsNotFound(err):
		s.cfg.Logger.Info("lost shard", "controller", s.cfg.Name, "shard", shard)
		s.mu.Lock()
		if s.held[shard] == l {
			delete(s.held, shard)
			delete(s.draining, shard)
		}
		s.mu.Unlock()
	}
}

// handOver stops taking new work for shard; once its in-flight reconciles
// finished it releases the lease, until then it renews it. It reports
// whether the shard is no longer held.
func (s *Sharder) handOver(ctx context.Context, shard int) bool {
	s.mu.Lock()
	l := s.held[shard]
	if l == nil {
		s.mu.Unlock()
		return true
	}
	s.draining[shard] = true
	if s.inflight[shard] > 0 {
		s.mu.Unlock()
		s.renew(ctx, shard, l)
		s.mu.Lock()
		gone := s.held[shard] == nil
		s.mu.Unlock()
		return gone
	}
	delete(s.held, shard)
	delete(s.draining, shard)
	s.mu.Unlock()
	next := meta.DeepCopy(l)
	next.Spec.HolderIdentity = ""
	next.Spec.RenewTime = meta.Now()
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RebalanceInterval)
	defer cancel()
	if err := s.cfg.Store.Update(rctx, next); err != nil {
		s.cfg.Logger.Info("could not release shard; it will expire", "controller", s.cfg.Name, "shard", shard, "error", err.Error())
		return true
	}
	s.cfg.Logger.Info("handed shard over", "controller", s.cfg.Name, "shard", shard)
	return true
}

// releaseAll hands every held shard over, renewing those with reconciles
// in flight until they finish.
func (s *Sharder) releaseAll() {
	ctx := context.Background()
	t := time.NewTicker(s.cfg.RebalanceInterval)
	defer t.Stop()
	for {
		s.mu.Lock()
		shards := make([]int, 0, len(s.held))
		for i := range s.held {
			s.draining[i] = true
			shards = append(shards, i)
		}
		s.mu.Unlock()
		left := 0
		for _, i := range shards {
			if !s.handOver(ctx, i) {
				left++
			}
		}
		s.cfg.Metrics.setShards(s.cfg.Name, 0)
		if left == 0 {
			return
		}
		select {
		case <-s.kick:
		case <-t.C:
		}
	}
}

// dropAll forgets every held shard: the session that held them ended, so
// the others may take them at once.
func (s *Sharder) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.held)
	clear(s.draining)
}
