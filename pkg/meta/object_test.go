package meta

import (
	"testing"
	"time"
)

func TestKeys(t *testing.T) {
	cases := []struct {
		in   string
		want Key
		ok   bool
	}{
		{"ns/name", Key{"ns", "name"}, true},
		{"name", Key{Name: "name"}, true},
		{"", Key{}, false},
		{"/name", Key{}, false},
		{"ns/", Key{}, false},
	}
	for _, c := range cases {
		k, err := ParseKey(c.in)
		if (err == nil) != c.ok || k != c.want {
			t.Errorf("ParseKey(%q) = %v, %v", c.in, k, err)
		}
		if err != nil {
			wantInvalid(t, c.in, err, "key")
		}
		if c.ok && k.String() != c.in {
			t.Errorf("%v.String() = %q, want %q", k, k.String(), c.in)
		}
	}
	m := &ObjectMeta{Namespace: "a", Name: "b"}
	if KeyOf(m) != (Key{"a", "b"}) || m.Key() != KeyOf(m) {
		t.Error("KeyOf")
	}
}

func TestResourceVersions(t *testing.T) {
	for _, rv := range []string{"", "0", "1", "18446744073709551615"} {
		n, err := ParseResourceVersion(rv)
		if err != nil {
			t.Errorf("%q: %v", rv, err)
		}
		if rv != "" && FormatResourceVersion(n) != rv {
			t.Errorf("round trip of %q gave %q", rv, FormatResourceVersion(n))
		}
	}
	for _, rv := range []string{"x", "-1", "1.5", "18446744073709551616", " 1"} {
		_, err := ParseResourceVersion(rv)
		wantInvalid(t, rv, err, "metadata.resourceVersion")
	}
}

func TestNow(t *testing.T) {
	n := Now()
	if n.Location() != time.UTC || n.Nanosecond()%int(time.Millisecond) != 0 {
		t.Errorf("Now() = %v, want UTC with millisecond precision", n)
	}
}

func TestObjectMetaHelpers(t *testing.T) {
	m := &ObjectMeta{Finalizers: []string{"a", "b"}, OwnerReferences: []OwnerReference{{Name: "x"}, {Name: "y", Controller: true}}}
	if !m.HasFinalizer("b") || m.HasFinalizer("c") {
		t.Error("HasFinalizer")
	}
	if r := m.ControllerRef(); r == nil || r.Name != "y" || r != &m.OwnerReferences[1] {
		t.Errorf("ControllerRef = %v", r)
	}
	if (&ObjectMeta{}).ControllerRef() != nil {
		t.Error("ControllerRef without owners")
	}
	if m.IsBeingDeleted() {
		t.Error("IsBeingDeleted without a timestamp")
	}
	now := Now()
	m.DeletionTimestamp = &now
	if !m.IsBeingDeleted() {
		t.Error("IsBeingDeleted with a timestamp")
	}
	if m.GetObjectMeta() != m {
		t.Error("GetObjectMeta")
	}
}
