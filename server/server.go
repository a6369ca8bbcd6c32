package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/fsm"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/rpc/peer"
	"github.com/lockd/lockd/session"
)

// Member is one node of the cluster.
type Member struct {
	ID       consensus.NodeID
	Name     string
	PeerAddr string
	// Learner: receives the log but does not vote (a node that joined and
	// has not been promoted yet).
	Learner bool
}

// Config configures a Server.
type Config struct {
	// ID and Name of this node; Members lists every member, this node
	// included: the bootstrap configuration. Once the Raft log or a
	// snapshot holds a configuration (after the first membership change),
	// that one wins; Members then only seeds peer addresses.
	ID      consensus.NodeID
	Name    string
	Members []Member
	// PromoteLag: the leader promotes a learner added without --learner
	// once its log is within this many entries of the leader's. Default
	// 1000.
	PromoteLag int
	// ClusterID must match the peers' and clients'.
	ClusterID string

	// ClientListener and PeerListener are where clients and peers connect.
	// The peer listener also serves calls a follower forwards.
	ClientListener net.Listener
	PeerListener   net.Listener

	// LogStore and StableStore persist Raft state (one object for group
	// commit, e.g. store.Store).
	LogStore    consensus.LogStore
	StableStore consensus.StableStore
	// SnapshotStore keeps fsm snapshots (e.g. store.FileSnapshotStore in
	// the data dir). Nil disables snapshots: the log is never compacted,
	// and a follower that needs compacted entries cannot catch up.
	SnapshotStore consensus.SnapshotStore
	// SnapshotEntries and SnapshotBytes: a snapshot is taken once this many
	// entries, or entries of this many bytes, were applied since the last.
	// Defaults consensus.DefaultSnapshotEntries and DefaultSnapshotBytes.
	SnapshotEntries int
	SnapshotBytes   int64
	// SyncPersist makes the Raft loop wait for each write's fsync
	// (consensus.NodeConfig.SyncPersist); for comparisons only.
	SyncPersist bool
	// SnapshotTrailing is how many entries before a snapshot stay in the
	// log for followers slightly behind. Default DefaultSnapshotTrailing;
	// negative keeps none.
	SnapshotTrailing int

	// TickInterval and ElectionTicks/HeartbeatTicks time Raft. Defaults
	// 100 ms, 10 and 1.
	TickInterval   time.Duration
	ElectionTicks  int
	HeartbeatTicks int
	// CommitBroadcastDelay is how long the leader may hold back telling
	// followers of a commit when nothing else is on its way to them
	// (consensus.NodeConfig.CommitBroadcastDelay); it bounds how far a
	// follower's watchers and stale reads trail the leader while writes
	// are sparse. Default DefaultCommitBroadcastDelay (at most half a
	// tick); negative tells them at once.
	CommitBroadcastDelay time.Duration

	// FSM configures the state machine; zero means fsm.DefaultConfig.
	FSM *fsm.Config
	// LeaderWait bounds how long a call waits for a leader during an
	// election before failing with api.ErrUnavailable. Default 3 maximum
	// election timeouts.
	LeaderWait time.Duration
	// RequestTimeout bounds a call whose caller set no deadline. Default 10 s.
	RequestTimeout time.Duration

	Now    func() time.Time
	Logger hclog.Logger
}

func (c *Config) maxElection() time.Duration {
	return 2 * time.Duration(c.ElectionTicks) * c.TickInterval
}

// DefaultCommitBroadcastDelay: a sequential writer's next proposal
// reaches the leader 0.2-0.3 ms after its answer left (measured on the
// comparison machine), and carries the commit with it; 1 ms covers nearly
// all of them and keeps followers within about a millisecond otherwise.
const DefaultCommitBroadcastDelay = time.Millisecond

// DefaultSnapshotTrailing is the entries kept in the log before a
// snapshot: a follower less than this far behind catches up from the log.
const DefaultSnapshotTrailing = 5000

// Validate fills defaults and checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.ID == 0 {
		errs = append(errs, errors.New("node id must not be 0"))
	}
	found := false
	seen := map[consensus.NodeID]bool{}
	for _, m := range c.Members {
		if seen[m.ID] {
			errs = append(errs, fmt.Errorf("member id %d appears twice in the cluster", m.ID))
		}
		seen[m.ID] = true
		found = found || m.ID == c.ID
	}
	if !found {
		errs = append(errs, fmt.Errorf("node %d (%s) is not among the members", c.ID, c.Name))
	}
	if c.ClientListener == nil || c.PeerListener == nil {
		errs = append(errs, errors.New("client and peer listeners are required"))
	}
	if c.LogStore == nil || c.StableStore == nil {
		errs = append(errs, errors.New("log and stable stores are required"))
	}
	if c.TickInterval == 0 {
		c.TickInterval = 100 * time.Millisecond
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = 10
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	switch {
	case c.CommitBroadcastDelay == 0:
		c.CommitBroadcastDelay = min(DefaultCommitBroadcastDelay, c.TickInterval/2)
	case c.CommitBroadcastDelay < 0:
		c.CommitBroadcastDelay = 0
	}
	switch {
	case c.SnapshotTrailing == 0:
		c.SnapshotTrailing = DefaultSnapshotTrailing
	case c.SnapshotTrailing < 0:
		c.SnapshotTrailing = 0
	}
	if c.SnapshotEntries < 0 || c.SnapshotBytes < 0 {
		errs = append(errs, fmt.Errorf("snapshot thresholds (%d entries, %d bytes) must not be negative", c.SnapshotEntries, c.SnapshotBytes))
	}
	if c.FSM == nil {
		cfg := fsm.DefaultConfig(c.maxElection())
		c.FSM = &cfg
	}
	if c.LeaderWait == 0 {
		c.LeaderWait = 3 * c.maxElection()
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return errors.Join(errs...)
}

// Server is one lockd node: a Raft node driving the fsm, the client API on
// rpc, forwarding to the leader, and the leader's session duties.
type Server struct {
	cfg    Config
	logger hclog.Logger
	fsm    *fsm.FSM
	codec  *fsm.Codec
	node   *consensus.Node
	errors *rpc.ErrorTable

	transport *peer.PeerTransport
	clientSrv *rpc.Server
	peerSrv   *rpc.Server
	peers     *peerClients

	// leaseMu guards the tracker: the leader loop, keepalive handlers and
	// the applier all use it. Held only for in-memory work.
	leaseMu sync.Mutex
	// confirmer shares leadership confirmations among keepalives.
	confirmer *leaderConfirmer
	tracker   *session.Tracker
	promoted  consensus.Term // term whose leases the tracker holds (0: none)

	waits   *waitTable
	changes *broadcaster // closed on every applied KV change

	// confMu guards conf, the configuration in use (updated from the Raft
	// loop through OnConfigChange), and peerAddrs, every member's peer
	// address but ours.
	confMu    sync.Mutex
	conf      consensus.Configuration
	peerAddrs map[consensus.NodeID]string

	watchers        atomic.Int64 // open watch streams
	blockedAcquires atomic.Int64 // acquire calls waiting for a grant

	// removed is closed once this node learns that a committed
	// configuration removed it (checkRemoved). probeTicks (leader loop
	// only) counts leaderless ticks since the last probe of the peers;
	// probing is set while one runs.
	removed     chan struct{}
	removedOnce sync.Once
	probeTicks  int
	probing     atomic.Bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// New builds and starts a server.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	f, err := fsm.New(*cfg.FSM)
	if err != nil {
		return nil, err
	}
	table, err := errorTable()
	if err != nil {
		return nil, err
	}
	tracker, err := session.NewTracker(session.TrackerConfig{Grace: cfg.maxElection()})
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, logger: cfg.Logger.Named("server"), fsm: f, codec: f.Codec(), errors: table,
		tracker: tracker, waits: newWaitTable(), changes: newBroadcaster(), stop: make(chan struct{}),
		removed: make(chan struct{}),
	}
	s.confirmer = &leaderConfirmer{timeout: cfg.LeaderWait, confirm: func(ctx context.Context) error {
		_, err := s.node.ReadIndex(ctx)
		return err
	}}
	peerAddrs := map[consensus.NodeID]string{}
	boot := consensus.Configuration{}
	selfAddr := ""
	for _, m := range cfg.Members {
		boot.Members = append(boot.Members, consensus.ConfMember{ID: m.ID, Name: m.Name, Addr: m.PeerAddr, Learner: m.Learner})
		if m.ID != cfg.ID {
			peerAddrs[m.ID] = m.PeerAddr
		} else {
			selfAddr = m.PeerAddr
		}
	}
	sort.Slice(boot.Members, func(i, j int) bool { return boot.Members[i].ID < boot.Members[j].ID })
	s.peerAddrs = peerAddrs
	tcfg := peer.PeerTransportConfig{
		ID: cfg.ID, ClusterID: cfg.ClusterID, Peers: peerAddrs, Addr: selfAddr, Logger: cfg.Logger.Named("transport"),
	}
	if cfg.SnapshotStore != nil {
		// s.node is set below, before the peer listener serves anything.
		tcfg.SnapshotSink = func(ctx context.Context, from consensus.NodeID, meta consensus.SnapshotMeta) (consensus.SnapshotSink, error) {
			return s.node.ReceiveSnapshot(ctx, from, meta)
		}
	}
	s.transport, err = peer.NewPeerTransport(tcfg)
	if err != nil {
		return nil, err
	}
	s.peers = newPeerClients(cfg.ClusterID, cfg.Name, maps.Clone(peerAddrs), table)
	s.node, err = consensus.StartNode(consensus.NodeConfig{
		Raft: consensus.Config{
			ID: cfg.ID, Members: &boot, PromoteLag: cfg.PromoteLag,
			ElectionTicks: cfg.ElectionTicks, HeartbeatTicks: cfg.HeartbeatTicks,
			// The largest command (a 1 MiB value plus its key) with room to
			// spare, well under the peer frame limit.
			MaxProposalBytes: 2 << 20,
			Logger:           cfg.Logger.Named("raft"),
		},
		LogStore: cfg.LogStore, StableStore: cfg.StableStore, Transport: s.transport,
		StateMachine: &applier{s: s}, TickInterval: cfg.TickInterval, Now: cfg.Now,
		Logger: cfg.Logger.Named("node"), PeerAddrs: peerAddrs,
		SnapshotStore: cfg.SnapshotStore, SnapshotEntries: cfg.SnapshotEntries, SnapshotBytes: cfg.SnapshotBytes,
		SnapshotTrailing: cfg.SnapshotTrailing, SyncPersist: cfg.SyncPersist,
		CommitBroadcastDelay: cfg.CommitBroadcastDelay, OnConfigChange: s.onConfig,
	})
	if err != nil {
		_ = s.transport.Close()
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	s.transport.SetHandler(s.node.Step)
	if err := s.startRPC(); err != nil {
		s.node.Stop()
		_ = s.transport.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.leaderLoop()
	s.logger.Info("lockd node started", "id", cfg.ID, "name", cfg.Name, "client_addr", cfg.ClientListener.Addr().String(),
		"peer_addr", cfg.PeerListener.Addr().String(), "members", len(cfg.Members))
	return s, nil
}

func errorTable() (*rpc.ErrorTable, error) {
	user := map[rpc.Code]error{}
	for code, sentinel := range api.AllCodes() {
		user[rpc.Code(api.FirstErrorCode+int(code))] = sentinel
	}
	return rpc.NewErrorTable(user)
}

// Node exposes the Raft node (for status and tests).
func (s *Server) Node() *consensus.Node { return s.node }

// FSM exposes the state machine (for status and tests).
func (s *Server) FSM() *fsm.FSM { return s.fsm }

// ClientAddr is where clients connect.
func (s *Server) ClientAddr() string { return s.cfg.ClientListener.Addr().String() }

// Close shuts the node down: a leader first hands leadership to another
// member (so the cluster does not wait an election timeout), then calls
// in progress end and everything is joined.
func (s *Server) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	if lead, _ := s.node.Leader(); lead == s.cfg.ID && len(s.Configuration().Voters()) > 1 {
		s.transferAway()
	}
	close(s.stop)
	_ = s.clientSrv.Close()
	_ = s.peerSrv.Close()
	s.wg.Wait()
	s.node.Stop()
	_ = s.transport.Close()
	s.peers.close()
	s.logger.Info("lockd node stopped", "id", s.cfg.ID, "name", s.cfg.Name)
	return nil
}

func (s *Server) transferAway() {
	best := s.bestVoter()
	if best == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.maxElection())
	defer cancel()
	if err := s.node.TransferLeadership(ctx, best); err != nil {
		s.logger.Warn("leadership transfer before shutdown failed", "to", best, "error", err)
		return
	}
	s.logger.Info("leadership transferred before shutdown", "to", best)
}

// callContext bounds a call whose caller set no deadline.
func (s *Server) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		// The rpc layer's context already ends with the call; another
		// layer would only cost an allocation and a registration with
		// the parent on every call.
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

// Metrics are the server's own gauges for /metrics (the Raft node's are
// in Node().Metrics(), the state machine's in FSM().Stats()).
type Metrics struct {
	Watchers, BlockedAcquires int64
}

// Metrics reads the server's gauges.
func (s *Server) Metrics() Metrics {
	return Metrics{Watchers: s.watchers.Load(), BlockedAcquires: s.blockedAcquires.Load()}
}
