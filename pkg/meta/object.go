package meta

import (
	"strconv"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
)

// Object is a resource: anything with ObjectMeta. A struct embedding
// ObjectMeta implements it through its pointer.
type Object interface {
	// GetObjectMeta returns the object's metadata, which callers may modify.
	GetObjectMeta() *ObjectMeta
}

// ObjectMeta is the metadata every resource carries. The store owns UID,
// ResourceVersion, Generation, CreationTimestamp and DeletionTimestamp; a
// client sets Name, Namespace, Labels, Annotations, OwnerReferences and
// Finalizers.
type ObjectMeta struct {
	// Name is unique within a namespace and kind; a DNS-1123 subdomain.
	Name string `json:"name"`
	// Namespace groups names; empty for cluster-scoped kinds.
	Namespace string `json:"namespace,omitempty"`
	// UID identifies this incarnation of the object; set on Create.
	UID string `json:"uid,omitempty"`
	// ResourceVersion is a decimal number that strictly increases on every
	// write of the object; Update and UpdateStatus compare and swap on it.
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Generation counts changes of the spec; starts at 1.
	Generation int64 `json:"generation,omitempty"`
	// Labels are identifying key/value pairs that selectors match.
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are non-identifying key/value pairs.
	Annotations map[string]string `json:"annotations,omitempty"`
	// OwnerReferences name the objects this one depends on; when every
	// owner is gone, the garbage collector deletes this object.
	OwnerReferences []OwnerReference `json:"ownerReferences,omitempty"`
	// Finalizers must all be removed before a deleted object disappears.
	Finalizers []string `json:"finalizers,omitempty"`
	// Fences records, per lock or lease name, the highest fencing token of
	// a write guarded by it (store.WithFence); store-owned.
	Fences map[string]int64 `json:"fences,omitempty"`
	// CreationTimestamp is when the store created the object (UTC,
	// millisecond precision).
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero" bson:"creationTimestamp,omitempty"`
	// DeletionTimestamp is set when deletion was requested while
	// finalizers remained.
	DeletionTimestamp *time.Time `json:"deletionTimestamp,omitempty"`
}

// GetObjectMeta implements Object.
func (m *ObjectMeta) GetObjectMeta() *ObjectMeta { return m }

// Key returns the object's namespace/name key.
func (m *ObjectMeta) Key() Key { return Key{Namespace: m.Namespace, Name: m.Name} }

// IsBeingDeleted reports whether deletion was requested.
func (m *ObjectMeta) IsBeingDeleted() bool { return m.DeletionTimestamp != nil }

// HasFinalizer reports whether f is among the finalizers.
func (m *ObjectMeta) HasFinalizer(f string) bool {
	for _, x := range m.Finalizers {
		if x == f {
			return true
		}
	}
	return false
}

// ControllerRef returns the owner reference with Controller set, if any.
func (m *ObjectMeta) ControllerRef() *OwnerReference {
	for i := range m.OwnerReferences {
		if r := &m.OwnerReferences[i]; r.Controller {
			return r
		}
	}
	return nil
}

// OwnerReference points from a dependent to an object it belongs to. Owners
// are in the dependent's namespace (or cluster-scoped).
type OwnerReference struct {
	// Kind is the owner's kind, for example "Flow".
	Kind string `json:"kind"`
	// Name is the owner's name.
	Name string `json:"name"`
	// UID is the owner's UID; an owner with the same name but another UID
	// is a different object.
	UID string `json:"uid"`
	// Controller marks the one owner that manages this object.
	Controller bool `json:"controller,omitempty"`
	// BlockOwnerDeletion is kept for Kubernetes compatibility.
	BlockOwnerDeletion bool `json:"blockOwnerDeletion,omitempty"`
}

// Key identifies an object of a kind by namespace and name.
type Key struct {
	// Namespace is empty for cluster-scoped kinds.
	Namespace string `json:"namespace,omitempty"`
	// Name is the object's name.
	Name string `json:"name"`
}

// String returns "namespace/name", or "name" without a namespace.
func (k Key) String() string {
	if k.Namespace == "" {
		return k.Name
	}
	return k.Namespace + "/" + k.Name
}

// KeyOf returns obj's key.
func KeyOf(obj Object) Key { return obj.GetObjectMeta().Key() }

// ParseKey parses "namespace/name" or "name".
func ParseKey(s string) (Key, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			k := Key{Namespace: s[:i], Name: s[i+1:]}
			if k.Namespace == "" || k.Name == "" {
				return Key{}, errs.Invalid("key", "%q is not namespace/name", s)
			}
			return k, nil
		}
	}
	if s == "" {
		return Key{}, errs.Invalid("key", "empty key")
	}
	return Key{Name: s}, nil
}

// ParseResourceVersion returns the number in a resourceVersion. An empty
// version is 0.
func ParseResourceVersion(rv string) (uint64, error) {
	if rv == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		return 0, errs.Invalid("metadata.resourceVersion", "%q is not a resource version", rv)
	}
	return n, nil
}

// FormatResourceVersion is the inverse of ParseResourceVersion.
func FormatResourceVersion(n uint64) string { return strconv.FormatUint(n, 10) }

// Now returns the current time as stores record it: UTC, truncated to
// milliseconds (MongoDB's date precision), so that every backend returns
// the same timestamps.
func Now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }
