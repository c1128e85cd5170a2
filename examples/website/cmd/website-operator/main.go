// Command website-operator runs the website example: a manager with the
// owner-reference garbage collector and the Website and WebServer
// controllers, over an embedded MongoDB-wire store (the default, persistent
// in --data-dir and reachable by other processes on --listen), an existing
// MongoDB (--mongo-uri) or the memory store (--store memory, gone on exit).
//
//	go run ./examples/website/cmd/website-operator
//	go run ./cmd/capstan apply -f examples/website/website.yaml
//	go run ./cmd/capstan get websites
//
// See examples/README.md for the walkthrough.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	ctrl "github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/controller/controllerutil"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/meta"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/embedded"
	"github.com/capstanhq/capstan/pkg/store/memory"
	mongostore "github.com/capstanhq/capstan/pkg/store/mongo"

	"github.com/capstanhq/capstan/examples/website/api"
	"github.com/capstanhq/capstan/examples/website/controller"
	"github.com/capstanhq/capstan/examples/website/dns"
)

type flags struct {
	store        string
	mongoURI     string
	database     string
	dataDir      string
	listen       string
	metricsAddr  string
	healthAddr   string
	dnsFile      string
	apply        string
	startupDelay time.Duration
	workers      int
	logLevel     string
	logDev       bool
}

func main() {
	var f flags
	flag.StringVar(&f.store, "store", "", "store: embedded (default), mongo (implied by --mongo-uri) or memory")
	flag.StringVar(&f.mongoURI, "mongo-uri", "", "MongoDB connection string (selects the mongo store)")
	flag.StringVar(&f.database, "database", mongostore.DefaultDatabase, "database holding the resources")
	flag.StringVar(&f.dataDir, "data-dir", "./website-data", "data directory of the embedded store and of the DNS records")
	flag.StringVar(&f.listen, "listen", embedded.DefaultAddr, "address the embedded store listens on")
	flag.StringVar(&f.metricsAddr, "metrics-bind-address", "127.0.0.1:8080", "address of /metrics (0 disables)")
	flag.StringVar(&f.healthAddr, "health-probe-bind-address", "127.0.0.1:8081", "address of /healthz and /readyz (0 disables)")
	flag.StringVar(&f.dnsFile, "dns-file", "", "file of the DNS records (default: dns.json in --data-dir; in memory with --store memory)")
	flag.StringVar(&f.apply, "apply", "", "create or update the Websites in this YAML file once the operator runs")
	flag.DurationVar(&f.startupDelay, "startup-delay", 2*time.Second, "how long a WebServer takes to start a new generation")
	flag.IntVar(&f.workers, "workers", 2, "concurrent reconciles per controller")
	flag.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.BoolVar(&f.logDev, "log-dev", true, "human-readable console logs instead of JSON")
	flag.Parse()

	log, err := newLogger(f.logLevel, f.logDev)
	if err != nil {
		fmt.Fprintln(os.Stderr, "website-operator:", err)
		os.Exit(2)
	}
	if err := run(manager.SetupSignalHandler(), f, log); err != nil {
		log.Error(err, "website-operator failed")
		os.Exit(1)
	}
}

func newLogger(level string, dev bool) (logr.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return logr.Logger{}, errs.Invalid("log-level", "%v", err)
	}
	cfg := zap.NewProductionConfig()
	if dev {
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	z, err := cfg.Build()
	if err != nil {
		return logr.Logger{}, err
	}
	return zapr.NewLogger(z), nil
}

func run(ctx context.Context, f flags, log logr.Logger) error {
	op, err := newOperator(ctx, f, log)
	if err != nil {
		return err
	}
	defer op.close()
	log.Info("starting the website operator", "metrics", f.metricsAddr, "health", f.healthAddr)
	return op.mgr.Start(ctx)
}

// operator is the wired-up operator: a manager over a store, ready to
// start.
type operator struct {
	st    store.Store
	dns   dns.Registry
	mgr   *manager.Manager
	close func() // closes the store (and stops an embedded server)
}

// newOperator opens the store f asks for and sets up a manager with the
// garbage collector, the website controllers and, with --apply, the
// runnable that applies the file.
func newOperator(ctx context.Context, f flags, log logr.Logger) (*operator, error) {
	scheme := store.NewScheme()
	if err := api.AddToScheme(scheme); err != nil {
		return nil, err
	}
	st, registry, cleanup, err := openStore(ctx, f, scheme, log)
	if err != nil {
		return nil, err
	}
	op := &operator{st: st, dns: registry, close: cleanup}
	if err := op.setup(f, log); err != nil {
		cleanup()
		return nil, err
	}
	return op, nil
}

func (op *operator) setup(f flags, log logr.Logger) error {
	mgr, err := manager.New(manager.Options{
		Store:                  op.st,
		Logger:                 log,
		MetricsBindAddress:     f.metricsAddr,
		HealthProbeBindAddress: f.healthAddr,
	})
	if err != nil {
		return err
	}
	op.mgr = mgr
	if err := mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil }); err != nil {
		return err
	}
	// The garbage collector deletes WebServers whose Website is gone.
	if err := manager.AddGarbageCollector(mgr, ctrl.Options{}); err != nil {
		return err
	}
	err = controller.SetupWithManager(mgr, controller.Options{
		DNS:          op.dns,
		StartupDelay: f.startupDelay,
		Controller:   ctrl.Options{MaxConcurrentReconciles: f.workers},
	})
	if err != nil {
		return err
	}
	if f.apply != "" {
		// Not leader-elected, so it runs at once; it ends when done.
		return mgr.Add(applyRunnable{path: f.apply, st: op.st, log: log.WithName("apply")})
	}
	return nil
}

// openStore opens the store f asks for and the DNS registry that goes with
// it; cleanup closes both (and stops an embedded server).
func openStore(ctx context.Context, f flags, scheme *store.Scheme, log logr.Logger) (store.Store, dns.Registry, func(), error) {
	kind := f.store
	if kind == "" {
		kind = "embedded"
		if f.mongoURI != "" {
			kind = "mongo"
		}
	}
	var stops []func(context.Context) error
	cleanup := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := len(stops) - 1; i >= 0; i-- {
			if err := stops[i](ctx); err != nil {
				log.Error(err, "shutting down")
			}
		}
	}
	fileDNS := func() dns.Registry {
		path := f.dnsFile
		if path == "" {
			path = filepath.Join(f.dataDir, "dns.json")
		}
		log.Info("DNS records are kept in a file", "path", path)
		return dns.NewFile(path)
	}

	var (
		st       store.Store
		registry dns.Registry
		err      error
	)
	switch kind {
	case "memory":
		st = memory.New(scheme)
		registry = &dns.Memory{}
		if f.dnsFile != "" {
			registry = dns.NewFile(f.dnsFile)
		}
	case "mongo":
		if f.mongoURI == "" {
			return nil, nil, nil, errs.Invalid("mongo-uri", "--store mongo needs --mongo-uri")
		}
		if err := os.MkdirAll(f.dataDir, 0o755); err != nil {
			return nil, nil, nil, err
		}
		st, err = mongostore.Open(ctx, f.mongoURI, scheme, mongostore.Options{Database: f.database})
		registry = fileDNS()
	case "embedded":
		dir, aerr := filepath.Abs(f.dataDir)
		if aerr != nil {
			return nil, nil, nil, errs.Invalid("data-dir", "%v", aerr)
		}
		srv, serr := embedded.New(embedded.Options{DataDir: filepath.Join(dir, "store"), Addr: f.listen})
		if serr != nil {
			return nil, nil, nil, serr
		}
		if err := srv.Start(ctx); err != nil {
			return nil, nil, nil, err
		}
		stops = append(stops, srv.Stop)
		log.Info("embedded store serving; point capstan at it with --mongo-uri", "uri", srv.URI(), "dataDir", dir)
		st, err = mongostore.Open(ctx, srv.URI(), scheme, mongostore.Options{Database: f.database})
		registry = fileDNS()
	default:
		return nil, nil, nil, errs.Invalid("store", "unknown store %q: want embedded, mongo or memory", kind)
	}
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	stops = append(stops, st.Close)
	return st, registry, cleanup, nil
}

// applyRunnable creates or updates the Websites of a YAML file, the way
// capstan apply does, so that --store memory can be tried without a
// second process.
type applyRunnable struct {
	path string
	st   store.Store
	log  logr.Logger
}

// NeedLeaderElection implements manager.LeaderElectionRunnable.
func (a applyRunnable) NeedLeaderElection() bool { return false }

// Start implements manager.Runnable.
func (a applyRunnable) Start(ctx context.Context) error {
	file, err := os.Open(a.path)
	if err != nil {
		return errs.Wrap(errs.InvalidArgument, err, "apply")
	}
	defer file.Close()
	objs, err := meta.DecodeYAMLObjects(file)
	if err != nil {
		return err
	}
	for i, u := range objs {
		if u.Kind != api.WebsiteKind {
			return errs.Invalid(fmt.Sprintf("document[%d].kind", i), "this operator applies only %s, not %q", api.WebsiteKind, u.Kind)
		}
		data, err := json.Marshal(u)
		if err != nil {
			return errs.Wrap(errs.InvalidArgument, err, "document %d", i)
		}
		var doc struct {
			Kind        string `json:"kind"`
			APIVersion  string `json:"apiVersion,omitempty"`
			api.Website        // metadata, spec, status
		}
		if err := meta.DecodeStrict(data, &doc); err != nil {
			return errs.WithField(err, fmt.Sprintf("document[%d]", i))
		}
		want := &doc.Website
		if want.Namespace == "" {
			want.Namespace = "default"
		}
		site := &api.Website{ObjectMeta: meta.ObjectMeta{Namespace: want.Namespace, Name: want.Name}}
		op, err := controllerutil.CreateOrUpdate(ctx, a.st, site, func() error {
			site.Labels, site.Annotations, site.Spec = want.Labels, want.Annotations, want.Spec
			return nil
		})
		if err != nil {
			return err
		}
		a.log.Info("Website "+string(op), "website", meta.KeyOf(site).String(), "generation", site.Generation)
	}
	return nil
}
