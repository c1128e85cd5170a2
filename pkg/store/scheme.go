package store

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
)

// MaxObjectBytes bounds an object's JSON encoding, like etcd's request limit
// in Kubernetes; far below MongoDB's 16 MiB document limit so that every
// backend rejects the same objects.
const MaxObjectBytes = 1536 * 1024

// Scheme maps Go types to kinds and kinds to collections. Register kinds at
// start-up; lookups are safe for concurrent use.
type Scheme struct {
	mu     sync.RWMutex
	kinds  map[string]*Kind
	byType map[reflect.Type]*Kind
	byColl map[string]*Kind
}

// NewScheme returns an empty scheme.
func NewScheme() *Scheme {
	return &Scheme{kinds: map[string]*Kind{}, byType: map[reflect.Type]*Kind{}, byColl: map[string]*Kind{}}
}

// Kind describes a registered kind.
type Kind struct {
	// Name is the kind, for example "Widget".
	Name string
	// Collection is where its objects are stored, for example "widgets".
	Collection string
	// Namespaced says whether objects live in namespaces.
	Namespaced bool

	typ    reflect.Type // struct type; nil for kinds known only unstructured
	spec   []int        // field index of Spec, nil if none
	status []int        // field index of Status, nil if none
}

// KindOption customizes a registration.
type KindOption func(*Kind)

// WithCollection sets the collection name (default: the lower-cased plural
// of the kind).
func WithCollection(name string) KindOption { return func(k *Kind) { k.Collection = name } }

// ClusterScoped registers a kind whose objects have no namespace.
func ClusterScoped() KindOption { return func(k *Kind) { k.Namespaced = false } }

// Register adds kind with Go type *T. T must be a struct embedding
// meta.ObjectMeta as "metadata"; its "spec" and "status" fields (by JSON
// name) are the parts Update and UpdateStatus write.
func Register[T any, PT interface {
	*T
	meta.Object
}](s *Scheme, kind string, opts ...KindOption) (*Kind, error) {
	t := reflect.TypeFor[T]()
	if t.Kind() != reflect.Struct {
		return nil, errs.Invalid("type", "%s is not a struct", t)
	}
	k := newKind(kind, opts)
	k.typ = t
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "spec":
			k.spec = f.Index
		case "status":
			k.status = f.Index
		}
	}
	return k, s.add(k)
}

// MustRegister is Register that panics on error, for start-up code.
func MustRegister[T any, PT interface {
	*T
	meta.Object
}](s *Scheme, kind string, opts ...KindOption) *Kind {
	k, err := Register[T, PT](s, kind, opts...)
	if err != nil {
		panic(err)
	}
	return k
}

// RegisterUnstructured adds a kind that this process handles only as
// *meta.Unstructured (tools, the CLI). Its "spec" and "status" fields are
// the top-level map entries of those names.
func (s *Scheme) RegisterUnstructured(kind string, opts ...KindOption) (*Kind, error) {
	k := newKind(kind, opts)
	return k, s.add(k)
}

func newKind(name string, opts []KindOption) *Kind {
	k := &Kind{Name: name, Collection: DefaultCollection(name), Namespaced: true}
	for _, o := range opts {
		o(k)
	}
	return k
}

func (s *Scheme) add(k *Kind) error {
	if k.Name == "" || strings.ContainsAny(k.Name, " ./$") {
		return errs.Invalid("kind", "invalid kind name %q", k.Name)
	}
	if k.Collection == "" || strings.ContainsAny(k.Collection, " $\x00") || strings.HasPrefix(k.Collection, "system.") {
		return errs.Invalid("collection", "invalid collection name %q", k.Collection)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.kinds[k.Name]; ok {
		return errs.New(errs.AlreadyExists, "kind %q is already registered", k.Name)
	}
	if o, ok := s.byColl[k.Collection]; ok {
		return errs.New(errs.AlreadyExists, "collection %q already holds kind %q", k.Collection, o.Name)
	}
	if k.typ != nil {
		if o, ok := s.byType[k.typ]; ok {
			return errs.New(errs.AlreadyExists, "type %s is already kind %q", k.typ, o.Name)
		}
		s.byType[k.typ] = k
	}
	s.kinds[k.Name] = k
	s.byColl[k.Collection] = k
	return nil
}

// DefaultCollection is the collection a kind gets unless told otherwise:
// its lower-cased English plural ("Policy" → "policies", "Lease" →
// "leases").
func DefaultCollection(kind string) string {
	l := strings.ToLower(kind)
	switch {
	case l == "":
		return ""
	case strings.HasSuffix(l, "y") && len(l) > 1 && !strings.ContainsRune("aeiou", rune(l[len(l)-2])):
		return l[:len(l)-1] + "ies"
	case strings.HasSuffix(l, "s"), strings.HasSuffix(l, "x"), strings.HasSuffix(l, "ch"), strings.HasSuffix(l, "sh"):
		return l + "es"
	}
	return l + "s"
}

// Kind returns the registered kind name; an unknown kind is
// errs.InvalidArgument on field "kind".
func (s *Scheme) Kind(name string) (*Kind, error) {
	s.mu.RLock()
	k, ok := s.kinds[name]
	s.mu.RUnlock()
	if !ok {
		return nil, errs.Invalid("kind", "unknown kind %q", name)
	}
	return k, nil
}

// KindOf returns obj's kind: by Go type, or by Kind for Unstructured.
func (s *Scheme) KindOf(obj meta.Object) (*Kind, error) {
	if u, ok := obj.(*meta.Unstructured); ok {
		if u.Kind == "" {
			return nil, errs.Invalid("kind", "kind is required")
		}
		return s.Kind(u.Kind)
	}
	t := reflect.TypeOf(obj)
	if t == nil || t.Kind() != reflect.Pointer {
		return nil, errs.Invalid("kind", "%T is not a pointer to a registered type", obj)
	}
	s.mu.RLock()
	k, ok := s.byType[t.Elem()]
	s.mu.RUnlock()
	if !ok {
		return nil, errs.Invalid("kind", "type %s is not registered in the scheme", t.Elem())
	}
	return k, nil
}

// Kinds returns every registered kind, sorted by name.
func (s *Scheme) Kinds() []*Kind {
	s.mu.RLock()
	out := make([]*Kind, 0, len(s.kinds))
	for _, k := range s.kinds {
		out = append(out, k)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Typed reports whether the kind has a registered Go type.
func (k *Kind) Typed() bool { return k.typ != nil }

// New returns an empty object of the kind: *T, or *meta.Unstructured.
func (k *Kind) New() meta.Object {
	if k.typ == nil {
		return &meta.Unstructured{Kind: k.Name}
	}
	return reflect.New(k.typ).Interface().(meta.Object)
}

// Matches reports whether obj is of this kind.
func (k *Kind) Matches(obj meta.Object) bool {
	if u, ok := obj.(*meta.Unstructured); ok {
		return u.Kind == k.Name
	}
	t := reflect.TypeOf(obj)
	return k.typ != nil && t.Kind() == reflect.Pointer && t.Elem() == k.typ
}

func (k *Kind) field(obj meta.Object, idx []int, name string) (reflect.Value, any, bool) {
	if u, ok := obj.(*meta.Unstructured); ok {
		v, present := u.Fields[name]
		return reflect.Value{}, v, present
	}
	if idx == nil {
		return reflect.Value{}, nil, false
	}
	return reflect.ValueOf(obj).Elem().FieldByIndex(idx), nil, true
}

// SpecEqual reports whether a and b (both of this kind) have equal specs.
func (k *Kind) SpecEqual(a, b meta.Object) bool {
	av, au, aok := k.field(a, k.spec, "spec")
	bv, bu, bok := k.field(b, k.spec, "spec")
	if aok != bok {
		return false
	}
	if av.IsValid() && bv.IsValid() {
		return reflect.DeepEqual(av.Interface(), bv.Interface())
	}
	return jsonEqual(au, bu)
}

// CopyStatus sets dst's status to a deep copy of src's.
func (k *Kind) CopyStatus(dst, src meta.Object) {
	if du, ok := dst.(*meta.Unstructured); ok {
		su := src.(*meta.Unstructured)
		if v, ok := su.Fields["status"]; ok {
			du.SetField("status", meta.DeepCopyValue(v))
		} else {
			delete(du.Fields, "status")
		}
		return
	}
	if k.status == nil {
		return
	}
	dv := reflect.ValueOf(dst).Elem().FieldByIndex(k.status)
	sv := reflect.ValueOf(src).Elem().FieldByIndex(k.status)
	meta.CopyValueInto(dv, sv)
}

func jsonEqual(a, b any) bool {
	if reflect.DeepEqual(a, b) {
		return true
	}
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// PrepareCreate validates obj for Create and fills the fields the store
// owns: a new UID, generation 1, the creation time; resourceVersion and
// deletionTimestamp are cleared. Backends assign the resourceVersion.
func (k *Kind) PrepareCreate(obj meta.Object) error {
	if err := k.Validate(obj); err != nil {
		return err
	}
	m := obj.GetObjectMeta()
	m.UID = uuid.NewString()
	m.Generation = 1
	m.CreationTimestamp = meta.Now()
	m.ResourceVersion = ""
	m.DeletionTimestamp = nil
	m.Fences = nil
	return nil
}

// Validate checks obj's kind, metadata and size.
func (k *Kind) Validate(obj meta.Object) error {
	if err := k.validateContent(obj); err != nil {
		return err
	}
	return CheckSize(obj)
}

// validateContent is Validate without the size check.
func (k *Kind) validateContent(obj meta.Object) error {
	if !k.Matches(obj) {
		return errs.Invalid("kind", "object %T is not of kind %q", obj, k.Name)
	}
	if u, ok := obj.(*meta.Unstructured); ok {
		if _, bad := u.Fields["metadata"]; bad {
			return errs.Invalid("metadata", "metadata must be held in ObjectMeta")
		}
		for name := range u.Fields {
			if name == "" || strings.HasPrefix(name, "$") || strings.HasPrefix(name, "_") || strings.Contains(name, ".") {
				return errs.Invalid(name, "invalid top-level field name %q", name)
			}
		}
	}
	return meta.ValidateObjectMeta(obj.GetObjectMeta(), k.Namespaced)
}

// CheckSize fails with InvalidArgument when obj's JSON encoding exceeds
// MaxObjectBytes or cannot be encoded at all. It encodes obj only when a
// walk of its value cannot bound the encoding's length within the limit.
func CheckSize(obj meta.Object) error {
	if n, ok := sizeBound(obj); ok && n <= MaxObjectBytes {
		return nil
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return errs.Wrap(errs.InvalidArgument, err, "object cannot be encoded")
	}
	if len(b) > MaxObjectBytes {
		return errs.Invalid("", "object is %d bytes encoded, more than the limit of %d", len(b), MaxObjectBytes)
	}
	return nil
}

// MergeUpdate computes the object an Update stores: incoming's client-owned
// metadata, spec and other fields, with stored's uid, creation and
// deletion timestamps and status; generation bumped when the spec changed.
// It validates incoming, checks the size of the result (incoming's spec
// with the stored status) and refuses new finalizers on an object being
// deleted. The result shares no memory with either argument; the caller
// sets its resourceVersion.
func (k *Kind) MergeUpdate(stored, incoming meta.Object) (meta.Object, error) {
	if err := k.validateContent(incoming); err != nil {
		return nil, err
	}
	out := meta.DeepCopy(incoming)
	om, sm := out.GetObjectMeta(), stored.GetObjectMeta()
	if om.UID != "" && om.UID != sm.UID {
		return nil, errs.Field(errs.Conflict, "metadata.uid", "object has uid %s, stored object has %s", om.UID, sm.UID)
	}
	om.UID = sm.UID
	om.CreationTimestamp = sm.CreationTimestamp
	om.DeletionTimestamp = meta.DeepCopyValue(sm.DeletionTimestamp)
	om.Fences = meta.DeepCopyValue(sm.Fences)
	om.Generation = sm.Generation
	if !k.SpecEqual(stored, incoming) {
		om.Generation++
	}
	if sm.DeletionTimestamp != nil {
		for _, f := range om.Finalizers {
			if !sm.HasFinalizer(f) {
				return nil, errs.Field(errs.FailedPrecondition, "metadata.finalizers", "cannot add finalizer %q to an object being deleted", f)
			}
		}
	}
	k.CopyStatus(out, stored)
	if err := CheckSize(out); err != nil {
		return nil, err
	}
	return out, nil
}

// MergeStatus computes the object an UpdateStatus stores: stored with
// incoming's status. It checks that incoming is of this kind, names stored's
// object and is not oversize. The caller sets the resourceVersion.
func (k *Kind) MergeStatus(stored, incoming meta.Object) (meta.Object, error) {
	if !k.Matches(incoming) {
		return nil, errs.Invalid("kind", "object %T is not of kind %q", incoming, k.Name)
	}
	im, sm := incoming.GetObjectMeta(), stored.GetObjectMeta()
	if im.UID != "" && im.UID != sm.UID {
		return nil, errs.Field(errs.Conflict, "metadata.uid", "object has uid %s, stored object has %s", im.UID, sm.UID)
	}
	out := meta.DeepCopy(stored)
	k.CopyStatus(out, incoming)
	if err := CheckSize(out); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckPreconditions returns errs.Conflict when stored does not satisfy p.
func CheckPreconditions(stored meta.Object, p Preconditions) error {
	m := stored.GetObjectMeta()
	if p.UID != "" && p.UID != m.UID {
		return errs.Field(errs.Conflict, "metadata.uid", "precondition failed: uid is %s, not %s", m.UID, p.UID)
	}
	if p.ResourceVersion != "" && p.ResourceVersion != m.ResourceVersion {
		return errs.Field(errs.Conflict, "metadata.resourceVersion", "precondition failed: resourceVersion is %s, not %s", m.ResourceVersion, p.ResourceVersion)
	}
	return nil
}

// ConflictError is the error of a compare-and-swap write that found a newer
// version.
func ConflictError(kind string, key meta.Key, have, stored string) error {
	return errs.Field(errs.Conflict, "metadata.resourceVersion",
		"%s %s was modified: object has resourceVersion %s, stored %s", kind, key, have, stored)
}

// NotFoundError is the error of an operation on a missing object.
func NotFoundError(kind string, key meta.Key) error {
	return errs.New(errs.NotFound, "%s %s not found", kind, key)
}

// AlreadyExistsError is the error of a Create of an existing key.
func AlreadyExistsError(kind string, key meta.Key) error {
	return errs.New(errs.AlreadyExists, "%s %s already exists", kind, key)
}
