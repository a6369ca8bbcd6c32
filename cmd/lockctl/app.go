package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/client"
)

// Global flag names and defaults.
const (
	flagEndpoints = "endpoints"
	flagClusterID = "cluster-id"
	flagTimeout   = "timeout"
	flagOutput    = "output"

	defaultEndpoints = "127.0.0.1:7301"
	defaultTimeout   = 5 * time.Second
)

// stdio are the process's streams. in, out and err may be *os.File
// (then lockctl can tell whether they are terminals).
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// app is one run of lockctl: its streams, its root context and where
// signals go. Nothing in lockctl is global.
type app struct {
	io stdio

	// ctx ends (cause interruptedError) at the first SIGINT, SIGTERM or
	// SIGHUP, unless a command has taken the signals over (forwardTo).
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex // protects forward
	forward func(os.Signal)
}

// commands is lockctl's command list: one function per command, each in
// the file of its kind; adding a command is one more file and one line.
func commands(a *app) []*cli.Command {
	return []*cli.Command{
		statusCommand(a), memberCommand(a), leaderCommand(a),
		putCommand(a), getCommand(a), delCommand(a), lsCommand(a), watchCommand(a), txnCommand(a),
		sessionCommand(a), lockCommand(a), electCommand(a),
		benchCommand(a), completionCommand(a),
	}
}

// run is lockctl's whole life: parse args, run the command, map the
// outcome to an exit code. Every failure is one line on stderr.
func run(args []string, std stdio, sigs <-chan os.Signal) int {
	a := &app{io: std}
	a.ctx, a.cancel = context.WithCancelCause(context.Background())
	defer a.cancel(nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // signal router: ends with run
		defer wg.Done()
		for {
			select {
			case s := <-sigs:
				a.mu.Lock()
				f := a.forward
				a.mu.Unlock()
				if f != nil {
					f(s)
				} else {
					a.cancel(interruptedError{sig: s})
				}
			case <-stop:
				return
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()

	cliApp := newApp(a)
	err := cliApp.RunContext(a.ctx, args)
	var ce childExit
	// A childExit or a silent false has nothing to say: the command's own
	// output said it.
	if err != nil && !errors.As(err, &ce) && strings.TrimSpace(err.Error()) != "" {
		endpoints := defaultEndpoints
		if e := os.Getenv("LOCKD_ENDPOINTS"); e != "" {
			endpoints = e
		}
		for i, arg := range args {
			if v, ok := strings.CutPrefix(arg, "--endpoints="); ok {
				endpoints = v
			} else if arg == "--endpoints" && i+1 < len(args) {
				endpoints = args[i+1]
			}
		}
		fmt.Fprintf(a.io.err, "lockctl: %s\n", message(err, endpoints))
	}
	return exitCode(err)
}

// forwardTo sends signals to f instead of ending the root context, until
// the returned func is called.
func (a *app) forwardTo(f func(os.Signal)) (restore func()) {
	a.mu.Lock()
	a.forward = f
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		a.forward = nil
		a.mu.Unlock()
	}
}

func newApp(a *app) *cli.App {
	cliApp := &cli.App{
		Name:  "lockctl",
		Usage: "use a lockd cluster: status, config keys, sessions, locks, elections",
		UsageText: "lockctl [global flags] COMMAND [flags] [ARGS]   (flags go before arguments)\n\n" +
			"lockctl status\n" +
			"lockctl put cfg/mode blue && lockctl get cfg/mode\n" +
			"lockctl lock --wait 30s jobs/nightly -- ./nightly.sh    (the fencing token is in $LOCKD_FENCING_TOKEN)",
		Description: "Endpoints come from --endpoints or LOCKD_ENDPOINTS (`lockd dev` prints the line to export).\n" +
			"--output json prints one JSON document per command (one object per line for watch,\n" +
			"elect --observe and session keepalive); the fields are documented in `go doc ./cmd/lockctl`.\n\n" +
			exitCodesHelp,
		HideHelpCommand: true,
		// txn statements hold commas: a --then flag is one statement.
		DisableSliceFlagSeparator: true,
		EnableBashCompletion:      true,
		Reader:                    a.io.in,
		Writer:                    a.io.out,
		ErrWriter:                 a.io.err,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: flagEndpoints, Value: defaultEndpoints, EnvVars: []string{"LOCKD_ENDPOINTS"},
				Usage: "the cluster's client addresses, `HOST:PORT,...` (one is enough, all are better)"},
			&cli.StringFlag{Name: flagClusterID, EnvVars: []string{"LOCKD_CLUSTER_ID"},
				Usage: "the cluster's `ID`, if it must be checked (empty: any cluster)"},
			&cli.DurationFlag{Name: flagTimeout, Value: defaultTimeout, EnvVars: []string{"LOCKD_TIMEOUT"},
				Usage: "bounds each call (failover to other nodes included); waits have their own flags"},
			&cli.StringFlag{Name: flagOutput, Aliases: []string{"o"}, Value: "text",
				Usage: "output `FORMAT`: text or json"},
		},
		Before: func(c *cli.Context) error {
			if o := c.String(flagOutput); o != "text" && o != "json" {
				return usagef("", "--output %q must be text or json", o)
			}
			if c.Duration(flagTimeout) <= 0 {
				return usagef("", "--timeout %v must be positive", c.Duration(flagTimeout))
			}
			return nil
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("", "unknown command %q", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		Commands: commands(a),
		// Errors are reported by run, never by os.Exit inside the library.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	cliApp.OnUsageError = onUsageError("")
	for _, cmd := range cliApp.Commands {
		setUsageErrors(cmd, "")
	}
	return cliApp
}

// setUsageErrors marks urfave/cli's parse errors as usage errors (exit
// 2) on cmd and its subcommands, and makes a group without an action
// refuse unknown subcommands.
func setUsageErrors(cmd *cli.Command, parent string) {
	full := strings.TrimSpace(parent + " " + cmd.Name)
	cmd.OnUsageError = onUsageError(full)
	if cmd.Action == nil && len(cmd.Subcommands) > 0 {
		cmd.Action = func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef(full, "unknown command %q", c.Args().First())
			}
			return cli.ShowSubcommandHelp(c)
		}
	}
	for _, sub := range cmd.Subcommands {
		setUsageErrors(sub, full)
	}
}

// onUsageError spells flags as the help does (Go's flag package says
// "-wait") and marks the error as usage.
func onUsageError(cmd string) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		msg := strings.NewReplacer("flag -", "flag --", "defined: -", "defined: --").Replace(err.Error())
		return usageError{err: errors.New(msg), cmd: cmd}
	}
}

// args checks the number of positional arguments. A surplus argument that
// looks like a flag gets the usual hint: urfave/cli reads flags only
// before the arguments.
func args(c *cli.Context, cmd string, min, max int, names string) ([]string, error) {
	got := c.Args().Slice()
	if len(got) > max && max >= 0 {
		extra := got[max]
		if strings.HasPrefix(extra, "-") && extra != "-" {
			return nil, usagef(cmd, "flag %s after the arguments: flags go before them (lockctl %s [flags] %s)", extra, cmd, names)
		}
		return nil, usagef(cmd, "unexpected argument %q: lockctl %s takes %s", extra, cmd, names)
	}
	if len(got) < min {
		return nil, usagef(cmd, "missing arguments: lockctl %s [flags] %s", cmd, names)
	}
	return got, nil
}

// conn is what a command needs to talk to the cluster.
type conn struct {
	a         *app
	c         *client.Client
	timeout   time.Duration
	json      bool
	endpoints string
}

// connect makes a client from the global flags. Close it.
func (a *app) connect(c *cli.Context) (*conn, error) {
	// Global flags: urfave/cli looks them up through the parent contexts.
	root := c
	raw := root.String(flagEndpoints)
	eps := splitEndpoints(raw)
	timeout := root.Duration(flagTimeout)
	cl, err := client.New(client.Config{
		Endpoints: eps, ClusterID: root.String(flagClusterID), Name: "lockctl",
		DialTimeout: timeout, RequestTimeout: timeout,
	})
	if err != nil {
		return nil, usagef("", "--endpoints %q: %w", raw, err)
	}
	return &conn{a: a, c: cl, timeout: timeout, json: root.String(flagOutput) == "json", endpoints: raw}, nil
}

func (cn *conn) Close() { _ = cn.c.Close() }

// withCall is the shape of a one-call command: check the positional
// arguments (see args), connect, and run f with the call's context.
func (a *app) withCall(c *cli.Context, cmd string, min, max int, names string, f func(ctx context.Context, cn *conn, as []string) error) error {
	as, err := args(c, cmd, min, max, names)
	if err != nil {
		return err
	}
	cn, err := a.connect(c)
	if err != nil {
		return err
	}
	defer cn.Close()
	ctx, cancel := cn.call()
	defer cancel()
	return f(ctx, cn, as)
}

// call returns a context for one call: it ends after --timeout (cause
// errUnavailable: no node answered in time) or at a signal.
func (cn *conn) call() (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(cn.a.ctx, cn.timeout,
		fmt.Errorf("no lockd node answered within --timeout %v: %w", cn.timeout, errUnavailable))
}

// out writes v as JSON, or text as given, to stdout.
func (cn *conn) out(v any, text func(w io.Writer)) error {
	if cn.json {
		return writeJSON(cn.a.io.out, v)
	}
	text(cn.a.io.out)
	return nil
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
