package store

import (
	"errors"
	"fmt"

	"github.com/lockd/lockd/consensus"
)

var (
	// ErrCorrupt is wrapped by every *CorruptError: stored data failed a
	// check (checksum, decoding, a gap in the log).
	ErrCorrupt = errors.New("corrupt data")
	// ErrClosed is returned by a store used after Close.
	ErrClosed = errors.New("store is closed")
	// ErrLocked is wrapped by a *LockedError: another process holds the
	// data dir.
	ErrLocked = errors.New("data dir is locked by another process")
	// ErrOutOfRange says a requested log range is not (or no longer)
	// stored.
	ErrOutOfRange = errors.New("log range not stored")
	// ErrIdentityMismatch says the data dir belongs to another cluster or
	// another node than the caller claims.
	ErrIdentityMismatch = errors.New("data dir belongs to a different cluster member")
)

// recoveryHint is the operator's way out of a corrupt log.
const recoveryHint = "this member must not run on this raft log: restore the data dir from a snapshot, " +
	"or remove this member from the cluster and re-add it with an empty data dir"

// CorruptError says that stored data failed a check. It wraps ErrCorrupt
// and, for an entry whose checksum does not match, the
// *consensus.EntryCorruptError.
type CorruptError struct {
	// Path is the file holding the bad data.
	Path string
	// Index is the log index concerned; 0 for data other than an entry.
	Index consensus.Index
	// What says which check failed and on what.
	What string
	// Err is the underlying error, if any.
	Err error
	// Hint says how to recover; empty means the raft store's hint
	// (restore from a snapshot, or remove and re-add the member).
	Hint string
}

func (e *CorruptError) Error() string {
	where := e.Path
	if e.Index != 0 {
		where = fmt.Sprintf("%s, log index %d", e.Path, e.Index)
	}
	msg := fmt.Sprintf("corrupt data in %s: %s", where, e.What)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	hint := e.Hint
	if hint == "" {
		hint = recoveryHint
	}
	return msg + "; " + hint
}

// Unwrap lets errors.Is find ErrCorrupt and errors.As find the cause.
func (e *CorruptError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrCorrupt}
	}
	return []error{ErrCorrupt, e.Err}
}

// LockedError says another process holds a data dir.
type LockedError struct {
	Dir string
	// PID is the holder's pid as written in the lock file; 0 if unknown.
	PID int
}

func (e *LockedError) Error() string {
	holder := "another process (pid unknown)"
	if e.PID != 0 {
		holder = fmt.Sprintf("process %d", e.PID)
	}
	return fmt.Sprintf("data dir %s is in use by %s: stop it, or give this process another data dir", e.Dir, holder)
}

// Unwrap lets errors.Is find ErrLocked.
func (e *LockedError) Unwrap() error { return ErrLocked }
