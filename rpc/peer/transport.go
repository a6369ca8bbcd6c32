package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/rpc"
)

var (
	_ consensus.Transport = (*PeerTransport)(nil)
	// The batch size is checked before decoding only if this holds.
	_ rpc.BodyChecker = (*wireBatch)(nil)
)

// Transport defaults.
const (
	DefaultPeerQueueSize     = 1024
	DefaultMaxBatchBytes     = 1 << 20
	DefaultSnapshotChunkSize = 256 << 10
	maxBatchMessages         = 256
)

// PeerTransportConfig configures a PeerTransport. Validate fills defaults.
type PeerTransportConfig struct {
	// ID is this node; ClusterID must match the peers'.
	ID        consensus.NodeID
	ClusterID string
	// Peers maps every other member to "host:port"; see SetPeers.
	Peers map[consensus.NodeID]string
	// TLS is the client side for connections to peers (see ClientTLS); the
	// server side is the Server's that Register is given.
	TLS *tls.Config

	// Addr is this node's peer address as others dial it; sent with every
	// batch so that a peer whose configuration does not list this node
	// yet (it lags behind the entry that added it) can still answer.
	// Optional.
	Addr string
	// QueueSize bounds the messages waiting for one peer in each lane;
	// more are dropped. Default 1024.
	QueueSize int
	// MaxBatchBytes bounds (roughly) the bytes of messages coalesced into
	// one frame. Default 1 MiB; keep it below the peers' MaxFrameSize.
	MaxBatchBytes int
	// SendTimeout bounds how long a batch may wait for the connection
	// before it is dropped. Default 2 s.
	SendTimeout time.Duration
	// SnapshotChunkSize is the size of one snapshot chunk. Default 256 KiB.
	SnapshotChunkSize int
	// SnapshotSink opens where a snapshot arriving from a peer is written;
	// nil refuses snapshots.
	SnapshotSink func(ctx context.Context, from consensus.NodeID, meta consensus.SnapshotMeta) (consensus.SnapshotSink, error)

	// Client settings for the connections to peers (ClusterID, Name, TLS
	// and PoolSize are set by the transport).
	Client rpc.ClientConfig
	// Rand seeds every peer client's backoff jitter. Default: from the clock.
	Rand *rand.Rand
	// Logger receives drops and peer events. Default: discard.
	Logger hclog.Logger
}

// Validate checks the configuration and fills defaults.
func (c *PeerTransportConfig) Validate() error {
	var errs []error
	if c.ID == consensus.None {
		errs = append(errs, errors.New("node id must not be 0"))
	}
	for id, addr := range c.Peers {
		if id == consensus.None || id == c.ID {
			errs = append(errs, fmt.Errorf("peer id %d (%s) must be another node's", id, addr))
		}
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultPeerQueueSize
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.SnapshotChunkSize == 0 {
		c.SnapshotChunkSize = DefaultSnapshotChunkSize
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 2 * time.Second
	}
	if c.QueueSize < 0 || c.MaxBatchBytes < 0 || c.SnapshotChunkSize < 0 || c.SendTimeout < 0 {
		errs = append(errs, fmt.Errorf("queue size %d, max batch bytes %d, snapshot chunk size %d and send timeout %v must be positive",
			c.QueueSize, c.MaxBatchBytes, c.SnapshotChunkSize, c.SendTimeout))
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewSource(time.Now().UnixNano()))
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	c.Client.ClusterID = c.ClusterID
	c.Client.Name = fmt.Sprintf("node %d", c.ID)
	c.Client.TLS = c.TLS
	c.Client.PoolSize = 1
	if c.Client.Logger == nil {
		c.Client.Logger = c.Logger
	}
	probe := c.Client
	probe.Rand = rand.New(rand.NewSource(1))
	if err := probe.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("client: %w", err))
	}
	return errors.Join(errs...)
}

// Lanes: heartbeats, votes and other small control messages never wait
// behind a large AppendEntries: each lane has its own queue, goroutine and
// connection.
const (
	laneBulk     = 0 // MsgApp
	lanePriority = 1 // everything else
	laneCount    = 2
)

var laneNames = [laneCount]string{"bulk", "priority"}

func laneOf(m *consensus.Message) int {
	if m.Type == consensus.MsgApp {
		return laneBulk
	}
	return lanePriority
}

// PeerTransport carries Raft messages between nodes over rpc. Send never
// blocks: messages go to a bounded queue per peer and lane and are
// dropped when it is full (Raft retries). A goroutine per peer and lane
// coalesces what is queued into one frame. Incoming messages are handed to
// the handler set with SetHandler (the node's Step) in arrival order.
type PeerTransport struct {
	cfg    PeerTransportConfig
	logger hclog.Logger

	handler atomic.Pointer[func(context.Context, consensus.Message) error]

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu     sync.Mutex // protects addrs, peers, closed and cfg.Rand
	addrs  map[consensus.NodeID]string
	peers  map[consensus.NodeID]*peer
	closed bool
	wg     sync.WaitGroup // lane goroutines

	sent, dropped, received, rejected atomic.Uint64
	dropLog, rejectLog                rateLog

	// watched holds the contexts of incoming connections whose closing
	// will be reported to the handler (see watchConn).
	watched sync.Map
}

// peer is the sending side towards one node.
type peer struct {
	id    consensus.NodeID
	addr  string
	lanes [laneCount]*lane
	stop  chan struct{}

	snapOnce   sync.Once
	snapClient *rpc.Client
	snapErr    error
}

type lane struct {
	name   string
	q      chan consensus.Message
	client *rpc.Client
}

// NewPeerTransport returns a transport; peers are dialled on first use.
func NewPeerTransport(cfg PeerTransportConfig) (*PeerTransport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("peer transport config: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &PeerTransport{
		cfg: cfg, logger: cfg.Logger.With("node", uint64(cfg.ID)), ctx: ctx, cancel: cancel,
		addrs: maps.Clone(cfg.Peers), peers: map[consensus.NodeID]*peer{},
	}
	if t.addrs == nil {
		t.addrs = map[consensus.NodeID]string{}
	}
	return t, nil
}

// SetHandler sets where incoming messages go (normally the node's Step).
// Messages arriving before it is set are dropped.
func (t *PeerTransport) SetHandler(h func(ctx context.Context, m consensus.Message) error) {
	t.handler.Store(&h)
}

// SetPeers replaces the address book. Peers that left or moved are
// disconnected (their queued messages dropped); the rest keep their
// connections.
func (t *PeerTransport) SetPeers(addrs map[consensus.NodeID]string) {
	t.mu.Lock()
	var stale []*peer
	for id, p := range t.peers {
		if addrs[id] != p.addr {
			stale = append(stale, p)
			delete(t.peers, id)
		}
	}
	t.addrs = maps.Clone(addrs)
	t.mu.Unlock()
	for _, p := range stale {
		t.logger.Info("peer address changed or removed; disconnecting", "peer", uint64(p.id), "addr", p.addr, "new_addr", addrs[p.id])
		p.close()
	}
}

// Stats counts messages: sent (handed to a connection), dropped (queue
// full, unknown peer, connection unavailable), received (handed to the
// handler) and rejected (invalid, or refused by the handler).
type Stats struct {
	Sent, Dropped, Received, Rejected uint64
}

// Stats returns the counters since the transport started.
func (t *PeerTransport) Stats() Stats {
	return Stats{Sent: t.sent.Load(), Dropped: t.dropped.Load(), Received: t.received.Load(), Rejected: t.rejected.Load()}
}

// Send queues messages for their peers and returns at once. The Entries
// of the messages are kept (not copied) until encoded: the core never
// modifies a slice it handed out.
func (t *PeerTransport) Send(msgs []consensus.Message) {
	for i := range msgs {
		m := &msgs[i]
		p := t.peerFor(m.To)
		if p == nil {
			t.drop(1, m.To, "no address for peer")
			continue
		}
		select {
		case p.lanes[laneOf(m)].q <- *m:
		default:
			t.drop(1, m.To, "queue full")
		}
	}
}

func (t *PeerTransport) drop(n int, to consensus.NodeID, why string) {
	t.dropped.Add(uint64(n))
	if total, ok := t.dropLog.tick(); ok {
		t.logger.Warn("dropping messages to peer", "peer", uint64(to), "reason", why, "dropped_since_last_line", total, "dropped_total", t.dropped.Load())
	}
}

// peerFor returns the sender towards id, starting it on first use.
func (t *PeerTransport) peerFor(id consensus.NodeID) *peer {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	if p := t.peers[id]; p != nil {
		return p
	}
	addr, ok := t.addrs[id]
	if !ok {
		return nil
	}
	p := &peer{id: id, addr: addr, stop: make(chan struct{})}
	for i := range p.lanes {
		cc := t.cfg.Client
		cc.Rand = rand.New(rand.NewSource(t.cfg.Rand.Int63()))
		cc.Logger = t.cfg.Client.Logger.With("peer", uint64(id), "lane", laneNames[i])
		client, err := rpc.NewClient(addr, cc)
		if err != nil {
			t.logger.Error("cannot make a client for peer", "peer", uint64(id), "addr", addr, "error", err)
			return nil
		}
		p.lanes[i] = &lane{name: laneNames[i], q: make(chan consensus.Message, t.cfg.QueueSize), client: client}
	}
	t.peers[id] = p
	for _, l := range p.lanes {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			t.runLane(p, l)
		}()
	}
	return p
}

// close stops the peer's lanes (their goroutines exit) and connections.
func (p *peer) close() {
	close(p.stop)
	for _, l := range p.lanes {
		l.client.Close()
	}
	p.snapOnce.Do(func() { p.snapErr = fmt.Errorf("peer transport to %s: %w", p.addr, rpc.ErrClosed) })
	if p.snapClient != nil {
		p.snapClient.Close()
	}
}

// runLane sends what is queued for one peer and lane, a batch per frame.
func (t *PeerTransport) runLane(p *peer, l *lane) {
	batch := make([]consensus.Message, 0, maxBatchMessages)
	var wb wireBatch
	var blocks []byte
	// The lane's own buffer keeps the size of a large batch.
	buf := make([]byte, 0, 64<<10)
	for {
		select {
		case m := <-l.q:
			batch = append(batch, m)
		case <-p.stop:
			return
		}
		size := msgSize(&batch[0])
	fill:
		for len(batch) < maxBatchMessages && size < t.cfg.MaxBatchBytes {
			select {
			case m := <-l.q:
				batch = append(batch, m)
				size += msgSize(&m)
			default:
				break fill
			}
		}
		wb.From, wb.Addr = uint64(t.cfg.ID), t.cfg.Addr
		wb.Msgs = wb.Msgs[:0]
		blocks = blocks[:0]
		for i := range batch {
			wb.Msgs, blocks = appendWire(wb.Msgs, blocks, &batch[i])
		}
		buf = wb.AppendMsgpack(buf[:0])
		ctx, cancel := context.WithTimeout(t.ctx, t.cfg.SendTimeout)
		err := l.client.NotifyEncoded(ctx, rpc.MethodRaftMessages, buf)
		cancel()
		if cap(buf) > 4*t.cfg.MaxBatchBytes {
			buf = make([]byte, 0, 64<<10) // one huge entry; don't keep its buffer
		}
		if err != nil {
			t.drop(len(batch), p.id, err.Error())
		} else {
			t.sent.Add(uint64(len(batch)))
		}
		// Let go of the entries: they may be large.
		clear(batch)
		batch = batch[:0]
		clear(wb.Msgs)
		if cap(blocks) > 4*t.cfg.MaxBatchBytes {
			blocks = nil
		}
	}
}

func msgSize(m *consensus.Message) int {
	n := 64
	for i := range m.Entries {
		n += m.Entries[i].Size()
	}
	return n
}

// Register serves the transport's methods (incoming messages and
// snapshots) on srv. Call it before srv.Serve.
func (t *PeerTransport) Register(srv *rpc.Server) error {
	if err := rpc.Handle(srv, rpc.MethodRaftMessages, "raft.messages", t.onBatch, rpc.Inline()); err != nil {
		return err
	}
	return rpc.HandleStream(srv, rpc.MethodRaftSnapshot, "raft.snapshot", t.onSnapshot)
}

// onBatch hands incoming messages to the handler in order. It runs on the
// connection's reader goroutine (rpc.Inline): the handler must not block.
func (t *PeerTransport) onBatch(ctx context.Context, b *wireBatch) (*struct{}, error) {
	hp := t.handler.Load()
	accepted := false
	defer func() {
		if accepted {
			t.watchConn(ctx, consensus.NodeID(b.From))
			t.learnAddr(consensus.NodeID(b.From), b.Addr)
		}
	}()
	for i := range b.Msgs {
		m, err := b.Msgs[i].toMessage()
		if err == nil && (m.To != t.cfg.ID || uint64(m.From) != b.From) {
			err = fmt.Errorf("%s from node %d to node %d arrived at node %d over node %d's connection", m.Type, m.From, m.To, t.cfg.ID, b.From)
		}
		if err == nil && hp == nil {
			err = errors.New("no handler set yet")
		}
		if err == nil {
			err = (*hp)(ctx, m)
		}
		if err != nil {
			t.rejected.Add(1)
			if n, ok := t.rejectLog.tick(); ok {
				t.logger.Warn("incoming raft message rejected", "from", b.From, "error", err, "rejected_since_last_line", n)
			}
			continue
		}
		t.received.Add(1)
		accepted = true
	}
	return nil, nil
}

// learnAddr records the advertised address of a sender the address book
// does not know. The next SetPeers (the configuration in use) replaces
// it; until then the node can answer a leader its configuration does not
// list yet — otherwise a follower that lags behind the entry adding the
// new leader could never tell it where its log ends.
func (t *PeerTransport) learnAddr(from consensus.NodeID, addr string) {
	if addr == "" || from == t.cfg.ID {
		return
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, known := t.addrs[from]; known || t.closed {
		return
	}
	if t.addrs == nil {
		t.addrs = map[consensus.NodeID]string{}
	}
	t.addrs[from] = addr
	t.logger.Info("learned the address of a peer not in the configuration yet", "peer", uint64(from), "addr", addr)
}

// watchConn arranges that when the incoming connection whose context is
// ctx closes, the handler gets a local MsgUnreachable from the node that
// sent on it. A leader whose process dies closes its connections at once;
// this lets its followers campaign within a few ticks instead of waiting
// out the election timeout (consensus: Raft.peerUnreachable says why that
// is safe). rpc.Inline handlers get the connection's context, which ends
// exactly when the connection does.
func (t *PeerTransport) watchConn(ctx context.Context, from consensus.NodeID) {
	if _, loaded := t.watched.LoadOrStore(ctx, struct{}{}); loaded {
		return
	}
	context.AfterFunc(ctx, func() {
		t.watched.Delete(ctx)
		hp := t.handler.Load()
		if t.ctx.Err() != nil || hp == nil {
			return // closing down: nothing to tell
		}
		_ = (*hp)(t.ctx, consensus.Message{Type: consensus.MsgUnreachable, From: from, To: t.cfg.ID})
	})
}

// rateLog lets one log line through per second and counts the rest.
type rateLog struct {
	mu    sync.Mutex // protects last and count
	last  time.Time
	count uint64
}

// tick counts an event; ok says whether to log now, n how many events
// the line stands for.
func (r *rateLog) tick() (n uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.count++
	if now := time.Now(); now.Sub(r.last) >= time.Second {
		r.last = now
		n, r.count = r.count, 0
		return n, true
	}
	return 0, false
}

// Close stops every sender and connection and waits for them. Incoming
// messages are not affected: they arrive through the Server.
func (t *PeerTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	peers := t.peers
	t.peers = map[consensus.NodeID]*peer{}
	t.mu.Unlock()
	t.cancel()
	for _, p := range peers {
		p.close()
	}
	t.wg.Wait()
	return nil
}
