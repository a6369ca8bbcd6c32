package client

import (
	"errors"
	"testing"

	"github.com/lockd/lockd/api"
)

func TestDestroySessionEndsAnotherClientsSession(t *testing.T) {
	fc := newFakeCluster(t, 2)
	owner, _ := newTestClient(t, fc.addrs(), nil)
	admin, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	s := newSessions(t, owner, 1)[0]
	m := s.Mutex("db")
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := admin.DestroySession(ctx, s.ID()); err != nil {
		t.Fatal(err)
	}
	// The owner learns it at its next keepalive, and its lock is lost.
	select {
	case <-m.Lost():
	case <-ctx.Done():
		t.Fatal("the lock was not lost after its session was destroyed")
	}
	if !errors.Is(s.Err(), ErrSessionLost) || !errors.Is(s.Err(), api.ErrSessionNotFound) {
		t.Errorf("session error %v; want lost, not found", s.Err())
	}
	if err := admin.DestroySession(ctx, s.ID()); !errors.Is(err, api.ErrSessionNotFound) {
		t.Errorf("destroying it again: %v; want session not found", err)
	}
	if err := admin.DestroySession(ctx, 0); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("destroying session 0: %v; want invalid", err)
	}
}

func TestObserveElectionWithoutSession(t *testing.T) {
	fc := newFakeCluster(t, 1)
	c, _ := newTestClient(t, fc.addrs(), nil)
	observer, _ := newTestClient(t, fc.addrs(), nil)
	ctx := testCtx(t)
	obs := observer.ObserveElection(ctx, "primary")
	if li := nextLeader(t, obs); !li.Vacant() || li.Election != "primary" {
		t.Fatalf("first observation %+v; want vacant election primary", li)
	}
	s := newSessions(t, c, 1)[0]
	e := s.Election("primary")
	if err := e.Campaign(ctx, []byte("host-a")); err != nil {
		t.Fatal(err)
	}
	li := nextLeader(t, obs)
	if li.Session != s.ID() || li.Token != e.Token() || string(li.Value) != "host-a" {
		t.Fatalf("observed %+v; want session %s token %d value host-a", li, s.ID(), e.Token())
	}
	if err := e.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if li := nextLeader(t, obs); !li.Vacant() {
		t.Fatalf("after Resign: %+v; want vacant", li)
	}
}

func TestLeaderContactAllAsksEveryEndpoint(t *testing.T) {
	fc := newFakeCluster(t, 2)
	dead := deadAddr(t)
	c, _ := newTestClient(t, append(fc.addrs(), dead), nil)
	got := c.LeaderContactAll(testCtx(t))
	if len(got) != 3 {
		t.Fatalf("%d answers for 3 endpoints", len(got))
	}
	for i, lc := range got[:2] {
		if lc.Err != nil || lc.Endpoint != fc.nodes[i].addr || lc.Node != fc.nodes[i].name {
			t.Errorf("endpoint %d: %+v; want an answer from %s", i, lc, fc.nodes[i].name)
		}
	}
	if got[2].Err == nil || got[2].Endpoint != dead {
		t.Errorf("dead endpoint: %+v; want an error", got[2])
	}
}
