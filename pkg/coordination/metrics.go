package coordination

import (
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
// registered).
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
		reg.MustRegister(m.leader, m.transitions, m.lockWait, m.lockHold, m.lockWaiters, m.shards, m.members)
	}
	return m
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
