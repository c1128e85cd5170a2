package coordination

import (
	"errors"
	"math/rand/v2"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capstanhq/capstan/pkg/meta"
)

// Metrics are the coordination metrics of one registry. A nil *Metrics
// records nothing.
type Metrics struct {
	leader      *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	lockWait    *prometheus.HistogramVec
	lockHold    *prometheus.HistogramVec
	lockWaiters *prometheus.GaugeVec
	shards      *prometheus.GaugeVec
	members     prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered). Metrics reg already has from an earlier NewMetrics are
// shared, not registered twice.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "capstan_leader_is_leader",
			Help: "1 while this process holds the leader lease"}, []string{"lease"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "capstan_lease_transitions_total",
			Help: "Leases this process acquired"}, []string{"lease"}),
		lockWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "capstan_lock_wait_seconds",
			Help: "Time from Acquire to holding the lock", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"lock"}),
		lockHold: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "capstan_lock_hold_seconds",
			Help: "Time a lock was held", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}, []string{"lock"}),
		lockWaiters: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "capstan_lock_waiters",
			Help: "Acquire calls of this process blocked on a lock someone else holds"}, []string{"lock"}),
		shards: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "capstan_shards_owned",
			Help: "Shards of a sharded controller this process holds"}, []string{"controller"}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{Name: "capstan_members_live",
			Help: "Live members this process observes in its group"}),
	}
	if reg != nil {
		m.leader = register(reg, m.leader)
		m.transitions = register(reg, m.transitions)
		m.lockWait = register(reg, m.lockWait)
		m.lockHold = register(reg, m.lockHold)
		m.lockWaiters = register(reg, m.lockWaiters)
		m.shards = register(reg, m.shards)
		m.members = register(reg, m.members)
	}
	return m
}

// register registers c on reg, or returns the collector of the same
// description reg already has; anything else is a programming error.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if err != nil {
		panic(err)
	}
	return c
}

func (m *Metrics) setLeader(lease meta.Key, leading bool) {
	if m == nil {
		return
	}
	v := 0.0
	if leading {
		v = 1
	}
	m.leader.WithLabelValues(lease.String()).Set(v)
}

func (m *Metrics) transition(lease meta.Key) {
	if m != nil {
		m.transitions.WithLabelValues(lease.String()).Inc()
	}
}

func (m *Metrics) waited(lock meta.Key, seconds float64) {
	if m != nil {
		m.lockWait.WithLabelValues(lock.String()).Observe(seconds)
	}
}

func (m *Metrics) held(lock meta.Key, seconds float64) {
	if m != nil {
		m.lockHold.WithLabelValues(lock.String()).Observe(seconds)
	}
}

func (m *Metrics) waiting(lock meta.Key, delta float64) {
	if m != nil {
		m.lockWaiters.WithLabelValues(lock.String()).Add(delta)
	}
}

func (m *Metrics) setShards(controller string, n int) {
	if m != nil {
		m.shards.WithLabelValues(controller).Set(float64(n))
	}
}

func (m *Metrics) setMembers(n int) {
	if m != nil {
		m.members.Set(float64(n))
	}
}

func randInt63n(n int64) int64 { return rand.Int64N(n) }
