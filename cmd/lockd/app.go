package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // start-up or runtime failure
	exitUsage   = 2 // bad flags or arguments
)

// usageError marks an error as bad usage (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// run is lockd's whole life: parse args, run the node or the dev cluster
// until ctx ends, and map the outcome to an exit code. Every failure is
// one line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := newApp(stdout, stderr).RunContext(ctx, args)
	return report(err, stderr)
}

// report prints err as one line and returns the exit code for it.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	msg := oneLine(err.Error())
	code := exitFailure
	var u usageError
	if errors.As(err, &u) {
		code = exitUsage
		msg += " (see lockd --help)"
	}
	fmt.Fprintf(stderr, "lockd: %s\n", msg)
	return code
}

// oneLine joins the lines of a message (errors.Join puts each error on
// its own line).
func oneLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	return strings.Join(lines, "; ")
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  "lockd",
		Usage: "a replicated lock and configuration service (one node; `lockd dev` runs a local cluster)",
		UsageText: "lockd [flags]                          start a node (no flags: a single-node cluster on loopback)\n" +
			"lockd --name n2 --initial-cluster n1=10.0.0.1:7401,n2=10.0.0.2:7401,n3=10.0.0.3:7401 ...\n" +
			"lockd dev --nodes 3                    a local cluster of 3 processes for demos and tests",
		Description: "Every flag can also be set by the environment variable named in brackets.\n" +
			"Node ids come from the position of --name in --initial-cluster sorted by name (1-based),\n" +
			"so every node must be given the same member list.",
		HideHelpCommand: true,
		Writer:          stdout,
		ErrWriter:       stderr,
		Flags:           nodeFlags(),
		Action:          nodeAction(stderr),
		Commands:        []*cli.Command{devCommand(stdout, stderr)},
		OnUsageError:    onUsageError,
		// Errors are reported by run, never by os.Exit inside the library.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

// onUsageError marks urfave/cli's parse errors as bad usage, spelling
// flags as lockd's help does (Go's flag package says "-tick").
func onUsageError(_ *cli.Context, err error, _ bool) error {
	msg := strings.NewReplacer("flag -", "flag --", "defined: -", "defined: --").Replace(err.Error())
	return usageError{errors.New(msg)}
}

// checkNoArgs refuses positional arguments (a typo such as "lockd n1").
func checkNoArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q: lockd takes only flags, or the command dev", c.Args().First())}
	}
	return nil
}
