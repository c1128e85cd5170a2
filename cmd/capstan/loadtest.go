package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/capstanhq/capstan/pkg/errs"
	"github.com/capstanhq/capstan/pkg/loadtest/config"
	"github.com/capstanhq/capstan/pkg/loadtest/engine"
	"github.com/capstanhq/capstan/pkg/loadtest/report"
	"github.com/capstanhq/capstan/pkg/loadtest/schedule"
)

// Exit codes of `capstan loadtest run` besides 0 (passed) and 1 (error).
const (
	exitLoadTestThresholds  = 3   // the run completed and a threshold failed
	exitLoadTestInterrupted = 130 // stopped by a signal; reports were written
)

// loadTestExitError is an error with a process exit code.
type loadTestExitError struct {
	code int
	msg  string
}

func (e *loadTestExitError) Error() string { return e.msg }

// ExitCode returns the process exit code.
func (e *loadTestExitError) ExitCode() int { return e.code }

func newLoadTestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "loadtest",
		Short: "Run load tests",
		Long: `Load tests fire requests on a schedule and measure them honestly: latency
is measured from each shot's intended time, so a server that stalls shows up
in the numbers (coordinated omission is corrected), next to service time.`,
	}
	cmd.AddCommand(newLoadTestRunCmd())
	return cmd
}

type loadTestFlags struct {
	json, html, phout string
	phoutCorrected    bool
	metricsAddr       string
	quiet             bool
	share             string
	startAt           string
}

func newLoadTestRunCmd() *cobra.Command {
	var f loadTestFlags
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Run the load test described by a YAML file",
		Long: `Run the load test described by FILE (YAML or JSON; see
pkg/loadtest/config for every field). ${env:NAME} and ${env:NAME:-default}
are replaced from the environment first. Unknown fields, invalid values and
guns or ammo that cannot be built (a descriptor set or TLS file that does
not load, an unknown gun type) are errors naming the field and its line.

A progress line is printed every second on stderr and a summary table on
stdout at the end. Report files named in the config (report.json,
report.html, report.phout; relative to the config file) or by flags
(relative to the working directory) are written at the end, also when the
run is interrupted.

Exit status: 0 when every threshold passed, 3 when a threshold failed or an
autostop rule stopped the run, 130 when interrupted (after writing the
reports), 1 for any other error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runLoadTest(cmd.Context(), args[0], f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.json, "json", "", "write the JSON result to this file")
	fl.StringVar(&f.html, "html", "", "write the HTML report to this file")
	fl.StringVar(&f.phout, "phout", "", "write pandora phout lines to this file")
	fl.BoolVar(&f.phoutCorrected, "phout-corrected", false, "stamp phout lines with the intended time and the latency from it")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address (for example 127.0.0.1:9101) while running")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "do not print the progress line")
	fl.StringVar(&f.share, "share", "", "run only share I of N of the load, as I/N (for example 0/3)")
	fl.StringVar(&f.startAt, "start-at", "", "start at this RFC 3339 time (replicas of a shared test start together)")
	return cmd
}

func parseLoadTestShare(s string) (schedule.Share, error) {
	if s == "" {
		return schedule.Share{}, nil
	}
	i, n, ok := strings.Cut(s, "/")
	idx, err1 := strconv.ParseInt(i, 10, 64)
	cnt, err2 := strconv.ParseInt(n, 10, 64)
	if !ok || err1 != nil || err2 != nil || cnt < 1 {
		return schedule.Share{}, errs.Invalid("--share", "want I/N such as 0/3, got %q", s)
	}
	sh := schedule.Share{Index: idx, Count: cnt}
	if err := sh.Validate(); err != nil {
		return sh, errs.WithField(err, "--share")
	}
	return sh, nil
}

func runLoadTest(ctx context.Context, path string, f loadTestFlags, stdout, stderr io.Writer) error {
	spec, lines, err := config.LoadLines(path)
	if err != nil {
		return err
	}
	share, err := parseLoadTestShare(f.share)
	if err != nil {
		return err
	}
	opts := engine.Options{Dir: filepath.Dir(path), Lines: lines, Share: share}
	if f.startAt != "" {
		if opts.StartAt, err = time.Parse(time.RFC3339Nano, f.startAt); err != nil {
			return errs.Invalid("--start-at", "want an RFC 3339 time: %v", err)
		}
	}
	dir := filepath.Dir(path)
	pick := func(flag, fromSpec string) string {
		if flag != "" {
			return flag
		}
		if fromSpec != "" && !filepath.IsAbs(fromSpec) {
			return filepath.Join(dir, fromSpec)
		}
		return fromSpec
	}
	jsonPath, htmlPath := pick(f.json, spec.Report.JSON), pick(f.html, spec.Report.HTML)
	if phoutPath := pick(f.phout, spec.Report.Phout); phoutPath != "" {
		pf, err := os.Create(phoutPath)
		if err != nil {
			return errs.Wrap(errs.InvalidArgument, err, "phout")
		}
		opts.Sinks = append(opts.Sinks, report.NewPhout(pf, f.phoutCorrected || spec.Report.PhoutCorrected))
	}
	tty := isLoadTestTerminal(stderr)
	if !f.quiet {
		opts.Observer = func(p engine.Progress) {
			if p.Done {
				if tty {
					fmt.Fprintln(stderr)
				}
				return
			}
			if tty {
				fmt.Fprintf(stderr, "\r\033[K%s", report.ProgressLine(p))
			} else {
				fmt.Fprintln(stderr, report.ProgressLine(p))
			}
		}
	}
	e, err := engine.New(ctx, spec, opts)
	if err != nil {
		for _, s := range opts.Sinks {
			s.Close()
		}
		// Building the pools' guns and ammo fails on a field of the
		// file, named like the decoder's errors: file, field, line.
		return errs.WithField(err, filepath.Base(path))
	}
	if f.metricsAddr != "" {
		stop, err := serveLoadTestMetrics(f.metricsAddr, e)
		if err != nil {
			e.Close()
			return err
		}
		defer stop()
	}
	res, runErr := e.Run(ctx)
	if res == nil {
		return runErr
	}
	if err := report.WriteSummary(stdout, res); err != nil {
		return err
	}
	var writeErrs []error
	if runErr != nil {
		writeErrs = append(writeErrs, runErr)
	}
	write := func(path string, fn func(io.Writer, *engine.Result) error) {
		if path == "" {
			return
		}
		file, err := os.Create(path)
		if err == nil {
			err = fn(file, res)
			if cerr := file.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			writeErrs = append(writeErrs, fmt.Errorf("%s: %w", path, err))
		}
	}
	write(jsonPath, report.WriteJSON)
	write(htmlPath, report.WriteHTML)
	if err := errors.Join(writeErrs...); err != nil {
		return errs.Wrap(errs.Unavailable, err, "writing reports")
	}
	switch {
	case res.Stop == engine.StopCanceled:
		return &loadTestExitError{code: exitLoadTestInterrupted, msg: "interrupted; reports written"}
	case !res.Verdict.Passed:
		return &loadTestExitError{code: exitLoadTestThresholds, msg: "thresholds failed: " + strings.Join(res.Verdict.Failures, "; ")}
	}
	return nil
}

// serveLoadTestMetrics serves the engine's metrics at addr/metrics until stop is
// called.
func serveLoadTestMetrics(addr string, e *engine.Engine) (stop func(), err error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(report.NewCollector(e.Progress, nil))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, errs.Invalid("--metrics-addr", "%v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

func isLoadTestTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
