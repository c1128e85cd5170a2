// Command capstan runs a Capstan manager with its built-in controllers on an
// embedded or external store, and talks to a running store like kubectl.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/capstanhq/capstan/pkg/manager"
)

func main() {
	// The first SIGINT/SIGTERM stops gracefully, a second one exits at once.
	ctx := manager.SetupSignalHandler()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "capstan:", err)
		os.Exit(exitCode(err))
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "capstan",
		Short:         "Kubernetes-style operators on your own datastore",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRunCmd(), newApplyCmd(), newGetCmd(), newDeleteCmd(), newWatchCmd(), newLoadTestCmd())
	return root
}

// exitCoder is implemented by errors that choose the process exit code.
type exitCoder interface{ ExitCode() int }

func exitCode(err error) int {
	if ec, ok := err.(exitCoder); ok {
		return ec.ExitCode()
	}
	return 1
}
