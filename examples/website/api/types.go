// Package api defines the website example's resources: a Website (what a
// user asks for: a domain served by some replicas of some content) and a
// WebServer (one replica the Website controller creates for it).
//
// Every resource is a struct embedding meta.ObjectMeta as "metadata", with a
// Spec (desired state, written by users with Update) and a Status (observed
// state, written by controllers with UpdateStatus). AddToScheme registers
// both kinds so a store knows their Go types and collections.
package api

import (
	"regexp"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
)

// Kind names, as they appear in YAML ("kind: Website") and owner references.
const (
	// WebsiteKind is the kind of *Website, stored in collection "websites".
	WebsiteKind = "Website"
	// WebServerKind is the kind of *WebServer, stored in collection
	// "webservers".
	WebServerKind = "WebServer"
)

// Condition types and reasons the controllers report.
const (
	// ConditionReady is True when the object serves what its current spec
	// asks for.
	ConditionReady = "Ready"
	// ConditionProgressing is True while a Website's replicas are being
	// created, updated or started, and False once they all are.
	ConditionProgressing = "Progressing"

	// ReasonAllReplicasReady: every replica serves the current content.
	ReasonAllReplicasReady = "AllReplicasReady"
	// ReasonReplicasNotReady: some replicas are missing, outdated or
	// starting.
	ReasonReplicasNotReady = "ReplicasNotReady"
	// ReasonDomainTaken: another Website holds the domain in DNS.
	ReasonDomainTaken = "DomainTaken"
	// ReasonInvalidSpec: the spec cannot be served as it is.
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonRollingOut: replicas are being created, updated or started.
	ReasonRollingOut = "RollingOut"
	// ReasonComplete: the rollout of the current generation finished.
	ReasonComplete = "Complete"
	// ReasonStarting: a WebServer is starting its current generation.
	ReasonStarting = "Starting"
	// ReasonServing: a WebServer serves its current generation.
	ReasonServing = "Serving"
)

// Website is a domain served by a number of replicas of some content.
type Website struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is what the user asks for.
	Spec WebsiteSpec `json:"spec"`
	// Status is what the controller observed.
	Status WebsiteStatus `json:"status"`
}

// WebsiteSpec is a Website's desired state.
type WebsiteSpec struct {
	// Domain is the DNS name the site answers on, for example
	// "blog.example.com". One Website at a time may hold a domain.
	Domain string `json:"domain"`
	// Replicas is how many WebServers serve the site; 0 is allowed.
	Replicas int32 `json:"replicas"`
	// Content is the page the replicas serve.
	Content string `json:"content,omitempty"`
}

// WebsiteStatus is a Website's observed state.
type WebsiteStatus struct {
	// ObservedGeneration is the generation of the spec this status
	// describes; while it is below metadata.generation the status is stale.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas is how many WebServers of this Website exist.
	Replicas int32 `json:"replicas,omitempty"`
	// UpdatedReplicas is how many WebServers have the current spec.
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`
	// ReadyReplicas is how many WebServers serve the current spec.
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// URL is where the site answers once its domain is registered.
	URL string `json:"url,omitempty"`
	// Conditions are Ready and Progressing.
	Conditions []meta.Condition `json:"conditions,omitempty"`
}

// WebServer is one replica of a Website. The Website controller creates,
// updates and deletes WebServers; the WebServer controller "starts" them.
type WebServer struct {
	meta.ObjectMeta `json:"metadata"`
	// Spec is what the Website controller asks this replica to serve.
	Spec WebServerSpec `json:"spec"`
	// Status is what the WebServer controller observed.
	Status WebServerStatus `json:"status"`
}

// WebServerSpec is a WebServer's desired state.
type WebServerSpec struct {
	// Domain is the owning Website's domain.
	Domain string `json:"domain"`
	// Content is the page to serve.
	Content string `json:"content,omitempty"`
}

// WebServerStatus is a WebServer's observed state.
type WebServerStatus struct {
	// ObservedGeneration is the generation the status describes.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions hold Ready.
	Conditions []meta.Condition `json:"conditions,omitempty"`
}

// AddToScheme registers Website and WebServer (both namespaced) in s.
func AddToScheme(s *store.Scheme) error {
	if _, err := store.Register[Website](s, WebsiteKind); err != nil {
		return err
	}
	_, err := store.Register[WebServer](s, WebServerKind)
	return err
}

// IsServing reports whether ws serves its current spec: its Ready condition
// is True and was computed for its current generation.
func (ws *WebServer) IsServing() bool {
	c := meta.FindCondition(ws.Status.Conditions, ConditionReady)
	return c != nil && c.Status == meta.ConditionTrue && c.ObservedGeneration == ws.Generation &&
		ws.Status.ObservedGeneration == ws.Generation
}

// domainPattern is a lower-case DNS name of at least two labels.
var domainPattern = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Validate checks the spec and returns errs.InvalidArgument naming the
// field ("spec.domain", "spec.replicas") when it cannot be served.
func (s *WebsiteSpec) Validate() error {
	if len(s.Domain) > 253 || !domainPattern.MatchString(s.Domain) {
		return errs.Invalid("spec.domain", "%q is not a lower-case DNS name like blog.example.com", s.Domain)
	}
	if s.Replicas < 0 || s.Replicas > MaxReplicas {
		return errs.Invalid("spec.replicas", "must be between 0 and %d, got %d", MaxReplicas, s.Replicas)
	}
	return nil
}

// MaxReplicas bounds WebsiteSpec.Replicas.
const MaxReplicas = 100
