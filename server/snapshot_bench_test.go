package server

import (
	"bytes"
	"context"
	"math/rand"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/rpc/peer"
	"github.com/lockd/lockd/store"
)

// BenchmarkInstallSnapshotRPC streams a 100 MiB snapshot from one
// PeerTransport to another over loopback, into a FileSnapshotStore (temp
// file, CRC, fsync, rename) on the receiving side: the InstallSnapshot
// path between two lockd nodes minus the fsm restore. Reports MB/s.
func BenchmarkInstallSnapshotRPC(b *testing.B) {
	const size = 100 << 20
	data := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(data)
	snaps, err := store.NewFileSnapshotStore(filepath.Join(b.TempDir(), "snapshots"), store.SnapshotOptions{Retain: 1})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	recv, err := peer.NewPeerTransport(peer.PeerTransportConfig{ID: 2, ClusterID: "bench",
		SnapshotSink: func(_ context.Context, _ consensus.NodeID, meta consensus.SnapshotMeta) (consensus.SnapshotSink, error) {
			return snaps.Create(meta)
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer recv.Close()
	srv, err := rpc.NewServer(rpc.ServerConfig{ClusterID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if err := recv.Register(srv); err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Close()
	send, err := peer.NewPeerTransport(peer.PeerTransportConfig{ID: 1, ClusterID: "bench",
		Peers: map[consensus.NodeID]string{2: l.Addr().String()}})
	if err != nil {
		b.Fatal(err)
	}
	defer send.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		meta := consensus.SnapshotMeta{Index: consensus.Index(i + 1), Term: 1, Voters: []consensus.NodeID{1, 2}, Size: size}
		if err := send.SendSnapshot(ctx, 2, meta, bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
