package peer

import (
	"runtime"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
)

// Close of transports whose lanes are busy with full queues (and of their
// servers) returns, and no goroutine is left behind. rpc's
// TestCloseWhileBusy does the same for servers, clients and streams.
func TestTransportCloseWhileBusy(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		nodes := newTestNodes(t, 2, func(c *PeerTransportConfig) { c.QueueSize = 16 })
		for i := range 200 {
			nodes[0].tr.Send([]consensus.Message{{Type: consensus.MsgApp, From: 1, To: 2, PrevIndex: consensus.Index(i), Entries: entries(consensus.Index(i)+1, consensus.Index(i)+2, 1000)}})
		}

		done := make(chan struct{})
		go func() {
			nodes[0].tr.Close()
			nodes[1].tr.Close()
			nodes[0].srv.Close()
			nodes[1].srv.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return while busy")
		}
	}()
	waitFor(t, 10*time.Second, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before+2 })
}
