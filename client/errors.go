package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
)

// Errors of this package. Server errors arrive as *api.Error values (with
// the server's message) and match the api sentinels with errors.Is:
// api.ErrLockHeld, api.ErrLockDelay, api.ErrSessionNotFound, ...
var (
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("lockd client closed")
	// ErrSessionLost: the session ended without Close: the server no
	// longer knows it (api.ErrSessionNotFound), its TTL passed without a
	// successful keepalive (ErrSessionExpired), or the Client was closed.
	// Every lock it held is gone or about to go. Session.Err wraps it
	// and the cause.
	ErrSessionLost = errors.New("session lost")
	// ErrSessionExpired: no keepalive succeeded for a whole TTL, so the
	// server may have expired the session; the client stops using it.
	ErrSessionExpired = errors.New("no successful keepalive within the session's TTL")
	// ErrSessionClosed: Session.Close or Session.Orphan was called.
	ErrSessionClosed = errors.New("session closed")
	// ErrNotLocked: Unlock or Release of a lock this handle does not hold.
	ErrNotLocked = errors.New("not locked by this handle")
	// ErrNoLeader: an election has no leader.
	ErrNoLeader = errors.New("election has no leader")
	// ErrNotLeader: Proclaim or Resign on an election this handle does
	// not lead.
	ErrNotLeader = errors.New("not the leader of this election")
)

// errorTable maps every api error code to its sentinel, so that errors.Is
// works on errors that crossed the wire.
func errorTable() (*rpc.ErrorTable, error) {
	m := map[rpc.Code]error{}
	for code, sentinel := range api.AllCodes() {
		m[rpc.Code(api.FirstErrorCode+int(code))] = sentinel
	}
	return rpc.NewErrorTable(m)
}

// translate turns a remote error carrying an api code into an *api.Error
// with the server's message (errors.Is and errors.As both work on it);
// other errors pass unchanged.
func translate(err error) error {
	var re *rpc.RemoteError
	if !errors.As(err, &re) {
		return err
	}
	var sentinel *api.Error
	if errors.As(re.Unwrap(), &sentinel) {
		return &api.Error{Code: sentinel.Code, Message: re.Message}
	}
	return err
}

// retryable reports whether a failed attempt may be sent again, to the
// next endpoint, while the caller's context lives. These say nothing
// about the request itself, only that this node could not serve it now:
//
//   - rpc.ErrUnavailable: no connection could be had (nothing was sent).
//   - rpc.ErrConnClosed, rpc.ErrShuttingDown, rpc.ErrIdle: the
//     connection died with the call in flight; it may or may not have
//     run, which exactly-once makes harmless.
//   - rpc.ErrOverloaded: the node refused the call for load.
//   - api.ErrUnavailable: the node could not reach a leader in time.
//   - a context error (local or remote) while the caller's own context
//     is alive: the attempt's RequestTimeout passed, or the node gave up
//     on its own.
//
// Everything else is the answer and is returned: api errors (lock held,
// session not found, stale token, ...), bad requests, internal errors.
func retryable(err error) bool {
	switch {
	case errors.Is(err, rpc.ErrUnavailable), errors.Is(err, rpc.ErrConnClosed),
		errors.Is(err, rpc.ErrShuttingDown), errors.Is(err, rpc.ErrIdle),
		errors.Is(err, rpc.ErrOverloaded), errors.Is(err, api.ErrUnavailable):
		return true
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return true // the caller checks its own context first
	}
	return false
}

// streamRetryable is retryable for a watch stream, which also resumes
// after the server ended it cleanly (io.EOF: a node leaving) or it
// closed under us.
func streamRetryable(err error) bool {
	return retryable(err) || errors.Is(err, io.EOF) || errors.Is(err, rpc.ErrStreamClosed)
}

// gaveUp is the error of a call whose context ended: it wraps the
// context's error and says what the last attempt met.
func gaveUp(ctx context.Context, last error) error {
	cause := context.Cause(ctx)
	if last == nil || errors.Is(last, cause) {
		return cause
	}
	return fmt.Errorf("%w (last attempt: %v)", cause, last)
}
