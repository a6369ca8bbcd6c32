package fsm

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// Config configures an FSM. Every replica must use the same values: they
// decide outcomes.
type Config struct {
	Limits api.Limits
	Rules  session.Rules
	// HistoryMaxEvents and HistoryMaxBytes bound the watch history.
	// Defaults 10,000 events and 16 MiB.
	HistoryMaxEvents int
	HistoryMaxBytes  int64
	// DedupIdle drops a client's exactly-once record after this much
	// entry time without a request from it (default 1 h); DedupMaxClients
	// bounds the table (default 100,000; the longest idle goes first).
	DedupIdle       time.Duration
	DedupMaxClients int
}

// DefaultConfig returns the defaults for a cluster whose maximum election
// timeout is maxElection.
func DefaultConfig(maxElection time.Duration) Config {
	return Config{
		Limits:           api.DefaultLimits(),
		Rules:            session.NewRules(maxElection),
		HistoryMaxEvents: 10_000,
		HistoryMaxBytes:  16 << 20,
		DedupIdle:        time.Hour,
		DedupMaxClients:  100_000,
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if c.Rules.MinTTL <= 0 || c.Rules.MaxTTL < c.Rules.MinTTL {
		return fmt.Errorf("session TTL range [%v, %v] is empty", c.Rules.MinTTL, c.Rules.MaxTTL)
	}
	if c.HistoryMaxEvents <= 0 || c.HistoryMaxBytes <= 0 || c.DedupIdle <= 0 || c.DedupMaxClients <= 0 {
		return fmt.Errorf("history (%d events, %d bytes) and dedup (%v, %d clients) bounds must be positive",
			c.HistoryMaxEvents, c.HistoryMaxBytes, c.DedupIdle, c.DedupMaxClients)
	}
	return nil
}

// Result is the outcome of applying one command. Err is the command's own
// failure (a held lock, a stale token); the other fields are set by the
// commands that produce them.
type Result struct {
	Err      *api.Error `codec:"err,omitempty"`
	Revision int64      `codec:"rev,omitempty"`

	Session *api.SessionInfo `codec:"s,omitempty"`
	Grant   *api.Grant       `codec:"g,omitempty"`
	Wait    *api.Waiter      `codec:"w,omitempty"`
	// Lock describes the lock when an acquire is refused (who holds it,
	// until when it is delayed).
	Lock *api.LockInfo `codec:"l,omitempty"`

	PrevKV    *api.KeyValue  `codec:"pkv,omitempty"`
	Deleted   int            `codec:"del,omitempty"`
	Succeeded bool           `codec:"ok,omitempty"`
	Ops       []api.OpResult `codec:"ops,omitempty"`

	// Ended lists sessions this command ended; Granted lists grants made
	// to queued waiters (including by a release or an expiry), so the
	// server can wake their callers.
	Ended   []session.ID `codec:"ended,omitempty"`
	Granted []api.Grant  `codec:"granted,omitempty"`
	// Checkpointed lists the replicated deadlines a checkpoint stored.
	Checkpointed []SessionDeadline `codec:"cps,omitempty"`
	// Withdrawn lists waits a cancel removed, so callers blocked on them
	// are told.
	Withdrawn []uint64 `codec:"wd,omitempty"`
	// Duplicate marks a remembered result returned for a retried sequence.
	Duplicate bool `codec:"dup,omitempty"`
}

func errResult(err *api.Error) *Result { return &Result{Err: err} }

// FSM is lockd's replicated state machine: sessions, locks and config keys
// with their watch history. Apply must be called with entries in log order;
// the query methods may be called concurrently with it.
type FSM struct {
	cfg   Config
	codec *Codec

	// mu guards everything below: Apply and Restore hold it for writing,
	// queries and Snapshot for reading. Nothing holds it across I/O other
	// than Snapshot's and Restore's stream.
	mu       sync.RWMutex
	index    uint64 // last applied entry
	now      int64  // entry time, made monotonic
	revision int64  // Raft index of the last KV change

	kv   map[string]*api.KeyValue
	keys keyIndex

	sessions       map[session.ID]*sessionState
	clientSessions map[uint64]int

	locks     map[string]*lockState
	delayed   map[string]bool // locks with a lock-delay not yet over
	nextWake  int64           // earliest delay end among delayed (0 if none)
	lastToken uint64

	history history

	dedup          map[uint64]*dedupEntry
	nextDedupSweep int64
}

type dedupEntry struct {
	Seq      uint64
	Result   *Result
	LastSeen int64
}

// New returns an empty FSM.
func New(cfg Config) (*FSM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("fsm config: %w", err)
	}
	f := &FSM{cfg: cfg, codec: NewCodec()}
	f.reset()
	return f, nil
}

func (f *FSM) reset() {
	f.index, f.now, f.revision, f.lastToken, f.nextWake, f.nextDedupSweep = 0, 0, 0, 0, 0, 0
	f.kv = map[string]*api.KeyValue{}
	f.keys = keyIndex{}
	f.sessions = map[session.ID]*sessionState{}
	f.clientSessions = map[uint64]int{}
	f.locks = map[string]*lockState{}
	f.delayed = map[string]bool{}
	f.history = history{maxEvents: f.cfg.HistoryMaxEvents, maxBytes: f.cfg.HistoryMaxBytes}
	f.dedup = map[uint64]*dedupEntry{}
}

// Codec returns the command codec, for proposers.
func (f *FSM) Codec() *Codec { return f.codec }

// Apply applies the command in data, from the entry at index with the
// leader's timestamp entryTime (Unix nanoseconds). It never returns nil.
func (f *FSM) Apply(index uint64, entryTime int64, data []byte) *Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(index, entryTime)
	// Every entry ends the lock-delays its time has passed, before its own
	// command runs — also an entry whose command is a duplicate or
	// undecodable — so waiters are granted by the first entry at or after
	// the delay's end, in FIFO order ahead of this entry's request.
	woke := &Result{}
	f.wakeDelayed(woke)
	cmd, err := f.codec.Decode(data)
	if err != nil {
		res := errResult(asAPIError(err))
		res.Granted = woke.Granted
		return res
	}
	res := f.applyCommand(cmd, woke.Granted)
	return res
}

// ApplyNoop advances index and time for an entry that carries no command
// (a leader's no-op), so lock-delays end on time.
func (f *FSM) ApplyNoop(index uint64, entryTime int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advance(index, entryTime)
	f.wakeDelayed(&Result{})
}

func (f *FSM) advance(index uint64, entryTime int64) {
	if index <= f.index {
		panic(fmt.Sprintf("fsm: entry %d applied after entry %d: the log is applied out of order", index, f.index))
	}
	f.index = index
	// A new leader's clock may be behind the old one's: time never runs
	// backwards inside the state machine.
	f.now = max(f.now, entryTime)
}

func asAPIError(err error) *api.Error {
	var e *api.Error
	if errors.As(err, &e) {
		return e
	}
	return api.Errorf(api.CodeInvalid, "%v", err)
}

// applyCommand applies cmd (or answers a retry from memory). woken are
// the grants this entry made by ending lock-delays; they are reported
// first in the result (so the server wakes those callers) and remembered
// with it.
func (f *FSM) applyCommand(cmd *Command, woken []api.Grant) *Result {
	if cmd.ClientID != 0 && cmd.Seq != 0 {
		if d, ok := f.dedup[cmd.ClientID]; ok {
			switch {
			case cmd.Seq == d.Seq:
				d.LastSeen = f.now
				dup := *d.Result
				dup.Duplicate = true
				if len(woken) > 0 {
					dup.Granted = append(append([]api.Grant(nil), woken...), d.Result.Granted...)
				}
				return &dup
			case cmd.Seq < d.Seq:
				d.LastSeen = f.now
				res := errResult(api.Errorf(api.CodeStaleSequence,
					"request %d of client %x is older than its last request %d; its result is no longer known", cmd.Seq, cmd.ClientID, d.Seq))
				res.Granted = woken
				return res
			}
		}
	}
	res := f.dispatch(cmd)
	if len(woken) > 0 {
		res.Granted = append(woken, res.Granted...)
	}
	if cmd.ClientID != 0 && cmd.Seq != 0 {
		f.remember(cmd.ClientID, cmd.Seq, res)
	}
	f.sweepDedup()
	return res
}

func (f *FSM) dispatch(cmd *Command) *Result {
	switch cmd.Kind {
	case KindSessionCreate:
		return f.createSession(cmd.ClientID, cmd.SessionCreate)
	case KindSessionDestroy:
		return f.destroySession(cmd.SessionDestroy.ID)
	case KindSessionExpire:
		return f.expireSessions(cmd.SessionExpire.IDs)
	case KindSessionCheckpoint:
		return f.checkpointSessions(cmd.SessionCheckpoint.Deadlines)
	case KindLockAcquire:
		return f.acquire(cmd.LockAcquire)
	case KindLockRelease:
		return f.release(cmd.LockRelease)
	case KindLockCancel:
		return f.cancel(cmd.LockCancel)
	case KindPut:
		return f.put(cmd.Put)
	case KindDelete:
		return f.deleteKeys(cmd.Delete)
	case KindTxn:
		return f.txn(cmd.Txn)
	case KindTick:
		return &Result{}
	}
	return errResult(api.Errorf(api.CodeUnsupported, "command kind %d is not supported", uint8(cmd.Kind)))
}

func (f *FSM) remember(client, seq uint64, res *Result) {
	if _, ok := f.dedup[client]; !ok && len(f.dedup) >= f.cfg.DedupMaxClients {
		f.evictIdlestClient()
	}
	f.dedup[client] = &dedupEntry{Seq: seq, Result: res, LastSeen: f.now}
}

// evictIdlestClient drops the client seen longest ago (lowest id on a tie),
// which every replica picks alike.
func (f *FSM) evictIdlestClient() {
	var victim uint64
	var oldest int64
	first := true
	for id, d := range f.dedup {
		if first || d.LastSeen < oldest || (d.LastSeen == oldest && id < victim) {
			victim, oldest, first = id, d.LastSeen, false
		}
	}
	delete(f.dedup, victim)
}

// sweepDedup drops idle clients, at most every quarter of the idle time.
func (f *FSM) sweepDedup() {
	if f.now < f.nextDedupSweep {
		return
	}
	idle := int64(f.cfg.DedupIdle)
	f.nextDedupSweep = f.now + idle/4
	for id, d := range f.dedup {
		if f.now-d.LastSeen > idle {
			delete(f.dedup, id)
		}
	}
}

// sortedKeys returns a map's keys in order, for deterministic iteration.
func sortedKeys[K ~string | ~uint64, V any](m map[K]V) []K {
	ks := make([]K, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	return ks
}
