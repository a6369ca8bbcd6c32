package inmem_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
)

func entries(term consensus.Term, lo, hi consensus.Index) []consensus.Entry {
	var out []consensus.Entry
	for i := lo; i <= hi; i++ {
		e := consensus.Entry{Index: i, Term: term, Data: []byte{byte(i), byte(term)}}
		e.Seal()
		out = append(out, e)
	}
	return out
}

func mustIndexes(t *testing.T, s *inmem.Store, first, last consensus.Index) {
	t.Helper()
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if f != first || l != last {
		t.Fatalf("store holds [%d, %d], want [%d, %d]", f, l, first, last)
	}
}

func TestStoreTruncatesAndRefusesGaps(t *testing.T) {
	s := inmem.NewStore()
	mustIndexes(t, s, 0, 0)
	if err := s.StoreEntries(entries(1, 1, 5)); err != nil {
		t.Fatal(err)
	}
	mustIndexes(t, s, 1, 5)
	// A follower's truncation on conflict: entries from 3 on are replaced.
	if err := s.StoreEntries(entries(2, 3, 4)); err != nil {
		t.Fatal(err)
	}
	mustIndexes(t, s, 1, 4)
	got, err := s.Entries(1, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		want := consensus.Term(1)
		if e.Index >= 3 {
			want = 2
		}
		if e.Index != consensus.Index(i+1) || e.Term != want {
			t.Fatalf("entry %d = (index %d, term %d), want term %d", i+1, e.Index, e.Term, want)
		}
	}
	if err := s.StoreEntries(entries(2, 6, 6)); err == nil {
		t.Fatal("a batch leaving a gap after index 4 was accepted")
	}
	batch := append(entries(2, 5, 5), entries(2, 7, 7)...)
	if err := s.Save(&consensus.HardState{Term: 9}, batch); err == nil {
		t.Fatal("a batch with a hole was accepted")
	}
	if hs, _ := s.HardState(); hs.Term != 0 {
		t.Fatalf("a refused Save changed the hard state to %+v", hs)
	}
	mustIndexes(t, s, 1, 4)
	if _, err := s.Entries(0, 2); err == nil {
		t.Fatal("Entries(0, 2) reached before the log")
	}
	if _, err := s.Entries(2, 6); err == nil {
		t.Fatal("Entries(2, 6) reached past the log")
	}
}

func TestStoreDeletePrefix(t *testing.T) {
	s := inmem.NewStore()
	if err := s.StoreEntries(entries(1, 1, 5)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePrefix(3); err != nil {
		t.Fatal(err)
	}
	mustIndexes(t, s, 4, 5)
	if err := s.StoreEntries(entries(1, 3, 3)); err == nil {
		t.Fatal("an entry inside the deleted prefix was accepted")
	}
	if err := s.DeletePrefix(10); err != nil {
		t.Fatal(err)
	}
	mustIndexes(t, s, 0, 0)
	if err := s.StoreEntries(entries(1, 11, 12)); err != nil {
		t.Fatalf("the log resuming after a compacted prefix: %v", err)
	}
	mustIndexes(t, s, 11, 12)
}

func TestStoreCopiesAndVerifies(t *testing.T) {
	s := inmem.NewStore()
	in := entries(1, 1, 2)
	if err := s.StoreEntries(in); err != nil {
		t.Fatal(err)
	}
	in[0].Data[0] = 99 // the caller reuses its buffer
	out, err := s.Entries(1, 3)
	if err != nil {
		t.Fatalf("the store kept the caller's buffer: %v", err)
	}
	out[1].Data[0] = 99
	if _, err := s.Entries(1, 3); err != nil {
		t.Fatalf("the store handed out its own buffer: %v", err)
	}

	bad := entries(1, 3, 3)
	bad[0].Data = []byte("rot")
	if err := s.StoreEntries(bad); err != nil {
		t.Fatal(err)
	}
	var corrupt *consensus.EntryCorruptError
	if _, err := s.Entries(1, 4); !errors.As(err, &corrupt) || corrupt.Index != 3 {
		t.Fatalf("reading a corrupt entry: %v, want *EntryCorruptError for entry 3", err)
	}
}

// recorder is a Receiver that keeps what it gets.
type recorder struct {
	mu   sync.Mutex
	msgs []consensus.Message
}

func (r *recorder) Step(_ context.Context, m consensus.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return nil
}

func (r *recorder) got() []consensus.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-poll.C
	}
}

func TestNetworkDeliversInOrderAndCopies(t *testing.T) {
	nw := inmem.NewNetwork()
	defer nw.Close()
	var r2 recorder
	nw.Register(2, &r2)
	tr := nw.Transport(1)
	ents := entries(1, 1, 1)
	var msgs []consensus.Message
	for i := range 10 {
		msgs = append(msgs, consensus.Message{Type: consensus.MsgApp, From: 1, To: 2, Term: 1, Commit: consensus.Index(i), Entries: ents})
	}
	tr.Send(msgs)
	ents[0] = consensus.Entry{Index: 42} // the sender's log overwrites its slice
	waitFor(t, func() bool { return len(r2.got()) == 10 }, "10 messages")
	for i, m := range r2.got() {
		if m.Commit != consensus.Index(i) {
			t.Fatalf("message %d carries commit %d: out of order", i, m.Commit)
		}
		if m.Entries[0].Index != 1 {
			t.Fatalf("message %d shares the sender's entries slice", i)
		}
	}
	if d, _ := nw.Stats(); d != 10 {
		t.Fatalf("delivered %d, want 10", d)
	}
}

func TestNetworkPartitionIsolateHeal(t *testing.T) {
	nw := inmem.NewNetwork()
	defer nw.Close()
	rs := map[consensus.NodeID]*recorder{1: {}, 2: {}, 3: {}}
	for id, r := range rs {
		nw.Register(id, r)
	}
	send := func(from, to consensus.NodeID) {
		nw.Transport(from).Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: from, To: to, Term: 1}})
	}
	count := func() int { return len(rs[1].got()) + len(rs[2].got()) + len(rs[3].got()) }

	nw.Partition([]consensus.NodeID{1}, []consensus.NodeID{2, 3})
	send(1, 2)
	send(2, 1)
	send(2, 3) // the only one that crosses no cut
	waitFor(t, func() bool { return len(rs[3].got()) == 1 }, "2→3 within the majority")

	nw.Heal()
	nw.Isolate(3)
	send(1, 3)
	send(3, 2)
	send(1, 2)
	waitFor(t, func() bool { return len(rs[2].got()) == 1 }, "1→2 after heal")

	nw.Heal()
	send(3, 1)
	waitFor(t, func() bool { return len(rs[1].got()) == 1 }, "3→1 after heal")
	if n := count(); n != 3 {
		t.Fatalf("%d messages delivered, want 3", n)
	}
	if _, dropped := nw.Stats(); dropped != 4 {
		t.Fatalf("%d messages dropped, want 4", dropped)
	}
}

func TestNetworkDropsWhenReceiverRefuses(t *testing.T) {
	nw := inmem.NewNetwork()
	defer nw.Close()
	var mu sync.Mutex
	refused := 0
	nw.Register(2, inmem.ReceiverFunc(func(context.Context, consensus.Message) error {
		mu.Lock()
		defer mu.Unlock()
		refused++
		return errors.New("inbox full")
	}))
	nw.Transport(1).Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2, Term: 1}})
	nw.Transport(1).Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 9, Term: 1}}) // nobody
	waitFor(t, func() bool { _, d := nw.Stats(); return d == 2 }, "both messages dropped")
	nw.Close()
	nw.Transport(1).Send([]consensus.Message{{Type: consensus.MsgHeartbeat, From: 1, To: 2, Term: 1}})
	if _, d := nw.Stats(); d != 3 {
		t.Fatalf("a send after Close was not dropped: %d drops", d)
	}
}
