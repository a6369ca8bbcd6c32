package rpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Code is an error's number on the wire. The numbers are part of the
// protocol: never reuse one. Codes below FirstUserCode belong to this
// package; layers above register theirs (FirstUserCode and up) in an
// ErrorTable so that errors.Is works across the wire.
type Code uint32

// The codes this package defines.
const (
	// CodeUnknown: an error no table entry matched; only its message crosses.
	CodeUnknown Code = 1
	// CodeCanceled and CodeDeadlineExceeded carry context errors.
	CodeCanceled         Code = 2
	CodeDeadlineExceeded Code = 3
	CodeUnknownMethod    Code = 4
	CodeBadRequest       Code = 5
	CodeOverloaded       Code = 6
	CodeFrameTooLarge    Code = 7
	CodeProtocol         Code = 8
	CodeVersionMismatch  Code = 9
	CodeClusterMismatch  Code = 10
	CodeShuttingDown     Code = 11
	CodeIdle             Code = 12
	CodeInternal         Code = 13
	CodeHandshake        Code = 14

	// FirstUserCode is the first code free for layers above rpc.
	FirstUserCode Code = 1000
)

// Sentinel errors of this package. Errors returned by a Client wrap one of
// them (or the sentinel of a registered user code) so callers test with
// errors.Is; ErrFrameTooLarge and ErrProtocol are in frame.go.
var (
	ErrUnknownMethod   = errors.New("unknown method")
	ErrBadRequest      = errors.New("bad request")
	ErrOverloaded      = errors.New("overloaded")
	ErrVersionMismatch = errors.New("protocol version mismatch")
	ErrClusterMismatch = errors.New("cluster id mismatch")
	ErrShuttingDown    = errors.New("server shutting down")
	ErrIdle            = errors.New("connection closed after idle timeout")
	ErrInternal        = errors.New("internal server error")
	ErrHandshake       = errors.New("handshake failed")
	// ErrUnavailable: no connection to the address could be had.
	ErrUnavailable = errors.New("unavailable")
	// ErrConnClosed: the connection died while the call was in flight; the
	// call may or may not have run.
	ErrConnClosed = errors.New("connection closed")
	// ErrClosed: the Client, Server or transport was closed.
	ErrClosed = errors.New("closed")
	// ErrStreamClosed: the stream ended before this operation.
	ErrStreamClosed = errors.New("stream closed")
)

var builtinCodes = []codeEntry{
	{CodeCanceled, context.Canceled},
	{CodeDeadlineExceeded, context.DeadlineExceeded},
	{CodeUnknownMethod, ErrUnknownMethod},
	{CodeBadRequest, ErrBadRequest},
	{CodeOverloaded, ErrOverloaded},
	{CodeFrameTooLarge, ErrFrameTooLarge},
	{CodeProtocol, ErrProtocol},
	{CodeVersionMismatch, ErrVersionMismatch},
	{CodeClusterMismatch, ErrClusterMismatch},
	{CodeShuttingDown, ErrShuttingDown},
	{CodeIdle, ErrIdle},
	{CodeInternal, ErrInternal},
	{CodeHandshake, ErrHandshake},
}

type codeEntry struct {
	code Code
	err  error
}

// ErrorTable maps codes to sentinel errors, both ways. It is immutable once
// built and safe for concurrent use. Server and Client must be given tables
// with the same user codes.
type ErrorTable struct {
	entries []codeEntry // sorted by code; built-ins first
}

// NewErrorTable returns a table with this package's codes plus user, whose
// codes must be ≥ FirstUserCode and whose errors must be distinct.
func NewErrorTable(user map[Code]error) (*ErrorTable, error) {
	t := &ErrorTable{entries: slices.Clone(builtinCodes)}
	for code, err := range user {
		if code < FirstUserCode {
			return nil, fmt.Errorf("error code %d for %q is reserved: user codes start at %d", code, err, FirstUserCode)
		}
		if err == nil {
			return nil, fmt.Errorf("error code %d has a nil error", code)
		}
		t.entries = append(t.entries, codeEntry{code, err})
	}
	slices.SortFunc(t.entries, func(a, b codeEntry) int { return int(a.code) - int(b.code) })
	for i := 1; i < len(t.entries); i++ {
		for j := range i {
			if t.entries[j].err == t.entries[i].err {
				return nil, fmt.Errorf("error %q registered under codes %d and %d", t.entries[i].err, t.entries[j].code, t.entries[i].code)
			}
		}
	}
	return t, nil
}

func defaultErrorTable() *ErrorTable { return &ErrorTable{entries: builtinCodes} }

// Coder is implemented by errors that know their own code.
type Coder interface {
	RPCCode() Code
}

// CodeOf returns the code an error travels with: its own (Coder), else the
// lowest code whose sentinel it wraps, else CodeUnknown.
func (t *ErrorTable) CodeOf(err error) Code {
	var c Coder
	if errors.As(err, &c) {
		return c.RPCCode()
	}
	for _, e := range t.entries {
		if errors.Is(err, e.err) {
			return e.code
		}
	}
	return CodeUnknown
}

// Sentinel returns the error registered for code, or nil.
func (t *ErrorTable) Sentinel(code Code) error {
	i, ok := slices.BinarySearchFunc(t.entries, code, func(e codeEntry, c Code) int { return int(e.code) - int(c) })
	if !ok {
		return nil
	}
	return t.entries[i].err
}

// wireError is the body of a FrameError.
type wireError struct {
	Code    Code   `codec:"c"`
	Message string `codec:"m"`
}

// maxErrorMessage bounds the message sent in an error frame.
const maxErrorMessage = 4 << 10

func (t *ErrorTable) toWire(err error) wireError {
	msg := err.Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage] + "…"
	}
	return wireError{Code: t.CodeOf(err), Message: msg}
}

// RemoteError is an error that came back from the other side. errors.Is
// matches the sentinel registered for its code in the local table.
type RemoteError struct {
	Code    Code
	Message string // the remote side's error text
	Addr    string // the remote address
	Method  Method // 0 for a connection-level error
	// sentinel is the local error for Code, nil if none is known.
	sentinel error
}

func (t *ErrorTable) fromWire(w wireError, addr string, m Method) *RemoteError {
	return &RemoteError{Code: w.Code, Message: w.Message, Addr: addr, Method: m, sentinel: t.Sentinel(w.Code)}
}

func (e *RemoteError) Error() string {
	if e.Method == 0 {
		return fmt.Sprintf("rpc %s: remote error (code %d): %s", e.Addr, e.Code, e.Message)
	}
	return fmt.Sprintf("rpc %s method %d: remote error (code %d): %s", e.Addr, e.Method, e.Code, e.Message)
}

// Unwrap returns the sentinel for the code, so errors.Is works.
func (e *RemoteError) Unwrap() error { return e.sentinel }

// RPCCode implements Coder, so a RemoteError passed on keeps its code.
func (e *RemoteError) RPCCode() Code { return e.Code }
