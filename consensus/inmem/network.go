package inmem

import (
	"context"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/lockd/lockd/consensus"
)

// QueueSize is how many messages may wait for one node before the network
// drops more.
const QueueSize = 1024

// Receiver takes delivered messages; *consensus.Node is one.
type Receiver interface {
	Step(ctx context.Context, m consensus.Message) error
}

// ReceiverFunc adapts a function to Receiver.
type ReceiverFunc func(ctx context.Context, m consensus.Message) error

// Step calls f.
func (f ReceiverFunc) Step(ctx context.Context, m consensus.Message) error { return f(ctx, m) }

// Network connects nodes in one process. Links can be cut by Partition and
// Isolate and restored by Heal. It is safe for concurrent use.
type Network struct {
	ctx    context.Context // cancelled by Close; passed to every Step
	cancel context.CancelFunc
	wg     sync.WaitGroup // the delivering goroutines

	mu       sync.Mutex // protects peers, group, isolated and closed
	peers    map[consensus.NodeID]*peer
	group    map[consensus.NodeID]int // partition group of each node; nil when not partitioned
	isolated map[consensus.NodeID]bool
	closed   bool

	delivered, dropped atomic.Uint64
}

type peer struct {
	queue chan envelope
	recv  Receiver // guarded by Network.mu; replaced when a node restarts
}

// envelope remembers the sending endpoint: the link is checked between
// endpoints, whatever From the message claims.
type envelope struct {
	from consensus.NodeID
	m    consensus.Message
}

// NewNetwork returns a network with no nodes and every link up.
func NewNetwork() *Network {
	ctx, cancel := context.WithCancel(context.Background())
	return &Network{ctx: ctx, cancel: cancel, peers: map[consensus.NodeID]*peer{}}
}

// Transport returns node id's sending side. Create it before the node (it
// goes into NodeConfig) and Register the node once started.
func (nw *Network) Transport(id consensus.NodeID) consensus.Transport {
	return &endpoint{nw: nw, id: id}
}

// Register makes r receive the messages sent to id, replacing any earlier
// receiver (a restarted node). The first Register of an id starts its
// delivering goroutine.
func (nw *Network) Register(id consensus.NodeID, r Receiver) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.closed {
		return
	}
	if p, ok := nw.peers[id]; ok {
		p.recv = r
		return
	}
	p := &peer{queue: make(chan envelope, QueueSize), recv: r}
	nw.peers[id] = p
	nw.wg.Add(1)
	go nw.deliver(id, p)
}

// Unregister stops delivery to id (a crashed node); queued messages are
// dropped. Register brings it back.
func (nw *Network) Unregister(id consensus.NodeID) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if p, ok := nw.peers[id]; ok {
		p.recv = nil
	}
}

// Partition splits the network: nodes talk only within their group. A
// node named in no group is cut off from everyone. It replaces any earlier
// partition; isolations stay.
func (nw *Network) Partition(groups ...[]consensus.NodeID) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.group = map[consensus.NodeID]int{}
	for i, g := range groups {
		for _, id := range g {
			nw.group[id] = i + 1
		}
	}
}

// Isolate cuts id off from every other node until Heal.
func (nw *Network) Isolate(id consensus.NodeID) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.isolated == nil {
		nw.isolated = map[consensus.NodeID]bool{}
	}
	nw.isolated[id] = true
}

// Heal restores every link.
func (nw *Network) Heal() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.group, nw.isolated = nil, nil
}

// Stats returns how many messages were delivered and dropped so far.
func (nw *Network) Stats() (delivered, dropped uint64) {
	return nw.delivered.Load(), nw.dropped.Load()
}

// Close stops delivery and joins the delivering goroutines. Later sends
// are dropped.
func (nw *Network) Close() {
	nw.mu.Lock()
	nw.closed = true
	nw.mu.Unlock()
	nw.cancel()
	nw.wg.Wait()
}

func (nw *Network) linkedLocked(a, b consensus.NodeID) bool {
	if nw.isolated[a] || nw.isolated[b] {
		return false
	}
	if nw.group == nil {
		return true
	}
	ga := nw.group[a]
	return ga != 0 && ga == nw.group[b]
}

// deliver is node id's delivering goroutine ("inmem.deliver"). The link is
// checked again here so that a partition also drops messages in flight.
func (nw *Network) deliver(id consensus.NodeID, p *peer) {
	defer nw.wg.Done()
	pprof.SetGoroutineLabels(pprof.WithLabels(nw.ctx,
		pprof.Labels("goroutine", "inmem.deliver", "node", strconv.FormatUint(uint64(id), 10))))
	for {
		select {
		case <-nw.ctx.Done():
			return
		case env := <-p.queue:
			nw.mu.Lock()
			r, ok := p.recv, nw.linkedLocked(env.from, id)
			nw.mu.Unlock()
			if !ok || r == nil {
				nw.dropped.Add(1)
				continue
			}
			if err := r.Step(nw.ctx, env.m); err != nil {
				nw.dropped.Add(1)
				continue
			}
			nw.delivered.Add(1)
		}
	}
}

type endpoint struct {
	nw *Network
	id consensus.NodeID
}

// Send queues each message for its destination without blocking.
func (e *endpoint) Send(msgs []consensus.Message) {
	nw := e.nw
	for _, m := range msgs {
		nw.mu.Lock()
		p, ok := nw.peers[m.To]
		ok = ok && !nw.closed && nw.linkedLocked(e.id, m.To)
		nw.mu.Unlock()
		if !ok {
			nw.dropped.Add(1)
			continue
		}
		// The sender's log may overwrite its slice in place later; the
		// entries' data is immutable and may be shared.
		m.Entries = slices.Clone(m.Entries)
		select {
		case p.queue <- envelope{from: e.id, m: m}:
		default:
			nw.dropped.Add(1)
		}
	}
}
