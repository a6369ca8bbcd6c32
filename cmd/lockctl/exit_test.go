package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
)

func TestExitCodeMapping(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("lock %q: %w", "db", err) }
	// A context whose --timeout ran out, as conn.call makes it.
	ctx, cancel := context.WithTimeoutCause(context.Background(), 0, fmt.Errorf("no answer: %w", errUnavailable))
	defer cancel()
	<-ctx.Done()
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, exitOK},
		{"false condition", falsef("key %q not found", "k"), exitFalse},
		{"silent false", silentFalse{}, exitFalse},
		{"lock held", wrap(api.Errorf(api.CodeLockHeld, "held by 7")), exitFalse},
		{"lock delay", wrap(api.Errorf(api.CodeLockDelay, "until 5")), exitFalse},
		{"not found", wrap(api.Errorf(api.CodeNotFound, "no such lock")), exitFalse},
		{"usage", usagef("get", "missing KEY"), exitUsage},
		{"usage wrapping a server error", usageError{err: api.ErrInvalid}, exitUsage},
		{"timeout cause", wrap(fmt.Errorf("%w (last attempt: refused)", context.Cause(ctx))), exitUnavailable},
		{"deadline", wrap(context.DeadlineExceeded), exitUnavailable},
		{"no leader", wrap(api.Errorf(api.CodeUnavailable, "no leader")), exitUnavailable},
		{"session lost", wrap(fmt.Errorf("session 1: %w: %w", client.ErrSessionLost, client.ErrSessionExpired)), exitSessionLost},
		{"session lost while unavailable", fmt.Errorf("%w: %w", client.ErrSessionLost, errUnavailable), exitSessionLost},
		{"session not found", wrap(api.Errorf(api.CodeSessionNotFound, "gone")), exitSessionLost},
		{"interrupted", wrap(interruptedError{sig: syscall.SIGINT}), exitInterrupted},
		{"limit", wrap(api.Errorf(api.CodeLimit, "too many waiters")), exitError},
		{"stale token", wrap(api.Errorf(api.CodeStaleToken, "stale")), exitError},
		{"invalid", wrap(api.Errorf(api.CodeInvalid, "bad TTL")), exitError},
		{"too large", wrap(api.Errorf(api.CodeTooLarge, "value")), exitError},
		{"compacted", wrap(api.Errorf(api.CodeCompacted, "history")), exitError},
		{"client closed", wrap(client.ErrClosed), exitError},
		{"local", errors.New("reading stdin: broken pipe"), exitError},
		{"child 0", childExit{code: 0}, 0},
		{"child 7", childExit{code: 7}, 7},
		{"child killed", childExit{code: signalExitCode(syscall.SIGKILL)}, 137},
	}
	for _, tc := range cases {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("%s: exitCode(%v) = %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestMessagesAreOneLineWithAHint(t *testing.T) {
	cases := []struct {
		err  error
		want []string
	}{
		{errors.Join(errors.New("first"), errors.New("second")), []string{"first; second"}},
		{usagef("lock check", "token %q is not a fencing token", "x"), []string{`token "x"`, "(see lockctl lock check --help)"}},
		{fmt.Errorf("get: %w", errUnavailable), []string{"check that lockd runs at 127.0.0.1:1", "LOCKD_ENDPOINTS"}},
		{fmt.Errorf("keepalive: %w", client.ErrSessionLost), []string{"start over with a new session"}},
		{fmt.Errorf("keepalive: %w: unknown session; create a new session", client.ErrSessionLost), []string{"unknown session; create a new session"}},
	}
	for _, tc := range cases {
		msg := message(tc.err, "127.0.0.1:1")
		if strings.ContainsAny(msg, "\r\n") {
			t.Errorf("message %q spans lines", msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("message %q lacks %q", msg, w)
			}
		}
	}
	// The server's own advice is not repeated.
	if msg := message(fmt.Errorf("%w: create a new session", client.ErrSessionLost), "e"); strings.Contains(msg, "start over") {
		t.Errorf("a session error that says what to do got the generic hint too: %q", msg)
	}
}
