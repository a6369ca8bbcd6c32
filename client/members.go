package client

import (
	"context"
	"fmt"

	"github.com/lockd/lockd/api"
)

// Membership calls for operators (lockctl member ..., lockctl leader
// transfer, lockd --join). Any node takes them and hands them to the
// leader; each returns once the change is committed. The leader refuses,
// with an error that says what to do (api.ErrInvalid), a change while
// another is in progress, one before it has committed an entry of its
// term, removing the last voter, a change after which the voters that
// answer would not make a majority, and adding a member whose peer
// address it cannot connect to.

// MemberAdd adds a member called name whose peer port is peerAddr. It
// joins as a learner (it receives the log but does not vote); unless
// learner is set, the leader promotes it to voter once it has caught up.
// The answer holds the id the leader gave it (ids are never reused) and
// the members after the change.
func (c *Client) MemberAdd(ctx context.Context, name, peerAddr string, learner bool) (*api.MemberChangeResponse, error) {
	req := &api.MemberAddRequest{Name: name, PeerAddr: peerAddr, Learner: learner}
	resp, err := do[api.MemberChangeResponse](c, ctx, spec{leader: true, method: api.MethodMemberAdd}, req)
	if err != nil {
		return nil, fmt.Errorf("adding member %s (%s): %w", name, peerAddr, err)
	}
	return resp, nil
}

// MemberPromote makes the learner name a voter.
func (c *Client) MemberPromote(ctx context.Context, name string) (*api.MemberChangeResponse, error) {
	resp, err := do[api.MemberChangeResponse](c, ctx, spec{leader: true, method: api.MethodMemberPromote}, &api.MemberPromoteRequest{Name: name})
	if err != nil {
		return nil, fmt.Errorf("promoting member %s: %w", name, err)
	}
	return resp, nil
}

// MemberRemove removes the member name. Removing the leader first hands
// leadership to another voter.
func (c *Client) MemberRemove(ctx context.Context, name string) (*api.MemberChangeResponse, error) {
	resp, err := do[api.MemberChangeResponse](c, ctx, spec{leader: true, method: api.MethodMemberRemove}, &api.MemberRemoveRequest{Name: name})
	if err != nil {
		return nil, fmt.Errorf("removing member %s: %w", name, err)
	}
	return resp, nil
}

// LeaderTransfer hands leadership to the voter to, or, if to is "", to
// the most up-to-date voter, and returns the leader after it.
func (c *Client) LeaderTransfer(ctx context.Context, to string) (*api.LeaderTransferResponse, error) {
	resp, err := do[api.LeaderTransferResponse](c, ctx, spec{method: api.MethodLeaderTransfer, leader: true}, &api.LeaderTransferRequest{To: to})
	if err != nil {
		if to == "" {
			return nil, fmt.Errorf("leadership transfer: %w", err)
		}
		return nil, fmt.Errorf("leadership transfer to %s: %w", to, err)
	}
	return resp, nil
}
