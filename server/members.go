package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/rpc"
)

// Membership: the configuration lives in the Raft log (consensus). This
// file keeps the server's view of it (peer addresses for the transport
// and for forwarding, the member list for status) and serves the
// operator calls: add, promote, remove, leader transfer. They run on the
// leader; any other node forwards them there over the peer port.

// reachTimeout bounds the check that a new member's peer address
// answers before it is added.
const reachTimeout = 2 * time.Second

// onConfig is consensus.NodeConfig.OnConfigChange: called once while the
// node starts, then on the Raft loop at every change. It must not block.
func (s *Server) onConfig(c consensus.Configuration) {
	s.confMu.Lock()
	addrs := map[consensus.NodeID]string{}
	for _, m := range c.Members {
		if m.ID == s.cfg.ID {
			continue
		}
		addr := m.Addr
		if addr == "" {
			addr = s.peerAddrs[m.ID] // a configuration from before addresses were kept
		}
		if addr != "" {
			addrs[m.ID] = addr
		}
	}
	s.conf = c.Clone()
	s.peerAddrs = addrs
	s.confMu.Unlock()
	s.transport.SetPeers(maps.Clone(addrs))
	s.peers.setAddrs(maps.Clone(addrs))
}

// methodMembership (peer port only) answers with the answering node's
// configuration, so that a node cut off by its own removal can learn of
// it: the leader stops replicating to a removed member as soon as the
// removal is in its log, so that member never receives the entry.
const methodMembership rpc.Method = 203

type membershipResponse struct {
	Members   []uint64 `codec:"m"`
	NextID    uint64   `codec:"n"`
	Committed bool     `codec:"c"`
}

func (s *Server) onMembership(ctx context.Context, _ *struct{}) (*membershipResponse, error) {
	st := s.node.Status()
	resp := &membershipResponse{NextID: uint64(st.Config.NextID), Committed: st.ConfigCommitted}
	for _, m := range st.Config.Members {
		resp.Members = append(resp.Members, uint64(m.ID))
	}
	return resp, nil
}

// removedBy reports whether a committed configuration with these members
// and next id proves this node removed: its id was given out (NextID is
// past it) and it is not a member. Ids are never reused, so a member once
// gone never comes back, and a node that has not joined yet has an id of
// NextID or more in every configuration it could meet.
func (s *Server) removedBy(committed bool, nextID consensus.NodeID, isMember bool) bool {
	return committed && nextID > s.cfg.ID && !isMember
}

// checkRemoved closes s.removed, once, when this node learns it was
// removed: from its own committed configuration (a leader that removed
// itself, or a node that received the entry), or, while it has no leader,
// by asking the members it knows (at most once per election timeout).
// Called from the leader loop every tick.
func (s *Server) checkRemoved() {
	select {
	case <-s.removed:
		return
	default:
	}
	st := s.node.Status()
	if _, member := st.Config.Member(s.cfg.ID); s.removedBy(st.ConfigCommitted, st.Config.NextID, member) {
		s.markRemoved("its own committed configuration", st.Term, uint64(st.ConfigIndex))
		return
	}
	// A leader, or a node that heard from one within an election
	// timeout, is in the cluster (a removed learner keeps its last
	// leader's id but stops hearing from it).
	if st.Role == consensus.Leader || (st.Lead != consensus.None && st.SinceLeaderContact < s.cfg.ElectionTicks) {
		s.probeTicks = 0
		return
	}
	if s.probeTicks++; s.probeTicks < s.cfg.ElectionTicks || s.probing.Load() {
		return
	}
	s.probeTicks = 0
	s.probing.Store(true)
	peers := s.peerAddrsSnapshot()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.probing.Store(false)
		ctx, cancel := s.untilStop(s.cfg.TickInterval * time.Duration(s.cfg.ElectionTicks))
		defer cancel()
		for id := range peers {
			c, err := s.peers.get(id)
			if err != nil {
				continue
			}
			var resp membershipResponse
			if err := c.Call(ctx, methodMembership, nil, &resp); err != nil {
				continue
			}
			if s.removedBy(resp.Committed, consensus.NodeID(resp.NextID), slices.Contains(resp.Members, uint64(s.cfg.ID))) {
				s.markRemoved(fmt.Sprintf("node %d's committed configuration", id), st.Term, 0)
				return
			}
		}
	}()
}

// markRemoved closes s.removed once and says so.
func (s *Server) markRemoved(source string, term consensus.Term, index uint64) {
	s.removedOnce.Do(func() {
		s.logger.Warn("this node was removed from the cluster: it takes no further part",
			"id", s.cfg.ID, "name", s.cfg.Name, "term", term, "config_index", index, "learned_from", source)
		close(s.removed)
	})
}

// peerAddrsSnapshot returns the peer addresses in use.
func (s *Server) peerAddrsSnapshot() map[consensus.NodeID]string {
	s.confMu.Lock()
	defer s.confMu.Unlock()
	return maps.Clone(s.peerAddrs)
}

// Removed is closed when this node learns that a committed membership
// change removed it from the cluster. A node removed while cut off from
// the others learns it once it reaches one of them again; meanwhile it
// cannot disrupt them (PreVote and the vote lease ignore it).
func (s *Server) Removed() <-chan struct{} { return s.removed }

// Configuration returns the configuration in use (it may not be committed).
func (s *Server) Configuration() consensus.Configuration {
	s.confMu.Lock()
	defer s.confMu.Unlock()
	return s.conf.Clone()
}

// Members returns the members of the configuration in use.
func (s *Server) Members() []Member {
	c := s.Configuration()
	out := make([]Member, 0, len(c.Members))
	for _, m := range c.Members {
		out = append(out, Member{ID: m.ID, Name: m.Name, PeerAddr: m.Addr, Learner: m.Learner})
	}
	return out
}

func memberStatus(m consensus.ConfMember) api.MemberStatus {
	return api.MemberStatus{ID: uint64(m.ID), Name: m.Name, PeerAddr: m.Addr, Learner: m.Learner}
}

func memberList(c consensus.Configuration) []api.MemberStatus {
	out := make([]api.MemberStatus, 0, len(c.Members))
	for _, m := range c.Members {
		out = append(out, memberStatus(m))
	}
	return out
}

// onLeader runs f on the leader: here if this node leads, else by calling
// method on the leader's peer port; during an election it waits up to
// LeaderWait for one.
func onLeader[Req, Resp any](ctx context.Context, s *Server, method uint16, req *Req, f func(context.Context, *Req) (*Resp, error)) (*Resp, error) {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%w (last error: %v)", s.unavailable("membership call"), lastErr)
			}
			if err := s.pause(ctx); err != nil {
				return nil, err
			}
		}
		lead, _ := s.node.Leader()
		switch lead {
		case s.cfg.ID:
			resp, err := f(ctx, req)
			if err == nil || !errors.Is(err, consensus.ErrNotLeader) {
				return resp, err
			}
			lastErr = err
		case consensus.None:
			lastErr = errors.New("no leader known")
		default:
			c, err := s.peers.get(lead)
			if err != nil {
				lastErr = err
				continue
			}
			var resp Resp
			err = c.Call(ctx, rpc.Method(method), req, &resp)
			if err == nil {
				return &resp, nil
			}
			if !retryable(err) {
				return nil, err
			}
			lastErr = err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// confError turns a refused or failed change into an api error that
// says what to do.
func confError(what string, err error) error {
	var apiErr *api.Error
	switch {
	case errors.As(err, &apiErr):
		return err
	case errors.Is(err, consensus.ErrOutcomeUnknown):
		return api.Errorf(api.CodeUnavailable, "%s: %v; check with `lockctl member list` before retrying", what, err)
	case errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrTransferInProgress),
		errors.Is(err, consensus.ErrStopped), errors.Is(err, consensus.ErrOverloaded):
		return api.Errorf(api.CodeUnavailable, "%s: %v", what, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return api.Errorf(api.CodeInvalid, "%s: %v", what, err)
}

func (s *Server) onMemberAdd(ctx context.Context, req *api.MemberAddRequest) (*api.MemberChangeResponse, error) {
	if req.Name == "" || req.PeerAddr == "" {
		return nil, api.Errorf(api.CodeInvalid, "member add needs a name and a peer address (host:port)")
	}
	if _, _, err := net.SplitHostPort(req.PeerAddr); err != nil {
		return nil, api.Errorf(api.CodeInvalid, "peer address %q: %v; give host:port", req.PeerAddr, err)
	}
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	return onLeader(ctx, s, api.MethodMemberAdd, req, s.addMember)
}

func (s *Server) addMember(ctx context.Context, req *api.MemberAddRequest) (*api.MemberChangeResponse, error) {
	what := fmt.Sprintf("adding member %s (%s)", req.Name, req.PeerAddr)
	if m, ok := s.Configuration().MemberByName(req.Name); ok {
		return nil, api.Errorf(api.CodeInvalid, "%s: the name is taken by member %d (%s); remove it first or pick another name", what, m.ID, m.Addr)
	}
	d := net.Dialer{Timeout: reachTimeout}
	conn, err := d.DialContext(ctx, "tcp", req.PeerAddr)
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "%s: the leader cannot reach %s (%v): start lockd there first (lockd --join), or check the address and firewall", what, req.PeerAddr, err)
	}
	_ = conn.Close()
	res, err := s.proposeConf(ctx, consensus.ConfChange{Type: consensus.ConfAddLearner, Name: req.Name, Addr: req.PeerAddr, AutoPromote: !req.Learner})
	if err != nil {
		return nil, confError(what, err)
	}
	m, _ := res.Config.Member(res.Change.ID)
	s.logger.Info("member added", "name", req.Name, "id", res.Change.ID, "peer_addr", req.PeerAddr, "learner", true, "auto_promote", !req.Learner)
	return &api.MemberChangeResponse{Member: memberStatus(m), Members: memberList(res.Config)}, nil
}

// lookup finds the member called name.
func (s *Server) lookup(name string) (consensus.ConfMember, error) {
	c := s.Configuration()
	if m, ok := c.MemberByName(name); ok {
		return m, nil
	}
	return consensus.ConfMember{}, api.Errorf(api.CodeInvalid, "no member is called %q (members: %v); see `lockctl member list`", name, c)
}

func (s *Server) onMemberPromote(ctx context.Context, req *api.MemberPromoteRequest) (*api.MemberChangeResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	return onLeader(ctx, s, api.MethodMemberPromote, req, func(ctx context.Context, req *api.MemberPromoteRequest) (*api.MemberChangeResponse, error) {
		m, err := s.lookup(req.Name)
		if err != nil {
			return nil, err
		}
		if !m.Learner {
			return nil, api.Errorf(api.CodeInvalid, "member %s (%d) is already a voter", m.Name, m.ID)
		}
		return s.change(ctx, fmt.Sprintf("promoting member %s", req.Name), consensus.ConfChange{Type: consensus.ConfPromote, ID: m.ID})
	})
}

func (s *Server) onMemberRemove(ctx context.Context, req *api.MemberRemoveRequest) (*api.MemberChangeResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	return onLeader(ctx, s, api.MethodMemberRemove, req, func(ctx context.Context, req *api.MemberRemoveRequest) (*api.MemberChangeResponse, error) {
		m, err := s.lookup(req.Name)
		if err != nil {
			return nil, err
		}
		if m.ID == s.cfg.ID && len(s.Configuration().Voters()) > 1 {
			// The leader removes itself: hand over first, so the cluster
			// never runs with a leader that does not count itself; the new
			// leader carries out the removal (onLeader retries there).
			if err := s.transferTo(ctx, consensus.None); err != nil {
				return nil, confError(fmt.Sprintf("removing member %s (the leader): handing leadership over first", req.Name), err)
			}
			return nil, &consensus.NotLeaderError{}
		}
		return s.change(ctx, fmt.Sprintf("removing member %s", req.Name), consensus.ConfChange{Type: consensus.ConfRemove, ID: m.ID})
	})
}

// proposeConf proposes cc, waiting out (up to LeaderWait) the refusals
// that pass by themselves within moments: another change not committed
// yet, a new leader that has not committed in its term yet, a leadership
// transfer under way. After that the refusal is the answer.
func (s *Server) proposeConf(ctx context.Context, cc consensus.ConfChange) (consensus.ConfChangeResult, error) {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	for {
		res, err := s.node.ProposeConfChange(ctx, cc)
		transient := errors.Is(err, consensus.ErrConfChangeInProgress) || errors.Is(err, consensus.ErrConfChangeTooEarly) ||
			errors.Is(err, consensus.ErrTransferInProgress)
		if !transient || time.Now().After(deadline) {
			return res, err
		}
		if err := s.pause(ctx); err != nil {
			return res, err
		}
	}
}

func (s *Server) change(ctx context.Context, what string, cc consensus.ConfChange) (*api.MemberChangeResponse, error) {
	res, err := s.proposeConf(ctx, cc)
	if err != nil {
		return nil, confError(what, err)
	}
	m, ok := res.Config.Member(cc.ID)
	if !ok {
		m = consensus.ConfMember{ID: cc.ID}
	}
	s.logger.Info("membership changed", "change", res.Change.String(), "config", res.Config.String())
	return &api.MemberChangeResponse{Member: memberStatus(m), Members: memberList(res.Config)}, nil
}

func (s *Server) onLeaderTransfer(ctx context.Context, req *api.LeaderTransferRequest) (*api.LeaderTransferResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	to := consensus.None
	if req.To != "" {
		m, err := s.lookup(req.To)
		if err != nil {
			return nil, err
		}
		if m.Learner {
			return nil, api.Errorf(api.CodeInvalid, "member %s is a learner: only voters can lead; promote it first", m.Name)
		}
		to = m.ID
	}
	return onLeader(ctx, s, api.MethodLeaderTransfer, req, func(ctx context.Context, _ *api.LeaderTransferRequest) (*api.LeaderTransferResponse, error) {
		if to == s.cfg.ID {
			m, _ := s.Configuration().Member(to)
			_, term := s.node.Leader()
			return &api.LeaderTransferResponse{Leader: memberStatus(m), Term: uint64(term)}, nil
		}
		if err := s.transferTo(ctx, to); err != nil {
			return nil, confError("leadership transfer", err)
		}
		lead, term := s.node.Leader()
		m, _ := s.Configuration().Member(lead)
		return &api.LeaderTransferResponse{Leader: memberStatus(m), Term: uint64(term)}, nil
	})
}

// transferTo hands leadership to voter to, or (None) to the voter that
// answered recently with the longest log.
func (s *Server) transferTo(ctx context.Context, to consensus.NodeID) error {
	if to == consensus.None {
		to = s.bestVoter()
		if to == consensus.None {
			return api.Errorf(api.CodeInvalid, "no other voter answered recently: nobody to hand leadership to")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.maxElection())
	defer cancel()
	return s.node.TransferLeadership(ctx, to)
}

func (s *Server) bestVoter() consensus.NodeID {
	st := s.node.Status()
	var best consensus.NodeID
	var bestMatch consensus.Index
	for id, pr := range st.Progress {
		if id != s.cfg.ID && !pr.Learner && pr.RecentActive && (best == consensus.None || pr.Match > bestMatch) {
			if m, ok := st.Config.Member(id); ok && !m.Learner {
				best, bestMatch = id, pr.Match
			}
		}
	}
	return best
}
