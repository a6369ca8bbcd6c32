package consensus

import "testing"

// A follower forwards a read to the leader at once while its own write is
// in flight: the request vouches only for its (durable) term, so it must
// not wait behind the fsync, and the leader's answer completes the read.
func TestAsyncFollowerForwardsReadsDuringItsWrite(t *testing.T) {
	sc := followerWriting(t, 3) // fails unless node 2 has a write in flight
	var got []ReadState
	sc.onRead = func(rs ReadState) { got = append(got, rs) }
	sc.sent = nil
	sc.readIndex(2, 77)
	sc.deliverMessages()
	if len(sc.sentBy(2, MsgReadIndex)) != 1 {
		t.Fatalf("node 2 held its read request behind its write in flight; sent %d", len(sc.sentBy(2, MsgReadIndex)))
	}
	sc.r(1).Tick()
	sc.ready(1)
	sc.deliverMessages()
	sc.ready(1)
	sc.deliverMessages()
	sc.ready(2)
	if len(got) != 1 || got[0].ID != 77 || got[0].Dropped {
		t.Fatalf("node 2's read with its write in flight: got %+v, want read 77 answered", got)
	}
}
