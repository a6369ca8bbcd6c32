package server

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// fakeWaitState is a restored state for reconcile.
type fakeWaitState struct {
	locks    map[string]api.LockInfo
	sessions map[session.ID]bool
}

func (f fakeWaitState) Lock(name string) api.LockInfo { return f.locks[name] }
func (f fakeWaitState) Session(id session.ID) (api.SessionInfo, bool) {
	return api.SessionInfo{ID: id}, f.sessions[id]
}

// TestBlockedAcquiresLearnTheirFateFromAnInstalledSnapshot: a follower
// that catches up by snapshot never applies the grants, withdrawals and
// session ends inside it one by one; the calls blocked on those waits
// must still be answered — granted, ended, withdrawn — and a wait still
// queued in the snapshot keeps waiting.
func TestBlockedAcquiresLearnTheirFateFromAnInstalledSnapshot(t *testing.T) {
	s1, s2, s3, s4 := session.ID(1), session.ID(2), session.ID(3), session.ID(4)
	tbl := newWaitTable()
	granted := tbl.add(10, s1, "a")
	queued := tbl.add(11, s2, "a")
	ended := tbl.add(12, s3, "b")
	withdrawn := tbl.add(13, s4, "b")
	st := fakeWaitState{
		locks: map[string]api.LockInfo{
			"a": {Name: "a", Holders: []api.Grant{{Lock: "a", Session: s1, Token: 7, WaitID: 10}},
				Waiters: []api.Waiter{{Lock: "a", Session: s2, WaitID: 11}}},
			"b": {Name: "b"},
		},
		sessions: map[session.ID]bool{s1: true, s2: true, s4: true},
	}
	tbl.reconcile(st)

	if o := <-granted.ch; o.err != nil || o.grant == nil || o.grant.Token != 7 {
		t.Fatalf("granted wait: %+v", o)
	}
	if o := <-ended.ch; !errors.Is(o.err, api.ErrSessionNotFound) {
		t.Fatalf("wait of an ended session: %+v", o)
	}
	if o := <-withdrawn.ch; !errors.Is(o.err, api.ErrUnavailable) {
		t.Fatalf("withdrawn wait: %+v", o)
	}
	select {
	case o := <-queued.ch:
		t.Fatalf("a wait still queued in the snapshot was settled: %+v", o)
	default:
	}
	if len(tbl.byID) != 1 || len(tbl.byID[11]) != 1 {
		t.Fatalf("table after reconcile: %v", tbl.byID)
	}
}

// TestKeepaliveOnALeaderCutOffIsNotAcknowledged: a leader that lost its
// majority keeps its role until CheckQuorum; a keepalive it acknowledged
// meanwhile is unknown to the next leader, which could expire the session
// before the client (told all is well) sends its next one. The nemesis
// found a kept session expired this way. The keepalive is answered only
// after a majority confirms the leader.
func TestKeepaliveOnALeaderCutOffIsNotAcknowledged(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	a := c.newSession(lead, 3*time.Second, 0)
	for id := range c.servers {
		if id != lead {
			c.stop(id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var resp api.SessionKeepaliveResponse
	err := c.clients[lead].Call(ctx, rpc.Method(api.MethodSessionKeepalive), &api.SessionKeepaliveRequest{ID: a}, &resp)
	if err == nil {
		t.Fatal("a leader without a majority acknowledged a keepalive")
	}
}
