package store

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
)

type thing struct {
	meta.ObjectMeta `json:"metadata"`
	Spec            thingSpec   `json:"spec"`
	Status          thingStatus `json:"status"`
}

type thingSpec struct {
	Size int               `json:"size"`
	Tags []string          `json:"tags,omitempty"`
	Map  map[string]string `json:"map,omitempty"`
	Blob string            `json:"blob,omitempty"`
}

type thingStatus struct {
	Phase      string           `json:"phase,omitempty"`
	Conditions []meta.Condition `json:"conditions,omitempty"`
	Blob       string           `json:"blob,omitempty"`
}

type noSpec struct {
	meta.ObjectMeta `json:"metadata"`
	Data            string `json:"data"`
}

type other struct {
	meta.ObjectMeta `json:"metadata"`
}

func newThingScheme(t *testing.T) (*Scheme, *Kind) {
	t.Helper()
	s := NewScheme()
	k, err := Register[thing](s, "Thing")
	if err != nil {
		t.Fatal(err)
	}
	return s, k
}

func TestDefaultCollection(t *testing.T) {
	cases := map[string]string{
		"Widget": "widgets", "Policy": "policies", "Lease": "leases", "Key": "keys",
		"Box": "boxes", "Class": "classes", "Match": "matches", "Mesh": "meshes",
		"Y": "ys", "": "", "Day": "days",
	}
	for kind, want := range cases {
		if got := DefaultCollection(kind); got != want {
			t.Errorf("DefaultCollection(%q) = %q, want %q", kind, got, want)
		}
	}
}

func TestRegister(t *testing.T) {
	s, k := newThingScheme(t)
	if k.Name != "Thing" || k.Collection != "things" || !k.Namespaced || !k.Typed() {
		t.Errorf("kind = %+v", k)
	}
	g, err := Register[other](s, "Other", ClusterScoped(), WithCollection("elsewhere"))
	if err != nil {
		t.Fatal(err)
	}
	if g.Namespaced || g.Collection != "elsewhere" {
		t.Errorf("options not applied: %+v", g)
	}
	u, err := s.RegisterUnstructured("Loose")
	if err != nil || u.Typed() || u.Collection != "looses" {
		t.Errorf("RegisterUnstructured = %+v, %v", u, err)
	}

	bad := []struct {
		name string
		reg  func() error
		code errs.Code
	}{
		{"same kind", func() error { _, err := Register[noSpec](s, "Thing"); return err }, errs.AlreadyExists},
		{"same type", func() error { _, err := Register[thing](s, "Thing2"); return err }, errs.AlreadyExists},
		{"same collection", func() error {
			_, err := s.RegisterUnstructured("Loose2", WithCollection("things"))
			return err
		}, errs.AlreadyExists},
		{"empty kind", func() error { _, err := s.RegisterUnstructured(""); return err }, errs.InvalidArgument},
		{"kind with a dot", func() error { _, err := s.RegisterUnstructured("a.b"); return err }, errs.InvalidArgument},
		{"kind with $", func() error { _, err := s.RegisterUnstructured("$a"); return err }, errs.InvalidArgument},
		{"system collection", func() error {
			_, err := s.RegisterUnstructured("Sys", WithCollection("system.users"))
			return err
		}, errs.InvalidArgument},
		{"collection with $", func() error {
			_, err := s.RegisterUnstructured("Dollar", WithCollection("a$b"))
			return err
		}, errs.InvalidArgument},
		{"empty collection", func() error {
			_, err := s.RegisterUnstructured("Empty", WithCollection(""))
			return err
		}, errs.InvalidArgument},
	}
	for _, c := range bad {
		if err := c.reg(); errs.CodeOf(err) != c.code {
			t.Errorf("%s: %v, want %v", c.name, err, c.code)
		}
	}
	// Failed registrations leave nothing behind.
	names := []string{}
	for _, k := range s.Kinds() {
		names = append(names, k.Name)
	}
	if want := []string{"Loose", "Other", "Thing"}; !reflect.DeepEqual(names, want) {
		t.Errorf("Kinds() = %v, want %v (sorted)", names, want)
	}
}

func TestMustRegisterPanics(t *testing.T) {
	s, _ := newThingScheme(t)
	defer func() {
		if recover() == nil {
			t.Error("MustRegister of a duplicate kind did not panic")
		}
	}()
	MustRegister[noSpec](s, "Thing")
}

func TestKindLookups(t *testing.T) {
	s, k := newThingScheme(t)
	if _, err := s.RegisterUnstructured("Loose"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Kind("Thing"); err != nil || got != k {
		t.Errorf("Kind(Thing) = %v, %v", got, err)
	}
	_, err := s.Kind("Nope")
	wantErr(t, "Kind(Nope)", err, errs.InvalidArgument, "kind")

	if got, err := s.KindOf(&thing{}); err != nil || got != k {
		t.Errorf("KindOf(*thing) = %v, %v", got, err)
	}
	if got, err := s.KindOf(&meta.Unstructured{Kind: "Thing"}); err != nil || got != k {
		t.Errorf("KindOf(Unstructured Thing) = %v, %v", got, err)
	}
	_, err = s.KindOf(&meta.Unstructured{})
	wantErr(t, "KindOf(Unstructured without kind)", err, errs.InvalidArgument, "kind")
	_, err = s.KindOf(&other{})
	wantErr(t, "KindOf(unregistered)", err, errs.InvalidArgument, "kind")
	_, err = s.KindOf(nil)
	wantErr(t, "KindOf(nil)", err, errs.InvalidArgument, "kind")

	if _, ok := k.New().(*thing); !ok {
		t.Errorf("New() = %T", k.New())
	}
	loose, _ := s.Kind("Loose")
	if u, ok := loose.New().(*meta.Unstructured); !ok || u.Kind != "Loose" {
		t.Errorf("unstructured New() = %#v", loose.New())
	}
	if !k.Matches(&thing{}) || !k.Matches(&meta.Unstructured{Kind: "Thing"}) || k.Matches(&other{}) || k.Matches(&meta.Unstructured{Kind: "Loose"}) {
		t.Error("Matches is wrong")
	}
	if loose.Matches(&thing{}) {
		t.Error("an unstructured kind matches a typed object")
	}
}

func wantErr(t *testing.T, what string, err error, code errs.Code, field string) {
	t.Helper()
	if errs.CodeOf(err) != code {
		t.Fatalf("%s: %v, want code %v", what, err, code)
	}
	if field != "-" && errs.FieldOf(err) != field {
		t.Fatalf("%s: %v names field %q, want %q", what, err, errs.FieldOf(err), field)
	}
}

func TestPrepareCreate(t *testing.T) {
	_, k := newThingScheme(t)
	past := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	o := &thing{ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n", UID: "x", ResourceVersion: "9", Generation: 5,
		CreationTimestamp: past, DeletionTimestamp: &past}}
	if err := k.PrepareCreate(o); err != nil {
		t.Fatal(err)
	}
	if o.UID == "x" || len(o.UID) != 36 || o.ResourceVersion != "" || o.Generation != 1 || o.DeletionTimestamp != nil ||
		o.CreationTimestamp.Equal(past) || o.CreationTimestamp.Location() != time.UTC {
		t.Errorf("PrepareCreate gave %+v", o.ObjectMeta)
	}
	o2 := &thing{ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n"}}
	_ = k.PrepareCreate(o2)
	if o2.UID == o.UID {
		t.Error("two creates got the same uid")
	}
	bad := &thing{ObjectMeta: meta.ObjectMeta{Name: "A", Namespace: "n"}}
	wantErr(t, "PrepareCreate(bad name)", k.PrepareCreate(bad), errs.InvalidArgument, "metadata.name")
	if bad.UID != "" {
		t.Error("PrepareCreate filled fields of an invalid object")
	}
}

func TestValidate(t *testing.T) {
	s, k := newThingScheme(t)
	cluster, _ := Register[other](s, "Other", ClusterScoped())
	loose, _ := s.RegisterUnstructured("Loose")
	ok := &thing{ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n"}}
	if err := k.Validate(ok); err != nil {
		t.Errorf("valid object: %v", err)
	}
	u := func(fields map[string]any) *meta.Unstructured {
		return &meta.Unstructured{Kind: "Loose", ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n"}, Fields: fields}
	}
	cases := []struct {
		name  string
		k     *Kind
		obj   meta.Object
		field string
	}{
		{"wrong type", k, &other{ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n"}}, "kind"},
		{"wrong unstructured kind", k, u(nil), "kind"},
		{"namespace on a cluster-scoped kind", cluster, &other{ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n"}}, "metadata.namespace"},
		{"no namespace", k, &thing{ObjectMeta: meta.ObjectMeta{Name: "a"}}, "metadata.namespace"},
		{"metadata in fields", loose, u(map[string]any{"metadata": map[string]any{}}), "metadata"},
		{"$ field", loose, u(map[string]any{"$set": 1}), "$set"},
		{"_ field", loose, u(map[string]any{"_id": 1}), "_id"},
		{"dotted field", loose, u(map[string]any{"a.b": 1}), "a.b"},
		{"empty field name", loose, u(map[string]any{"": 1}), ""},
		{"oversize", k, &thing{ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n"}, Spec: thingSpec{Blob: strings.Repeat("x", MaxObjectBytes)}}, ""},
	}
	for _, c := range cases {
		wantErr(t, c.name, c.k.Validate(c.obj), errs.InvalidArgument, c.field)
	}
	if err := loose.Validate(u(map[string]any{"spec": map[string]any{"$inner": 1}})); err != nil {
		t.Errorf("nested $ keys are the backend's concern, got %v", err)
	}
}

func stored(t *testing.T, k *Kind) *thing {
	t.Helper()
	o := &thing{
		ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n", Labels: map[string]string{"l": "1"}},
		Spec:       thingSpec{Size: 1, Tags: []string{"t"}, Map: map[string]string{"k": "v"}},
		Status:     thingStatus{Phase: "Running"},
	}
	if err := k.PrepareCreate(o); err != nil {
		t.Fatal(err)
	}
	o.ResourceVersion = "5"
	return o
}

func TestMergeUpdate(t *testing.T) {
	_, k := newThingScheme(t)
	st := stored(t, k)
	in := meta.DeepCopy(st)
	in.UID = ""
	in.Generation = 99
	in.CreationTimestamp = time.Time{}
	in.Labels["l"] = "2"
	in.Status.Phase = "Hacked"
	out, err := k.MergeUpdate(st, in)
	if err != nil {
		t.Fatal(err)
	}
	o := out.(*thing)
	if o.UID != st.UID || !o.CreationTimestamp.Equal(st.CreationTimestamp) || o.Generation != 1 || o.Status.Phase != "Running" || o.Labels["l"] != "2" {
		t.Errorf("label-only update gave %+v", o)
	}

	in.Spec.Tags = append(in.Spec.Tags, "u")
	out, _ = k.MergeUpdate(st, in)
	if out.(*thing).Generation != 2 {
		t.Errorf("spec change: generation %d, want 2", out.(*thing).Generation)
	}
	// The result shares nothing with the arguments.
	o = out.(*thing)
	o.Spec.Tags[0] = "x"
	o.Spec.Map["k"] = "x"
	o.Labels["l"] = "x"
	if st.Spec.Tags[0] != "t" || in.Spec.Tags[0] != "t" || st.Spec.Map["k"] != "v" || in.Spec.Map["k"] != "v" || in.Labels["l"] != "2" {
		t.Error("MergeUpdate result shares memory with its arguments")
	}

	foreign := meta.DeepCopy(st)
	foreign.UID = "other"
	_, err = k.MergeUpdate(st, foreign)
	wantErr(t, "foreign uid", err, errs.Conflict, "metadata.uid")

	invalid := meta.DeepCopy(st)
	invalid.Labels = map[string]string{"bad key": "v"}
	_, err = k.MergeUpdate(st, invalid)
	wantErr(t, "invalid labels", err, errs.InvalidArgument, "metadata.labels[bad key]")
}

func TestMergeUpdateWhileDeleting(t *testing.T) {
	_, k := newThingScheme(t)
	st := stored(t, k)
	now := meta.Now()
	st.DeletionTimestamp = &now
	st.Finalizers = []string{"a/x", "b/y"}

	in := meta.DeepCopy(st)
	in.DeletionTimestamp = nil
	in.Finalizers = []string{"b/y"}
	out, err := k.MergeUpdate(st, in)
	if err != nil {
		t.Fatal(err)
	}
	if dt := out.GetObjectMeta().DeletionTimestamp; dt == nil || !dt.Equal(now) || dt == st.DeletionTimestamp {
		t.Errorf("deletionTimestamp not kept as a copy: %v", dt)
	}
	in.Finalizers = []string{"b/y", "c/z"}
	_, err = k.MergeUpdate(st, in)
	wantErr(t, "new finalizer while deleting", err, errs.FailedPrecondition, "metadata.finalizers")
}

// TestMergeUpdateChecksTheMergedSize: an Update whose own status is empty
// must not store a spec that, with the stored status, exceeds the limit.
func TestMergeUpdateChecksTheMergedSize(t *testing.T) {
	_, k := newThingScheme(t)
	st := stored(t, k)
	st.Status.Blob = strings.Repeat("s", MaxObjectBytes*2/3)
	in := meta.DeepCopy(st)
	in.Status = thingStatus{}
	in.Spec.Blob = strings.Repeat("p", MaxObjectBytes*2/3)
	if err := k.Validate(in); err != nil {
		t.Fatalf("test setup: the incoming object alone must be valid: %v", err)
	}
	_, err := k.MergeUpdate(st, in)
	wantErr(t, "merged object over the limit", err, errs.InvalidArgument, "-")
}

func TestMergeStatus(t *testing.T) {
	_, k := newThingScheme(t)
	st := stored(t, k)
	in := meta.DeepCopy(st)
	in.UID = ""
	in.Spec.Size = 100
	in.Labels = nil
	in.Status.Conditions = []meta.Condition{{Type: "Ready", Status: meta.ConditionTrue}}
	out, err := k.MergeStatus(st, in)
	if err != nil {
		t.Fatal(err)
	}
	o := out.(*thing)
	if o.Spec.Size != 1 || o.Labels["l"] != "1" || len(o.Status.Conditions) != 1 || o.Generation != st.Generation {
		t.Errorf("MergeStatus gave %+v", o)
	}
	o.Status.Conditions[0].Type = "x"
	if in.Status.Conditions[0].Type != "Ready" {
		t.Error("MergeStatus result shares the status with the input")
	}
	foreign := meta.DeepCopy(in)
	foreign.UID = "other"
	_, err = k.MergeStatus(st, foreign)
	wantErr(t, "foreign uid", err, errs.Conflict, "metadata.uid")
	_, err = k.MergeStatus(st, &other{})
	wantErr(t, "wrong type", err, errs.InvalidArgument, "kind")
	big := meta.DeepCopy(in)
	big.Status.Blob = strings.Repeat("b", MaxObjectBytes)
	_, err = k.MergeStatus(st, big)
	wantErr(t, "oversize status", err, errs.InvalidArgument, "-")
}

func TestUnstructuredSpecAndStatus(t *testing.T) {
	s := NewScheme()
	k, _ := s.RegisterUnstructured("Loose")
	st := &meta.Unstructured{Kind: "Loose", ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n", UID: "u", Generation: 1},
		Fields: map[string]any{"spec": map[string]any{"n": 1.0}, "status": map[string]any{"p": "x"}}}
	in := meta.DeepCopy(st)
	in.Fields["spec"] = map[string]any{"n": 1.0}
	delete(in.Fields, "status")
	out, err := k.MergeUpdate(st, in)
	if err != nil {
		t.Fatal(err)
	}
	ou := out.(*meta.Unstructured)
	if ou.Generation != 1 || !reflect.DeepEqual(ou.Fields["status"], map[string]any{"p": "x"}) {
		t.Errorf("unchanged unstructured spec: %+v", ou)
	}
	in.Fields["spec"] = map[string]any{"n": 2.0}
	out, _ = k.MergeUpdate(st, in)
	if out.GetObjectMeta().Generation != 2 {
		t.Error("unstructured spec change did not bump generation")
	}
	// Status removed by UpdateStatus.
	out, err = k.MergeStatus(st, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, has := out.(*meta.Unstructured).Fields["status"]; has {
		t.Error("MergeStatus with no status kept the old one")
	}
	if !k.SpecEqual(
		&meta.Unstructured{Fields: map[string]any{"spec": map[string]any{"n": 1}}},
		&meta.Unstructured{Fields: map[string]any{"spec": map[string]any{"n": 1.0}}}) {
		t.Error("specs equal as JSON compare unequal")
	}
	if k.SpecEqual(&meta.Unstructured{Fields: map[string]any{"spec": 1}}, &meta.Unstructured{}) {
		t.Error("present and missing spec compare equal")
	}
}

func TestKindWithoutSpec(t *testing.T) {
	s := NewScheme()
	k := MustRegister[noSpec](s, "NoSpec")
	st := &noSpec{ObjectMeta: meta.ObjectMeta{Name: "a", Namespace: "n", Generation: 1}, Data: "x"}
	in := meta.DeepCopy(st)
	in.Data = "y"
	out, err := k.MergeUpdate(st, in)
	if err != nil {
		t.Fatal(err)
	}
	if out.(*noSpec).Data != "y" || out.GetObjectMeta().Generation != 1 {
		t.Errorf("kind without spec: %+v", out)
	}
	out, _ = k.MergeStatus(st, in)
	if out.(*noSpec).Data != "x" {
		t.Error("MergeStatus of a kind without status changed other fields")
	}
}

func TestCheckPreconditions(t *testing.T) {
	o := &thing{ObjectMeta: meta.ObjectMeta{UID: "u", ResourceVersion: "3"}}
	cases := []struct {
		p     Preconditions
		field string
	}{
		{Preconditions{}, ""},
		{Preconditions{UID: "u"}, ""},
		{Preconditions{UID: "u", ResourceVersion: "3"}, ""},
		{Preconditions{UID: "v"}, "metadata.uid"},
		{Preconditions{ResourceVersion: "4"}, "metadata.resourceVersion"},
		{Preconditions{UID: "v", ResourceVersion: "4"}, "metadata.uid"},
	}
	for _, c := range cases {
		err := CheckPreconditions(o, c.p)
		if c.field == "" {
			if err != nil {
				t.Errorf("%+v: %v", c.p, err)
			}
			continue
		}
		wantErr(t, "preconditions", err, errs.Conflict, c.field)
	}
	opts := ApplyDeleteOptions([]DeleteOption{WithPreconditions(Preconditions{UID: "u"})})
	if opts.Preconditions.UID != "u" {
		t.Errorf("ApplyDeleteOptions = %+v", opts)
	}
}

func TestErrorHelpers(t *testing.T) {
	key := meta.Key{Namespace: "n", Name: "a"}
	wantErr(t, "ConflictError", ConflictError("Thing", key, "1", "2"), errs.Conflict, "metadata.resourceVersion")
	wantErr(t, "NotFoundError", NotFoundError("Thing", key), errs.NotFound, "")
	wantErr(t, "AlreadyExistsError", AlreadyExistsError("Thing", key), errs.AlreadyExists, "")
	if msg := NotFoundError("Thing", key).Error(); !strings.Contains(msg, "Thing n/a") {
		t.Errorf("message %q does not name the object", msg)
	}
}

// listReader serves ListOf from fixed items.
type listReader struct {
	s     *Scheme
	items []meta.Object
	kind  string
}

func (r *listReader) Get(context.Context, meta.Key, meta.Object) error { return nil }
func (r *listReader) List(_ context.Context, kind string, _ ListOptions) (*ListResult, error) {
	r.kind = kind
	return &ListResult{Items: r.items, Revision: "7"}, nil
}
func (r *listReader) Scheme() *Scheme { return r.s }

func TestListOf(t *testing.T) {
	s, _ := newThingScheme(t)
	r := &listReader{s: s, items: []meta.Object{&thing{ObjectMeta: meta.ObjectMeta{Name: "a"}}}}
	items, res, err := ListOf[thing](context.Background(), r, ListOptions{})
	if err != nil || len(items) != 1 || items[0].Name != "a" || res.Revision != "7" || r.kind != "Thing" {
		t.Errorf("ListOf = %v %v %v (kind %q)", items, res, err, r.kind)
	}
	_, _, err = ListOf[other](context.Background(), r, ListOptions{})
	wantErr(t, "ListOf unregistered", err, errs.InvalidArgument, "kind")
}
