package server

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
)

// TestMembershipAddPromoteRemoveAndTransfer drives the operator calls
// through followers (which hand them to the leader): a fourth node joins
// as a learner and is promoted once caught up, takes writes, the leader
// is removed (it hands over first), leadership moves on request, and
// every guard rail answers with an error that says what to do.
func TestMembershipAddPromoteRemoveAndTransfer(t *testing.T) {
	var joinMembers []Member
	c := newTestClusterWith(t, 3, func(id consensus.NodeID, cfg *Config) {
		if id == 4 {
			cfg.Members = joinMembers
		}
	})
	lead := c.leader()
	f := c.follower()

	// Guard rails first.
	_, err := call[api.MemberAddRequest, api.MemberChangeResponse](t, c.clients[f], api.MethodMemberAdd,
		&api.MemberAddRequest{Name: "nowhere", PeerAddr: "127.0.0.1:1"})
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("adding an unreachable member: %v", err)
	}
	_, err = call[api.MemberPromoteRequest, api.MemberChangeResponse](t, c.clients[f], api.MethodMemberPromote,
		&api.MemberPromoteRequest{Name: "n1"})
	if !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("promoting a voter: %v", err)
	}
	_, err = call[api.MemberRemoveRequest, api.MemberChangeResponse](t, c.clients[f], api.MethodMemberRemove,
		&api.MemberRemoveRequest{Name: "nobody"})
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "no member is called") {
		t.Fatalf("removing an unknown member: %v", err)
	}

	// A fourth node joins.
	l := listen(t)
	resp := mustCall[api.MemberAddRequest, api.MemberChangeResponse](t, c.clients[f], api.MethodMemberAdd,
		&api.MemberAddRequest{Name: "n4", PeerAddr: l.Addr().String()})
	if resp.Member.ID != 4 || !resp.Member.Learner || len(resp.Members) != 4 {
		t.Fatalf("add answered %+v", resp)
	}
	_, err = call[api.MemberAddRequest, api.MemberChangeResponse](t, c.clients[f], api.MethodMemberAdd,
		&api.MemberAddRequest{Name: "n4", PeerAddr: l.Addr().String()})
	if !errors.Is(err, api.ErrInvalid) {
		t.Fatalf("adding a name twice: %v", err)
	}
	for _, m := range resp.Members {
		joinMembers = append(joinMembers, Member{ID: consensus.NodeID(m.ID), Name: m.Name, PeerAddr: m.PeerAddr, Learner: m.Learner})
	}
	c.members = append(c.members, Member{ID: 4, Name: "n4", PeerAddr: l.Addr().String()})
	c.peerL[4] = l
	c.stores[4] = inmem.NewStore()
	c.start(4)
	waitFor(t, 10*time.Second, "n4 promoted and caught up", func() bool {
		st := c.servers[lead].Node().Status()
		m, _ := st.Config.Member(4)
		return st.Role == consensus.Leader && !m.Learner && st.Progress[4].Match == st.LastIndex &&
			c.servers[4].Node().Status().Applied >= st.Commit
	})
	put := mustCall[api.KVPutRequest, api.KVPutResponse](t, c.clients[4], api.MethodKVPut, &api.KVPutRequest{Key: "k", Value: []byte("v")})
	got := mustCall[api.KVGetRequest, api.KVGetResponse](t, c.clients[4], api.MethodKVGet, &api.KVGetRequest{Key: "k"})
	if got.KV == nil || string(got.KV.Value) != "v" || got.KV.ModRevision != put.Revision {
		t.Fatalf("read on the new member: %+v", got.KV)
	}
	st := mustCall[api.ClusterStatusRequest, api.ClusterStatusResponse](t, c.clients[4], api.MethodClusterStatus, &api.ClusterStatusRequest{})
	if len(st.Members) != 4 || st.Node.ID != 4 {
		t.Fatalf("status on the new member: %+v", st)
	}

	// The leader is removed: it hands over, then the new leader removes it.
	leadName := c.members[lead-1].Name
	other := consensus.NodeID(4)
	rm := mustCall[api.MemberRemoveRequest, api.MemberChangeResponse](t, c.clients[other], api.MethodMemberRemove,
		&api.MemberRemoveRequest{Name: leadName})
	if len(rm.Members) != 3 {
		t.Fatalf("remove answered %+v", rm)
	}
	waitFor(t, 10*time.Second, "a new leader among the rest", func() bool {
		l, _ := c.servers[other].Node().Leader()
		return l != consensus.None && l != lead
	})
	// The removed node never receives the entry that removed it (the
	// leader stops replicating to it at once); it learns from the others
	// once it has no leader, and says so.
	waitFor(t, 10*time.Second, "the removed node to learn it was removed", func() bool {
		select {
		case <-c.servers[lead].Removed():
			return true
		default:
			return false
		}
	})
	for id, srv := range c.servers {
		select {
		case <-srv.Removed():
			if id != lead {
				t.Fatalf("member %d believes it was removed", id)
			}
		default:
		}
	}
	c.stop(lead)

	// Transfer to a named voter.
	var to consensus.NodeID
	for id := range c.servers {
		if l, _ := c.servers[id].Node().Leader(); l != id {
			to = id
			break
		}
	}
	tr := mustCall[api.LeaderTransferRequest, api.LeaderTransferResponse](t, c.clients[other], api.MethodLeaderTransfer,
		&api.LeaderTransferRequest{To: c.members[to-1].Name})
	if consensus.NodeID(tr.Leader.ID) != to {
		t.Fatalf("transfer to %d answered leader %+v", to, tr.Leader)
	}
	mustCall[api.KVPutRequest, api.KVPutResponse](t, c.clients[other], api.MethodKVPut, &api.KVPutRequest{Key: "k", Value: []byte("after")})
}
