package meta

import (
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	valid := []string{"a", "a-b", "a.b", "0", "a1-2.c3", strings.Repeat("a", 253)}
	invalid := []string{"", "A", "a_b", "a/b", "a b", "-a", "a-", ".a", "a..b", "é", strings.Repeat("a", 254)}
	for _, n := range valid {
		if err := ValidateName("metadata.name", n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range invalid {
		wantInvalid(t, "name "+n, ValidateName("f.name", n), "f.name")
	}
}

func TestValidateNamespace(t *testing.T) {
	for _, n := range []string{"a", "kube-system", strings.Repeat("a", 63)} {
		if err := ValidateNamespace("ns", n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	for _, n := range []string{"", "a.b", "A", strings.Repeat("a", 64), "a_b"} {
		wantInvalid(t, "namespace "+n, ValidateNamespace("ns", n), "ns")
	}
}

func TestValidateLabels(t *testing.T) {
	ok := map[string]string{"a": "", "app.kubernetes.io/name": "x-y_z.1", "k": strings.Repeat("v", 63)}
	if err := ValidateLabels("metadata.labels", ok); err != nil {
		t.Errorf("valid labels: %v", err)
	}
	bad := []struct {
		labels map[string]string
		field  string
	}{
		{map[string]string{"bad key": "v"}, "metadata.labels[bad key]"},
		{map[string]string{"": "v"}, "metadata.labels[]"},
		{map[string]string{"a/b/c": "v"}, "metadata.labels[a/b/c]"},
		{map[string]string{strings.Repeat("k", 64): "v"}, "metadata.labels[" + strings.Repeat("k", 64) + "]"},
		{map[string]string{"k": "bad value"}, "metadata.labels[k]"},
		{map[string]string{"k": "-v"}, "metadata.labels[k]"},
		{map[string]string{"k": strings.Repeat("v", 64)}, "metadata.labels[k]"},
	}
	for _, b := range bad {
		wantInvalid(t, b.field, ValidateLabels("metadata.labels", b.labels), b.field)
	}
}

func TestValidateAnnotations(t *testing.T) {
	if err := ValidateAnnotations("a", map[string]string{"Note": strings.Repeat("x", 1000), "example.com/x": "y"}); err != nil {
		t.Errorf("valid annotations (keys may be upper-case): %v", err)
	}
	wantInvalid(t, "bad key", ValidateAnnotations("a", map[string]string{"a b": ""}), "a[a b]")
	big := map[string]string{"a": strings.Repeat("x", MaxAnnotationsBytes/2), "b": strings.Repeat("x", MaxAnnotationsBytes/2)}
	wantInvalid(t, "too large", ValidateAnnotations("a", big), "a")
}

func TestValidateObjectMeta(t *testing.T) {
	base := func() *ObjectMeta { return &ObjectMeta{Name: "a", Namespace: "ns"} }
	if err := ValidateObjectMeta(base(), true); err != nil {
		t.Errorf("valid: %v", err)
	}
	if err := ValidateObjectMeta(&ObjectMeta{Name: "a"}, false); err != nil {
		t.Errorf("valid cluster-scoped: %v", err)
	}
	cases := []struct {
		name       string
		change     func(*ObjectMeta)
		namespaced bool
		field      string
	}{
		{"bad name", func(m *ObjectMeta) { m.Name = "A" }, true, "metadata.name"},
		{"no namespace", func(m *ObjectMeta) { m.Namespace = "" }, true, "metadata.namespace"},
		{"namespace on cluster-scoped", func(m *ObjectMeta) {}, false, "metadata.namespace"},
		{"bad namespace", func(m *ObjectMeta) { m.Namespace = "a.b" }, true, "metadata.namespace"},
		{"bad label", func(m *ObjectMeta) { m.Labels = map[string]string{"k": "a b"} }, true, "metadata.labels[k]"},
		{"bad annotation", func(m *ObjectMeta) { m.Annotations = map[string]string{"a b": ""} }, true, "metadata.annotations[a b]"},
		{"owner without kind", func(m *ObjectMeta) { m.OwnerReferences = []OwnerReference{{Name: "o", UID: "u"}} }, true, "metadata.ownerReferences[0].kind"},
		{"owner without uid", func(m *ObjectMeta) {
			m.OwnerReferences = []OwnerReference{{Kind: "K", Name: "o", UID: "u"}, {Kind: "K", Name: "p"}}
		}, true, "metadata.ownerReferences[1].uid"},
		{"owner with bad name", func(m *ObjectMeta) { m.OwnerReferences = []OwnerReference{{Kind: "K", Name: "O", UID: "u"}} }, true, "metadata.ownerReferences[0].name"},
		{"two controllers", func(m *ObjectMeta) {
			m.OwnerReferences = []OwnerReference{{Kind: "K", Name: "a", UID: "1", Controller: true}, {Kind: "K", Name: "b", UID: "2", Controller: true}}
		}, true, "metadata.ownerReferences"},
		{"bad finalizer", func(m *ObjectMeta) { m.Finalizers = []string{"a b"} }, true, "metadata.finalizers[0]"},
		{"duplicate finalizer", func(m *ObjectMeta) { m.Finalizers = []string{"x/y", "z", "x/y"} }, true, "metadata.finalizers[2]"},
		{"bad resourceVersion", func(m *ObjectMeta) { m.ResourceVersion = "v1" }, true, "metadata.resourceVersion"},
		{"negative resourceVersion", func(m *ObjectMeta) { m.ResourceVersion = "-1" }, true, "metadata.resourceVersion"},
	}
	for _, c := range cases {
		m := base()
		c.change(m)
		wantInvalid(t, c.name, ValidateObjectMeta(m, c.namespaced), c.field)
	}
}
