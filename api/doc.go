// Package api holds what lockd's server and clients share: the limits
// table, error codes, and the data types of sessions, locks and keys.
//
// Invariants:
//
//  1. One limit table (Limits) is enforced by the state machine and read
//     by clients, so client and server never disagree on a limit.
//  2. Every error that crosses the wire is an *Error with a Code;
//     errors.Is(err, ErrX) compares codes, so it works after decoding.
//
// This package imports only the standard library, session (for the
// session id type) and internal/msgp (the hand-written codecs of the
// put's messages, fastcodec.go); everything else may import it.
package api
