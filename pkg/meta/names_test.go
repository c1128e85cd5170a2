package meta

import (
	"math/rand/v2"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// TestNameChecksMatchApimachinery: the fast checks accept exactly what
// apimachinery's regular expressions accept.
func TestNameChecksMatchApimachinery(t *testing.T) {
	checks := []struct {
		name string
		fast func(string) bool
		k8s  func(string) []string
	}{
		{"DNS1123Label", isDNS1123Label, validation.IsDNS1123Label},
		{"DNS1123Subdomain", isDNS1123Subdomain, validation.IsDNS1123Subdomain},
		{"QualifiedName", isQualifiedName, validation.IsQualifiedName},
		{"LabelValue", isLabelValue, validation.IsValidLabelValue},
	}
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := "aAz0-._/é\n "
	var inputs []string
	for range 8000 {
		var b strings.Builder
		n := r.IntN(12)
		if r.IntN(10) == 0 {
			n = 50 + r.IntN(220)
		}
		for range n {
			if r.IntN(3) == 0 {
				b.WriteByte(alphabet[r.IntN(len(alphabet))])
			} else {
				b.WriteByte("abc019"[r.IntN(6)])
			}
		}
		inputs = append(inputs, b.String())
	}
	edges := []string{"", "a", "-", ".", "/", "a/", "/a", "a/b/c", "a.b/c", "A/b", "a..b", "a-", "-a", "_a", "a_",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 253), strings.Repeat("a", 254),
		strings.Repeat("a.", 126) + "a", strings.Repeat("a", 253) + "/b", "a/" + strings.Repeat("b", 64),
		"example.com/" + strings.Repeat("B", 63), "é", "a\n"}
	inputs = append(inputs, edges...)
	for _, c := range checks {
		for _, in := range inputs {
			want := len(c.k8s(in)) == 0
			if got := c.fast(in); got != want {
				t.Errorf("%s(%q): fast check says %v, apimachinery %v", c.name, in, got, want)
			}
		}
	}
}

func BenchmarkValidateObjectMeta(b *testing.B) {
	m := &ObjectMeta{Name: "widget-1", Namespace: "default",
		Labels:      map[string]string{"app.kubernetes.io/name": "demo", "tier": "web"},
		Annotations: map[string]string{"note": "x"}, Finalizers: []string{"example.com/cleanup"}}
	for b.Loop() {
		if err := ValidateObjectMeta(m, true); err != nil {
			b.Fatal(err)
		}
	}
}
