package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults for NodeConfig.
const (
	DefaultTickInterval        = 100 * time.Millisecond
	DefaultMaxPendingProposals = 4096
	DefaultMaxPendingReads     = 4096
	DefaultInboxSize           = 4096
	DefaultSnapshotEntries     = 50000
	DefaultSnapshotBytes       = 64 << 20
	DefaultSnapshotTimeout     = 5 * time.Minute
)

// maxPendingTransfers bounds concurrent TransferLeadership calls; more than
// a handful means a caller is looping, not operating the cluster.
const maxPendingTransfers = 16

// Errors returned by a Node.
var (
	// ErrStopped: the node was stopped (or stopped itself after a storage
	// failure); the request was not taken.
	ErrStopped = errors.New("consensus node stopped")
	// ErrProposalLost: another entry was committed at the proposal's index
	// or a later leader's entry overtook it.
	ErrProposalLost = errors.New("proposal lost: the entry was replaced after a leader change; it was not applied; safe to retry")
	// ErrOutcomeUnknown: the caller stopped waiting (or the node stopped)
	// after the proposal entered the log; it may still commit and apply.
	ErrOutcomeUnknown = errors.New("proposal outcome unknown: it may still commit")
	// ErrReadDropped: the read could not be confirmed by a leader
	// (leadership changed or no leader is known).
	ErrReadDropped = errors.New("read index dropped: leadership changed or no leader is known; retry")
	// ErrOverloaded: a bounded queue is full; retry later.
	ErrOverloaded = errors.New("consensus node overloaded")
)

// NodeConfig configures a Node. Validate fills defaults.
type NodeConfig struct {
	// Raft configures the core. If Raft.Logger is nil it gets Logger.
	Raft Config

	LogStore    LogStore
	StableStore StableStore
	Transport   Transport
	// StateMachine is driven from the node's loop goroutine: Apply must not
	// call back into the Node's blocking methods or Stop.
	StateMachine StateMachine

	// TickInterval is the length of one core tick; the election timeout is
	// Raft.ElectionTicks of them. Default 100ms.
	TickInterval time.Duration
	// Now is the wall clock stamped on proposals (Entry.Time). Default time.Now.
	Now func() time.Time
	// Logger receives the driver's events. Default: discard.
	Logger hclog.Logger
	// PeerAddrs maps peers to addresses, only to tell callers where the
	// leader is. Optional; addresses in the configuration (ConfMember.Addr)
	// replace them as configurations change.
	PeerAddrs map[NodeID]string
	// OnConfigChange, if set, is called with the configuration in use:
	// once in StartNode, then on the loop goroutine whenever it changes
	// (an entry appended or truncated, a snapshot installed; it may not
	// be committed yet). It must not block or call the Node's blocking
	// methods; the server updates its transport's peers here.
	OnConfigChange func(Configuration)

	// MaxPendingProposals bounds proposals queued or awaiting apply;
	// MaxPendingReads bounds ReadIndex calls in progress; InboxSize bounds
	// peer messages not yet stepped. Defaults 4096 each.
	MaxPendingProposals int
	MaxPendingReads     int
	InboxSize           int

	// SnapshotStore keeps snapshots. With it the node restores the newest
	// intact snapshot at start, takes snapshots, compacts its log, streams
	// snapshots to followers that need compacted entries (if Transport is a
	// SnapshotSender) and installs those it receives (ReceiveSnapshot).
	// Without it the log is never compacted.
	SnapshotStore SnapshotStore
	// SnapshotEntries and SnapshotBytes: a snapshot is taken once this many
	// entries, or entries of this many bytes (Entry.Size), were applied
	// since the last one. Defaults 50,000 entries and 64 MiB: a snapshot
	// encodes the whole state, so under a write load over a large key
	// space every 10,000 entries cost the leader about 9 % of its CPU;
	// the price is up to 50,000 entries held in memory (etcd's default is
	// 100,000).
	SnapshotEntries int
	SnapshotBytes   int64
	// SnapshotTrailing is how many entries before a snapshot stay in the
	// log when it is compacted, so that followers slightly behind catch up
	// from the log rather than by a snapshot. 0 keeps none.
	SnapshotTrailing int
	// SnapshotTimeout bounds one snapshot transfer to a follower. Default
	// 5 minutes.
	SnapshotTimeout time.Duration

	// SyncPersist makes the loop wait for each Ready's write (its fsync)
	// before it steps anything else, as a plain Raft driver does. By
	// default a writer goroutine makes the write while the loop goes on
	// stepping acknowledgements and proposals and applying commits: the
	// core keeps the next write, and every message that vouches for one,
	// until the write before it is durable, and a leader counts itself
	// toward commit only then (Raft.AdvanceAsync).
	SyncPersist bool

	// CommitBroadcastDelay, when positive, turns on Raft's
	// DeferCommitBroadcast: a commit index with nothing else to send
	// reaches the followers with the next proposal's append, or after
	// this delay, whichever comes first. It bounds how much later than
	// the leader a follower applies (and serves its watchers and stale
	// reads) while writes are sparse. 0 tells them at once.
	CommitBroadcastDelay time.Duration
}

// Validate checks the configuration, fills defaults and validates Raft.
// Every problem found is reported.
func (c *NodeConfig) Validate() error {
	var errs []error
	if c.LogStore == nil {
		errs = append(errs, errors.New("log store is required"))
	}
	if c.StableStore == nil {
		errs = append(errs, errors.New("stable store is required"))
	}
	if c.Transport == nil {
		errs = append(errs, errors.New("transport is required"))
	}
	if c.StateMachine == nil {
		errs = append(errs, errors.New("state machine is required"))
	}
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.TickInterval < 0 {
		errs = append(errs, fmt.Errorf("tick interval %v must be positive", c.TickInterval))
	}
	for _, q := range []struct {
		name string
		v    *int
		def  int
	}{
		{"max pending proposals", &c.MaxPendingProposals, DefaultMaxPendingProposals},
		{"max pending reads", &c.MaxPendingReads, DefaultMaxPendingReads},
		{"inbox size", &c.InboxSize, DefaultInboxSize},
		{"snapshot entries", &c.SnapshotEntries, DefaultSnapshotEntries},
	} {
		if *q.v == 0 {
			*q.v = q.def
		}
		if *q.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d must be positive", q.name, *q.v))
		}
	}
	if c.SnapshotBytes == 0 {
		c.SnapshotBytes = DefaultSnapshotBytes
	}
	if c.SnapshotTimeout == 0 {
		c.SnapshotTimeout = DefaultSnapshotTimeout
	}
	if c.SnapshotBytes < 0 || c.SnapshotTrailing < 0 || c.SnapshotTimeout < 0 {
		errs = append(errs, fmt.Errorf("snapshot bytes %d, trailing entries %d and timeout %v must not be negative",
			c.SnapshotBytes, c.SnapshotTrailing, c.SnapshotTimeout))
	}
	if c.CommitBroadcastDelay < 0 || c.CommitBroadcastDelay >= c.TickInterval && c.TickInterval > 0 {
		errs = append(errs, fmt.Errorf("commit broadcast delay %v must be at least 0 and below the tick interval %v",
			c.CommitBroadcastDelay, c.TickInterval))
	}
	c.Raft.DeferCommitBroadcast = c.CommitBroadcastDelay > 0
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Raft.Logger == nil {
		c.Raft.Logger = c.Logger
	}
	if c.Raft.Rand == nil {
		// Nodes restarted together must not draw the same election
		// timeouts run after run; tests that want replays pass their own.
		c.Raft.Rand = rand.New(rand.NewSource(c.Now().UnixNano() ^ int64(c.Raft.ID)<<32))
	}
	if err := c.Raft.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("raft: %w", err))
	}
	return errors.Join(errs...)
}

// Node runs a Raft core: one loop goroutine ticks it, steps peer messages
// into it, proposes, and carries out each Ready (send, persist, apply). The
// core is touched only by that goroutine; the exported methods talk to it
// over bounded channels and are safe for concurrent use.
//
// Messages handed to Transport.Send share their Entries slices with the
// core's log. The core never changes a slice it handed out (truncation
// copies), so a transport may keep them until encoded, but must not modify
// them.
type Node struct {
	id     NodeID
	cfg    NodeConfig
	logger hclog.Logger
	// batch is the LogStore's group-commit face, set only when the same
	// object is also the StableStore: Save writes the hard state into the
	// store it is called on, so with two stores it would put it where
	// StableStore.HardState never reads it.
	batch BatchStore

	// Inputs to the loop. propc and readc are as large as their slot pools,
	// so a caller holding a slot never blocks on them.
	inbox     chan Message
	propc     chan *proposal
	readc     chan *readRequestW
	transferc chan *transferRequest
	confc     chan *proposal
	// propSlots and readSlots count requests from enqueue until they are
	// answered or abandoned, bounding the loop's waiter tables too.
	propSlots chan struct{}
	readSlots chan struct{}

	readSeq atomic.Uint64
	metrics *NodeMetrics

	// Snapshot goroutines report back on these; each is as large as the
	// number of such goroutines that can run at once, so they never block
	// (snapDone also takes the loop's own result when it writes a snapshot
	// itself: one snapshot at a time either way).
	snapDone chan snapTaken
	sentc    chan snapSent
	offerc   chan snapOffer
	// writec hands the writer goroutine its job and writtenc brings it
	// back; at most one is in flight, so neither ever blocks.
	writec   chan *writeJob
	writtenc chan *writeJob
	// bgctx is cancelled by Stop; snapshot goroutines use it and wg joins
	// them.
	bgctx    context.Context
	bgcancel context.CancelFunc
	wg       sync.WaitGroup

	stopOnce sync.Once
	stopc    chan struct{} // closed by Stop
	done     chan struct{} // closed when the loop has exited and failed every waiter

	mu     sync.Mutex // protects status and err
	status Status
	err    error // why the loop exited; nil while running

	loopState // owned by the loop goroutine
}

// StartNode loads the durable state, builds the core and starts the loop.
func StartNode(cfg NodeConfig) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	id := cfg.Raft.ID
	snap, snapConf, err := restoreSnapshot(cfg)
	if err != nil {
		return nil, fmt.Errorf("node %d: %w", id, err)
	}
	st, err := loadState(cfg.LogStore, cfg.StableStore, snap, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("node %d: loading durable state: %w", id, err)
	}
	if snapConf != nil {
		st.Config, st.ConfigIndex = snapConf, snap.Index
	}
	cfg.Raft.Applied = max(cfg.Raft.Applied, snap.Index)
	// A snapshot holds committed entries only, and the stored commit index
	// may lag it (a commit index alone is not synced: node_loop.persist).
	st.HardState.Commit = max(st.HardState.Commit, snap.Index)
	core, err := New(cfg.Raft, st)
	if err != nil {
		return nil, fmt.Errorf("node %d: %w", id, err)
	}
	cfg.PeerAddrs = maps.Clone(cfg.PeerAddrs)
	if cfg.PeerAddrs == nil {
		cfg.PeerAddrs = map[NodeID]string{}
	}
	n := &Node{
		id:        id,
		cfg:       cfg,
		logger:    cfg.Logger,
		inbox:     make(chan Message, cfg.InboxSize),
		propc:     make(chan *proposal, cfg.MaxPendingProposals),
		readc:     make(chan *readRequestW, cfg.MaxPendingReads),
		transferc: make(chan *transferRequest, maxPendingTransfers),
		confc:     make(chan *proposal, maxPendingConfChanges),
		propSlots: make(chan struct{}, cfg.MaxPendingProposals),
		readSlots: make(chan struct{}, cfg.MaxPendingReads),
		stopc:     make(chan struct{}),
		done:      make(chan struct{}),
		snapDone:  make(chan snapTaken, 1),
		sentc:     make(chan snapSent, maxSnapshotSends),
		offerc:    make(chan snapOffer, maxSnapshotOffers),
		writec:    make(chan *writeJob, 1),
		writtenc:  make(chan *writeJob, 1),
	}
	n.bgctx, n.bgcancel = context.WithCancel(context.Background())
	if b, ok := cfg.LogStore.(BatchStore); ok && sameObject(cfg.LogStore, cfg.StableStore) {
		n.batch = b
	}
	// Read ids travel to the leader and back. Starting from the clock keeps
	// an answer addressed to a request from before a restart from matching
	// a new request with the same id.
	n.readSeq.Store(uint64(cfg.Now().UnixNano()))
	n.metrics = newNodeMetrics()
	n.initLoop(core, st, snap)
	n.onConfig(core.Configuration())
	n.progressDue = true
	n.publish()
	n.logger.Info("node started", "id", id, "term", st.HardState.Term, "commit", st.HardState.Commit,
		"last_index", n.lastIndex, "tick", cfg.TickInterval, "group_commit", n.batch != nil)
	go n.run()
	return n, nil
}

// sameObject reports whether a and b are the same comparable value
// (typically the same pointer), without panicking on uncomparable types.
func sameObject(a, b any) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	if va.Type() != vb.Type() || !va.Comparable() || !vb.Comparable() {
		return false
	}
	return a == b
}

// restoreSnapshot restores the state machine from the newest intact
// snapshot, if there is a snapshot store and a snapshot in it, and returns
// its metadata (zero if none) and the configuration as of its index.
func restoreSnapshot(cfg NodeConfig) (SnapshotMeta, *Configuration, error) {
	if cfg.SnapshotStore == nil {
		return SnapshotMeta{}, nil, nil
	}
	meta, rc, ok, err := cfg.SnapshotStore.Latest()
	if err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("finding the newest snapshot: %w", err)
	}
	if !ok {
		return SnapshotMeta{}, nil, nil
	}
	defer rc.Close()
	start := time.Now()
	conf, body, err := readConfHeader(rc)
	if err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("snapshot %d (term %d): %w", meta.Index, meta.Term, err)
	}
	if conf == nil {
		// Written before configurations were stored in snapshots: the
		// members then were the bootstrap ones.
		c := NewConfiguration(meta.Voters, nil)
		if boot := cfg.Raft.bootstrap(); slices.Equal(boot.Voters(), c.Voters()) {
			c = boot
		}
		conf = &c
	}
	if err := cfg.StateMachine.Restore(body); err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("restoring the state machine from snapshot %d (term %d): %w", meta.Index, meta.Term, err)
	}
	cfg.Logger.Info("state machine restored from snapshot", "index", meta.Index, "term", meta.Term, "bytes", meta.Size,
		"config", conf.String(), "took", time.Since(start))
	return meta, conf, nil
}

// loadState reads the hard state and the stored log, verifying every
// entry (a corrupt log must stop the start-up, never reach the state
// machine), and keeps what continues the snapshot (TrimLog). A stored log
// that does not continue it is deleted.
func loadState(ls LogStore, ss StableStore, snap SnapshotMeta, logger hclog.Logger) (Restored, error) {
	hs, err := ss.HardState()
	if err != nil {
		return Restored{}, fmt.Errorf("reading hard state: %w", err)
	}
	st := Restored{HardState: hs}
	first, err := ls.FirstIndex()
	if err != nil {
		return Restored{}, fmt.Errorf("reading first log index: %w", err)
	}
	last, err := ls.LastIndex()
	if err != nil {
		return Restored{}, fmt.Errorf("reading last log index: %w", err)
	}
	st.SnapIndex, st.SnapTerm = snap.Index, snap.Term
	if last == 0 {
		return st, nil
	}
	if first == 0 || first > last {
		return Restored{}, fmt.Errorf("log store reports first index %d and last index %d", first, last)
	}
	ents, err := ls.Entries(first, last+1)
	if err != nil {
		return Restored{}, fmt.Errorf("reading log entries %d..%d: %w", first, last, err)
	}
	if want := int(last - first + 1); len(ents) != want {
		return Restored{}, fmt.Errorf("log store returned %d entries for %d..%d, want %d", len(ents), first, last, want)
	}
	for i := range ents {
		if want := first + Index(i); ents[i].Index != want {
			return Restored{}, fmt.Errorf("log store returned entry %d where %d belongs", ents[i].Index, want)
		}
		if err := ents[i].Verify(); err != nil {
			return Restored{}, fmt.Errorf("verifying log at start-up: %w", err)
		}
	}
	base, baseTerm, kept, discard, err := TrimLog(snap.Index, snap.Term, ents)
	if err != nil {
		return Restored{}, err
	}
	if discard {
		// A received snapshot replaced this log, and the node stopped
		// before deleting it: nothing in it continues the snapshot.
		logger.Warn("stored log does not continue the newest snapshot: deleting it", "snapshot_index", snap.Index,
			"snapshot_term", snap.Term, "log_first", first, "log_last", last)
		if err := ls.DeletePrefix(last); err != nil {
			return Restored{}, fmt.Errorf("deleting the log replaced by snapshot %d: %w", snap.Index, err)
		}
	}
	st.SnapIndex, st.SnapTerm, st.Entries = base, baseTerm, kept
	return st, nil
}

// ID returns the node's id.
func (n *Node) ID() NodeID { return n.id }

// Status returns a copy of the node's state as of the loop's last iteration.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.status
	st.Progress = maps.Clone(st.Progress)
	return st
}

// Leader returns the leader this node knows of (None if unknown) and its term.
func (n *Node) Leader() (NodeID, Term) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status.Lead, n.status.Term
}

// Done is closed once the node has stopped, by Stop or by a fatal storage error.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err returns why the node stopped: nil while it runs, an error wrapping
// ErrStopped afterwards (and the storage error if that was the cause).
func (n *Node) Err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.err
}

// stoppedErr is what callers get once the loop is gone.
func (n *Node) stoppedErr() error {
	if err := n.Err(); err != nil {
		return err
	}
	return ErrStopped
}

// Stop stops the loop, fails every waiting call and returns when the loop
// has exited. It is safe to call more than once and concurrently, but not
// from StateMachine.Apply.
func (n *Node) Stop() {
	n.stopOnce.Do(func() { close(n.stopc) })
	<-n.done
	// Snapshot writers and senders end with the context (a snapshot being
	// written is finished: it is committed or cancelled by its store).
	n.bgcancel()
	n.wg.Wait()
}

// Step hands a peer's message to the node. It never waits for room: when
// the inbox is full the message is refused, as a congested network would
// drop it, and Raft retries.
func (n *Node) Step(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-n.done:
		return n.stoppedErr()
	default:
	}
	select {
	case n.inbox <- m:
		return nil
	default:
		return fmt.Errorf("%w: inbox of %d messages is full; dropped %s from node %d", ErrOverloaded, cap(n.inbox), m.Type, m.From)
	}
}

// Propose replicates data as one log entry and returns the state machine's
// result of applying it on this node, which must be the leader. A
// *NotLeaderError (naming the leader and its address when known) means
// nothing was proposed. Errors wrapping ErrProposalLost mean the entry will
// never apply; ErrOutcomeUnknown means it may.
func (n *Node) Propose(ctx context.Context, data []byte) (any, error) {
	return n.propose(ctx, data, false)
}

// ProposeOwned is Propose for a caller that hands data over: the entry
// keeps it without a copy, so the caller must never modify it again.
func (n *Node) ProposeOwned(ctx context.Context, data []byte) (any, error) {
	return n.propose(ctx, data, true)
}

func (n *Node) propose(ctx context.Context, data []byte, owned bool) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("not proposed: %w", err)
	}
	if max := n.cfg.Raft.MaxProposalBytes; len(data) > max {
		// Checked here, not in the batch: the core refuses a whole batch
		// for one oversized command.
		return nil, fmt.Errorf("%w: command of %d bytes exceeds the %d-byte limit", ErrProposalDropped, len(data), max)
	}
	select {
	case n.propSlots <- struct{}{}:
	default:
		return nil, fmt.Errorf("%w: %d proposals pending (the limit); retry later", ErrOverloaded, cap(n.propSlots))
	}
	// The entry keeps the bytes; the caller may reuse its buffer after an
	// early return.
	if !owned {
		data = bytes.Clone(data)
	}
	p := &proposal{ctx: ctx, data: data, result: make(chan proposeResult, 1)}
	select {
	case n.propc <- p:
	case <-n.done:
		<-n.propSlots
		return nil, n.stoppedErr()
	}
	select {
	case res := <-p.result:
		return res.value, res.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: stopped waiting: %w", ErrOutcomeUnknown, ctx.Err())
	case <-n.done:
		// The loop answers every waiter it knows before closing done; a
		// proposal it never saw was not proposed.
		select {
		case res := <-p.result:
			return res.value, res.err
		default:
			return nil, n.stoppedErr()
		}
	}
}

// ReadIndex returns an index such that this node's state machine has
// applied it and every write acknowledged before the call is at or below
// it: a read of the local state machine is then linearizable. An error
// wrapping ErrReadDropped means no leader could confirm the read; retry.
func (n *Node) ReadIndex(ctx context.Context) (Index, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	select {
	case n.readSlots <- struct{}{}:
	default:
		return 0, fmt.Errorf("%w: %d reads pending (the limit); retry later", ErrOverloaded, cap(n.readSlots))
	}
	r := &readRequestW{ctx: ctx, id: n.readSeq.Add(1), result: make(chan readResult, 1)}
	select {
	case n.readc <- r:
	case <-n.done:
		<-n.readSlots
		return 0, n.stoppedErr()
	}
	select {
	case res := <-r.result:
		return res.index, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.done:
		select {
		case res := <-r.result:
			return res.index, res.err
		default:
			return 0, n.stoppedErr()
		}
	}
}

// TransferLeadership asks this node, which must be the leader, to hand
// leadership to node to, and waits until to is leader. It fails if the
// transfer is abandoned (the target did not catch up within an election
// timeout) or another node took over.
func (n *Node) TransferLeadership(ctx context.Context, to NodeID) error {
	req := &transferRequest{ctx: ctx, to: to, result: make(chan error, 1)}
	select {
	case n.transferc <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return n.stoppedErr()
	}
	select {
	case err := <-req.result:
		return err
	case <-ctx.Done():
		return fmt.Errorf("leadership transfer to node %d: stopped waiting: %w", to, ctx.Err())
	case <-n.done:
		select {
		case err := <-req.result:
			return err
		default:
			return n.stoppedErr()
		}
	}
}

// withLeaderAddr adds the leader's address to a *NotLeaderError so that a
// caller can be redirected; errors.Is/As still see the original.
func (n *Node) withLeaderAddr(err error) error {
	var nle *NotLeaderError
	if !errors.As(err, &nle) || nle.Leader == None {
		return err
	}
	if addr, ok := n.cfg.PeerAddrs[nle.Leader]; ok {
		return fmt.Errorf("%w (leader address %s)", err, addr)
	}
	return err
}

// publish makes the core's status visible to Status and Leader.
//
// The leader's progress map is rebuilt at most once per tick (and on a
// role change): this runs after every batch of work, and a new map per
// proposal batch was a measurable share of the leader's allocations.
// Everything else is current.
func (n *Node) publish() {
	n.core.UpdateStatus(&n.loopStatus, n.progressDue)
	n.progressDue = false
	n.mu.Lock()
	n.status = n.loopStatus
	n.mu.Unlock()
}

// Metrics returns the node's counters (live values, safe to read at any
// time).
func (n *Node) Metrics() *NodeMetrics { return n.metrics }
