package manager

import (
	"crypto/rand"
	"encoding/hex"
	"os"

	"github.com/capstanhq/capstan/pkg/coordination"
	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/meta"
)

// defaultElector builds the coordination.Elector that LeaderElection: true
// uses when no LeaderElector is given.
func defaultElector(opts Options) (LeaderElector, error) {
	if opts.LeaderElectionID == "" {
		return nil, errs.Invalid("leaderElectionID", "LeaderElection needs a LeaderElectionID (the Lease's name) or a LeaderElector")
	}
	ns := opts.LeaderElectionNamespace
	if ns == "" {
		ns = "default"
	}
	scheme := opts.Store.Scheme()
	if _, err := scheme.Kind(coordination.KindLease); err != nil {
		if err := coordination.AddToScheme(scheme); err != nil {
			return nil, err
		}
	}
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return coordination.NewElector(coordination.ElectorConfig{
		Store:           opts.Store,
		Lease:           meta.Key{Namespace: ns, Name: opts.LeaderElectionID},
		Identity:        host + "_" + hex.EncodeToString(b),
		LeaseDuration:   opts.LeaseDuration,
		RenewDeadline:   opts.RenewDeadline,
		RetryPeriod:     opts.RetryPeriod,
		ReleaseOnCancel: opts.LeaderElectionReleaseOnCancel,
		Logger:          opts.Logger.WithName("leader-election"),
		Metrics:         coordination.NewMetrics(opts.Registry),
	})
}
