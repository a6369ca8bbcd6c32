package session

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ID names a session: the Raft index of the entry that created it, so it
// is unique over the cluster's lifetime and the same on every replica.
type ID uint64

// String renders the id as clients see it: 16 hex digits.
func (id ID) String() string { return fmt.Sprintf("%016x", uint64(id)) }

// ParseID reads an id as printed by String (leading zeros optional).
func ParseID(s string) (ID, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("session id %q is not a 1-16 digit non-zero hex number", s)
	}
	return ID(v), nil
}

// Defaults and bounds of the session rules.
const (
	DefaultTTL       = 10 * time.Second
	MinTTLFloor      = 2 * time.Second
	MaxTTL           = 24 * time.Hour
	DefaultLockDelay = 5 * time.Second
	MaxLockDelay     = 60 * time.Second
)

// ErrInvalid marks a TTL or lock-delay outside its allowed range.
var ErrInvalid = errors.New("invalid session parameter")

// Rules are the TTL and lock-delay ranges of a cluster.
type Rules struct {
	DefaultTTL, MinTTL, MaxTTL     time.Duration
	DefaultLockDelay, MaxLockDelay time.Duration
}

// NewRules derives the rules from the cluster's maximum election timeout:
// a TTL shorter than 1.5 election timeouts could expire a live session
// during one ordinary failover.
func NewRules(maxElectionTimeout time.Duration) Rules {
	minTTL := max(MinTTLFloor, maxElectionTimeout*3/2)
	return Rules{
		DefaultTTL:       max(DefaultTTL, minTTL),
		MinTTL:           minTTL,
		MaxTTL:           MaxTTL,
		DefaultLockDelay: DefaultLockDelay,
		MaxLockDelay:     MaxLockDelay,
	}
}

// Resolve applies defaults (a zero TTL or a negative lock-delay asks for
// the default) and checks the ranges.
func (r Rules) Resolve(ttl, lockDelay time.Duration) (time.Duration, time.Duration, error) {
	if ttl == 0 {
		ttl = r.DefaultTTL
	}
	if ttl < r.MinTTL || ttl > r.MaxTTL {
		return 0, 0, fmt.Errorf("%w: TTL %v is outside [%v, %v]; the minimum follows the election timeout", ErrInvalid, ttl, r.MinTTL, r.MaxTTL)
	}
	if lockDelay < 0 {
		lockDelay = r.DefaultLockDelay
	}
	if lockDelay > r.MaxLockDelay {
		return 0, 0, fmt.Errorf("%w: lock-delay %v is outside [0s, %v]", ErrInvalid, lockDelay, r.MaxLockDelay)
	}
	return ttl, lockDelay, nil
}
