package consensus

import (
	"fmt"
	"math/rand"
	"slices"

	"github.com/hashicorp/go-hclog"
)

// Config configures one Raft core. Validate fills defaults.
type Config struct {
	// ID is this node's id; it must be a member of the bootstrap
	// configuration.
	ID NodeID
	// Voters and Learners are the bootstrap configuration: the one in use
	// before any configuration entry in the log (and without a snapshot).
	// Members, if set, is the same with names and addresses and takes
	// their place. Once the log or a snapshot holds a configuration, that
	// one wins.
	Voters   []NodeID
	Learners []NodeID
	Members  *Configuration

	// PromoteLag: the leader promotes a learner added with AutoPromote
	// once its log is within this many entries of the leader's and it
	// answered within the last election timeout. Default 1000.
	PromoteLag int

	// ElectionTicks is the minimum election timeout in ticks; the actual
	// timeout is drawn from [ElectionTicks, 2*ElectionTicks) at every reset.
	// Default 10.
	ElectionTicks int
	// HeartbeatTicks is the leader's heartbeat interval. Default 1.
	HeartbeatTicks int

	// MaxEntriesPerMsg and MaxBytesPerMsg cap one MsgApp. A single entry
	// larger than MaxBytesPerMsg still goes out alone. Defaults 512 and 1 MiB.
	MaxEntriesPerMsg int
	MaxBytesPerMsg   int
	// MaxInflightMsgs bounds the MsgApp messages in flight to one follower
	// while pipelining. Default 64.
	MaxInflightMsgs int
	// MaxProposalBytes rejects a single proposal larger than this. Default 4 MiB.
	MaxProposalBytes int

	// DisablePreVote and DisableCheckQuorum turn off the two liveness
	// protections (both on by default). Only tests should set them.
	DisablePreVote     bool
	DisableCheckQuorum bool

	// DeferCommitBroadcast holds back the leader's message that only
	// tells followers a new commit index: the next append (a proposal's)
	// carries it, or the driver's FlushCommit, or a heartbeat. Without it
	// every commit with nothing else to send costs each follower a message
	// and an acknowledgement at once, which under sequential writes is
	// half of all replication traffic and competes with the answer to the
	// client for the CPU. Commit knowledge on followers is a matter of
	// liveness only (when they apply), never of safety.
	DeferCommitBroadcast bool

	// Applied is the index the state machine has already applied (from a
	// snapshot); the core hands out committed entries after it.
	Applied Index

	// Rand draws election timeouts. Tests pass a seeded one so that a run
	// replays from its seed. Default: seeded from ID.
	Rand *rand.Rand
	// Logger receives role changes and elections. Default: discard.
	Logger hclog.Logger

	// breakRule deliberately breaks one safety rule. It exists only so the
	// simulation can prove it catches a broken core; it is unexported and
	// set only by tests in this package.
	breakRule brokenRule
}

// brokenRule names a deliberately broken protocol rule (tests only).
type brokenRule uint8

const (
	ruleIntact brokenRule = iota
	// breakVoteOnce lets a node grant several votes in one term.
	breakVoteOnce
	// breakCurrentTermCommit commits entries of earlier terms by counting
	// replicas (the Figure 8 mistake).
	breakCurrentTermCommit
	// breakFollowerCommit sets a follower's commit to min(leaderCommit,
	// lastIndex) instead of the last verified index (seed 002 mistake 2).
	breakFollowerCommit
	// breakUpToDateCheck grants votes without comparing logs (§5.4.1).
	breakUpToDateCheck
	// breakStaleSnapshot installs a received snapshot even when it is not
	// ahead of the commit index, taking the state machine back in time.
	breakStaleSnapshot
	// breakConfChangeOnce lets the leader start a membership change while
	// another is uncommitted.
	breakConfChangeOnce
	// breakConfTermCommit lets a new leader change membership before it
	// has committed an entry of its term (the §4.1 bug).
	breakConfTermCommit
)

// bootstrap is the configuration before any in the log.
func (c *Config) bootstrap() Configuration {
	if c.Members != nil {
		return c.Members.Clone()
	}
	return NewConfiguration(c.Voters, c.Learners)
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if c.ID == None {
		return fmt.Errorf("node id must not be 0")
	}
	seen := map[NodeID]bool{}
	for _, v := range append(slices.Clone(c.Voters), c.Learners...) {
		if v == None {
			return fmt.Errorf("member id must not be 0")
		}
		if seen[v] {
			return fmt.Errorf("member %d listed twice", v)
		}
		seen[v] = true
	}
	boot := c.bootstrap()
	if err := boot.Validate(); err != nil {
		return fmt.Errorf("bootstrap configuration: %w", err)
	}
	if _, ok := boot.Member(c.ID); !ok {
		return fmt.Errorf("node %d is not among the members %v", c.ID, boot)
	}
	if c.PromoteLag == 0 {
		c.PromoteLag = 1000
	}
	if c.PromoteLag < 0 {
		return fmt.Errorf("promote lag %d must be positive", c.PromoteLag)
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks < 0 || c.ElectionTicks < 0 {
		return fmt.Errorf("election ticks %d and heartbeat ticks %d must be positive", c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.ElectionTicks <= c.HeartbeatTicks {
		return fmt.Errorf("election timeout %d ticks must be greater than heartbeat interval %d ticks", c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.MaxEntriesPerMsg == 0 {
		c.MaxEntriesPerMsg = 512
	}
	if c.MaxBytesPerMsg == 0 {
		c.MaxBytesPerMsg = 1 << 20
	}
	if c.MaxInflightMsgs == 0 {
		c.MaxInflightMsgs = 64
	}
	if c.MaxProposalBytes == 0 {
		c.MaxProposalBytes = 4 << 20
	}
	if c.MaxEntriesPerMsg < 0 || c.MaxBytesPerMsg < 0 || c.MaxInflightMsgs < 0 || c.MaxProposalBytes < 0 {
		return fmt.Errorf("message limits must be positive (entries %d, bytes %d, inflight %d, proposal %d)",
			c.MaxEntriesPerMsg, c.MaxBytesPerMsg, c.MaxInflightMsgs, c.MaxProposalBytes)
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewSource(int64(c.ID)))
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return nil
}
