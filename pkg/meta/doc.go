// Package meta holds what every Capstan resource shares: ObjectMeta (name,
// namespace, uid, resourceVersion, generation, labels, annotations, owner
// references, finalizers and timestamps), the Object interface, Key,
// status conditions, name and label validation, deep copies, and
// Unstructured, a map-based object for tools that have no Go type for a
// kind.
//
// A resource is a Go struct that embeds ObjectMeta under the JSON name
// "metadata" and has Spec and Status fields:
//
//	type Widget struct {
//		meta.ObjectMeta `json:"metadata"`
//		Spec   WidgetSpec   `json:"spec"`
//		Status WidgetStatus `json:"status"`
//	}
//
// *Widget then implements Object. Validation reuses
// k8s.io/apimachinery's DNS-1123 and label rules, and label selectors are
// k8s.io/apimachinery/pkg/labels selectors, so names and selectors mean
// what they mean in Kubernetes.
package meta
