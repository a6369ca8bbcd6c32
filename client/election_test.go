package client

import (
	"errors"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
)

// next reads the next LeaderInfo from an Observe channel.
func nextLeader(t *testing.T, ch <-chan LeaderInfo) LeaderInfo {
	t.Helper()
	select {
	case li, ok := <-ch:
		if !ok {
			t.Fatal("Observe closed")
		}
		return li
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a leader change")
	}
	return LeaderInfo{}
}

func TestElectionCampaignObserveResign(t *testing.T) {
	fc := newFakeCluster(t, 2)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	ss := newSessions(t, c, 3)
	e1, e2, watcher := ss[0].Election("db-primary"), ss[1].Election("db-primary"), ss[2].Election("db-primary")
	if _, err := watcher.Leader(ctx); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Leader of an empty election: %v", err)
	}
	obs := watcher.Observe(ctx)
	if li := nextLeader(t, obs); !li.Vacant() {
		t.Fatalf("first observation %+v; want vacant", li)
	}
	if err := e1.Campaign(ctx, []byte("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if !e1.IsLeader() || e1.Token() == 0 || closed(e1.Lost()) {
		t.Fatalf("e1 after Campaign: leader %v token %d", e1.IsLeader(), e1.Token())
	}
	li := nextLeader(t, obs)
	firstToken := li.Token
	if string(li.Value) != "10.0.0.1" || li.Session != ss[0].ID() || li.Token != e1.Token() || li.Election != "db-primary" {
		t.Fatalf("observed %+v", li)
	}
	if got, err := watcher.Leader(ctx); err != nil || got.Token != li.Token || string(got.Value) != "10.0.0.1" {
		t.Fatalf("Leader: %+v, %v", got, err)
	}
	// The leader token fences like a lock token.
	if chk, err := c.CheckToken(ctx, "election/db-primary", li.Token); err != nil || !chk.Current {
		t.Errorf("CheckToken of the leader: %+v, %v", chk, err)
	}

	second := make(chan error, 1)
	go func() { second <- e2.Campaign(ctx, []byte("10.0.0.2")) }()
	waitFor(t, 5*time.Second, "the second candidate to queue", func() bool { return waiters(t, c, "election/db-primary") == 1 })
	if e2.IsLeader() {
		t.Fatal("two leaders")
	}

	if err := e1.Proclaim(ctx, []byte("10.0.0.1:5433")); err != nil {
		t.Fatal(err)
	}
	if li := nextLeader(t, obs); string(li.Value) != "10.0.0.1:5433" || li.Session != ss[0].ID() {
		t.Fatalf("after Proclaim: %+v", li)
	}

	lost := e1.Lost()
	if err := e1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if !closed(lost) || e1.IsLeader() {
		t.Error("e1 still leads after Resign")
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	// The vacancy between Resign and the next leader may or may not be
	// seen; the next leader is.
	li = nextLeader(t, obs)
	if li.Vacant() {
		li = nextLeader(t, obs)
	}
	if li.Session != ss[1].ID() || string(li.Value) != "10.0.0.2" || li.Token != e2.Token() || li.Token <= firstToken {
		t.Fatalf("after the handover: %+v (e2 token %d)", li, e2.Token())
	}
	if err := e1.Proclaim(ctx, []byte("x")); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Proclaim by a resigned leader: %v", err)
	}

	// The leader's session expires: its key goes with it.
	fc.expire(ss[1].ID())
	if li := nextLeader(t, obs); !li.Vacant() {
		t.Fatalf("after the leader's session expired: %+v", li)
	}
	waitFor(t, 5*time.Second, "e2 to notice", func() bool { return closed(e2.Lost()) })
	if e2.IsLeader() {
		t.Error("e2 leads with an expired session")
	}
}

// A leader key left by a campaign that gave up (a lower token, another
// session) is replaced by the holder of the lock.
func TestElectionReplacesAStaleLeaderKey(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	ss := newSessions(t, c, 2)
	if _, err := c.KV().Put(ctx, "election/e", encodeLeader(1, []byte("ghost")), WithLease(ss[1])); err != nil {
		t.Fatal(err)
	}
	e := ss[0].Election("e")
	if err := e.Campaign(ctx, []byte("real")); err != nil {
		t.Fatal(err)
	}
	li, err := e.Leader(ctx)
	if err != nil || string(li.Value) != "real" || li.Session != ss[0].ID() || li.Token != e.Token() {
		t.Fatalf("leader: %+v, %v", li, err)
	}
}

// A candidate whose session is lost while it waits does not become leader.
func TestCampaignFailsWhenTheSessionIsLost(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	ss := newSessions(t, c, 2)
	if err := ss[0].Election("e").Campaign(testCtx(t), []byte("a")); err != nil {
		t.Fatal(err)
	}
	e := ss[1].Election("e")
	errc := make(chan error, 1)
	go func() { errc <- e.Campaign(testCtx(t), []byte("b")) }()
	waitFor(t, 5*time.Second, "the candidate to queue", func() bool { return waiters(t, c, "election/e") == 1 })
	fc.expire(ss[1].ID())
	if err := <-errc; !errors.Is(err, ErrSessionLost) {
		t.Fatalf("Campaign of a lost session: %v", err)
	}
	if e.IsLeader() {
		t.Error("a lost session leads")
	}
}

func TestLeaderRecordEncoding(t *testing.T) {
	b := encodeLeader(42, []byte("v\nw"))
	tok, v, err := decodeLeader(b)
	if err != nil || tok != 42 || string(v) != "v\nw" {
		t.Fatalf("round trip: %d %q %v", tok, v, err)
	}
	for _, bad := range []string{"", "42\nv", "0000000000000000000x\nv", "00000000000000000000\n"} {
		if _, _, err := decodeLeader([]byte(bad)); !errors.Is(err, api.ErrInvalid) {
			t.Errorf("decode %q: %v", bad, err)
		}
	}
}
