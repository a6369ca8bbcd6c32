package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/rpc"
)

// inbox records messages a transport delivered.
type inbox struct {
	mu   sync.Mutex
	msgs []consensus.Message
	// gate, when set, makes the handler refuse messages of that type.
	refuse consensus.MessageType
}

func (b *inbox) step(_ context.Context, m consensus.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.Type == b.refuse {
		return errors.New("refused by test")
	}
	b.msgs = append(b.msgs, m)
	return nil
}

func (b *inbox) got() []consensus.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]consensus.Message(nil), b.msgs...)
}

// testNode is a transport with its own server.
type testNode struct {
	id    consensus.NodeID
	tr    *PeerTransport
	srv   *rpc.Server
	addr  string
	inbox *inbox
	sinks *memSinks
}

func newTestNodes(t testing.TB, n int, mod func(*PeerTransportConfig)) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	addrs := map[consensus.NodeID]string{}
	ls := make([]net.Listener, n)
	for i := range nodes {
		l := listen(t)
		ls[i] = l
		id := consensus.NodeID(i + 1)
		addrs[id] = l.Addr().String()
		nodes[i] = &testNode{id: id, addr: l.Addr().String(), inbox: &inbox{}, sinks: &memSinks{}}
	}
	for i, nd := range nodes {
		peers := map[consensus.NodeID]string{}
		for id, a := range addrs {
			if id != nd.id {
				peers[id] = a
			}
		}
		cfg := PeerTransportConfig{
			ID: nd.id, ClusterID: testCluster, Peers: peers, Rand: rand.New(rand.NewSource(int64(nd.id))),
			Logger: testLogger(t, fmt.Sprint("node", nd.id)), SnapshotSink: nd.sinks.open,
			SnapshotChunkSize: 1000,
		}
		cfg.Client.BackoffMin = 10 * time.Millisecond
		cfg.Client.BackoffMax = 50 * time.Millisecond
		if mod != nil {
			mod(&cfg)
		}
		tr, err := NewPeerTransport(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tr.SetHandler(nd.inbox.step)
		nd.tr = tr
		nd.srv = newTestServer(t)
		if err := tr.Register(nd.srv); err != nil {
			t.Fatal(err)
		}
		go nd.srv.Serve(ls[i])
		t.Cleanup(func() {
			tr.Close()
			nd.srv.Close()
		})
	}
	return nodes
}

func entries(lo, hi consensus.Index, size int) []consensus.Entry {
	var out []consensus.Entry
	for i := lo; i < hi; i++ {
		e := consensus.Entry{Index: i, Term: 1, Time: int64(i), Data: bytes.Repeat([]byte{byte(i)}, size)}
		e.Seal()
		out = append(out, e)
	}
	return out
}

func TestTransportDeliversInOrderWithEntries(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	var sent []consensus.Message
	for i := range 200 {
		prev := consensus.Index(i * 3)
		m := consensus.Message{Type: consensus.MsgApp, From: 1, To: 2, Term: 1, PrevIndex: prev, PrevTerm: 1,
			Entries: entries(prev+1, prev+4, 50), Commit: prev, Context: uint64(i)}
		sent = append(sent, m)
		a.tr.Send([]consensus.Message{m})
	}
	waitFor(t, 10*time.Second, "delivery", func() bool { return len(b.inbox.got()) == len(sent) })
	for i, m := range b.inbox.got() {
		want := sent[i]
		if m.Context != want.Context || len(m.Entries) != 3 || !bytes.Equal(m.Entries[2].Data, want.Entries[2].Data) ||
			m.Entries[0].Checksum != want.Entries[0].Checksum || m.PrevIndex != want.PrevIndex || m.Commit != want.Commit {
			t.Fatalf("message %d: got %+v, want %+v", i, m, want)
		}
	}
	// The sender counts a batch once written, which may be after delivery.
	waitFor(t, 5*time.Second, "the sender's count", func() bool { return a.tr.Stats().Sent == 200 })
	if st := a.tr.Stats(); st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTransportEveryMessageTypeRoundTrips(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	var sent []consensus.Message
	for typ := consensus.MsgApp; typ <= consensus.MsgReadIndexResp; typ++ {
		m := consensus.Message{Type: typ, From: 1, To: 2, Term: 7, PrevIndex: 3, PrevTerm: 2, Commit: 9, Index: 11,
			Reject: true, RejectIndex: 12, ConflictTerm: 13, ConflictIndex: 14, Context: 15}
		sent = append(sent, m)
	}
	nodes[0].tr.Send(sent)
	waitFor(t, 10*time.Second, "delivery", func() bool { return len(nodes[1].inbox.got()) == len(sent) })
	got := map[consensus.MessageType]consensus.Message{}
	for _, m := range nodes[1].inbox.got() {
		got[m.Type] = m
	}
	for _, want := range sent {
		m := got[want.Type]
		m.Entries, want.Entries = nil, nil
		if fmt.Sprint(m) != fmt.Sprint(want) {
			t.Errorf("%s: got %+v, want %+v", want.Type, m, want)
		}
	}
}

// Heartbeats travel on their own connection: a follower whose bulk lane is
// stuck behind megabytes of appends still gets them at once.
func TestHeartbeatsDoNotQueueBehindAppends(t *testing.T) {
	nodes := newTestNodes(t, 2, func(c *PeerTransportConfig) { c.QueueSize = 4096 })
	a, b := nodes[0], nodes[1]
	// Block the receiver's bulk connection: its inline handler stalls while
	// it holds MsgApp, so the TCP connection backs up.
	release := make(chan struct{})
	var hb sync.WaitGroup
	hb.Add(1)
	var once sync.Once
	b.tr.SetHandler(func(ctx context.Context, m consensus.Message) error {
		if m.Type == consensus.MsgApp {
			<-release
			return nil
		}
		if m.Type == consensus.MsgHeartbeat {
			once.Do(hb.Done)
		}
		return nil
	})
	defer close(release)
	for i := range 64 {
		prev := consensus.Index(i * 16)
		a.tr.Send([]consensus.Message{{Type: consensus.MsgApp, From: 1, To: 2, Term: 1, PrevIndex: prev, Entries: entries(prev+1, prev+17, 4096)}})
	}
	a.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2, Term: 1}})
	done := make(chan struct{})
	go func() { hb.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("heartbeat stuck behind appends")
	}
}

func TestTransportDropsWhenTheQueueIsFullAndNeverBlocks(t *testing.T) {
	nodes := newTestNodes(t, 1, func(c *PeerTransportConfig) {
		c.QueueSize = 8
		// A peer nobody listens on: dials fail, batches are dropped.
		c.Peers = map[consensus.NodeID]string{2: "127.0.0.1:1"}
	})
	a := nodes[0]
	start := time.Now()
	for range 10000 {
		a.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2}, {Type: consensus.MsgVote, From: 1, To: 9}})
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Send took %v for 20000 messages: it must not block", d)
	}
	waitFor(t, 5*time.Second, "every message counted", func() bool {
		st := a.tr.Stats()
		return st.Dropped == 20000 && st.Sent == 0
	})
}

func TestTransportRejectsBadMessages(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	b := nodes[1]
	c := newTestClient(t, b.addr, nil)
	ctx := ctxTimeout(t, 5*time.Second)
	good := entries(1, 3, 10)
	corrupt := entries(1, 3, 10)
	corrupt[1].Data = []byte("tampered")
	var wb wireBatch
	wb.From = 1
	var ents []byte
	for _, m := range []consensus.Message{
		{Type: consensus.MsgApp, From: 1, To: 2, Entries: good},
		{Type: consensus.MsgApp, From: 1, To: 2, Entries: corrupt},            // checksum
		{Type: consensus.MsgApp, From: 1, To: 2, PrevIndex: 5, Entries: good}, // not contiguous after PrevIndex
		{Type: consensus.MsgVote, From: 1, To: 3},                             // not for this node
		{Type: consensus.MsgVote, From: 4, To: 2},                             // From differs from the connection's node
		{Type: 99, From: 1, To: 2},                                            // unknown type
		{Type: consensus.MsgHeartbeat, From: 1, To: 2},
	} {
		wb.Msgs, ents = appendWire(wb.Msgs, ents, &m)
	}
	if err := c.Call(ctx, rpc.MethodRaftMessages, &wb, nil); err != nil {
		t.Fatal(err)
	}
	got := b.inbox.got()
	if len(got) != 2 || got[0].Type != consensus.MsgApp || got[1].Type != consensus.MsgHeartbeat {
		t.Fatalf("delivered %+v, want the good append and the heartbeat", got)
	}
	if st := b.tr.Stats(); st.Rejected != 5 || st.Received != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTransportPeerAddressChanges(t *testing.T) {
	nodes := newTestNodes(t, 3, nil)
	a := nodes[0]
	// Point node 2's id at node 3's address: messages now land at node 3,
	// which rejects them as not addressed to it.
	a.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2}})
	waitFor(t, 5*time.Second, "first delivery", func() bool { return len(nodes[1].inbox.got()) == 1 })
	a.tr.SetPeers(map[consensus.NodeID]string{2: nodes[2].addr})
	a.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2}})
	waitFor(t, 5*time.Second, "redirected delivery", func() bool { return nodes[2].tr.Stats().Rejected == 1 })
	// Removed peers are dropped.
	a.tr.SetPeers(nil)
	before := a.tr.Stats().Dropped
	a.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2}})
	if a.tr.Stats().Dropped != before+1 {
		t.Fatal("message to a removed peer not dropped")
	}
}

// memSinks is a SnapshotSink factory keeping snapshots in memory.
type memSinks struct {
	mu        sync.Mutex
	committed map[consensus.Index][]byte
	opens     int
	cancelled int
	failWrite bool
}

type memSink struct {
	s    *memSinks
	meta consensus.SnapshotMeta
	buf  bytes.Buffer
}

func (m *memSinks) open(_ context.Context, from consensus.NodeID, meta consensus.SnapshotMeta) (consensus.SnapshotSink, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.opens++
	return &memSink{s: m, meta: meta}, nil
}

func (m *memSinks) opened() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.opens
}

func (s *memSink) Write(p []byte) (int, error) {
	s.s.mu.Lock()
	fail := s.s.failWrite
	s.s.mu.Unlock()
	if fail {
		return 0, errors.New("disk full (test)")
	}
	return s.buf.Write(p)
}

func (s *memSink) Close() error {
	s.s.mu.Lock()
	defer s.s.mu.Unlock()
	if s.s.committed == nil {
		s.s.committed = map[consensus.Index][]byte{}
	}
	s.s.committed[s.meta.Index] = s.buf.Bytes()
	return nil
}

func (s *memSink) Cancel() error {
	s.s.mu.Lock()
	defer s.s.mu.Unlock()
	s.s.cancelled++
	return nil
}

func (m *memSinks) get(i consensus.Index) ([]byte, bool, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.committed[i]
	return b, ok, m.cancelled
}

func TestSnapshotStreamsInChunks(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	data := make([]byte, 123457) // 124 chunks of 1000 bytes
	rand.New(rand.NewSource(1)).Read(data)
	meta := consensus.SnapshotMeta{Index: 100, Term: 3, Voters: []consensus.NodeID{1, 2}, Size: int64(len(data))}
	ctx := ctxTimeout(t, 10*time.Second)
	if err := a.tr.SendSnapshot(ctx, 2, meta, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	got, ok, cancelled := b.sinks.get(100)
	if !ok || !bytes.Equal(got, data) || cancelled != 0 {
		t.Fatalf("committed %v (%d bytes), cancelled %d", ok, len(got), cancelled)
	}
	// Heartbeats flow meanwhile on their own lane (and after).
	a.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2}})
	waitFor(t, 5*time.Second, "heartbeat", func() bool { return len(b.inbox.got()) == 1 })
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("disk read error (test)")
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

func TestSnapshotFailuresCancelTheSink(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	ctx := ctxTimeout(t, 10*time.Second)
	// The sender's reader fails half-way.
	err := a.tr.SendSnapshot(ctx, 2, consensus.SnapshotMeta{Index: 5, Term: 1}, &failingReader{n: 5000})
	if err == nil || !strings.Contains(err.Error(), "disk read error") {
		t.Fatalf("got %v", err)
	}
	waitFor(t, 5*time.Second, "sink cancelled", func() bool { _, _, c := b.sinks.get(5); return c == 1 })
	// Size mismatch with the announced size.
	err = a.tr.SendSnapshot(ctx, 2, consensus.SnapshotMeta{Index: 6, Term: 1, Size: 10}, bytes.NewReader(make([]byte, 20)))
	if !errors.Is(err, rpc.ErrBadRequest) {
		t.Fatalf("oversized snapshot: %v", err)
	}
	// The receiver's sink fails.
	b.sinks.mu.Lock()
	b.sinks.failWrite = true
	b.sinks.mu.Unlock()
	err = a.tr.SendSnapshot(ctx, 2, consensus.SnapshotMeta{Index: 7, Term: 1}, bytes.NewReader(make([]byte, 5000)))
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("sink failure: %v", err)
	}
	if _, ok, _ := b.sinks.get(7); ok {
		t.Fatal("failed snapshot committed")
	}
	// A node that refuses snapshots says so.
	nodes2 := newTestNodes(t, 2, func(c *PeerTransportConfig) { c.SnapshotSink = nil })
	err = nodes2[0].tr.SendSnapshot(ctx, 2, consensus.SnapshotMeta{Index: 1}, bytes.NewReader(nil))
	if !errors.Is(err, rpc.ErrBadRequest) {
		t.Fatalf("refused snapshot: %v", err)
	}
}

var _ io.Reader = (*failingReader)(nil)

// A batch body of nils would decode to a hundred times its size; the
// receiver counts the messages before decoding and cuts such a peer off.
func TestRaftBatchOfNilsIsRefusedBeforeDecoding(t *testing.T) {
	nodes := newTestNodes(t, 1, nil)
	c := newTestClient(t, nodes[0].addr, func(c *rpc.ClientConfig) { c.PoolSize = 1 })
	ctx := ctxTimeout(t, 10*time.Second)
	// A snapshot stream held open on the connection sees how it ends.
	st, err := c.Stream(ctx, rpc.MethodRaftSnapshot, &snapshotHeader{From: 2, To: 1, Index: 1, Term: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	waitFor(t, 5*time.Second, "the snapshot stream to open", func() bool { return nodes[0].sinks.opened() == 1 })
	body := []byte{0x92, 0x01, 0xdd, 0x00, 0x01, 0x00, 0x00} // [1, array of 65536 ...]
	body = append(body, bytes.Repeat([]byte{0xc0}, 1<<16)...)
	if err := c.NotifyEncoded(ctx, rpc.MethodRaftMessages, body); err != nil {
		t.Fatal(err)
	}
	// The server answers with a connection-level protocol error and closes
	// the connection, which ends the stream.
	err = st.Recv(&struct{}{})
	var re *rpc.RemoteError
	if !errors.As(err, &re) || re.Code != rpc.CodeProtocol || re.Method != 0 {
		t.Fatalf("want a connection-level error with code %d, got %v", rpc.CodeProtocol, err)
	}
	waitFor(t, 5*time.Second, "the sink cancelled", func() bool { _, _, c := nodes[0].sinks.get(1); return c == 1 })
	if st := nodes[0].tr.Stats(); st.Received != 0 || st.Rejected != 0 {
		t.Fatalf("the refused batch reached the transport: %+v", st)
	}

	// Batches up to the limit pass the check, in every integer encoding
	// of the sender id.
	for _, from := range []uint64{1, 200, 70000, 1 << 40} {
		wb := wireBatch{From: from, Msgs: make([]wireMessage, maxWireMessages)}
		if err := (*wireBatch)(nil).CheckBody(encode(t, &wb)); err != nil {
			t.Fatalf("from %d: %v", from, err)
		}
	}
	if err := (*wireBatch)(nil).CheckBody(encode(t, &wireBatch{From: 1})); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
	// One more than the limit does not.
	wb := wireBatch{From: 1, Msgs: make([]wireMessage, maxWireMessages+1)}
	if err := (*wireBatch)(nil).CheckBody(encode(t, &wb)); err == nil {
		t.Fatal("a batch over the limit passed the check")
	}
}

func TestEntryBlockRejectsMalformedInput(t *testing.T) {
	ents := entries(5, 8, 30)
	block := appendEntryBlock(nil, ents)
	got, err := parseEntryBlock(block, 5)
	if err != nil || len(got) != 3 || string(got[2].Data) != string(ents[2].Data) || cap(got[0].Data) != 30 {
		t.Fatalf("round trip: %v %+v", err, got)
	}
	for _, bad := range [][]byte{block[:10], block[:len(block)-1], append(bytes.Clone(block), 1)} {
		if _, err := parseEntryBlock(bad, 5); err == nil {
			t.Errorf("malformed block of %d bytes accepted", len(bad))
		}
	}
	if _, err := parseEntryBlock(block, 6); err == nil {
		t.Error("entries at the wrong index accepted (checksums cover the index)")
	}
}

// TestClosedIncomingConnectionIsReportedAsUnreachable: when the sender's
// connections close (its process died), the receiver's node is told, so
// a follower can replace a dead leader quickly.
func TestClosedIncomingConnectionIsReportedAsUnreachable(t *testing.T) {
	nodes := newTestNodes(t, 2, nil)
	a, b := nodes[0], nodes[1]
	a.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2, Term: 3}})
	waitFor(t, 10*time.Second, "the heartbeat", func() bool { return len(b.inbox.got()) == 1 })
	a.tr.Close()
	waitFor(t, 10*time.Second, "the report", func() bool { return len(b.inbox.got()) >= 2 })
	for _, m := range b.inbox.got()[1:] {
		if m.Type != consensus.MsgUnreachable || m.From != 1 || m.To != 2 {
			t.Fatalf("after the sender closed, got %+v; want MsgUnreachable from 1 to 2", m)
		}
	}
}

// TestUnreachableIsNeverAcceptedFromTheWire: the report is local; a peer
// sending one is refused like any unknown type.
func TestUnreachableIsNeverAcceptedFromTheWire(t *testing.T) {
	w := wireMessage{Type: uint8(consensus.MsgUnreachable), From: 1, To: 2, Term: 1}
	if _, err := w.toMessage(); err == nil {
		t.Fatal("a MsgUnreachable from the network was accepted")
	}
}

// TestTransportLearnsTheAddressOfAnUnknownSender: a node whose address
// book (configuration) does not list the sender yet can still answer it,
// using the address the sender advertises with its batches.
func TestTransportLearnsTheAddressOfAnUnknownSender(t *testing.T) {
	nodes := newTestNodes(t, 2, func(c *PeerTransportConfig) {
		if c.ID == 2 {
			c.Peers = nil // node 2 does not know node 1
		}
	})
	a, b := nodes[0], nodes[1]
	a.tr.cfg.Addr = a.addr
	b.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeatResp, From: 2, To: 1, Term: 1}})
	if b.tr.Stats().Dropped != 1 {
		t.Fatalf("a message to an unknown peer was not dropped: %+v", b.tr.Stats())
	}
	a.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2, Term: 1}})
	waitFor(t, 10*time.Second, "the heartbeat", func() bool { return len(b.inbox.got()) == 1 })
	b.tr.Send([]consensus.Message{{Type: consensus.MsgHeartbeatResp, From: 2, To: 1, Term: 1}})
	waitFor(t, 10*time.Second, "the answer", func() bool { return len(a.inbox.got()) == 1 })
}
