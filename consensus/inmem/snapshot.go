package inmem

import (
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"

	"github.com/lockd/lockd/consensus"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SnapshotStore keeps snapshots in memory (consensus.SnapshotStore). A
// snapshot is visible only once its sink is closed; the newest Retain
// (default 2) are kept. Each snapshot's CRC-32C is recorded at Close and
// checked again when it is opened.
type SnapshotStore struct {
	Retain int

	mu    sync.Mutex
	snaps []memSnap // oldest first
}

type memSnap struct {
	meta consensus.SnapshotMeta
	data []byte
	crc  uint32
}

// NewSnapshotStore returns an empty store.
func NewSnapshotStore() *SnapshotStore { return &SnapshotStore{Retain: 2} }

// Create implements consensus.SnapshotStore.
func (s *SnapshotStore) Create(meta consensus.SnapshotMeta) (consensus.SnapshotSink, error) {
	if meta.Index == 0 || meta.Term == 0 {
		return nil, fmt.Errorf("inmem: snapshot index %d and term %d must both be positive", meta.Index, meta.Term)
	}
	meta.Voters = slices.Clone(meta.Voters)
	return &memSink{s: s, meta: meta}, nil
}

// Latest implements consensus.SnapshotStore.
func (s *SnapshotStore) Latest() (consensus.SnapshotMeta, io.ReadCloser, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.snaps) == 0 {
		return consensus.SnapshotMeta{}, nil, false, nil
	}
	sn := s.snaps[len(s.snaps)-1]
	return sn.meta, io.NopCloser(bytes.NewReader(sn.data)), true, nil
}

// Open implements consensus.SnapshotStore.
func (s *SnapshotStore) Open(index consensus.Index, term consensus.Term) (consensus.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sn := range s.snaps {
		if sn.meta.Index == index && sn.meta.Term == term {
			if crc32.Checksum(sn.data, castagnoli) != sn.crc {
				return consensus.SnapshotMeta{}, nil, fmt.Errorf("inmem: snapshot %d (term %d) is corrupt", index, term)
			}
			return sn.meta, io.NopCloser(bytes.NewReader(sn.data)), nil
		}
	}
	return consensus.SnapshotMeta{}, nil, fmt.Errorf("inmem: no snapshot %d (term %d)", index, term)
}

// Count returns how many snapshots are kept.
func (s *SnapshotStore) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.snaps)
}

type memSink struct {
	s    *SnapshotStore
	meta consensus.SnapshotMeta
	buf  bytes.Buffer
	done bool
}

func (k *memSink) Write(p []byte) (int, error) {
	if k.done {
		return 0, fmt.Errorf("inmem: write to a closed snapshot sink")
	}
	return k.buf.Write(p)
}

// Close commits the snapshot, ordered by index then term.
func (k *memSink) Close() error {
	if k.done {
		return fmt.Errorf("inmem: snapshot sink closed twice")
	}
	k.done = true
	k.meta.Size = int64(k.buf.Len())
	sn := memSnap{meta: k.meta, data: k.buf.Bytes(), crc: crc32.Checksum(k.buf.Bytes(), castagnoli)}
	s := k.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps = slices.DeleteFunc(s.snaps, func(o memSnap) bool { return o.meta.Index == sn.meta.Index && o.meta.Term == sn.meta.Term })
	i, _ := slices.BinarySearchFunc(s.snaps, sn, func(a, b memSnap) int {
		if a.meta.Index != b.meta.Index {
			return int(a.meta.Index) - int(b.meta.Index)
		}
		return int(a.meta.Term) - int(b.meta.Term)
	})
	s.snaps = slices.Insert(s.snaps, i, sn)
	if r := max(1, s.Retain); len(s.snaps) > r {
		s.snaps = slices.Clone(s.snaps[len(s.snaps)-r:])
	}
	return nil
}

func (k *memSink) Cancel() error {
	k.done = true
	return nil
}

// SnapshotReceiver is what a registered receiver implements to accept
// snapshots (*consensus.Node does).
type SnapshotReceiver interface {
	ReceiveSnapshot(ctx context.Context, from consensus.NodeID, meta consensus.SnapshotMeta) (consensus.SnapshotSink, error)
}

// SendSnapshot implements consensus.SnapshotSender: the snapshot is copied
// into the receiver's sink if the link is up, with a CRC-32C compared at
// the end (as the peer transport does); any failure cancels the sink.
func (e *endpoint) SendSnapshot(ctx context.Context, to consensus.NodeID, meta consensus.SnapshotMeta, r io.Reader) error {
	nw := e.nw
	nw.mu.Lock()
	p, ok := nw.peers[to]
	var recv Receiver
	if ok {
		recv = p.recv
	}
	linked := ok && !nw.closed && nw.linkedLocked(e.id, to)
	nw.mu.Unlock()
	sr, isRecv := recv.(SnapshotReceiver)
	if !linked || !isRecv {
		return fmt.Errorf("inmem: snapshot to node %d: unreachable", to)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("inmem: reading snapshot %d: %w", meta.Index, err)
	}
	sink, err := sr.ReceiveSnapshot(ctx, e.id, meta)
	if err != nil {
		return fmt.Errorf("inmem: snapshot to node %d: %w", to, err)
	}
	want := crc32.Checksum(data, castagnoli)
	var got uint32
	for off := 0; off < len(data); off += 64 << 10 {
		chunk := data[off:min(len(data), off+64<<10)]
		nw.mu.Lock()
		linked = !nw.closed && nw.linkedLocked(e.id, to)
		nw.mu.Unlock()
		if !linked || ctx.Err() != nil {
			_ = sink.Cancel()
			return fmt.Errorf("inmem: snapshot to node %d interrupted", to)
		}
		if _, err := sink.Write(chunk); err != nil {
			_ = sink.Cancel()
			return err
		}
		got = crc32.Update(got, castagnoli, chunk)
	}
	if got != want {
		_ = sink.Cancel()
		return fmt.Errorf("inmem: snapshot checksum mismatch")
	}
	return sink.Close()
}
