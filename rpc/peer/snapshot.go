package peer

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/rpc"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SendSnapshot streams a snapshot to node to in chunks over its own
// connection (it never delays heartbeats or appends) and returns once the
// receiver has written and committed it, or why not. Flow control keeps at
// most the receiver's window of chunks in flight.
func (t *PeerTransport) SendSnapshot(ctx context.Context, to consensus.NodeID, meta consensus.SnapshotMeta, r io.Reader) error {
	client, err := t.snapshotClient(to)
	if err != nil {
		return err
	}
	hdr := &snapshotHeader{From: uint64(t.cfg.ID), To: uint64(to), Index: uint64(meta.Index), Term: uint64(meta.Term), Size: meta.Size}
	for _, v := range meta.Voters {
		hdr.Voters = append(hdr.Voters, uint64(v))
	}
	st, err := client.Stream(ctx, rpc.MethodRaftSnapshot, hdr)
	if err != nil {
		return fmt.Errorf("snapshot %d (term %d) to node %d: %w", meta.Index, meta.Term, to, err)
	}
	defer st.Close()
	fail := func(err error) error {
		return fmt.Errorf("snapshot %d (term %d) to node %d: %w", meta.Index, meta.Term, to, err)
	}
	buf := make([]byte, t.cfg.SnapshotChunkSize)
	var size int64
	crc := uint32(0)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			crc = crc32.Update(crc, castagnoli, buf[:n])
			size += int64(n)
			if err := st.Send(&snapshotChunk{Data: buf[:n]}); err != nil {
				return fail(t.streamErr(st, err))
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fail(fmt.Errorf("reading the snapshot: %w", rerr))
		}
	}
	if err := st.Send(&snapshotChunk{Done: true, Size: size, CRC: crc}); err != nil {
		return fail(t.streamErr(st, err))
	}
	if err := st.CloseSend(); err != nil {
		return fail(t.streamErr(st, err))
	}
	if err := st.Recv(&struct{}{}); !errors.Is(err, io.EOF) {
		if err == nil {
			err = fmt.Errorf("%w: receiver sent data on a snapshot stream", rpc.ErrProtocol)
		}
		return fail(err)
	}
	t.logger.Info("snapshot sent", "peer", uint64(to), "index", uint64(meta.Index), "term", uint64(meta.Term), "bytes", size)
	return nil
}

// streamErr prefers the receiver's reason when a send failed because the
// stream ended.
func (t *PeerTransport) streamErr(st *rpc.ClientStream, err error) error {
	if errors.Is(err, rpc.ErrStreamClosed) {
		if rerr := st.Recv(&struct{}{}); rerr != nil && !errors.Is(rerr, io.EOF) {
			return rerr
		}
	}
	return err
}

// snapshotClient returns the connection used for snapshots to id.
func (t *PeerTransport) snapshotClient(id consensus.NodeID) (*rpc.Client, error) {
	p := t.peerFor(id)
	if p == nil {
		return nil, fmt.Errorf("snapshot to node %d: %w: no address for it", id, rpc.ErrUnavailable)
	}
	p.snapOnce.Do(func() {
		t.mu.Lock()
		seed := t.cfg.Rand.Int63()
		t.mu.Unlock()
		cc := t.cfg.Client
		cc.Rand = rand.New(rand.NewSource(seed))
		cc.Logger = t.cfg.Client.Logger.With("peer", uint64(id), "lane", "snapshot")
		p.snapClient, p.snapErr = rpc.NewClient(p.addr, cc)
	})
	return p.snapClient, p.snapErr
}

// onSnapshot receives a snapshot stream into a sink from the factory. The
// sink is committed (Close) only when every byte arrived with the size
// and checksum the sender announced; otherwise it is cancelled.
func (t *PeerTransport) onSnapshot(ctx context.Context, hdr *snapshotHeader, st *rpc.ServerStream) (err error) {
	meta := consensus.SnapshotMeta{Index: consensus.Index(hdr.Index), Term: consensus.Term(hdr.Term), Size: hdr.Size}
	for _, v := range hdr.Voters {
		meta.Voters = append(meta.Voters, consensus.NodeID(v))
	}
	from := consensus.NodeID(hdr.From)
	if consensus.NodeID(hdr.To) != t.cfg.ID {
		return fmt.Errorf("%w: snapshot for node %d arrived at node %d", rpc.ErrBadRequest, hdr.To, t.cfg.ID)
	}
	if t.cfg.SnapshotSink == nil {
		return fmt.Errorf("%w: node %d does not accept snapshots", rpc.ErrBadRequest, t.cfg.ID)
	}
	sink, err := t.cfg.SnapshotSink(ctx, from, meta)
	if err != nil {
		return fmt.Errorf("opening a sink for snapshot %d (term %d) from node %d: %w", meta.Index, meta.Term, from, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = sink.Cancel()
			t.logger.Warn("snapshot from peer abandoned", "peer", uint64(from), "index", hdr.Index, "error", err)
		}
	}()
	var size int64
	crc := uint32(0)
	for {
		var ch snapshotChunk
		if err := st.Recv(&ch); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: snapshot stream ended without its trailer after %d bytes", rpc.ErrBadRequest, size)
			}
			return err
		}
		if ch.Done {
			switch {
			case ch.Size != size || ch.CRC != crc:
				return fmt.Errorf("%w: snapshot trailer says %d bytes, crc %08x; received %d bytes, crc %08x", rpc.ErrBadRequest, ch.Size, ch.CRC, size, crc)
			case meta.Size > 0 && size != meta.Size:
				return fmt.Errorf("%w: snapshot of %d bytes announced, %d received", rpc.ErrBadRequest, meta.Size, size)
			}
			if err := st.Recv(&ch); !errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: data after the snapshot trailer", rpc.ErrBadRequest)
			}
			if err := sink.Close(); err != nil {
				return fmt.Errorf("committing snapshot %d: %w", meta.Index, err)
			}
			committed = true
			t.logger.Info("snapshot received", "peer", uint64(from), "index", hdr.Index, "term", hdr.Term, "bytes", size)
			return nil
		}
		if meta.Size > 0 && size+int64(len(ch.Data)) > meta.Size {
			return fmt.Errorf("%w: snapshot larger than the %d bytes announced", rpc.ErrBadRequest, meta.Size)
		}
		if _, err := sink.Write(ch.Data); err != nil {
			return fmt.Errorf("writing snapshot %d: %w", meta.Index, err)
		}
		size += int64(len(ch.Data))
		crc = crc32.Update(crc, castagnoli, ch.Data)
	}
}
