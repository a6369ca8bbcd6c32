package fsm

import (
	"fmt"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// CommandVersion is the command encoding this fsm writes and reads. A
// command of another version is refused with CodeUnsupported, so a node
// running older code never misreads a newer command.
const CommandVersion = 1

// Kind says which command a Command carries.
type Kind uint8

const (
	KindSessionCreate Kind = iota + 1
	KindSessionDestroy
	KindSessionExpire
	KindSessionCheckpoint
	KindLockAcquire
	KindLockRelease
	KindLockCancel
	KindPut
	KindDelete
	KindTxn
	// KindTick changes nothing; it carries a newer time so that lock-delays
	// can end on every replica alike.
	KindTick
)

var kindNames = map[Kind]string{
	KindSessionCreate: "session-create", KindSessionDestroy: "session-destroy", KindSessionExpire: "session-expire",
	KindSessionCheckpoint: "session-checkpoint", KindLockAcquire: "lock-acquire", KindLockRelease: "lock-release",
	KindLockCancel: "lock-cancel", KindPut: "put", KindDelete: "delete", KindTxn: "txn", KindTick: "tick",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// Command is one Raft entry's worth of state change. Exactly one of the
// pointer fields matching Kind is set. ClientID and Seq make a mutating
// command exactly-once: a command with a Seq the fsm already answered for
// that client gets the remembered result instead of a second apply.
type Command struct {
	Version  uint8  `codec:"v"`
	Kind     Kind   `codec:"k"`
	ClientID uint64 `codec:"c,omitempty"`
	Seq      uint64 `codec:"q,omitempty"`

	SessionCreate     *SessionCreate     `codec:"sc,omitempty"`
	SessionDestroy    *SessionDestroy    `codec:"sd,omitempty"`
	SessionExpire     *SessionExpire     `codec:"se,omitempty"`
	SessionCheckpoint *SessionCheckpoint `codec:"sk,omitempty"`
	LockAcquire       *LockAcquire       `codec:"la,omitempty"`
	LockRelease       *LockRelease       `codec:"lr,omitempty"`
	LockCancel        *LockCancel        `codec:"lc,omitempty"`
	Put               *Put               `codec:"p,omitempty"`
	Delete            *Delete            `codec:"d,omitempty"`
	Txn               *Txn               `codec:"t,omitempty"`
}

// SessionCreate starts a session. TTL and LockDelay are already resolved
// by session.Rules (the fsm re-checks them against its Rules).
type SessionCreate struct {
	TTL       int64  `codec:"ttl"` // nanoseconds
	LockDelay int64  `codec:"ld"`  // nanoseconds
	Name      string `codec:"n,omitempty"`
}

// SessionDestroy ends a session cleanly: its locks are released without
// lock-delay.
type SessionDestroy struct {
	ID session.ID `codec:"id"`
}

// SessionExpire ends sessions whose keepalive deadline passed at the
// leader. Their locks enter lock-delay.
type SessionExpire struct {
	IDs []session.ID `codec:"ids"`
}

// SessionCheckpoint records new replicated deadlines (ExpiresAt, Unix
// nanoseconds) for sessions the leader received keepalives for.
type SessionCheckpoint struct {
	Deadlines []SessionDeadline `codec:"d"`
}

// SessionDeadline is one session's replicated deadline.
type SessionDeadline struct {
	ID        session.ID `codec:"id"`
	ExpiresAt int64      `codec:"at"`
}

// LockAcquire asks for a lock. With Wait the session queues if the lock is
// not available; otherwise the acquire fails at once.
type LockAcquire struct {
	Name    string     `codec:"n"`
	Session session.ID `codec:"s"`
	Mode    api.Mode   `codec:"m"`
	Limit   int        `codec:"l,omitempty"`
	Wait    bool       `codec:"w,omitempty"`
}

// LockRelease releases the grant with Token.
type LockRelease struct {
	Name    string     `codec:"n"`
	Session session.ID `codec:"s"`
	Token   uint64     `codec:"t"`
}

// LockCancel withdraws the wait WaitID; if that wait was granted in the
// meantime, the grant is released, so a caller that gave up never leaks a
// lock.
//
// ClientID and Seq, if set, name the acquire request that queued the wait:
// the cancel is skipped if that client has sent a newer request since (a
// retry of the same acquire through another node, which must not be
// undone by the first node's late withdrawal).
type LockCancel struct {
	Name     string     `codec:"n"`
	Session  session.ID `codec:"s"`
	WaitID   uint64     `codec:"w"`
	ClientID uint64     `codec:"c,omitempty"`
	Seq      uint64     `codec:"q,omitempty"`
}

// Put writes a key; Session binds it to a session (ephemeral).
type Put struct {
	Key     string     `codec:"k"`
	Value   []byte     `codec:"v"`
	Session session.ID `codec:"s,omitempty"`
}

// Delete removes a key, or every key with the prefix.
type Delete struct {
	Key    string `codec:"k"`
	Prefix bool   `codec:"p,omitempty"`
}

// Txn applies Then if every compare holds, else Else; all changes share
// one revision.
type Txn struct {
	Compares []api.Compare `codec:"c,omitempty"`
	Then     []api.Op      `codec:"t,omitempty"`
	Else     []api.Op      `codec:"e,omitempty"`
}

// Codec encodes and decodes commands. It holds the msgpack handle so
// there is no package-level state; it is safe for concurrent use.
// Encoders and decoders are pooled: making one per command was about a
// third of the codec's CPU time under a write load (every node decodes
// every command).
type Codec struct {
	h    *codec.MsgpackHandle
	encs sync.Pool // of *codec.Encoder
	decs sync.Pool // of *codec.Decoder
}

// NewCodec returns a command codec.
func NewCodec() *Codec {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true
	h.RawToString = true
	cd := &Codec{h: h}
	cd.encs.New = func() any { return codec.NewEncoderBytes(nil, h) }
	cd.decs.New = func() any { return codec.NewDecoderBytes(nil, h) }
	return cd
}

// Encode encodes c, stamping the current version.
func (cd *Codec) Encode(c *Command) ([]byte, error) {
	c.Version = CommandVersion
	if isPlainPut(c) {
		return appendPut(make([]byte, 0, putOverhead+len(c.Put.Key)+len(c.Put.Value)), c), nil
	}
	return cd.encodeGeneric(c)
}

func (cd *Codec) encodeGeneric(c *Command) ([]byte, error) {
	var b []byte
	enc := cd.encs.Get().(*codec.Encoder)
	enc.ResetBytes(&b)
	err := enc.Encode(c)
	enc.ResetBytes(nil) // drop the reference to b
	cd.encs.Put(enc)
	if err != nil {
		return nil, fmt.Errorf("encoding %s command: %w", c.Kind, err)
	}
	return b, nil
}

// Decode decodes and checks a command. Undecodable or inconsistent input
// is an *api.Error, never a panic.
func (cd *Codec) Decode(b []byte) (c *Command, err error) {
	c, ok := decodePut(b)
	if !ok {
		if c, err = cd.decodeGeneric(b); err != nil {
			return nil, err
		}
	}
	return c.checked()
}

func (cd *Codec) decodeGeneric(b []byte) (c *Command, err error) {
	dec := cd.decs.Get().(*codec.Decoder)
	defer func() {
		// The decoder is meant to return errors, but input from a log or a
		// peer is untrusted: a decoder panic must not take the node down
		// (and the decoder, in an unknown state, is not reused).
		if p := recover(); p != nil {
			c, err = nil, api.Errorf(api.CodeInvalid, "undecodable command (%d bytes): %v", len(b), p)
			return
		}
		dec.ResetBytes(nil)
		cd.decs.Put(dec)
	}()
	dec.ResetBytes(b)
	c = &Command{}
	if err := dec.Decode(c); err != nil {
		return nil, api.Errorf(api.CodeInvalid, "undecodable command (%d bytes): %v", len(b), err)
	}
	return c, nil
}

// checked returns c if it is a command of this version with the body its
// Kind names.
func (c *Command) checked() (*Command, error) {
	if c.Version != CommandVersion {
		return nil, api.Errorf(api.CodeUnsupported, "command version %d is not supported (this node understands version %d); upgrade this node", c.Version, CommandVersion)
	}
	if err := c.checkShape(); err != nil {
		return nil, err
	}
	return c, nil
}

// checkShape verifies that exactly the body matching Kind is present. It
// runs for every command every node applies, so it allocates nothing.
func (c *Command) checkShape() error {
	bodies := [...]struct {
		kind Kind
		set  bool
	}{
		{KindSessionCreate, c.SessionCreate != nil}, {KindSessionDestroy, c.SessionDestroy != nil},
		{KindSessionExpire, c.SessionExpire != nil}, {KindSessionCheckpoint, c.SessionCheckpoint != nil},
		{KindLockAcquire, c.LockAcquire != nil}, {KindLockRelease, c.LockRelease != nil},
		{KindLockCancel, c.LockCancel != nil}, {KindPut, c.Put != nil}, {KindDelete, c.Delete != nil},
		{KindTxn, c.Txn != nil},
	}
	known, has, n := c.Kind == KindTick, c.Kind == KindTick, 0
	if known {
		n++ // a tick has no body: it counts as its own
	}
	for _, b := range bodies {
		if b.kind == c.Kind {
			known, has = true, b.set
		}
		if b.set {
			n++
		}
	}
	if !known {
		return api.Errorf(api.CodeUnsupported, "command kind %d is not supported", uint8(c.Kind))
	}
	if !has || n != 1 {
		return api.Errorf(api.CodeInvalid, "%s command must carry exactly its own body and no other", c.Kind)
	}
	return nil
}
