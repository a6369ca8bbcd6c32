package server

import (
	"context"
	"time"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/fsm"
	"github.com/lockd/lockd/session"
)

// maxLeaderProposals bounds the expiry, checkpoint and tick proposals the
// leader loop has in flight; ids it could not propose come back from the
// tracker after its retry time.
const maxLeaderProposals = 4

// leaderLoop ("server.leader") carries out the leader's session duties
// every tick: promote the tracker after an election, observe stalls,
// propose expiries (after confirming leadership), checkpoints, and ticks
// that end lock-delays.
func (s *Server) leaderLoop() {
	defer s.wg.Done()
	ticker := time.NewTicker(s.cfg.TickInterval)
	defer ticker.Stop()
	slots := make(chan struct{}, maxLeaderProposals)
	var lastTick int64
	for {
		select {
		case <-s.stop:
			return
		case <-ticker.C:
		}
		s.checkRemoved()
		lead, term := s.node.Leader()
		if lead != s.cfg.ID {
			s.demote()
			continue
		}
		if s.promotedTerm() != term {
			s.promote(term)
			continue
		}
		now := s.cfg.Now()
		s.leaseMu.Lock()
		stall := s.tracker.Observe(now)
		expired := s.tracker.Expired(now)
		checkpoints := s.tracker.Checkpoints(now)
		s.leaseMu.Unlock()
		if stall > 0 {
			s.logger.Warn("leader stalled: deadlines extended so no live session expires for it", "term", term, "stall", stall)
		}
		if len(expired) > 0 {
			s.spawn(slots, func(ctx context.Context) { s.proposeExpiry(ctx, term, expired) })
		}
		if len(checkpoints) > 0 {
			ds := make([]fsm.SessionDeadline, len(checkpoints))
			for i, c := range checkpoints {
				ds[i] = fsm.SessionDeadline{ID: c.ID, ExpiresAt: c.ExpiresAt}
			}
			s.spawn(slots, func(ctx context.Context) {
				s.proposeQuietly(ctx, &fsm.Command{Kind: fsm.KindSessionCheckpoint, SessionCheckpoint: &fsm.SessionCheckpoint{Deadlines: ds}}, "checkpoint")
			})
		}
		if at, ok := s.fsm.NextWakeup(); ok && now.UnixNano() >= at && at != lastTick {
			// A lock-delay ended: an entry with a time past it lets every
			// replica grant the waiters.
			lastTick = at
			s.spawn(slots, func(ctx context.Context) {
				s.proposeQuietly(ctx, &fsm.Command{Kind: fsm.KindTick}, "lock-delay tick")
			})
		}
	}
}

// spawn runs a leader proposal in the background if a slot is free.
func (s *Server) spawn(slots chan struct{}, f func(ctx context.Context)) {
	select {
	case slots <- struct{}{}:
	default:
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-slots }()
		ctx, cancel := s.untilStop(s.cfg.LeaderWait)
		defer cancel()
		f(ctx)
	}()
}

// untilStop returns a context that ends after d or when the server
// stops, whichever is first: for the server's own background calls,
// which Close must not wait out.
func (s *Server) untilStop(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (s *Server) promotedTerm() consensus.Term {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	return s.promoted
}

func (s *Server) demote() {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if s.promoted != 0 {
		s.logger.Info("no longer leader: dropping session deadlines", "term", s.promoted, "sessions", s.tracker.Len())
		s.tracker.Demote()
		s.promoted = 0
	}
}

// promote loads every session into the tracker once this leader has
// applied all entries of earlier terms (its first ReadIndex returns after
// its no-op commits and applies).
func (s *Server) promote(term consensus.Term) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LeaderWait)
	defer cancel()
	if _, err := s.node.ReadIndex(ctx); err != nil {
		s.logger.Debug("leader not ready to take over sessions yet", "term", term, "error", err)
		return
	}
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if lead, t := s.node.Leader(); lead != s.cfg.ID || t != term {
		return
	}
	infos := s.fsm.Sessions()
	leases := make([]session.Lease, len(infos))
	for i, in := range infos {
		leases[i] = session.Lease{ID: in.ID, TTL: time.Duration(in.TTL), ExpiresAt: in.ExpiresAt}
	}
	s.tracker.Promote(s.cfg.Now(), leases)
	s.promoted = term
	s.logger.Info("leader took over session deadlines", "term", term, "sessions", len(leases), "applied", s.fsm.Applied())
}

// proposeExpiry expires sessions whose deadline passed, after confirming
// this node still leads: a leader that stalled and was replaced must not
// expire sessions whose keepalives went to its successor (etcd#15247).
func (s *Server) proposeExpiry(ctx context.Context, term consensus.Term, ids []session.ID) {
	if _, err := s.node.ReadIndex(ctx); err != nil {
		s.logger.Warn("not expiring sessions: leadership not confirmed", "term", term, "sessions", len(ids), "error", err)
		return
	}
	if _, t := s.node.Leader(); t != term {
		return
	}
	res, err := s.writeEncodedLocal(ctx, &fsm.Command{Kind: fsm.KindSessionExpire, SessionExpire: &fsm.SessionExpire{IDs: ids}})
	if err != nil {
		s.logger.Warn("proposing session expiry failed; will retry", "term", term, "sessions", len(ids), "error", err)
		return
	}
	for _, id := range res.Ended {
		s.logger.Info("session expired", "session", id.String(), "term", term, "index", s.fsm.Applied())
	}
}

func (s *Server) proposeQuietly(ctx context.Context, cmd *fsm.Command, what string) {
	if _, err := s.writeEncodedLocal(ctx, cmd); err != nil {
		s.logger.Debug("leader proposal failed; will retry", "what", what, "error", err)
	}
}

// writeEncodedLocal proposes on this node only: leader duties are never
// forwarded (a follower must not expire anything).
func (s *Server) writeEncodedLocal(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	data, err := s.codec.Encode(cmd)
	if err != nil {
		return nil, err
	}
	v, err := s.node.ProposeOwned(ctx, data)
	if err != nil {
		return nil, err
	}
	return v.(*fsm.Result), nil
}
