package storetest

import (
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Kind names the suite registers.
const (
	// WidgetKind is namespaced and typed (*Widget).
	WidgetKind = "Widget"
	// GizmoKind is cluster-scoped and typed (*Gizmo).
	GizmoKind = "Gizmo"
	// DoodadKind is namespaced and known only as *meta.Unstructured.
	DoodadKind = "Doodad"
)

// Widget is the suite's namespaced typed kind.
type Widget struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is what Update writes.
	Spec WidgetSpec `json:"spec"`
	// Status is what UpdateStatus writes.
	Status WidgetStatus `json:"status"`
}

// WidgetSpec is a Widget's desired state.
type WidgetSpec struct {
	// Size is a number the suite increments and compares.
	Size int `json:"size"`
	// Color is a free string.
	Color string `json:"color,omitempty"`
	// Tags is a slice, to check that copies do not share it.
	Tags []string `json:"tags,omitempty"`
	// Nested is a map, to check that copies do not share it.
	Nested map[string]string `json:"nested,omitempty"`
	// Blob pads objects to a chosen size.
	Blob string `json:"blob,omitempty"`
}

// WidgetStatus is a Widget's observed state.
type WidgetStatus struct {
	// Phase is a free string.
	Phase string `json:"phase,omitempty"`
	// Conditions are the usual conditions.
	Conditions []meta.Condition `json:"conditions,omitempty"`
	// Blob pads the status to a chosen size.
	Blob string `json:"blob,omitempty"`
}

// Gizmo is the suite's cluster-scoped typed kind.
type Gizmo struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is what Update writes.
	Spec GizmoSpec `json:"spec"`
	// Status is what UpdateStatus writes.
	Status GizmoStatus `json:"status"`
}

// GizmoSpec is a Gizmo's desired state.
type GizmoSpec struct {
	// Size is a number.
	Size int `json:"size"`
}

// GizmoStatus is a Gizmo's observed state.
type GizmoStatus struct {
	// Ready is a flag.
	Ready bool `json:"ready,omitempty"`
}

// Unregistered is a resource type the suite never registers, for the
// unknown-kind cases.
type Unregistered struct {
	meta.ObjectMeta `json:"metadata"`
}

// RegisterKinds registers Widget, Gizmo and Doodad in s.
func RegisterKinds(s *store.Scheme) error {
	if _, err := store.Register[Widget](s, WidgetKind); err != nil {
		return err
	}
	if _, err := store.Register[Gizmo](s, GizmoKind, store.ClusterScoped()); err != nil {
		return err
	}
	_, err := s.RegisterUnstructured(DoodadKind)
	return err
}
