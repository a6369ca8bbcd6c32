package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
)

// collect reads events from w until it has n or the deadline passes.
func collect(t *testing.T, w <-chan WatchResponse, n int, got *[]api.Event) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for len(*got) < n {
		select {
		case wr, ok := <-w:
			if !ok {
				t.Fatalf("watch closed after %d of %d events", len(*got), n)
			}
			if wr.Err != nil {
				t.Fatalf("watch failed after %d events: %v", len(*got), wr.Err)
			}
			if len(wr.Events) == 0 || wr.NextRevision <= wr.Events[len(wr.Events)-1].Revision {
				t.Fatalf("response %+v: no events, or NextRevision not past them", wr)
			}
			*got = append(*got, wr.Events...)
		case <-deadline.C:
			t.Fatalf("timed out with %d of %d events", len(*got), n)
		}
	}
}

func putN(t *testing.T, c *Client, prefix string, from, n int) []int64 {
	t.Helper()
	var revs []int64
	for i := from; i < from+n; i++ {
		resp, err := c.KV().Put(testCtx(t), fmt.Sprintf("%s%03d", prefix, i), []byte{byte(i)})
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, resp.Revision)
	}
	return revs
}

// The stream breaks twice (each time the node's connections are cut) and
// the server repeats old events on every resume; the watcher still sees
// every revision exactly once, in order.
func TestWatchResumesWithoutGapOrDuplicate(t *testing.T) {
	fc := newFakeCluster(t, 2)
	fc.replayOverlap = 2
	c, ct := newTestClient(t, fc.addrs(), nil)
	other, _ := newTestClient(t, fc.addrs(), nil) // writes on its own connections
	ctx := testCtx(t)
	want := putN(t, other, "w/", 0, 10)
	w := c.Watch(ctx, "w/", WithPrefix(), WithRevision(want[0]))
	var got []api.Event
	collect(t, w, 10, &got)
	for round := 1; round <= 2; round++ {
		ct.cut(c.Endpoint())
		want = append(want, putN(t, other, "w/", round*10, 10)...)
		collect(t, w, len(want), &got)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i, ev := range got {
		if ev.Revision != want[i] || ev.Type != api.EventPut || ev.KV.Key != fmt.Sprintf("w/%03d", i) {
			t.Fatalf("event %d: revision %d key %q; want revision %d key w/%03d", i, ev.Revision, ev.KV.Key, want[i], i)
		}
	}
	if ct.dialsTo(fc.nodes[0].addr) == 0 || ct.dialsTo(fc.nodes[1].addr) == 0 {
		t.Errorf("the watch did not move between nodes: dials %d, %d", ct.dialsTo(fc.nodes[0].addr), ct.dialsTo(fc.nodes[1].addr))
	}
	select {
	case wr := <-w:
		t.Fatalf("unexpected response %+v", wr)
	default:
	}
}

// Without WithRevision a watch starts after the revision current when it
// is opened, found by a read: a stream that breaks before its first
// message resumes from there, with nothing lost.
func TestWatchFromNowSurvivesAnEarlyBreak(t *testing.T) {
	fc := newFakeCluster(t, 2)
	c, ct := newTestClient(t, fc.addrs(), nil)
	other, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	putN(t, other, "k", 0, 3) // history before the watch
	w := c.Watch(ctx, "k001") // reads the revision through node 1
	if ct.cut(fc.nodes[0].addr) == 0 {
		t.Fatal("no connection to cut")
	}
	want := putN(t, other, "k", 1, 1)
	var got []api.Event
	collect(t, w, 1, &got)
	if got[0].Revision != want[0] || got[0].KV.Key != "k001" {
		t.Fatalf("first event %+v; want the put at revision %d", got[0], want[0])
	}
}

func TestWatchCompactedEndsWithTheOldestRevision(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	putN(t, c, "c/", 0, 10)
	fc.mu.Lock()
	fc.compacted = 6
	fc.mu.Unlock()
	w := c.Watch(testCtx(t), "c/", WithPrefix(), WithRevision(2))
	wr, ok := <-w
	if !ok || wr.Err == nil {
		t.Fatalf("watch from a compacted revision: %+v", wr)
	}
	if !errors.Is(wr.Err, api.ErrCompacted) || !strings.Contains(wr.Err.Error(), "the oldest available is 7") || wr.NextRevision != 2 {
		t.Errorf("compacted response: %v (next %d)", wr.Err, wr.NextRevision)
	}
	if _, ok := <-w; ok {
		t.Error("the watch goes on after a compacted error")
	}
}

func TestWatchEndsWithItsContextAndRefusesBadOptions(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	w := c.Watch(ctx, "k")
	cancel()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for open := true; open; {
		select {
		case _, open = <-w:
		case <-deadline.C:
			t.Fatal("watch still open after its context ended")
		}
	}
	w = c.Watch(context.Background(), "k", WithLimit(1))
	if wr := <-w; !errors.Is(wr.Err, api.ErrInvalid) {
		t.Errorf("watch with WithLimit: %+v", wr)
	}
	c.Close()
	w = c.Watch(context.Background(), "k")
	if wr := <-w; !errors.Is(wr.Err, ErrClosed) {
		t.Errorf("watch after Close: %+v", wr)
	}
}
