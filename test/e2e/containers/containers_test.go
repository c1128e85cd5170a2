package containers_test

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

func TestContainers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end tests: skipped with -short")
	}
	// Before any testcontainers-go call: no reaper (its image cannot be
	// pulled here; the suite removes what it creates) and mapped ports on
	// 127.0.0.1.
	cluster.ConfigureTestcontainers()
	if err := cluster.DockerAvailable(context.Background()); err != nil {
		t.Skip("no Docker engine answers, so the container suite does not run (test/e2e/process checks the same properties with host processes): " + err.Error())
	}
	RegisterFailHandler(Fail)
	suite, reporter := GinkgoConfiguration()
	// go test -v shows the steps and the measured times (MEASURE lines).
	reporter.Verbose = reporter.Verbose || testing.Verbose()
	RunSpecs(t, "coordination end-to-end: containers", suite, reporter)
}

var images *cluster.Images

var _ = BeforeSuite(func(ctx SpecContext) {
	By("waiting for the other end-to-end suites of this machine to finish")
	release, err := cluster.Exclusive(ctx)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(release)
	dir, err := os.MkdirTemp("", "capstan-e2e-containers-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	By("building capstan and the test operator (static)")
	start := time.Now()
	bins, err := cluster.Build(ctx, dir)
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("built in %v\n", time.Since(start).Round(time.Millisecond))
	By("building the images FROM scratch")
	start = time.Now()
	images, err = cluster.BuildImages(ctx, bins, dir)
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("images %s and %s built in %v\n", images.Store, images.Operator, time.Since(start).Round(time.Millisecond))
	DeferCleanup(func(ctx context.Context) { Expect(images.Remove(ctx)).To(Succeed()) }, NodeTimeout(2*time.Minute))
}, NodeTimeout(20*time.Minute))

// newCluster starts a network and a store container for one spec.
func newCluster(ctx context.Context) cluster.Cluster {
	ctrs, err := cluster.StartContainers(ctx, images)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func(ctx context.Context) {
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("\n===== store logs =====\n%s\n", ctrs.StoreLogs())
		}
		Expect(ctrs.Close(ctx)).To(Succeed())
	}, NodeTimeout(2*time.Minute))
	return ctrs
}

var _ = scenarios.Register(newCluster)
