package consensus

import (
	"fmt"
	"testing"
)

// scenario is a hand-driven simulation for named regression tests: no
// random faults, FIFO delivery, the safety checker still on after every
// step. Tests shape the run with drop filters, crashes and ticks.
type scenario struct {
	t *testing.T
	*simulation
	drop func(Message) bool
	// edit, if set, may change a message just before it is delivered.
	edit func(*Message)
	// held nodes keep their write in flight through stabilize (async).
	held map[NodeID]bool
	// With expectViolation, a safety violation is recorded in violation
	// instead of failing the test (for runs with a deliberately broken rule).
	expectViolation bool
	violation       error
	readResults     map[uint64]ReadState
	// sent is every message sent so far; tests reset it.
	sent []Message
}

func newScenario(t *testing.T, n int, tweak func(*simOptions)) *scenario {
	t.Helper()
	opts := simOptions{nodes: n, electionTicks: 10, maxInflight: 8, maxEntries: 64}
	if tweak != nil {
		tweak(&opts)
	}
	sc := &scenario{t: t, simulation: newSimulation(1, opts), readResults: map[uint64]ReadState{}, held: map[NodeID]bool{}}
	sc.holds = func(id NodeID) bool { return sc.held[id] }
	sc.onRead = func(rs ReadState) { sc.readResults[rs.ID] = rs }
	sc.onSend = func(m Message) { sc.sent = append(sc.sent, m) }
	return sc
}

// restore replaces node id's durable state and restarts it from there.
func (sc *scenario) restore(id NodeID, hs HardState, terms ...Term) {
	n := sc.node(id)
	n.hard = hs
	n.log = nil
	for i, t := range terms {
		e := Entry{Index: Index(i + 1), Term: t, Data: []byte(fmt.Sprintf("seeded-%d-%d", i+1, t))}
		e.Seal()
		n.log = append(n.log, e)
		// Seeded logs are facts of the past: tell the checker.
		sc.check.facts[entryKey{e.Index, e.Term}] = entryFacts{prevTerm: termAt(terms, i), checksum: e.Checksum}
	}
	sc.start(n)
}

func termAt(terms []Term, i int) Term {
	if i == 0 {
		return 0
	}
	return terms[i-1]
}

func (sc *scenario) r(id NodeID) *Raft { return sc.node(id).raft }

func (sc *scenario) ready(id NodeID) {
	sc.t.Helper()
	if err := sc.handleReady(sc.node(id)); err != nil {
		if !sc.expectViolation {
			sc.t.Fatalf("safety violation: %v", err)
		}
		if sc.violation == nil {
			sc.violation = err
		}
	}
}

// deliver delivers queued messages in order until none are left (or the
// budget runs out), dropping those the filter or a cut link rejects.
func (sc *scenario) deliver() {
	sc.t.Helper()
	for len(sc.net) > 0 || len(sc.snaps) > 0 {
		sc.deliverMessages()
		if err := sc.deliverSnapshots(true); err != nil {
			sc.t.Fatalf("safety violation: %v", err)
		}
	}
}

func (sc *scenario) deliverMessages() {
	sc.t.Helper()
	for budget := 0; len(sc.net) > 0 && budget < 100000; budget++ {
		m := sc.net[0].m
		sc.net = sc.net[1:]
		to := sc.node(m.To)
		if to.raft == nil || sc.cut[[2]NodeID{m.From, m.To}] || (sc.drop != nil && sc.drop(m)) {
			continue
		}
		if sc.edit != nil {
			sc.edit(&m)
		}
		if err := to.raft.Step(m); err != nil {
			sc.t.Fatalf("node %d refused %s: %v", m.To, m.Type, err)
		}
		sc.ready(m.To)
	}
}

// tick ticks the given nodes (all if none) n times, delivering after each.
func (sc *scenario) tick(n int, ids ...NodeID) {
	sc.t.Helper()
	if len(ids) == 0 {
		ids = sc.ids
	}
	for i := 0; i < n; i++ {
		for _, id := range ids {
			if r := sc.r(id); r != nil {
				r.Tick()
				sc.ready(id)
			}
		}
		sc.deliver()
	}
}

// elect makes id leader by an immediate election (no pre-vote wait).
func (sc *scenario) elect(id NodeID) {
	sc.t.Helper()
	sc.r(id).campaign(false, false)
	sc.ready(id)
	sc.settle()
	if sc.r(id).role != Leader {
		sc.t.Fatalf("node %d did not win the election: role %s term %d", id, sc.r(id).role, sc.r(id).term)
	}
}

func (sc *scenario) propose(id NodeID, data string) Index {
	sc.t.Helper()
	sc.nextCmd++ // the checker insists every command commits once
	idx, _, err := sc.r(id).Propose(0, []byte(fmt.Sprintf("%s-%d", data, sc.nextCmd)))
	if err != nil {
		sc.t.Fatalf("propose on node %d: %v", id, err)
	}
	sc.ready(id)
	return idx
}

// readIndex asks node id for a read index; the answer lands in readResults.
func (sc *scenario) readIndex(id NodeID, rid uint64) {
	sc.reads[rid] = pendingRead{node: id, minIndex: sc.maxCommitted()}
	sc.r(id).ReadIndex(rid)
	sc.ready(id)
}

// isolate cuts every link to and from id; heal restores all links.
func (sc *scenario) isolate(id NodeID) {
	for _, o := range sc.ids {
		sc.cut[[2]NodeID{id, o}], sc.cut[[2]NodeID{o, id}] = true, true
	}
}

func (sc *scenario) heal() { sc.cut = map[[2]NodeID]bool{} }

// crash drops node id's volatile state; restart brings it back from disk.
func (sc *scenario) crash(id NodeID)   { n := sc.node(id); n.raft, n.pending = nil, nil }
func (sc *scenario) restart(id NodeID) { sc.start(sc.node(id)); sc.ready(id) }

// asyncWrites makes a scenario persist asynchronously: every write stays
// in flight until the test completes it (complete, stabilize).
func asyncWrites(o *simOptions) { o.async = true }

// settle delivers everything; with asynchronous writes it also completes
// the writes of nodes not held, until nothing is left to do.
func (sc *scenario) settle() {
	sc.t.Helper()
	if !sc.opts.async {
		sc.deliver()
		return
	}
	sc.stabilize()
}

// stabilize delivers messages and completes writes (of nodes not held)
// until neither is left.
func (sc *scenario) stabilize() {
	sc.t.Helper()
	for i := 0; i < 1000; i++ {
		sc.deliver()
		done := true
		for _, n := range sc.nodes {
			if n.raft != nil && n.pending != nil && !sc.held[n.id] {
				sc.complete(n.id)
				done = false
			}
		}
		if done {
			return
		}
	}
	sc.t.Fatalf("the cluster did not settle in 1000 rounds")
}

// complete makes node id's write in flight durable (see completeWrite).
func (sc *scenario) complete(id NodeID) {
	sc.t.Helper()
	n := sc.node(id)
	if n.pending == nil {
		sc.t.Fatalf("node %d has no write in flight to complete", id)
	}
	if err := sc.completeWrite(n, true); err != nil {
		if !sc.expectViolation {
			sc.t.Fatalf("safety violation: %v", err)
		}
		if sc.violation == nil {
			sc.violation = err
		}
	}
}

// pendingWrite returns node id's write in flight, failing if there is none.
func (sc *scenario) pendingWrite(id NodeID) *simWrite {
	sc.t.Helper()
	w := sc.node(id).pending
	if w == nil {
		sc.t.Fatalf("node %d has no write in flight", id)
	}
	return w
}

// cutLink cuts the link between a and b both ways; joinLink restores it.
func (sc *scenario) cutLink(a, b NodeID) {
	sc.cut[[2]NodeID{a, b}], sc.cut[[2]NodeID{b, a}] = true, true
}

func (sc *scenario) joinLink(a, b NodeID) {
	delete(sc.cut, [2]NodeID{a, b})
	delete(sc.cut, [2]NodeID{b, a})
}
