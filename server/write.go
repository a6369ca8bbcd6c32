package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/fsm"
	"github.com/lockd/lockd/rpc"
)

// Internal methods, served on the peer listener only.
const (
	// methodForwardPropose carries an encoded command from a follower to
	// the leader, which proposes it and answers with the fsm result.
	methodForwardPropose rpc.Method = 200
	// methodForwardKeepalive carries a keepalive to the leader, which
	// holds the deadlines.
	methodForwardKeepalive rpc.Method = 201
)

type forwardRequest struct {
	Data []byte `codec:"d"`
}

type forwardResponse struct {
	Result *fsm.Result `codec:"r"`
}

// peerClients holds one rpc client per peer, for forwarding.
type peerClients struct {
	mu      sync.Mutex
	clients map[consensus.NodeID]*rpc.Client
	addrs   map[consensus.NodeID]string
	cfg     rpc.ClientConfig
}

func newPeerClients(clusterID, name string, addrs map[consensus.NodeID]string, table *rpc.ErrorTable) *peerClients {
	return &peerClients{
		clients: map[consensus.NodeID]*rpc.Client{}, addrs: addrs,
		cfg: rpc.ClientConfig{ClusterID: clusterID, Name: name + " (forwarding)", Errors: table, PoolSize: 1,
			BackoffMin: 20 * time.Millisecond, BackoffMax: 500 * time.Millisecond},
	}
}

func (p *peerClients) get(id consensus.NodeID) (*rpc.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[id]; ok {
		return c, nil
	}
	addr, ok := p.addrs[id]
	if !ok {
		return nil, fmt.Errorf("leader %d has no known peer address", id)
	}
	c, err := rpc.NewClient(addr, p.cfg)
	if err != nil {
		return nil, err
	}
	p.clients[id] = c
	return c, nil
}

// setAddrs replaces the address book; clients of peers whose address
// changed are closed. A client of a peer that left stays until close: a
// call forwarded to it may be the very removal that made it leave, and
// its answer is still on the way.
func (p *peerClients) setAddrs(addrs map[consensus.NodeID]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.clients {
		if a, ok := addrs[id]; ok && a != p.addrs[id] {
			_ = c.Close()
			delete(p.clients, id)
		}
	}
	p.addrs = addrs
}

func (p *peerClients) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.clients {
		_ = c.Close()
		delete(p.clients, id)
	}
}

// unavailable is the error of a call that found no leader in time.
func (s *Server) unavailable(what string) error {
	_, term := s.node.Leader()
	return api.Errorf(api.CodeUnavailable, "%s: no leader reachable within %v (term %d); an election may be under way, retry", what, s.cfg.LeaderWait, term)
}

// retryable reports errors after which a write may be tried again (at the
// leader, or after an election): the command was not applied, or it
// carries an exactly-once sequence the fsm will deduplicate.
func retryable(err error) bool {
	return errors.Is(err, consensus.ErrNotLeader) || errors.Is(err, consensus.ErrProposalLost) ||
		errors.Is(err, consensus.ErrTransferInProgress) || errors.Is(err, consensus.ErrReadDropped) ||
		errors.Is(err, api.ErrUnavailable) || errors.Is(err, rpc.ErrUnavailable) ||
		errors.Is(err, rpc.ErrConnClosed) || errors.Is(err, rpc.ErrShuttingDown)
}

// write proposes cmd through the leader and returns the fsm's result: at
// once if this node leads, else by forwarding to the leader; during an
// election it waits up to LeaderWait for one. The command's own failure
// is res.Err.
func (s *Server) write(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	data, err := s.codec.Encode(cmd)
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "%v", err)
	}
	return s.writeEncoded(ctx, data, true, true)
}

// writeEncoded proposes data (owned: nothing else holds it, so the entry
// may keep it without a copy) here or at the leader.
func (s *Server) writeEncoded(ctx context.Context, data []byte, mayForward, owned bool) (*fsm.Result, error) {
	var lastErr error
	deadline := time.Now().Add(s.cfg.LeaderWait)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%w (last error: %v)", s.unavailable("write"), lastErr)
			}
			if err := s.pause(ctx); err != nil {
				return nil, err
			}
		}
		lead, _ := s.node.Leader()
		switch {
		case lead == s.cfg.ID:
			propose := s.node.Propose
			if owned {
				propose = s.node.ProposeOwned
			}
			v, err := propose(ctx, data)
			if err == nil {
				return v.(*fsm.Result), nil
			}
			if !retryable(err) {
				return nil, err
			}
			lastErr = err
		case lead == consensus.None:
			lastErr = errors.New("no leader known")
		case !mayForward:
			// A forwarded call reached a node that is no longer leader:
			// let the forwarder find the new one rather than bounce.
			return nil, s.unavailable("forwarded write")
		default:
			c, err := s.peers.get(lead)
			if err != nil {
				lastErr = err
				continue
			}
			var resp forwardResponse
			err = c.Call(ctx, methodForwardPropose, &forwardRequest{Data: data}, &resp)
			if err == nil && resp.Result != nil {
				return resp.Result, nil
			}
			if err == nil {
				err = errors.New("leader answered without a result")
			}
			if !retryable(err) {
				return nil, fmt.Errorf("forwarding to leader %d: %w", lead, err)
			}
			lastErr = err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// pause waits one tick between attempts.
func (s *Server) pause(ctx context.Context) error {
	t := time.NewTimer(s.cfg.TickInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop:
		return api.Errorf(api.CodeUnavailable, "node %s is shutting down; retry on another node", s.cfg.Name)
	case <-t.C:
		return nil
	}
}

// readBarrier makes a read linearizable: it returns once this node has
// applied everything committed before the call, as confirmed by the
// leader (ReadIndex). It waits up to LeaderWait through elections.
func (s *Server) readBarrier(ctx context.Context) error {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if time.Now().After(deadline) {
				return fmt.Errorf("%w (last error: %v)", s.unavailable("linearizable read"), lastErr)
			}
			if err := s.pause(ctx); err != nil {
				return err
			}
		}
		if lead, _ := s.node.Leader(); lead == consensus.None {
			lastErr = errors.New("no leader known")
			continue
		}
		_, err := s.node.ReadIndex(ctx)
		if err == nil {
			return nil
		}
		if !retryable(err) {
			return err
		}
		lastErr = err
	}
}

// readInfo describes where a read was served.
func (s *Server) readInfo(stale bool) api.ReadInfo {
	st := s.fsm.Stats()
	ri := api.ReadInfo{Index: st.Index, Revision: st.Revision, Stale: stale, Node: s.cfg.Name}
	if stale {
		ri.LeaderContactAge = int64(time.Duration(s.node.Status().SinceLeaderContact) * s.cfg.TickInterval)
	}
	return ri
}

// read runs the barrier unless the caller asked for a stale read.
func (s *Server) read(ctx context.Context, h api.ReadHeader) error {
	if h.Stale {
		return nil
	}
	return s.readBarrier(ctx)
}

// resultErr turns a command's own failure into the handler's error.
func resultErr(res *fsm.Result) error {
	if res.Err != nil {
		return res.Err
	}
	return nil
}
