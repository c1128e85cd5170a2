package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/capstanhq/capstan/pkg/controller"
	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	loadtestresource "github.com/capstanhq/capstan/pkg/loadtest/resource"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/store"
	"github.com/capstanhq/capstan/pkg/store/embedded"
	"github.com/capstanhq/capstan/pkg/store/memory"
	mongostore "github.com/capstanhq/capstan/pkg/store/mongo"
)

type runFlags struct {
	storeKind   string
	mongoURI    string
	database    string
	dataDir     string
	listen      string
	metricsAddr string
	healthAddr  string
	pprofAddr   string
	shutdown    time.Duration
	logLevel    string
	logDev      bool
	loadTestDir string
}

func newRunCmd() *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the manager with the built-in controllers (and the embedded store unless told otherwise)",
		Long: `Run starts a Capstan manager with the built-in controllers.

With no store flags it serves an embedded MongoDB-wire store from --data-dir on
--listen, so that other processes (capstan get/apply/watch, operators) can use
it with --mongo-uri. --mongo-uri uses an existing MongoDB instead; --store
memory keeps everything in this process and loses it on exit.

LoadTest resources run in this process. Their specs may name files (ammo
files, gRPC descriptor sets, TLS files) only with --loadtest-dir DIR: the
names are then relative paths inside DIR, and absolute paths, paths that
leave it ("..") and symbolic links that lead out of it fail the LoadTest
with the field at fault. Without the flag a LoadTest naming a file fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runManager(cmd.Context(), cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.storeKind, "store", "", "store backend: embedded (default), mongo (implied by --mongo-uri) or memory")
	fl.StringVar(&f.mongoURI, "mongo-uri", "", "MongoDB connection string (selects the mongo store)")
	fl.StringVar(&f.database, "database", "capstan", "database holding the resources")
	fl.StringVar(&f.dataDir, "data-dir", "./capstan-data", "data directory of the embedded store")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:27017", "address the embedded store listens on")
	fl.StringVar(&f.metricsAddr, "metrics-bind-address", "127.0.0.1:8080", "address of /metrics (0 disables)")
	fl.StringVar(&f.healthAddr, "health-probe-bind-address", "127.0.0.1:8081", "address of /healthz and /readyz (0 disables)")
	fl.StringVar(&f.pprofAddr, "pprof-bind-address", "0", "address of /debug/pprof (0 disables)")
	fl.DurationVar(&f.shutdown, "graceful-shutdown-timeout", 30*time.Second, "how long to wait for runnables to stop")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.BoolVar(&f.logDev, "log-dev", false, "human-readable console logs instead of JSON")
	fl.StringVar(&f.loadTestDir, "loadtest-dir", "", "directory LoadTest specs may read files from (ammo, descriptor sets, TLS), by relative paths inside it; unset, they read none")
	return cmd
}

func newLogger(level string, dev bool) (logr.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return logr.Logger{}, errs.Invalid("log-level", "%v", err)
	}
	cfg := zap.NewProductionConfig()
	if dev {
		cfg = zap.NewDevelopmentConfig()
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	z, err := cfg.Build()
	if err != nil {
		return logr.Logger{}, err
	}
	return zapr.NewLogger(z), nil
}

// builtinScheme registers the kinds the built-in controllers own.
func builtinScheme() *store.Scheme {
	s := store.NewScheme()
	if err := coordination.AddToScheme(s); err != nil {
		panic(err) // programmer error: duplicate built-in kinds
	}
	if err := loadtestresource.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

func runManager(ctx context.Context, cmd *cobra.Command, f *runFlags) error {
	log, err := newLogger(f.logLevel, f.logDev)
	if err != nil {
		return err
	}
	if f.loadTestDir != "" {
		switch fi, err := os.Stat(f.loadTestDir); {
		case err != nil:
			return errs.Invalid("loadtest-dir", "%v", err)
		case !fi.IsDir():
			return errs.Invalid("loadtest-dir", "%s is not a directory", f.loadTestDir)
		}
	}
	kind := f.storeKind
	if kind == "" {
		kind = "embedded"
		if f.mongoURI != "" {
			kind = "mongo"
		}
	}
	scheme := builtinScheme()
	var st store.Store
	switch kind {
	case "memory":
		st = memory.New(scheme)
	case "mongo":
		if f.mongoURI == "" {
			return errs.Invalid("mongo-uri", "--store mongo needs --mongo-uri")
		}
		st, err = mongostore.Open(ctx, f.mongoURI, scheme, mongostore.Options{Database: f.database})
		if err != nil {
			return err
		}
	case "embedded":
		dir, err := filepath.Abs(f.dataDir)
		if err != nil {
			return errs.Invalid("data-dir", "%v", err)
		}
		srv, err := embedded.New(embedded.Options{DataDir: dir, Addr: f.listen,
			Logger: slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			return err
		}
		if err := srv.Start(ctx); err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Stop(sctx); err != nil {
				log.Error(err, "stopping the embedded store")
			}
		}()
		log.Info("embedded store serving", "uri", srv.URI(), "dataDir", dir)
		fmt.Fprintf(cmd.OutOrStdout(), "capstan: store listening on %s (data in %s)\n", srv.URI(), dir)
		st, err = mongostore.Open(ctx, srv.URI(), scheme, mongostore.Options{Database: f.database})
		if err != nil {
			return err
		}
	default:
		return errs.Invalid("store", "unknown store %q: want embedded, mongo or memory", kind)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = st.Close(sctx)
	}()

	mgr, err := manager.New(manager.Options{
		Store:                   st,
		Logger:                  log,
		MetricsBindAddress:      f.metricsAddr,
		HealthProbeBindAddress:  f.healthAddr,
		PprofBindAddress:        f.pprofAddr,
		GracefulShutdownTimeout: f.shutdown,
	})
	if err != nil {
		return err
	}
	if err := manager.AddGarbageCollector(mgr, controller.Options{}); err != nil {
		return err
	}
	if err := loadtestresource.SetupWithManager(mgr, loadtestresource.Options{Dir: f.loadTestDir}); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", func(_ *http.Request) error { return nil }); err != nil {
		return err
	}
	log.Info("manager starting", "store", kind)
	err = mgr.Start(ctx)
	if err == nil {
		fmt.Fprintln(cmd.OutOrStdout(), "capstan: stopped")
	}
	_ = os.Stdout.Sync()
	return err
}
