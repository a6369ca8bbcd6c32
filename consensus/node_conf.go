package consensus

import (
	"context"
	"fmt"
)

// ConfChangeResult is the outcome of a committed membership change.
type ConfChangeResult struct {
	// Change is the change as carried out (with the id the leader gave a
	// new member); Config the configuration it led to; Index its entry.
	Change ConfChange
	Config Configuration
	Index  Index
}

// maxPendingConfChanges bounds ProposeConfChange calls queued for the
// loop; the core takes one change at a time anyway.
const maxPendingConfChanges = 16

// ProposeConfChange asks this node, which must be the leader, for one
// membership change and waits until it is committed and applied here. It
// refuses at once, saying why, if the change is not possible now: another
// change is in progress (ErrConfChangeInProgress), this leader has not
// committed an entry of its term yet (ErrConfChangeTooEarly), the last
// voter would go (ErrRemoveLastVoter), the voters heard from recently
// would not make a majority afterwards (ErrQuorumLoss), the member exists
// or does not (ErrMemberExists, ErrUnknownNode, ErrNotLearner). A
// *NotLeaderError means nothing was proposed; ErrOutcomeUnknown that the
// change may still commit.
func (n *Node) ProposeConfChange(ctx context.Context, cc ConfChange) (ConfChangeResult, error) {
	if err := ctx.Err(); err != nil {
		return ConfChangeResult{}, fmt.Errorf("not proposed: %w", err)
	}
	select {
	case n.propSlots <- struct{}{}:
	default:
		return ConfChangeResult{}, fmt.Errorf("%w: %d proposals pending (the limit); retry later", ErrOverloaded, cap(n.propSlots))
	}
	p := &proposal{ctx: ctx, conf: &cc, result: make(chan proposeResult, 1)}
	select {
	case n.confc <- p:
	case <-ctx.Done():
		<-n.propSlots
		return ConfChangeResult{}, fmt.Errorf("not proposed: %w", ctx.Err())
	case <-n.done:
		<-n.propSlots
		return ConfChangeResult{}, n.stoppedErr()
	}
	var res proposeResult
	select {
	case res = <-p.result:
	case <-ctx.Done():
		return ConfChangeResult{}, fmt.Errorf("%w: stopped waiting for the membership change %s: %w", ErrOutcomeUnknown, cc, ctx.Err())
	case <-n.done:
		select {
		case res = <-p.result:
		default:
			return ConfChangeResult{}, n.stoppedErr()
		}
	}
	if res.err != nil {
		return ConfChangeResult{}, res.err
	}
	out, ok := res.value.(ConfChangeResult)
	if !ok {
		return ConfChangeResult{}, fmt.Errorf("membership change %s: entry applied without a configuration", cc)
	}
	return out, nil
}

// startConfChange hands a queued change to the core (on the loop).
func (n *Node) startConfChange(p *proposal) {
	if p.ctx.Err() != nil {
		<-n.propSlots
		return
	}
	index, term, _, _, err := n.core.ProposeConfChange(n.cfg.Now().UnixNano(), *p.conf)
	if err != nil {
		n.settleProposal(p, nil, fmt.Errorf("membership change %s: %w", *p.conf, n.withLeaderAddr(err)))
		return
	}
	p.index, p.term = index, term
	n.proposals[index] = append(n.proposals[index], p)
}

// onConfig records a new configuration in use: peer addresses for
// redirects, and the driver's hook (the server's transport).
func (n *Node) onConfig(c Configuration) {
	for _, m := range c.Members {
		if m.ID != n.id && m.Addr != "" {
			n.cfg.PeerAddrs[m.ID] = m.Addr
		}
	}
	n.logger.Info("configuration in use", "id", n.id, "config", c.String(), "voters", c.Voters(), "learners", c.Learners())
	if n.cfg.OnConfigChange != nil {
		n.cfg.OnConfigChange(c)
	}
}
