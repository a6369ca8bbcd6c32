package consensus

import (
	"fmt"
	"slices"
)

// ProposeConfChange starts a membership change on the leader: it appends
// an EntryConfig holding the new configuration, which takes effect at
// once (§4.1), and returns its index and term, the change as carried out
// (with the id assigned to a new member) and the new configuration. The
// change is done when that entry commits.
//
// Guard rails, each an error saying what to do: not the leader; a
// leadership transfer in progress; another change not yet committed; no
// entry of this leader's term committed yet; removing the last voter; a
// change after which the voters the leader heard from recently would not
// make a majority of the new configuration.
func (r *Raft) ProposeConfChange(now int64, cc ConfChange) (Index, Term, ConfChange, Configuration, error) {
	if r.role != Leader {
		return 0, 0, cc, Configuration{}, &NotLeaderError{Leader: r.lead, Term: r.term}
	}
	if r.leadTransferee != None {
		return 0, 0, cc, Configuration{}, fmt.Errorf("%w: wait until node %d has taken over, then ask it", ErrTransferInProgress, r.leadTransferee)
	}
	if last := r.confs.lastIndex(); last > r.log.committed && r.cfg.breakRule != breakConfChangeOnce {
		return 0, 0, cc, Configuration{}, fmt.Errorf("%w (the configuration entry at index %d is not committed; commit %d): retry once it is",
			ErrConfChangeInProgress, last, r.log.committed)
	}
	if !committedInTerm(r) && r.cfg.breakRule != breakConfTermCommit {
		return 0, 0, cc, Configuration{}, fmt.Errorf("%w (term %d, commit %d): retry in a moment", ErrConfChangeTooEarly, r.term, r.log.committed)
	}
	cur := r.confs.latest()
	cc, next, err := cur.apply(cc)
	if err != nil {
		return 0, 0, cc, Configuration{}, err
	}
	if cc.Type == ConfPromote {
		// A voter that is far behind holds up every commit of the new
		// configuration (the promote entry's own included) until it has
		// caught up, and the change cannot be taken back meanwhile.
		if pr := r.prs[cc.ID]; pr == nil || pr.match+Index(r.cfg.PromoteLag) < r.log.lastIndex() {
			match := Index(0)
			if pr != nil {
				match = pr.match
			}
			return 0, 0, cc, Configuration{}, fmt.Errorf("%w: node %d holds the log up to %d of %d (promotion allows %d behind); retry once it has caught up",
				ErrLearnerBehind, cc.ID, match, r.log.lastIndex(), r.cfg.PromoteLag)
		}
	}
	if err := r.checkQuorumAfter(next); err != nil {
		return 0, 0, cc, Configuration{}, err
	}
	index, _ := r.appendEntries(EntryConfig, now, [][]byte{encodeConfEntry(cc, next)})
	r.confs.entries = append(r.confs.entries, confAt{index: index, change: cc, config: next.Clone()})
	r.applyConf()
	r.logger.Info("membership change proposed", "term", r.term, "index", index, "change", cc.String(), "config", next.String())
	r.bcastPending = true
	// A smaller majority may already hold what was waiting to commit.
	r.maybeCommit()
	r.maybeStepDownRemoved()
	return index, r.term, cc, next.Clone(), nil
}

// checkQuorumAfter refuses a configuration whose voters that answered the
// leader within the last election timeout would not make a majority: the
// cluster would stop committing (and the leader would step down on its
// next CheckQuorum) until the missing voters come back.
func (r *Raft) checkQuorumAfter(next Configuration) error {
	voters := next.Voters()
	active := 0
	var missing []NodeID
	for _, v := range voters {
		if r.recentActive(v) {
			active++
		} else {
			missing = append(missing, v)
		}
	}
	if need := len(voters)/2 + 1; active < need {
		return fmt.Errorf("%w: only %d of the %d voters after it answered recently (need %d; not heard from: %v); bring them back or remove them first",
			ErrQuorumLoss, active, len(voters), need, missing)
	}
	return nil
}

// maybeStepDownRemoved hands leadership over once the entry that removed
// this leader from the voters is committed: until then it went on
// leading (replicating and committing without counting itself,
// dissertation §4.2.2). It tells the most up-to-date voter to campaign at
// once (MsgTimeoutNow) rather than leave the cluster an election timeout
// without a leader.
func (r *Raft) maybeStepDownRemoved() {
	if r.role != Leader || r.isVoter(r.id) || r.confs.lastIndex() > r.log.committed {
		return
	}
	var best NodeID
	var bestMatch Index
	for _, v := range r.voters {
		if pr := r.prs[v]; pr != nil && (best == None || pr.match > bestMatch) {
			best, bestMatch = v, pr.match
		}
	}
	r.logger.Info("removed from the voters and the change is committed: stepping down", "term", r.term,
		"commit", r.log.committed, "handing_over_to", best)
	if best != None && bestMatch == r.log.lastIndex() {
		r.send(Message{Type: MsgTimeoutNow, To: best})
	}
	r.becomeFollower(r.term, None)
}

// maybeAutoPromote promotes one learner added with AutoPromote once it
// has caught up: its match is within PromoteLag of the leader's last
// index and it answered within the last election timeout.
func (r *Raft) maybeAutoPromote() {
	if len(r.learners) == 0 || r.leadTransferee != None || r.confs.lastIndex() > r.log.committed || !committedInTerm(r) {
		return
	}
	c := r.confs.latest()
	for _, id := range r.learners {
		m, _ := c.Member(id)
		pr := r.prs[id]
		if !m.AutoPromote || pr == nil || !r.recentActive(id) || pr.match+Index(r.cfg.PromoteLag) < r.log.lastIndex() {
			continue
		}
		if _, _, _, _, err := r.ProposeConfChange(r.lastTime(), ConfChange{Type: ConfPromote, ID: id}); err != nil {
			r.logger.Debug("automatic promotion not possible yet", "learner", id, "error", err)
			return
		}
		r.logger.Info("learner caught up: promoting it", "term", r.term, "learner", id, "match", pr.match, "last_index", r.log.lastIndex())
		return
	}
}

// promotable reports whether this node may campaign: it is a voter of
// the configuration in use, or that configuration removed it and is not
// known committed while the one before had it as a voter. The second case
// is the dissertation's (§4.2.2): a leader that removed itself and
// crashed before the change committed may hold the only log the
// remaining voters can elect, and the change must still be able to
// commit. Such a candidate asks the voters of its latest configuration
// and does not count its own vote (recordVote); a majority of them
// elects it as it would anyone. Learners never campaign.
func (r *Raft) promotable() bool {
	if r.isVoter(r.id) {
		return true
	}
	last := r.confs.lastIndex()
	if last <= r.log.committed || last == 0 || r.isLearner(r.id) {
		return false
	}
	prev := r.confs.at(last - 1)
	m, ok := prev.Member(r.id)
	return ok && !m.Learner
}

// isLearner reports whether id is a learner of the configuration in use.
func (r *Raft) isLearner(id NodeID) bool {
	_, ok := slices.BinarySearch(r.learners, id)
	return ok
}
