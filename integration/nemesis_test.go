package integration

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The nemesis injects faults on a schedule drawn from a seed: which
// fault, how long it lasts, and how long the cluster is left alone
// between faults. Which node is the leader when a fault starts is the
// cluster's doing, not the seed's, so the same seed replays the same
// schedule, not necessarily the same victims.

// Fault is one kind of failure. Start injects it and returns what heals
// it.
type Fault struct {
	Name  string
	Start func(c *Cluster, rng *rand.Rand) (desc string, heal func())
}

func leaderOrAny(c *Cluster, rng *rand.Rand) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if i, _ := c.Leader(ctx); i >= 0 {
		return i
	}
	return rng.IntN(len(c.Nodes))
}

func followerOf(c *Cluster, rng *rand.Rand, leader int) int {
	j := rng.IntN(len(c.Nodes) - 1)
	if j >= leader {
		j++
	}
	return j
}

func names(c *Cluster, idx []int) string {
	var s []string
	for _, i := range idx {
		s = append(s, c.Nodes[i].Name)
	}
	return "{" + strings.Join(s, ",") + "}"
}

var (
	faultKillLeader = Fault{"kill-leader", func(c *Cluster, rng *rand.Rand) (string, func()) {
		l := leaderOrAny(c, rng)
		c.Kill(l)
		return "SIGKILL leader " + c.Nodes[l].Name, func() { c.Start(l) }
	}}
	faultKillFollower = Fault{"kill-follower", func(c *Cluster, rng *rand.Rand) (string, func()) {
		f := followerOf(c, rng, leaderOrAny(c, rng))
		c.Kill(f)
		return "SIGKILL follower " + c.Nodes[f].Name, func() { c.Start(f) }
	}}
	faultPauseLeader = Fault{"pause-leader", func(c *Cluster, rng *rand.Rand) (string, func()) {
		l := leaderOrAny(c, rng)
		c.Pause(l)
		return "SIGSTOP leader " + c.Nodes[l].Name, func() { c.Resume(l) }
	}}
	faultPauseFollower = Fault{"pause-follower", func(c *Cluster, rng *rand.Rand) (string, func()) {
		f := followerOf(c, rng, leaderOrAny(c, rng))
		c.Pause(f)
		return "SIGSTOP follower " + c.Nodes[f].Name, func() { c.Resume(f) }
	}}
	faultMinority = Fault{"partition-majority-minority", func(c *Cluster, rng *rand.Rand) (string, func()) {
		perm := rng.Perm(len(c.Nodes))
		minority, majority := perm[:len(c.Nodes)/2], perm[len(c.Nodes)/2:]
		sort.Ints(minority)
		sort.Ints(majority)
		c.Partition(minority, majority)
		return fmt.Sprintf("partition %s | %s", names(c, minority), names(c, majority)), c.HealNetwork
	}}
	faultIsolateLeader = Fault{"isolate-leader", func(c *Cluster, rng *rand.Rand) (string, func()) {
		l := leaderOrAny(c, rng)
		var rest []int
		for i := range c.Nodes {
			if i != l {
				rest = append(rest, i)
			}
		}
		c.Partition([]int{l}, rest)
		return "isolate leader " + c.Nodes[l].Name, c.HealNetwork
	}}
	faultBridge = Fault{"bridge", func(c *Cluster, rng *rand.Rand) (string, func()) {
		perm := rng.Perm(len(c.Nodes))
		half := len(c.Nodes) / 2
		left, bridge, right := perm[:half], perm[half], perm[half+1:]
		c.Bridge(left, bridge, right)
		return fmt.Sprintf("bridge %s - %s - %s", names(c, left), c.Nodes[bridge].Name, names(c, right)), c.HealNetwork
	}}
	faultOneWayLeader = Fault{"one-way-leader-out", func(c *Cluster, rng *rand.Rand) (string, func()) {
		l := leaderOrAny(c, rng)
		for j := range c.Nodes {
			if j != l {
				c.OneWay(l, j)
			}
		}
		return "drop everything " + c.Nodes[l].Name + " (leader) sends to peers", c.HealNetwork
	}}
	faultOneWayLeaderIn = Fault{"one-way-leader-in", func(c *Cluster, rng *rand.Rand) (string, func()) {
		l := leaderOrAny(c, rng)
		for j := range c.Nodes {
			if j != l {
				c.OneWay(j, l)
			}
		}
		return "drop everything peers send to " + c.Nodes[l].Name + " (leader)", c.HealNetwork
	}}
	faultSlowLeader = Fault{"slow-leader", func(c *Cluster, rng *rand.Rand) (string, func()) {
		l := leaderOrAny(c, rng)
		d := time.Duration(20+rng.IntN(80)) * time.Millisecond
		c.SetPeerDelay(l, d)
		return fmt.Sprintf("delay %s's peer links by %v", c.Nodes[l].Name, d), c.HealNetwork
	}}
	faultRollingRestart = Fault{"rolling-restart", func(c *Cluster, rng *rand.Rand) (string, func()) {
		// Each node in turn, waiting for the cluster to settle between
		// them (as an operator would); the heal has nothing left to do.
		for i := range c.Nodes {
			c.Restart(i)
			c.WaitStable(60 * time.Second)
		}
		return "rolling restart of every node", func() {}
	}}
)

var allFaults = []Fault{faultKillLeader, faultKillFollower, faultPauseLeader, faultPauseFollower, faultMinority,
	faultIsolateLeader, faultOneWayLeader, faultOneWayLeaderIn, faultSlowLeader, faultRollingRestart}

// Schedule is the nemesis's timing.
type Schedule struct {
	// Quiet and Hold bound the pause between faults and a fault's length
	// (each drawn uniformly from [min, max)).
	QuietMin, QuietMax time.Duration
	HoldMin, HoldMax   time.Duration
}

func (s Schedule) draw(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// Nemesis runs faults on c until ctx ends, then heals everything.
type Nemesis struct {
	c        *Cluster
	rng      *rand.Rand
	faults   []Fault
	sched    Schedule
	mu       sync.Mutex // protects injected
	injected map[string]int
}

func NewNemesis(c *Cluster, seed uint64, faults []Fault, s Schedule) *Nemesis {
	return &Nemesis{c: c, rng: rand.New(rand.NewPCG(seed, 0x6e656d)), faults: faults, sched: s, injected: map[string]int{}}
}

// Run injects faults until ctx ends; every fault is healed before it
// returns.
func (n *Nemesis) Run(ctx context.Context) {
	for sleepCtx(ctx, n.sched.draw(n.rng, n.sched.QuietMin, n.sched.QuietMax)) {
		f := n.faults[n.rng.IntN(len(n.faults))]
		hold := n.sched.draw(n.rng, n.sched.HoldMin, n.sched.HoldMax)
		desc, heal := f.Start(n.c, n.rng)
		n.c.Logf("nemesis: %s (for %v)", desc, hold.Round(time.Millisecond))
		n.mu.Lock()
		n.injected[f.Name]++
		n.mu.Unlock()
		sleepCtx(ctx, hold)
		heal()
		n.c.Logf("nemesis: healed %s", f.Name)
	}
}

// Injected returns the faults injected, by name.
func (n *Nemesis) Injected() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]int{}
	for k, v := range n.injected {
		out[k] = v
	}
	return out
}

// seedFor returns LOCKD_SEED if set, else a seed derived from the test's
// name: the default runs are deterministic by seed.
func seedFor(t testing.TB) uint64 {
	if s := os.Getenv("LOCKD_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("LOCKD_SEED=%q: %v", s, err)
		}
		return v
	}
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	return h.Sum64()
}
