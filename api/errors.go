package api

import "fmt"

// Code classifies an error so that it survives the wire.
type Code uint16

const (
	CodeOK Code = iota
	// CodeInvalid: the request is malformed or contradicts the state
	// (e.g. a semaphore limit differing from the lock's).
	CodeInvalid
	// CodeNotFound: the key or lock does not exist.
	CodeNotFound
	// CodeSessionNotFound: the session does not exist (expired, destroyed,
	// or never created).
	CodeSessionNotFound
	// CodeLockHeld: a try-acquire found the lock held.
	CodeLockHeld
	// CodeLockDelay: the lock is in lock-delay after its holder's session
	// expired.
	CodeLockDelay
	// CodeStaleToken: a release or cancel names a grant that is no longer
	// current.
	CodeStaleToken
	// CodeTooLarge: a key, value, label or request exceeds a limit.
	CodeTooLarge
	// CodeLimit: a count limit was reached (waiters, sessions, ops).
	CodeLimit
	// CodeCompacted: a watch asked for history that was discarded.
	CodeCompacted
	// CodeUnsupported: an unknown command version or kind.
	CodeUnsupported
	// CodeStaleSequence: an exactly-once retry older than the last
	// request the server remembers for that client.
	CodeStaleSequence
	// CodeUnavailable: no leader could be reached in time (an election is
	// under way, or this node is cut off); retry, possibly elsewhere.
	CodeUnavailable
)

var codeNames = map[Code]string{
	CodeOK: "ok", CodeInvalid: "invalid", CodeNotFound: "not found", CodeSessionNotFound: "session not found",
	CodeLockHeld: "lock held", CodeLockDelay: "lock delay", CodeStaleToken: "stale token",
	CodeTooLarge: "too large", CodeLimit: "limit reached", CodeCompacted: "compacted",
	CodeUnsupported: "unsupported", CodeStaleSequence: "stale sequence", CodeUnavailable: "unavailable",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// Error is an error with a code and a message for people.
type Error struct {
	Code    Code   `codec:"c"`
	Message string `codec:"m"`
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, api.ErrLockHeld) true for any *Error of that code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Message == ""
}

// Errorf builds an *Error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Sentinels for errors.Is.
var (
	ErrInvalid         = &Error{Code: CodeInvalid}
	ErrNotFound        = &Error{Code: CodeNotFound}
	ErrSessionNotFound = &Error{Code: CodeSessionNotFound}
	ErrLockHeld        = &Error{Code: CodeLockHeld}
	ErrLockDelay       = &Error{Code: CodeLockDelay}
	ErrStaleToken      = &Error{Code: CodeStaleToken}
	ErrTooLarge        = &Error{Code: CodeTooLarge}
	ErrLimit           = &Error{Code: CodeLimit}
	ErrCompacted       = &Error{Code: CodeCompacted}
	ErrUnsupported     = &Error{Code: CodeUnsupported}
	ErrStaleSequence   = &Error{Code: CodeStaleSequence}
	ErrUnavailable     = &Error{Code: CodeUnavailable}
)

// AllCodes lists every code with its sentinel, for error tables.
func AllCodes() map[Code]*Error {
	return map[Code]*Error{
		CodeInvalid: ErrInvalid, CodeNotFound: ErrNotFound, CodeSessionNotFound: ErrSessionNotFound,
		CodeLockHeld: ErrLockHeld, CodeLockDelay: ErrLockDelay, CodeStaleToken: ErrStaleToken,
		CodeTooLarge: ErrTooLarge, CodeLimit: ErrLimit, CodeCompacted: ErrCompacted,
		CodeUnsupported: ErrUnsupported, CodeStaleSequence: ErrStaleSequence, CodeUnavailable: ErrUnavailable,
	}
}
