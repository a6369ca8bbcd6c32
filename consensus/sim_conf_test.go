package consensus

import "fmt"

// changeMembership asks a leader (a random one, if stale leaders of older
// terms still think they lead) for one random membership change: add a
// learner (a new machine with an empty disk and a never-used id, promoted
// automatically or not), promote a learner, or remove a member (a learner,
// a voter, or the leader itself). The core refuses what its rules forbid
// (a change in progress, no commit in its term yet, the last voter, a
// quorum that would be lost); the checker runs after every step as always.
func (s *simulation) changeMembership() error {
	var leaders []*simNode
	for _, n := range s.nodes {
		if n.raft != nil && n.raft.role == Leader {
			leaders = append(leaders, n)
		}
	}
	if len(leaders) == 0 {
		return nil
	}
	lead := leaders[s.rng.Intn(len(leaders))]
	r := lead.raft
	c := r.Configuration()
	var cc ConfChange
	switch s.rng.Intn(3) {
	case 0:
		if id := c.nextID(); s.node(id) == nil && len(s.nodes) >= s.opts.maxMachines {
			return nil
		}
		cc = ConfChange{Type: ConfAddLearner, AutoPromote: s.rng.Intn(2) == 0}
	case 1:
		l := c.Learners()
		if len(l) == 0 {
			return nil
		}
		cc = ConfChange{Type: ConfPromote, ID: l[s.rng.Intn(len(l))]}
	case 2:
		cc = ConfChange{Type: ConfRemove, ID: c.Members[s.rng.Intn(len(c.Members))].ID}
	}
	index, _, done, next, err := r.ProposeConfChange(int64(s.now), cc)
	if err != nil {
		s.tracef("node %d refuses membership change %s: %v", lead.id, cc, err)
		return nil
	}
	s.stats.confChanges++
	switch cc.Type {
	case ConfPromote:
		s.stats.promotions++
	case ConfRemove:
		s.stats.removals++
		if cc.ID == lead.id {
			s.stats.leaderRemovals++
		}
	}
	s.tracef("node %d proposes membership change %s at %d (term %d): %v", lead.id, done, index, r.term, next)
	if done.Type == ConfAddLearner {
		if done.ID == None {
			return fmt.Errorf("leader %d added a learner without an id", lead.id)
		}
		if s.node(done.ID) == nil {
			// A new machine, created with the configuration that adds it
			// (lockd --join learns it from the leader). An id whose add
			// was lost to a leader change and is given out again finds
			// its machine still there, with whatever it received.
			s.addMachine(done.ID, next)
			s.tracef("machine %d created", done.ID)
		}
	}
	return s.handleReady(lead)
}
