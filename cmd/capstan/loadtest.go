package main

import "github.com/spf13/cobra"

func newLoadTestCmd() *cobra.Command {
	return &cobra.Command{Use: "loadtest", Short: "Run load tests"}
}
