package coordination

import (
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Kind names of the coordination resources.
const (
	KindLease    = "Lease"
	KindMember   = "Member"
	KindLock     = "Lock"
	KindProvider = "Provider"
)

// AddToScheme registers Lease, Member, Lock and Provider.
func AddToScheme(s *store.Scheme) error {
	if _, err := store.Register[Lease](s, KindLease); err != nil {
		return err
	}
	if _, err := store.Register[Member](s, KindMember); err != nil {
		return err
	}
	if _, err := store.Register[Lock](s, KindLock); err != nil {
		return err
	}
	_, err := store.Register[Provider](s, KindProvider)
	return err
}

// Lease is a leadership record: who holds it, for how long, and how many
// times it changed hands.
type Lease struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is the lease's state; holders write it with compare-and-swap.
	Spec LeaseSpec `json:"spec"`
}

// LeaseSpec is a Lease's state.
type LeaseSpec struct {
	// HolderIdentity is the holder (a Member name); empty when released.
	HolderIdentity string `json:"holderIdentity,omitempty"`
	// LeaseDurationMillis is how long others wait, on their own clocks,
	// after the last change before taking the lease over.
	LeaseDurationMillis int64 `json:"leaseDurationMillis,omitempty"`
	// AcquireTime is when the current holder acquired it (informational).
	AcquireTime time.Time `json:"acquireTime,omitzero" bson:"acquireTime,omitempty"`
	// RenewTime is when the holder last renewed it (informational).
	RenewTime time.Time `json:"renewTime,omitzero" bson:"renewTime,omitempty"`
	// LeaseTransitions counts acquisitions; it is the holder's fencing
	// token.
	LeaseTransitions int64 `json:"leaseTransitions,omitempty"`
}

// Member is a live process.
type Member struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec describes the process.
	Spec MemberSpec `json:"spec"`
}

// MemberSpec describes a process; it changes on every renewal.
type MemberSpec struct {
	// Group is the name the process registered under (its Member name is
	// Group-<random id>).
	Group string `json:"group"`
	// Hostname and PID identify the process for humans.
	Hostname string `json:"hostname,omitempty"`
	PID      int    `json:"pid,omitempty"`
	// LeaseDurationMillis is how long others wait, on their own clocks,
	// after the last renewal before deleting the Member.
	LeaseDurationMillis int64 `json:"leaseDurationMillis"`
	// RenewTime is when the process last renewed (informational).
	RenewTime time.Time `json:"renewTime,omitzero" bson:"renewTime,omitempty"`
	// Renewals counts renewals, so that every renewal is a change.
	Renewals int64 `json:"renewals,omitempty"`
}

// Lock is a mutual-exclusion lock with a fencing token.
type Lock struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is the lock's state.
	Spec LockSpec `json:"spec"`
}

// LockSpec is a Lock's state.
type LockSpec struct {
	// Holder is the holding Member's name; empty when free.
	Holder string `json:"holder,omitempty"`
	// HolderUID is the holding Member's uid.
	HolderUID string `json:"holderUID,omitempty"`
	// Token grows by one on every acquisition: the fencing token.
	Token int64 `json:"token"`
	// TTLMillis, if positive, lets others take the lock when the holder
	// has not renewed it for this long (on their clocks). Zero: held until
	// released or the holder's Member dies.
	TTLMillis int64 `json:"ttlMillis,omitempty"`
	// AcquireTime and RenewTime are informational.
	AcquireTime time.Time `json:"acquireTime,omitzero" bson:"acquireTime,omitempty"`
	RenewTime   time.Time `json:"renewTime,omitzero" bson:"renewTime,omitempty"`
}

// Provider registers a Member as a provider of a service key.
type Provider struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec says what is provided.
	Spec ProviderSpec `json:"spec"`
}

// ProviderSpec says what a Provider provides.
type ProviderSpec struct {
	// Key names the service.
	Key string `json:"key"`
	// Member is the providing Member's name.
	Member string `json:"member"`
	// Data is free-form (addresses, versions).
	Data map[string]string `json:"data,omitempty"`
}

func millis(d time.Duration) int64 { return d.Milliseconds() }

func fromMillis(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// requireKind fails with FailedPrecondition when st's scheme lacks kind,
// that is when AddToScheme was not called on it.
func requireKind(st store.Store, kind string) error {
	if _, err := st.Scheme().Kind(kind); err != nil {
		return errs.Wrap(errs.FailedPrecondition, err, "the store's scheme lacks the coordination kinds (coordination.AddToScheme)")
	}
	return nil
}
