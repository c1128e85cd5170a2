// Command operator is the test operator of the coordination end-to-end
// tests. Several replicas of it run against one store (a `capstan run`
// process or container) and exercise pkg/coordination in one or more
// modes:
//
//   - leader: a leader-elected controller (coordination.Elector) marks Jobs
//     done with the leader's identity and fencing token, and records each
//     leadership as a Term.
//   - lock: a loop acquires a TTL lock and, inside the critical section,
//     appends entries to a Ledger, each append fenced with the lock's
//     token; writes the store refuses are recorded as Refusals.
//     --unfenced-lock drops the token, so that the tests can show what
//     fencing prevents.
//   - shard: a sharded controller (coordination.Sharder) copies each
//     Item's spec.value into its status with a fenced write and records
//     every reconcile (start, end, shard, token, outcome) in ReconcileLogs.
//
// Every replica registers a Member and rewrites a Report with what it
// believes it holds. When it has registered it prints
//
//	e2e-operator ready replica=<name> member=<member>
//
// on standard output. Everything is in test/e2e/api's kinds, in namespace
// "e2e" of the database given by --database.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/manager"
	"github.com/capstanhq/capstan/pkg/store"
	mongostore "github.com/capstanhq/capstan/pkg/store/mongo"
	"github.com/capstanhq/capstan/pkg/store/mongo/mongox"

	"github.com/capstanhq/capstan/test/e2e/api"
)

// ReadyLine starts the line the operator prints once it has registered.
const ReadyLine = "e2e-operator ready"

// config holds the flags.
type config struct {
	mongoURI     string
	database     string
	replica      string
	modes        map[string]bool
	storeTimeout time.Duration

	memberLease, memberRenew time.Duration

	lease, renewDeadline, retry time.Duration
	jobWork                     time.Duration

	lockTTL   time.Duration
	lockHold  time.Duration
	lockSteps int
	lockGap   time.Duration
	// unfencedLock writes the Ledger without the lock's token.
	unfencedLock bool

	shards         int
	shardLease     time.Duration
	reconcileWork  time.Duration
	workers        int
	logFlush       time.Duration
	reportInterval time.Duration

	healthAddr string
	logLevel   string
}

func parseFlags(args []string) (config, error) {
	var c config
	var modes string
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	fs.StringVar(&c.mongoURI, "mongo-uri", "", "store connection string (required)")
	fs.StringVar(&c.database, "database", "e2e", "database holding the test's objects")
	fs.StringVar(&c.replica, "replica", "", "replica name (required; names the Report)")
	fs.StringVar(&modes, "modes", "leader", "comma-separated modes: leader, lock, shard")
	fs.DurationVar(&c.storeTimeout, "store-timeout", 5*time.Second, "bound of one store operation")
	fs.DurationVar(&c.memberLease, "member-lease", 3*time.Second, "Member lease duration")
	fs.DurationVar(&c.memberRenew, "member-renew", time.Second, "Member renew interval")
	fs.DurationVar(&c.lease, "lease", 2*time.Second, "leader lease duration")
	fs.DurationVar(&c.renewDeadline, "renew-deadline", 1500*time.Millisecond, "leader renew deadline")
	fs.DurationVar(&c.retry, "retry", 500*time.Millisecond, "leader retry period")
	fs.DurationVar(&c.jobWork, "job-work", 20*time.Millisecond, "how long doing a Job takes")
	fs.DurationVar(&c.lockTTL, "lock-ttl", 2*time.Second, "lock TTL")
	fs.DurationVar(&c.lockHold, "lock-hold", 900*time.Millisecond, "how long one critical section lasts")
	fs.IntVar(&c.lockSteps, "lock-steps", 3, "ledger writes per critical section")
	fs.DurationVar(&c.lockGap, "lock-gap", 300*time.Millisecond, "pause between two critical sections of one replica")
	fs.BoolVar(&c.unfencedLock, "unfenced-lock", false, "append to the Ledger without the lock's fencing token (a negative control for the tests)")
	fs.IntVar(&c.shards, "shards", 6, "shards of the Item controller")
	fs.DurationVar(&c.shardLease, "shard-lease", 3*time.Second, "shard lease duration")
	fs.DurationVar(&c.reconcileWork, "reconcile-work", 30*time.Millisecond, "how long one Item reconcile takes")
	fs.IntVar(&c.workers, "workers", 4, "concurrent Item reconciles")
	fs.DurationVar(&c.logFlush, "log-flush", time.Second, "how often reconcile records are written")
	fs.DurationVar(&c.reportInterval, "report-interval", 5*time.Second, "how often the Report is rewritten when nothing changed")
	fs.StringVar(&c.healthAddr, "health-probe-bind-address", "0", "address of /healthz and /readyz (0 disables)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug or info")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.mongoURI == "" {
		return c, errs.Invalid("mongo-uri", "--mongo-uri is required")
	}
	if c.replica == "" {
		return c, errs.Invalid("replica", "--replica is required")
	}
	c.modes = map[string]bool{}
	for _, m := range strings.Split(modes, ",") {
		switch m = strings.TrimSpace(m); m {
		case "leader", "lock", "shard":
			c.modes[m] = true
		case "":
		default:
			return c, errs.Invalid("modes", "unknown mode %q (want leader, lock or shard)", m)
		}
	}
	if len(c.modes) == 0 {
		return c, errs.Invalid("modes", "at least one mode is required")
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "operator:", err)
		os.Exit(2)
	}
	log := newLogger(cfg.logLevel).WithValues("replica", cfg.replica)
	if err := run(manager.SetupSignalHandler(), cfg, log); err != nil {
		log.Error(err, "operator failed")
		os.Exit(1)
	}
	log.Info("operator stopped")
}

func newLogger(level string) logr.Logger {
	zc := zap.NewDevelopmentConfig()
	zc.DisableStacktrace = true
	zc.DisableCaller = true
	if level != "debug" {
		zc.Level = zap.NewAtomicLevelAt(zap.InfoLevel)
	}
	z, err := zc.Build()
	if err != nil {
		panic(err) // a fixed, valid configuration
	}
	return zapr.NewLogger(z)
}

// openStore connects to the store, retrying while it starts.
func openStore(ctx context.Context, cfg config, scheme *store.Scheme, log logr.Logger) (*mongostore.Store, error) {
	opts := mongostore.Options{
		Database: cfg.database,
		Timeout:  cfg.storeTimeout,
		Connect: mongox.ConnectOptions{
			AppName:                "e2e-operator-" + cfg.replica,
			ConnectTimeout:         2 * time.Second,
			ServerSelectionTimeout: cfg.storeTimeout,
			HeartbeatInterval:      time.Second,
		},
	}
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := mongostore.Open(ctx, cfg.mongoURI, scheme, opts)
		if err == nil {
			return st, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, err
		}
		log.Info("store not reachable yet; retrying", "error", err.Error())
		if !sleep(ctx, 500*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

func run(ctx context.Context, cfg config, log logr.Logger) error {
	st, err := openStore(ctx, cfg, api.NewScheme(), log)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = st.Close(cctx)
	}()
	op, err := newOperator(cfg, st, log)
	if err != nil {
		return err
	}
	err = op.mgr.Start(ctx)
	op.finish()
	return err
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
