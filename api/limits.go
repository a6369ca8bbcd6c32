package api

import "fmt"

// Limits bound what one request may carry. The state machine enforces
// them; clients check them early to fail fast with the same message.
type Limits struct {
	MaxKeyBytes          int // keys and lock names
	MaxValueBytes        int
	MaxTxnOps            int // compares + then + else
	MaxLabelBytes        int // session name/owner label
	MaxSessionsPerClient int
	MaxWaitersPerLock    int
	MaxListLimit         int // entries returned by one list
}

// MaxKeepaliveBatch bounds the session ids of one batch keepalive
// (SessionKeepaliveBatchRequest). It is a protocol constant, not a
// cluster setting, so a client can split its batches without asking:
// it equals the default MaxSessionsPerClient, so a client within the
// default limit renews all of its sessions with one call. A larger batch
// is refused with CodeInvalid.
const MaxKeepaliveBatch = 1024

// CheckKeepaliveBatch refuses a batch keepalive of more than
// MaxKeepaliveBatch ids.
func CheckKeepaliveBatch(n int) error {
	if n > MaxKeepaliveBatch {
		return Errorf(CodeInvalid, "batch keepalive of %d sessions exceeds the limit of %d per call; split it into several calls", n, MaxKeepaliveBatch)
	}
	return nil
}

// DefaultLimits are the limits of a cluster that sets none.
func DefaultLimits() Limits {
	return Limits{
		MaxKeyBytes:          4 << 10,
		MaxValueBytes:        1 << 20,
		MaxTxnOps:            128,
		MaxLabelBytes:        256,
		MaxSessionsPerClient: 1024,
		MaxWaitersPerLock:    4096,
		MaxListLimit:         10000,
	}
}

// Validate checks that every limit is positive.
func (l Limits) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{
		{"max key bytes", l.MaxKeyBytes}, {"max value bytes", l.MaxValueBytes}, {"max txn ops", l.MaxTxnOps},
		{"max label bytes", l.MaxLabelBytes}, {"max sessions per client", l.MaxSessionsPerClient},
		{"max waiters per lock", l.MaxWaitersPerLock}, {"max list limit", l.MaxListLimit},
	} {
		if f.v <= 0 {
			return fmt.Errorf("limit %q is %d; it must be positive", f.name, f.v)
		}
	}
	return nil
}

// CheckKey reports an error for an empty or oversized key (or lock name;
// what names the kind of thing in the message).
func (l Limits) CheckKey(what, key string) error {
	if key == "" {
		return Errorf(CodeInvalid, "%s must not be empty", what)
	}
	if len(key) > l.MaxKeyBytes {
		return Errorf(CodeTooLarge, "%s of %d bytes exceeds the %d-byte limit", what, len(key), l.MaxKeyBytes)
	}
	return nil
}

// CheckValue reports an error for an oversized value.
func (l Limits) CheckValue(v []byte) error {
	if len(v) > l.MaxValueBytes {
		return Errorf(CodeTooLarge, "value of %d bytes exceeds the %d-byte limit", len(v), l.MaxValueBytes)
	}
	return nil
}
