package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
)

// Exit codes (doc.go, `lockctl --help` and the README list them).
const (
	exitOK          = 0
	exitFalse       = 1 // the condition was false
	exitUsage       = 2 // bad flags or arguments
	exitUnavailable = 3 // no node answered, or no leader, within --timeout
	exitSessionLost = 4 // the session is gone
	exitError       = 5 // any other error
	// exitInterrupted is 128 + SIGINT, as a shell reports a command
	// stopped by Ctrl-C: a signal ended a call or a wait before it was done.
	exitInterrupted = 130
)

// exitCodesHelp is the exit code table of `lockctl --help`.
const exitCodesHelp = `Exit codes:
   0    ok
   1    the condition was false: lock not acquired within --wait, lock check says the token
        is not current, --if-rev/--if-absent/txn compare failed, get found no key
   2    usage error (bad flags or arguments)
   3    cluster unavailable: no node answered, or no leader, within --timeout
   4    the session was lost (expired or destroyed), or the named session does not exist
   5    any other error (the server refused the request: a limit, a stale token, ...)
   130  interrupted (Ctrl-C or SIGTERM) before the call or wait was done
   lockctl lock NAME -- COMMAND exits with COMMAND's code (128+N if signal N killed it)`

// errFalse marks "the condition was false" (exit 1).
var errFalse = errors.New("condition false")

// errUnavailable marks a call that no node answered within --timeout
// (exit 3): the cause given to every call's context.
var errUnavailable = errors.New("cluster unavailable")

// falsef reports a false condition with a message.
func falsef(format string, args ...any) error {
	return fmt.Errorf("%s%w", fmt.Sprintf(format, args...), silentErr{errFalse})
}

// silentErr wraps a marker error without adding to the message.
type silentErr struct{ err error }

func (s silentErr) Error() string { return "" }
func (s silentErr) Unwrap() error { return s.err }

// usageError marks bad usage (exit 2); cmd names the command for the
// hint "see lockctl CMD --help".
type usageError struct {
	err error
	cmd string
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(cmd, format string, args ...any) error {
	return usageError{err: fmt.Errorf(format, args...), cmd: cmd}
}

// interruptedError is the cause of the root context when a signal ends it.
type interruptedError struct{ sig os.Signal }

func (e interruptedError) Error() string { return fmt.Sprintf("interrupted by %v", e.sig) }

// childExit carries the exit code of the command run under a lock: lockctl
// exits with it and prints nothing (the command spoke for itself).
type childExit struct{ code int }

func (e childExit) Error() string { return fmt.Sprintf("the command exited with code %d", e.code) }

// exitCode maps an error to lockctl's exit code. The order matters: a
// more specific class wins (a session lost while the cluster was
// unavailable is reported as lost).
func exitCode(err error) int {
	var ce childExit
	var ue usageError
	var ie interruptedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, errFalse):
		return exitFalse
	case errors.Is(err, client.ErrSessionLost), errors.Is(err, client.ErrSessionExpired), errors.Is(err, api.ErrSessionNotFound):
		return exitSessionLost
	case errors.As(err, &ie):
		return exitInterrupted
	case errors.Is(err, errUnavailable), errors.Is(err, api.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return exitUnavailable
	case errors.Is(err, api.ErrLockHeld), errors.Is(err, api.ErrLockDelay), errors.Is(err, api.ErrNotFound):
		return exitFalse
	}
	return exitError
}

// signalExitCode is the exit code for a process killed by a signal, as
// shells report it.
func signalExitCode(sig syscall.Signal) int { return 128 + int(sig) }

// message is the one line report prints for err (without "lockctl: ").
func message(err error, endpoints string) string {
	msg := oneLine(err.Error())
	switch exitCode(err) {
	case exitUsage:
		var ue usageError
		errors.As(err, &ue)
		return msg + " (see " + strings.TrimSpace("lockctl "+ue.cmd) + " --help)"
	case exitUnavailable:
		return msg + "; check that lockd runs at " + endpoints + " (set --endpoints or LOCKD_ENDPOINTS) and that a majority of its nodes are up"
	case exitSessionLost:
		if strings.Contains(msg, "new session") {
			return msg // the server said what to do
		}
		return msg + "; the session expired or was destroyed: start over with a new session"
	}
	return msg
}

// oneLine joins the lines of a message (errors.Join puts each error on a
// line of its own) and drops empty parts.
func oneLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	return strings.Join(lines, "; ")
}
