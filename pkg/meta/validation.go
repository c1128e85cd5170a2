package meta

import (
	"fmt"
	"strings"

	"github.com/capstanhq/capstan/pkg/errs"
)

// MaxAnnotationsBytes bounds the total size of an object's annotations, as
// in Kubernetes.
const MaxAnnotationsBytes = 256 * 1024

// ValidateName checks a resource name: a DNS-1123 subdomain (lower-case
// alphanumerics, '-' and '.', at most 253 characters).
func ValidateName(field, name string) error {
	if name == "" {
		return errs.Invalid(field, "name is required")
	}
	if msgs := dns1123SubdomainErrors(name); len(msgs) > 0 {
		return errs.Invalid(field, "invalid name %q: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// ValidateNamespace checks a namespace: a DNS-1123 label (at most 63
// characters, no dots).
func ValidateNamespace(field, ns string) error {
	if msgs := dns1123LabelErrors(ns); len(msgs) > 0 {
		return errs.Invalid(field, "invalid namespace %q: %s", ns, strings.Join(msgs, "; "))
	}
	return nil
}

// ValidateLabels checks label keys (qualified names) and values.
func ValidateLabels(field string, labels map[string]string) error {
	for k, v := range labels {
		if msgs := qualifiedNameErrors(k); len(msgs) > 0 {
			return errs.Invalid(fmt.Sprintf("%s[%s]", field, k), "invalid label key: %s", strings.Join(msgs, "; "))
		}
		if msgs := labelValueErrors(v); len(msgs) > 0 {
			return errs.Invalid(fmt.Sprintf("%s[%s]", field, k), "invalid label value %q: %s", v, strings.Join(msgs, "; "))
		}
	}
	return nil
}

// ValidateAnnotations checks annotation keys and their total size.
func ValidateAnnotations(field string, annotations map[string]string) error {
	total := 0
	for k, v := range annotations {
		if msgs := qualifiedNameErrors(strings.ToLower(k)); len(msgs) > 0 {
			return errs.Invalid(fmt.Sprintf("%s[%s]", field, k), "invalid annotation key: %s", strings.Join(msgs, "; "))
		}
		total += len(k) + len(v)
	}
	if total > MaxAnnotationsBytes {
		return errs.Invalid(field, "annotations are %d bytes, more than %d", total, MaxAnnotationsBytes)
	}
	return nil
}

// ValidateObjectMeta checks what a client may set in m. namespaced says
// whether the kind lives in namespaces: a namespaced object needs a
// namespace, a cluster-scoped one must have none.
func ValidateObjectMeta(m *ObjectMeta, namespaced bool) error {
	if err := ValidateName("metadata.name", m.Name); err != nil {
		return err
	}
	switch {
	case namespaced && m.Namespace == "":
		return errs.Invalid("metadata.namespace", "namespace is required for this kind")
	case !namespaced && m.Namespace != "":
		return errs.Invalid("metadata.namespace", "kind is cluster-scoped; namespace %q not allowed", m.Namespace)
	case namespaced:
		if err := ValidateNamespace("metadata.namespace", m.Namespace); err != nil {
			return err
		}
	}
	if err := ValidateLabels("metadata.labels", m.Labels); err != nil {
		return err
	}
	if err := ValidateAnnotations("metadata.annotations", m.Annotations); err != nil {
		return err
	}
	controllers := 0
	for i, r := range m.OwnerReferences {
		f := fmt.Sprintf("metadata.ownerReferences[%d]", i)
		switch {
		case r.Kind == "":
			return errs.Invalid(f+".kind", "kind is required")
		case r.UID == "":
			return errs.Invalid(f+".uid", "uid is required")
		}
		if err := ValidateName(f+".name", r.Name); err != nil {
			return err
		}
		if r.Controller {
			controllers++
		}
	}
	if controllers > 1 {
		return errs.Invalid("metadata.ownerReferences", "only one owner reference may be the controller, found %d", controllers)
	}
	seen := make(map[string]bool, len(m.Finalizers))
	for i, f := range m.Finalizers {
		field := fmt.Sprintf("metadata.finalizers[%d]", i)
		if msgs := qualifiedNameErrors(f); len(msgs) > 0 {
			return errs.Invalid(field, "invalid finalizer %q: %s", f, strings.Join(msgs, "; "))
		}
		if seen[f] {
			return errs.Invalid(field, "duplicate finalizer %q", f)
		}
		seen[f] = true
	}
	if m.ResourceVersion != "" {
		if _, err := ParseResourceVersion(m.ResourceVersion); err != nil {
			return err
		}
	}
	return nil
}
