//go:build unix

package process_test

import (
	"context"
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/capstanhq/capstan/test/e2e/cluster"
	"github.com/capstanhq/capstan/test/e2e/scenarios"
)

func TestProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests: skipped with -short")
	}
	RegisterFailHandler(Fail)
	suite, reporter := GinkgoConfiguration()
	// go test -v shows the steps and the measured times (MEASURE lines).
	reporter.Verbose = reporter.Verbose || testing.Verbose()
	RunSpecs(t, "coordination end-to-end: processes", suite, reporter)
}

var (
	workDir string
	bins    cluster.Binaries
)

var _ = BeforeSuite(func(ctx SpecContext) {
	By("waiting for the other end-to-end suites of this machine to finish")
	release, err := cluster.Exclusive(ctx)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(release)
	workDir, err = os.MkdirTemp("", "capstan-e2e-process-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, workDir)
	By("building capstan and the test operator")
	start := time.Now()
	bins, err = cluster.Build(ctx, workDir)
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("built in %v\n", time.Since(start).Round(time.Millisecond))
}, NodeTimeout(20*time.Minute))

// newCluster starts `capstan run` for one spec, with its own data.
func newCluster(ctx context.Context) cluster.Cluster {
	dir, err := os.MkdirTemp(workDir, "cluster-")
	Expect(err).NotTo(HaveOccurred())
	procs, err := cluster.StartProcesses(ctx, bins, dir)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func(ctx context.Context) {
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("\n===== store logs =====\n%s\n", procs.StoreLogs())
		}
		Expect(procs.Close(ctx)).To(Succeed())
	}, NodeTimeout(time.Minute))
	return procs
}

var _ = scenarios.Register(newCluster)
