// Package api defines the resources of the coordination end-to-end tests:
// the work the test operator does (Job, Item, Ledger) and the records it
// leaves so that a checker can prove, after the fact, that no two replicas
// acted as holder of the same lease, lock or shard at once (Term,
// Refusal, ReconcileLog, Report).
//
// The operator (test/e2e/operator) writes them; the scenarios
// (test/e2e/scenarios) read them from the store and check them.
package api

import (
	"fmt"

	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Namespace holds every object of the end-to-end tests.
const Namespace = "e2e"

// Names of the coordination objects the operator uses.
const (
	// LeaderLease names the Lease of the leader-elected Job controller.
	LeaderLease = "e2e-leader"
	// LockName names the Lock of the lock loop.
	LockName = "e2e-lock"
	// LedgerName names the Ledger the lock holders append to.
	LedgerName = "ledger"
	// ShardedController names the sharded Item controller; its shard
	// Leases are ShardedController-shard-<i>.
	ShardedController = "items"
	// MemberGroup is the group every replica registers its Member in.
	MemberGroup = "e2e"
)

// Kind names.
const (
	KindJob          = "Job"
	KindTerm         = "Term"
	KindLedger       = "Ledger"
	KindRefusal      = "Refusal"
	KindItem         = "Item"
	KindReconcileLog = "ReconcileLog"
	KindReport       = "Report"
)

// AddToScheme registers the end-to-end kinds and the coordination kinds.
func AddToScheme(s *store.Scheme) error {
	if err := coordination.AddToScheme(s); err != nil {
		return err
	}
	for _, reg := range []func(*store.Scheme) error{
		func(s *store.Scheme) error { _, err := store.Register[Job](s, KindJob); return err },
		func(s *store.Scheme) error { _, err := store.Register[Term](s, KindTerm); return err },
		func(s *store.Scheme) error { _, err := store.Register[Ledger](s, KindLedger); return err },
		func(s *store.Scheme) error { _, err := store.Register[Refusal](s, KindRefusal); return err },
		func(s *store.Scheme) error { _, err := store.Register[Item](s, KindItem); return err },
		func(s *store.Scheme) error { _, err := store.Register[ReconcileLog](s, KindReconcileLog); return err },
		func(s *store.Scheme) error { _, err := store.Register[Report](s, KindReport); return err },
	} {
		if err := reg(s); err != nil {
			return err
		}
	}
	return nil
}

// NewScheme returns a scheme with AddToScheme's kinds.
func NewScheme() *store.Scheme {
	s := store.NewScheme()
	if err := AddToScheme(s); err != nil {
		panic(err) // programmer error: duplicate kinds
	}
	return s
}

// Job is a unit of work for the leader-elected controller: the leader marks
// it done, with its identity and fencing token.
type Job struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is empty: a Job only asks to be done.
	Spec JobSpec `json:"spec"`
	// Status says who did it.
	Status JobStatus `json:"status"`
}

// JobSpec is a Job's request.
type JobSpec struct {
	// Note is free-form, for humans reading the store.
	Note string `json:"note,omitempty"`
}

// JobStatus says who did a Job.
type JobStatus struct {
	// Done is set by the leader.
	Done bool `json:"done,omitempty"`
	// DoneBy is the leader's elector identity.
	DoneBy string `json:"doneBy,omitempty"`
	// Replica is the leader's replica name.
	Replica string `json:"replica,omitempty"`
	// Token is the leader's fencing token (the Lease's transitions).
	Token int64 `json:"token,omitempty"`
	// DoneNanos is when it was marked done (Unix nanoseconds).
	DoneNanos int64 `json:"doneNanos,omitempty"`
	// Fences records the highest token of each fence that wrote the
	// status; writers check it with compare-and-swap.
	Fences map[string]int64 `json:"fences,omitempty"`
}

// Term records one leadership: the leader creates it when it starts
// leading, named after its token, so a second leader with the same token
// would fail to create it.
type Term struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec describes the leadership.
	Spec TermSpec `json:"spec"`
}

// TermSpec describes one leadership.
type TermSpec struct {
	// Identity is the elector identity.
	Identity string `json:"identity"`
	// Replica is the leader's replica name.
	Replica string `json:"replica"`
	// Token is the fencing token of this leadership.
	Token int64 `json:"token"`
	// StartNanos is when the leader started leading (Unix nanoseconds).
	StartNanos int64 `json:"startNanos"`
}

// TermName is the name of the Term of token.
func TermName(token int64) string { return fmt.Sprintf("term-%010d", token) }

// Ledger is the object lock holders append to inside their critical
// sections, each append guarded by the lock's fencing token. Its entries
// are the accepted writes, in the store's order.
type Ledger struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec holds the entries.
	Spec LedgerSpec `json:"spec"`
}

// LedgerSpec holds a Ledger's entries.
type LedgerSpec struct {
	// Entries are appended, never changed.
	Entries []LedgerEntry `json:"entries,omitempty"`
	// Fences records the highest token of each fence that wrote the
	// ledger; writers check it with compare-and-swap.
	Fences map[string]int64 `json:"fences,omitempty"`
}

// LedgerEntry is one accepted write of a critical section.
type LedgerEntry struct {
	// Token is the writer's fencing token.
	Token int64 `json:"token"`
	// Replica and Member identify the writer.
	Replica string `json:"replica"`
	Member  string `json:"member"`
	// Step numbers the writes of one section from 0.
	Step int `json:"step"`
	// Final marks a section's last write.
	Final bool `json:"final,omitempty"`
}

// Refusal records a write the store refused because a newer holder had
// written the object: evidence that a stale holder tried and was fenced
// off.
type Refusal struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec says what was refused.
	Spec RefusalSpec `json:"spec"`
}

// RefusalSpec says what was refused.
type RefusalSpec struct {
	// Replica and Member identify the refused writer.
	Replica string `json:"replica"`
	Member  string `json:"member,omitempty"`
	// Fence and Token are the refused writer's fence name and token.
	Fence string `json:"fence"`
	Token int64  `json:"token"`
	// Object is the kind and key of the object written.
	Object string `json:"object"`
	// Error is the store's error.
	Error string `json:"error"`
	// AtNanos is when the refusal happened (Unix nanoseconds).
	AtNanos int64 `json:"atNanos"`
}

// Item is an object the sharded controller reconciles: it copies
// spec.value into status.
type Item struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is what the test writes.
	Spec ItemSpec `json:"spec"`
	// Status is what the controller observed.
	Status ItemStatus `json:"status"`
}

// ItemSpec is an Item's desired value.
type ItemSpec struct {
	// Value changes under the test's write load.
	Value int64 `json:"value"`
}

// ItemStatus is what the sharded controller observed.
type ItemStatus struct {
	// ObservedValue and ObservedGeneration are the spec the status
	// describes.
	ObservedValue      int64 `json:"observedValue,omitempty"`
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replica and Member reconciled it last.
	Replica string `json:"replica,omitempty"`
	Member  string `json:"member,omitempty"`
	// Token is the shard lease token of the last reconcile.
	Token int64 `json:"token,omitempty"`
	// Fences records the highest token of each fence that wrote the
	// status; writers check it with compare-and-swap.
	Fences map[string]int64 `json:"fences,omitempty"`
}

// ReconcileLog is a batch of reconcile records of one replica.
type ReconcileLog struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec holds the records.
	Spec ReconcileLogSpec `json:"spec"`
}

// ReconcileLogSpec holds a batch of reconcile records.
type ReconcileLogSpec struct {
	// Replica wrote the batch.
	Replica string `json:"replica"`
	// Records are the reconciles, in the order they ended.
	Records []ReconcileRecord `json:"records"`
}

// ReconcileRecord is one reconcile of an Item.
type ReconcileRecord struct {
	// Key is the Item's namespace/name.
	Key string `json:"key"`
	// Shard and Token are the shard and its lease token.
	Shard int   `json:"shard"`
	Token int64 `json:"token"`
	// Member is the replica's Member when it reconciled.
	Member string `json:"member"`
	// Process names the operator process (replica name and a random id
	// per start), which may register several Members in its life.
	Process string `json:"process"`
	// StartNanos and EndNanos bound the reconcile (Unix nanoseconds,
	// the host's clock: the checker compares records of processes on one
	// machine).
	StartNanos int64 `json:"startNanos"`
	EndNanos   int64 `json:"endNanos"`
	// Value is the spec value the reconcile saw.
	Value int64 `json:"value"`
	// Outcome is "written" (its status write was accepted), "refused"
	// (fenced off), "conflict" (the item changed meanwhile), "aborted"
	// (stopped before writing) or "error".
	Outcome string `json:"outcome"`
	// ResourceVersion is the Item's version after an accepted write.
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// Reconcile outcomes.
const (
	OutcomeWritten  = "written"
	OutcomeRefused  = "refused"
	OutcomeConflict = "conflict"
	OutcomeAborted  = "aborted"
	OutcomeError    = "error"
)

// Report is a replica's view of itself: which Members it registered,
// whether it leads, which shards and lock token it believes it holds. The
// replica rewrites it when its Member, leadership or shards change, and
// every few seconds otherwise (the lock token is only as fresh as that).
type Report struct {
	meta.ObjectMeta `json:"metadata"`
	// Status is the replica's view.
	Status ReportStatus `json:"status"`
}

// ReportStatus is a replica's view of itself.
type ReportStatus struct {
	// Replica is the replica's name (the Report's name).
	Replica string `json:"replica"`
	// PID is the operator's process id.
	PID int `json:"pid"`
	// Member is the current Member; Members every Member this process
	// registered, oldest first.
	Member  string   `json:"member,omitempty"`
	Members []string `json:"members,omitempty"`
	// Identity is the elector identity (leader mode).
	Identity string `json:"identity,omitempty"`
	// Leading and LeaderToken: whether it believes it leads, and its token.
	Leading     bool  `json:"leading,omitempty"`
	LeaderToken int64 `json:"leaderToken,omitempty"`
	// LockToken is the token of the lock it believes it holds (0: none).
	LockToken int64 `json:"lockToken,omitempty"`
	// Shards are the shards it believes it holds.
	Shards []int `json:"shards,omitempty"`
	// Refusals counts the fenced writes refused to it.
	Refusals int64 `json:"refusals,omitempty"`
	// FenceMode says who checked its fenced writes: "store" (the store,
	// store.WithFence) or "operator" (the operator itself, with
	// compare-and-swap, on a store that does not check fences yet).
	FenceMode string `json:"fenceMode,omitempty"`
	// UpdatedNanos is when it wrote this view (Unix nanoseconds).
	UpdatedNanos int64 `json:"updatedNanos"`
}
