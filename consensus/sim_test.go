package consensus

import (
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// The simulation drives whole clusters of cores in one goroutine with no
// real time: every random choice comes from the seed, so a failure replays
// exactly. Faults: message delay (reordering), loss, duplication, symmetric
// and one-way partitions, crashes that lose everything not yet durable
// (including crashes in the middle of handling a Ready), and restarts from
// durable state. The safety checker runs after every step.

// simOptions are the fault rates of one run, drawn from its seed.
type simOptions struct {
	nodes         int
	chaosTicks    int
	livenessTicks int
	electionTicks int
	maxDelay      int     // ticks
	loss          float64 // per message
	dup           float64 // per message
	proposeRate   float64 // per tick
	readRate      float64 // per tick
	crashRate     float64 // per tick, per node
	partRate      float64 // per tick: change the partition
	transferRate  float64 // per tick
	maxInflight   int
	maxEntries    int
	breakRule     brokenRule
	// configure adjusts each node's Config (scenarios only).
	configure func(*Config)
}

func optionsForSeed(seed int64, rule brokenRule) simOptions {
	rng := rand.New(rand.NewSource(seed ^ 0x5eed))
	o := simOptions{
		nodes:         3 + 2*rng.Intn(2),
		chaosTicks:    300 + rng.Intn(1200),
		livenessTicks: 600,
		electionTicks: 10,
		maxDelay:      rng.Intn(4),
		loss:          []float64{0, 0.01, 0.05, 0.2}[rng.Intn(4)],
		dup:           []float64{0, 0.02, 0.1}[rng.Intn(3)],
		proposeRate:   0.2 + 0.6*rng.Float64(),
		readRate:      0.1 * rng.Float64(),
		crashRate:     []float64{0, 0.002, 0.01, 0.03}[rng.Intn(4)],
		partRate:      []float64{0, 0.01, 0.03, 0.1}[rng.Intn(4)],
		transferRate:  []float64{0, 0.005}[rng.Intn(2)],
		maxInflight:   1 + rng.Intn(8),
		maxEntries:    []int{1, 2, 4, 16, 64}[rng.Intn(5)],
		breakRule:     rule,
	}
	return o
}

type simNode struct {
	id          NodeID
	raft        *Raft // nil while crashed
	incarnation int64
	// Durable state: what survives a crash.
	hard HardState
	log  []Entry // index i at log[i-1]
	// applied counts entries this incarnation applied (it starts over from
	// the log after a restart, since the simulated state machine is memory).
	applied int
}

type simMsg struct {
	m  Message
	at int
}

type pendingRead struct {
	node     NodeID
	minIndex Index // the commit index any client could have seen when the read began
}

type simulation struct {
	seed  int64
	opts  simOptions
	rng   *rand.Rand
	nodes []*simNode
	now   int
	net   []simMsg
	// cut[from][to] drops messages on that directed link.
	cut     map[[2]NodeID]bool
	check   *safetyChecker
	nextCmd int
	nextRd  uint64
	reads   map[uint64]pendingRead
	trace   []string
	voters  []NodeID
	healed  bool
	stats   simStats
	onRead  func(ReadState)
}

// simStats shows that a run exercised what it claims to.
type simStats struct {
	elections, crashes, restarts, committed, readsServed, partitions int64
}

func (a *simStats) add(b simStats) {
	a.elections += b.elections
	a.crashes += b.crashes
	a.restarts += b.restarts
	a.committed += b.committed
	a.readsServed += b.readsServed
	a.partitions += b.partitions
}

func newSimulation(seed int64, opts simOptions) *simulation {
	s := &simulation{
		seed:  seed,
		opts:  opts,
		rng:   rand.New(rand.NewSource(seed)),
		cut:   map[[2]NodeID]bool{},
		check: newSafetyChecker(opts.nodes),
		reads: map[uint64]pendingRead{},
	}
	for i := 1; i <= opts.nodes; i++ {
		s.voters = append(s.voters, NodeID(i))
	}
	for _, id := range s.voters {
		n := &simNode{id: id}
		s.nodes = append(s.nodes, n)
		s.start(n)
	}
	return s
}

func (s *simulation) tracef(format string, args ...any) {
	const keep = 60
	if len(s.trace) >= keep {
		s.trace = s.trace[1:]
	}
	s.trace = append(s.trace, fmt.Sprintf("t=%d ", s.now)+fmt.Sprintf(format, args...))
}

func (s *simulation) start(n *simNode) {
	n.incarnation++
	cfg := Config{
		ID:               n.id,
		Voters:           s.voters,
		ElectionTicks:    s.opts.electionTicks,
		HeartbeatTicks:   1,
		MaxInflightMsgs:  s.opts.maxInflight,
		MaxEntriesPerMsg: s.opts.maxEntries,
		Rand:             rand.New(rand.NewSource(s.seed*7919 + int64(n.id)*131 + n.incarnation)),
		breakRule:        s.opts.breakRule,
	}
	if s.opts.configure != nil {
		s.opts.configure(&cfg)
	}
	r, err := New(cfg, Restored{HardState: n.hard, Entries: n.log})
	if err != nil {
		panic(fmt.Sprintf("restart of node %d from durable state: %v", n.id, err))
	}
	n.raft = r
	n.applied = 0
}

func (s *simulation) node(id NodeID) *simNode { return s.nodes[id-1] }

func (s *simulation) enqueue(msgs []Message) {
	for _, m := range msgs {
		if !s.healed && s.rng.Float64() < s.opts.loss {
			continue
		}
		copies := 1
		if !s.healed && s.rng.Float64() < s.opts.dup {
			copies = 2
		}
		for c := 0; c < copies; c++ {
			mm := m
			mm.Entries = append([]Entry(nil), m.Entries...)
			s.net = append(s.net, simMsg{m: mm, at: s.now + s.rng.Intn(s.opts.maxDelay+1)})
		}
	}
}

// crashPoint lets a node die in the middle of handling a Ready.
func (s *simulation) crashPoint(n *simNode, where string) bool {
	if s.healed || s.opts.crashRate == 0 || s.rng.Float64() >= s.opts.crashRate*5 {
		return false
	}
	s.tracef("node %d crashes %s (term %d, last %d)", n.id, where, n.raft.term, n.raft.log.lastIndex())
	s.stats.crashes++
	n.raft = nil
	return true
}

// handleReady plays the driver: send, persist, send-after-persist, apply,
// advance; with the checker after every part.
func (s *simulation) handleReady(n *simNode) error {
	for n.raft != nil && n.raft.HasReady() {
		r := n.raft
		rd := r.Ready()
		if rd.SoftState != nil {
			s.tracef("node %d is %s in term %d (leader %d)", n.id, rd.SoftState.Role, r.term, rd.SoftState.Lead)
			if rd.SoftState.Role == Leader {
				s.stats.elections++
			}
		}
		if err := s.check.checkEntries(r, rd.Entries); err != nil {
			return err
		}
		s.enqueue(rd.Messages)
		if s.crashPoint(n, "before persisting") {
			return nil
		}
		if rd.MustSaveHardState {
			n.hard = rd.HardState
		}
		if len(rd.Entries) > 0 {
			first := rd.Entries[0].Index
			if int(first) > len(n.log)+1 {
				return fmt.Errorf("node %d persists entry %d after durable last %d: gap", n.id, first, len(n.log))
			}
			n.log = append(n.log[:first-1:first-1], rd.Entries...)
		}
		if s.crashPoint(n, "after persisting, before replying") {
			return nil
		}
		s.enqueue(rd.MessagesAfterPersist)
		for _, e := range rd.CommittedEntries {
			if err := s.check.checkApply(r, n.applied, e, s.durableCount); err != nil {
				return err
			}
			n.applied++
		}
		for _, rs := range rd.ReadStates {
			if err := s.checkRead(n, rs); err != nil {
				return err
			}
		}
		r.Advance(rd)
		if err := s.check.checkNode(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *simulation) durableCount(k entryKey) int {
	c := 0
	for _, n := range s.nodes {
		if int(k.Index) <= len(n.log) && n.log[k.Index-1].Term == k.Term {
			c++
		}
	}
	return c
}

// checkRead: a read index must cover every entry that was committed
// anywhere when the read began, or a client could read stale data.
func (s *simulation) checkRead(n *simNode, rs ReadState) error {
	if s.onRead != nil {
		s.onRead(rs)
	}
	pr, ok := s.reads[rs.ID]
	if !ok {
		return nil // a duplicate answer
	}
	delete(s.reads, rs.ID)
	if rs.Dropped {
		return nil
	}
	s.stats.readsServed++
	if rs.Index < pr.minIndex {
		return fmt.Errorf("stale read: node %d got read index %d for read %d, but index %d was committed before the read began", n.id, rs.Index, rs.ID, pr.minIndex)
	}
	return nil
}

func (s *simulation) maxCommitted() Index {
	var m Index
	for _, n := range s.nodes {
		if n.raft != nil && n.raft.log.committed > m {
			m = n.raft.log.committed
		}
	}
	return max(m, Index(len(s.check.applied)))
}

func (s *simulation) upNodes() []*simNode {
	var up []*simNode
	for _, n := range s.nodes {
		if n.raft != nil {
			up = append(up, n)
		}
	}
	return up
}

func (s *simulation) propose(n *simNode) error {
	k := 1 + s.rng.Intn(3)
	data := make([][]byte, k)
	for i := range data {
		s.nextCmd++
		data[i] = []byte("cmd-" + strconv.Itoa(s.nextCmd))
	}
	if _, _, err := n.raft.Propose(int64(s.now), data...); err == nil {
		s.tracef("node %d proposes %d commands (term %d, last %d)", n.id, k, n.raft.term, n.raft.log.lastIndex())
	}
	return s.handleReady(n)
}

// randomFault changes the partition, crashes or restarts a node.
func (s *simulation) randomFaults() error {
	if s.rng.Float64() < s.opts.partRate {
		s.cut = map[[2]NodeID]bool{}
		s.stats.partitions++
		switch s.rng.Intn(4) {
		case 0:
			s.tracef("partition healed")
		case 1: // symmetric split
			side := map[NodeID]bool{}
			for _, id := range s.voters {
				side[id] = s.rng.Intn(2) == 0
			}
			for _, a := range s.voters {
				for _, b := range s.voters {
					if side[a] != side[b] {
						s.cut[[2]NodeID{a, b}] = true
					}
				}
			}
			s.tracef("partition %v", side)
		case 2: // one node isolated
			x := s.voters[s.rng.Intn(len(s.voters))]
			for _, o := range s.voters {
				s.cut[[2]NodeID{x, o}], s.cut[[2]NodeID{o, x}] = true, true
			}
			s.tracef("node %d isolated", x)
		case 3: // random one-way cuts
			for _, a := range s.voters {
				for _, b := range s.voters {
					if a != b && s.rng.Intn(4) == 0 {
						s.cut[[2]NodeID{a, b}] = true
					}
				}
			}
			s.tracef("one-way cuts %v", s.cut)
		}
	}
	for _, n := range s.nodes {
		switch {
		case n.raft == nil && s.rng.Float64() < 0.05:
			s.start(n)
			s.tracef("node %d restarts (term %d, durable last %d)", n.id, n.hard.Term, len(n.log))
			s.stats.restarts++
			if err := s.check.checkNode(n.raft); err != nil {
				return err
			}
		case n.raft != nil && s.rng.Float64() < s.opts.crashRate:
			s.tracef("node %d crashes (term %d, role %s)", n.id, n.raft.term, n.raft.role)
			s.stats.crashes++
			n.raft = nil
		}
	}
	return nil
}

// step advances the simulation by one tick.
func (s *simulation) step() error {
	s.now++
	for _, n := range s.nodes {
		if n.raft != nil {
			n.raft.Tick()
			if err := s.handleReady(n); err != nil {
				return err
			}
		}
	}
	// Deliver everything due, in random order; messages sent with zero
	// delay go out in the same tick, as on a fast network.
	for budget := 0; budget < 20000; budget++ {
		due := -1
		for i, sm := range s.net {
			if sm.at <= s.now {
				due = i
				if s.rng.Intn(3) == 0 {
					break
				}
			}
		}
		if due < 0 {
			break
		}
		sm := s.net[due]
		s.net[due] = s.net[len(s.net)-1]
		s.net = s.net[:len(s.net)-1]
		to := s.node(sm.m.To)
		if to.raft == nil || s.cut[[2]NodeID{sm.m.From, sm.m.To}] {
			continue
		}
		if err := to.raft.Step(sm.m); err != nil {
			return fmt.Errorf("node %d refused %s from %d: %w", to.id, sm.m.Type, sm.m.From, err)
		}
		if err := s.handleReady(to); err != nil {
			return err
		}
	}
	if s.healed {
		return nil
	}
	up := s.upNodes()
	if len(up) > 0 && s.rng.Float64() < s.opts.proposeRate {
		if err := s.propose(up[s.rng.Intn(len(up))]); err != nil {
			return err
		}
	}
	up = s.upNodes() // a crash point may have taken a node down
	if len(up) > 0 && s.rng.Float64() < s.opts.readRate {
		n := up[s.rng.Intn(len(up))]
		s.nextRd++
		s.reads[s.nextRd] = pendingRead{node: n.id, minIndex: s.maxCommitted()}
		n.raft.ReadIndex(s.nextRd)
		if err := s.handleReady(n); err != nil {
			return err
		}
	}
	up = s.upNodes()
	if len(up) > 0 && s.rng.Float64() < s.opts.transferRate {
		n := up[s.rng.Intn(len(up))]
		to := s.voters[s.rng.Intn(len(s.voters))]
		if n.raft.TransferLeadership(to) == nil && n.raft.role == Leader {
			s.tracef("node %d transfers leadership to %d", n.id, to)
		}
		if err := s.handleReady(n); err != nil {
			return err
		}
	}
	return s.randomFaults()
}

// heal ends all faults: every node up, every link whole, no loss.
func (s *simulation) heal() error {
	s.healed = true
	s.cut = map[[2]NodeID]bool{}
	for _, n := range s.nodes {
		if n.raft == nil {
			s.start(n)
			if err := s.check.checkNode(n.raft); err != nil {
				return err
			}
		}
	}
	s.tracef("all faults healed")
	return nil
}

// run plays the chaos phase, heals, and demands liveness: a leader emerges
// and a new proposal is applied on every node within livenessTicks.
func (s *simulation) run() error {
	for s.now < s.opts.chaosTicks {
		if err := s.step(); err != nil {
			return err
		}
	}
	if err := s.heal(); err != nil {
		return err
	}
	deadline := s.now + s.opts.livenessTicks
	var want entryKey
	for s.now < deadline {
		if err := s.step(); err != nil {
			return err
		}
		if want.Index != 0 {
			done := true
			for _, n := range s.nodes {
				if t, ok := n.raft.log.term(want.Index); !ok || t != want.Term || n.raft.log.applied < want.Index {
					done = false
				}
			}
			if done {
				return nil
			}
			for _, n := range s.nodes {
				if n.raft.role == Leader && n.raft.term > want.Term {
					if t, ok := n.raft.log.term(want.Index); !ok || t != want.Term {
						want = entryKey{} // lost to a leader change: propose again
						break
					}
				}
			}
		}
		if want.Index == 0 {
			for _, n := range s.nodes {
				if n.raft.role == Leader && n.raft.leadTransferee == None {
					s.nextCmd++
					idx, term, err := n.raft.Propose(int64(s.now), []byte("live-"+strconv.Itoa(s.nextCmd)))
					if err == nil {
						want = entryKey{idx, term}
						s.tracef("liveness proposal at %d (term %d) on node %d", idx, term, n.id)
					}
					if err := s.handleReady(n); err != nil {
						return err
					}
					break
				}
			}
		}
	}
	var st []string
	for _, n := range s.nodes {
		st = append(st, fmt.Sprintf("node %d: %s term %d lead %d last %d commit %d", n.id, n.raft.role, n.raft.term, n.raft.lead, n.raft.log.lastIndex(), n.raft.log.committed))
	}
	return fmt.Errorf("liveness: %d ticks after faults stopped, proposal %v is not applied everywhere; %s", s.opts.livenessTicks, want, strings.Join(st, "; "))
}

// runSeed runs one seed and returns its error, with the trace tail.
func runSeed(seed int64, rule brokenRule) (st simStats, err error) {
	s := newSimulation(seed, optionsForSeed(seed, rule))
	defer func() {
		st = s.stats
		st.committed = int64(len(s.check.applied))
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
		if err != nil {
			err = fmt.Errorf("%w\nlast events:\n  %s", err, strings.Join(s.trace, "\n  "))
		}
	}()
	return st, s.run()
}

func envInt(name string, def int64) int64 {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err == nil {
			return n
		}
	}
	return def
}

// TestSimulation runs LOCKD_SIM_SEEDS seeds (default 2000) across all CPUs;
// LOCKD_SIM_SEED=N replays one.
func TestSimulation(t *testing.T) {
	if one := os.Getenv("LOCKD_SIM_SEED"); one != "" {
		seed := envInt("LOCKD_SIM_SEED", 0)
		st, err := runSeed(seed, ruleIntact)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		t.Logf("seed %d: %+v", seed, st)
		return
	}
	seeds := envInt("LOCKD_SIM_SEEDS", 2000)
	first := envInt("LOCKD_SIM_FIRST_SEED", 1)
	var mu sync.Mutex
	var total simStats
	failed := forSeeds(first, seeds, func(seed int64) bool {
		st, err := runSeed(seed, ruleIntact)
		mu.Lock()
		total.add(st)
		mu.Unlock()
		if err != nil {
			t.Errorf("seed %d: %v\nreplay: LOCKD_SIM_SEED=%d go test ./consensus -run 'TestSimulation$' -v", seed, err, seed)
			return true
		}
		return false
	})
	t.Logf("%d seeds from %d, %d failed; in all: %+v", seeds, first, failed, total)
	// A simulation that stopped exercising the protocol would pass
	// vacuously; demand that the runs did real work on average.
	if failed == 0 && seeds >= 100 {
		per := func(v int64) float64 { return float64(v) / float64(seeds) }
		if per(total.committed) < 20 || per(total.elections) < 2 || total.crashes == 0 || total.readsServed == 0 || total.partitions == 0 {
			t.Errorf("the simulation did too little to mean anything: %+v over %d seeds", total, seeds)
		}
	}
}

// forSeeds runs fn over seeds [first, first+n) on every CPU, stopping
// early after a few failures. It returns the number of failures.
func forSeeds(first, n int64, fn func(int64) bool) int64 {
	var next, failed atomic.Int64
	next.Store(first)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for failed.Load() < 3 {
				seed := next.Add(1) - 1
				if seed >= first+n {
					return
				}
				if fn(seed) {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return failed.Load()
}

// TestSimulationIsDeterministic: a seed must replay exactly, or the replay
// command printed on failure would be worthless.
func TestSimulationIsDeterministic(t *testing.T) {
	for _, seed := range []int64{3, 17, 101} {
		a := newSimulation(seed, optionsForSeed(seed, ruleIntact))
		b := newSimulation(seed, optionsForSeed(seed, ruleIntact))
		errA, errB := a.run(), b.run()
		if fmt.Sprint(errA) != fmt.Sprint(errB) || a.stats != b.stats || a.now != b.now ||
			strings.Join(a.trace, "\n") != strings.Join(b.trace, "\n") {
			t.Fatalf("seed %d ran differently twice:\n%v %+v\n%v %+v", seed, errA, a.stats, errB, b.stats)
		}
	}
}
