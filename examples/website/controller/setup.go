package controller

import (
	"time"

	ctrl "github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/store"

	"github.com/capstanhq/capstan/examples/website/dns"
)

// Options configure SetupWithManager.
type Options struct {
	// DNS is where Websites register their domains. Required.
	DNS dns.Registry
	// StartupDelay is how long a WebServer takes to start a new generation
	// before it reports Ready; 0 starts at once.
	StartupDelay time.Duration
	// DomainRetry is how soon a Website whose domain another Website holds
	// tries again; default 30s.
	DomainRetry time.Duration
	// Controller holds the options of both controllers (workers, rate
	// limiter, ...); Logger and Registry default to the manager's.
	Controller ctrl.Options
}

// SetupWithManager adds the Website and WebServer controllers to mgr. The
// store's scheme must hold the api kinds (api.AddToScheme). Call
// manager.AddGarbageCollector too, so that a deleted Website's WebServers
// are deleted.
func SetupWithManager(mgr *manager.Manager, opts Options) error {
	if opts.DNS == nil {
		return errs.Invalid("DNS", "a DNS registry is required")
	}
	w := &WebsiteReconciler{DNS: opts.DNS, DomainRetry: opts.DomainRetry, Options: opts.Controller}
	if err := w.SetupWithManager(mgr); err != nil {
		return err
	}
	s := &WebServerReconciler{StartupDelay: opts.StartupDelay, Options: opts.Controller}
	return s.SetupWithManager(mgr)
}

// client reads from the cache and writes to the store, like
// controller-runtime's default client. Reads may lag behind the store;
// compare-and-swap writes catch that, and CreateOrUpdate retries them.
type client struct {
	store.Reader
	store.Writer
}
