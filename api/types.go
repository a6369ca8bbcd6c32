package api

import (
	"fmt"

	"github.com/lockd/lockd/session"
)

// Mode is how a lock is held.
type Mode uint8

const (
	// Exclusive: one holder, nobody else.
	Exclusive Mode = iota + 1
	// Shared: any number of shared holders, no exclusive one (read lock).
	Shared
	// Semaphore: at most Limit holders, all asking with the same limit.
	Semaphore
)

func (m Mode) String() string {
	switch m {
	case Exclusive:
		return "exclusive"
	case Shared:
		return "shared"
	case Semaphore:
		return "semaphore"
	}
	return fmt.Sprintf("mode %d", uint8(m))
}

// KeyValue is a config key with its revisions. Session is non-zero for an
// ephemeral key, deleted when that session ends.
type KeyValue struct {
	Key            string     `codec:"k"`
	Value          []byte     `codec:"v"`
	CreateRevision int64      `codec:"cr"`
	ModRevision    int64      `codec:"mr"`
	Version        int64      `codec:"ver"`
	Session        session.ID `codec:"s,omitempty"`
}

// EventType says what happened to a key.
type EventType uint8

const (
	EventPut EventType = iota + 1
	EventDelete
)

func (t EventType) String() string {
	if t == EventPut {
		return "put"
	}
	return "delete"
}

// Event is one change in the watch history. All events of one transaction
// share a revision. For a delete, KV holds the key and the deleting
// revision; PrevKV holds the value before the change, if there was one.
type Event struct {
	Type     EventType `codec:"t"`
	KV       KeyValue  `codec:"kv"`
	PrevKV   *KeyValue `codec:"p,omitempty"`
	Revision int64     `codec:"r"`
}

// Grant is a held lock. Token is the fencing token: strictly greater than
// every earlier token of that lock. Since is the granting entry's time
// (Unix nanoseconds).
type Grant struct {
	Lock    string     `codec:"l"`
	Session session.ID `codec:"s"`
	Token   uint64     `codec:"t"`
	Mode    Mode       `codec:"m"`
	Limit   int        `codec:"n,omitempty"`
	Since   int64      `codec:"since"`
	// WaitID is the queued wait this grant came from (0 for an immediate
	// grant), so a cancel of that wait can undo a grant that raced it.
	WaitID uint64 `codec:"w,omitempty"`
}

// Waiter is a queued acquire. WaitID names the wait (the Raft index of the
// entry that queued it).
type Waiter struct {
	Lock    string     `codec:"l"`
	Session session.ID `codec:"s"`
	WaitID  uint64     `codec:"w"`
	Mode    Mode       `codec:"m"`
	Limit   int        `codec:"n,omitempty"`
	Since   int64      `codec:"since"`
}

// LockInfo is everything about one lock, read at once: holders by token,
// waiters in queue order, and the end of a lock-delay (0 if none).
type LockInfo struct {
	Name       string   `codec:"name"`
	Holders    []Grant  `codec:"h"`
	Waiters    []Waiter `codec:"w"`
	DelayUntil int64    `codec:"d,omitempty"`
}

// SessionInfo describes a session. Times are Unix nanoseconds of entry
// time; durations are nanoseconds. ExpiresAt is the replicated checkpoint:
// the live deadline is held by the leader.
type SessionInfo struct {
	ID        session.ID `codec:"id"`
	TTL       int64      `codec:"ttl"`
	LockDelay int64      `codec:"ld"`
	Name      string     `codec:"name,omitempty"`
	ClientID  uint64     `codec:"c,omitempty"`
	CreatedAt int64      `codec:"ca"`
	ExpiresAt int64      `codec:"ea"`
	Locks     []string   `codec:"locks,omitempty"`
	Keys      int        `codec:"keys,omitempty"`
}

// CompareTarget is what a transaction compare looks at.
type CompareTarget uint8

const (
	CompareValue CompareTarget = iota + 1
	CompareVersion
	CompareCreateRevision
	CompareModRevision
	// CompareExists compares 1 (exists) or 0 with Number.
	CompareExists
)

// CompareOp is the comparison.
type CompareOp uint8

const (
	Equal CompareOp = iota + 1
	NotEqual
	Less
	Greater
)

// Compare is one condition of a transaction. Value is used for
// CompareValue, Number for the others. A missing key has version, revisions
// and existence 0 and no value (so only NotEqual can match its value).
type Compare struct {
	Key    string        `codec:"k"`
	Target CompareTarget `codec:"t"`
	Op     CompareOp     `codec:"o"`
	Value  []byte        `codec:"v,omitempty"`
	Number int64         `codec:"n,omitempty"`
}

// OpType is a transaction operation.
type OpType uint8

const (
	OpPut OpType = iota + 1
	OpDelete
	OpGet
)

// Op is one operation of a transaction. Prefix applies to delete and get;
// Limit bounds a prefix get (0 = the list limit).
type Op struct {
	Type    OpType     `codec:"t"`
	Key     string     `codec:"k"`
	Value   []byte     `codec:"v,omitempty"`
	Session session.ID `codec:"s,omitempty"`
	Prefix  bool       `codec:"p,omitempty"`
	Limit   int        `codec:"l,omitempty"`
}

// OpResult is the outcome of one Op.
type OpResult struct {
	Type    OpType     `codec:"t"`
	KVs     []KeyValue `codec:"kvs,omitempty"`
	PrevKV  *KeyValue  `codec:"p,omitempty"`
	Deleted int        `codec:"d,omitempty"`
	More    bool       `codec:"more,omitempty"`
}
