package rpc

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// A server Close hung for 10 minutes (server tests under -race): Close
// waits for each connection's reader, closeWithError set a read deadline
// for the linger, and the reader, finishing a frame body, cleared it
// (frameReader.next), so the reader stayed blocked on a peer that kept
// its end open. The connection must close by itself once the linger is
// over, whatever happened to the deadline.
func TestConnClosesAfterTheLingerEvenIfTheReaderClearedTheDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go func() { _, _ = io.Copy(io.Discard, b) }() // the peer reads all, never closes
	tab, err := NewErrorTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{}
	c.init(a, newFrameReader(a, 1<<20), newCodecs(), tab, hclog.NewNullLogger(), 1<<20, time.Second)
	c.closeWithError(ErrShuttingDown)
	_ = a.SetReadDeadline(time.Time{}) // what the reader does after a frame body
	select {
	case <-c.done:
	case <-time.After(20 * lingerTimeout):
		t.Fatalf("connection still open %v after closeWithError: a reader blocked on it would hang Server.Close", 20*lingerTimeout)
	}
	if _, err := a.Read(make([]byte, 1)); err == nil {
		t.Fatal("read on the closed connection succeeded")
	}
}
