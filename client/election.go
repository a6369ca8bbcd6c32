package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// Election is leader election among sessions, built from two things the
// cluster already guarantees:
//
//   - The lock "election/<name>" (exclusive): candidates queue for it in
//     FIFO order; its holder is the leader, its grant's token the
//     leadership's fencing token (Client.CheckToken on the lock name says
//     whether a leader's token is still current).
//   - The key "election/<name>", written by the leader right after it is
//     granted the lock and bound to its session (ephemeral). Its value is
//     the token as 20 decimal digits, a newline, then the leader's value.
//     Followers read it (Leader) and watch it (Observe).
//
// The session's end releases the lock and deletes the key in the same
// apply, so an expired leader is replaced with no key left behind. A key
// written by a campaign that gave up, landing late, carries a lower token
// than the current holder's; the holder overwrites it (compare-and-set on
// its revision), and a candidate that meets a higher token than its own
// concludes it is no longer the holder. Proclaim and Resign compare on the
// revision of the leader's own last write, so they never touch a key
// written by another leader.
type Election struct {
	h   *handle
	key string

	mu     sync.Mutex // protects modRev
	modRev int64      // revision of our last write of key while leading; 0 if not leading
}

// LeaderInfo describes an election's leader. A zero Token means the
// election has no leader (Observe reports that too).
type LeaderInfo struct {
	Election string
	Value    []byte
	Session  session.ID
	Token    uint64 // the leader's grant of the election's lock
	// Revision is the revision at which this leader's key was last written.
	Revision int64
}

// Vacant reports whether the election has no leader.
func (l LeaderInfo) Vacant() bool { return l.Token == 0 }

// Election returns the election name, campaigned in through this session.
func (s *Session) Election(name string) *Election {
	return &Election{h: newHandle(s, electionKey(name), api.Exclusive, 0), key: electionKey(name)}
}

func electionKey(name string) string { return "election/" + name }

// Name returns the election's name.
func (e *Election) Name() string { return e.key[len("election/"):] }

// Campaign waits (FIFO, behind earlier candidates) until this session
// leads the election or ctx ends, then publishes value. It returns an
// error wrapping ErrSessionLost if the session ended first, never success
// after that. Campaigning while leading just proclaims value.
func (e *Election) Campaign(ctx context.Context, value []byte) error {
	if e.IsLeader() {
		return e.Proclaim(ctx, value)
	}
	if err := e.h.s.c.cfg.Limits.CheckValue(append(encodeLeader(0, nil), value...)); err != nil {
		return err
	}
	if err := e.h.acquire(ctx, true); err != nil {
		return err
	}
	g, ok := e.h.current()
	if !ok {
		return fmt.Errorf("election %q: %w", e.Name(), e.h.s.Err())
	}
	rev, err := e.claim(ctx, g.Token, value)
	if err != nil {
		// Give the lock back so the next candidate is not held up by a
		// leader that never published itself.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.h.s.c.cfg.RequestTimeout)
		defer cancel()
		_ = e.h.release(cctx)
		return fmt.Errorf("election %q: publishing the leader after being granted token %d: %w", e.Name(), g.Token, err)
	}
	e.mu.Lock()
	e.modRev = rev
	e.mu.Unlock()
	return nil
}

// claim writes the leader key for token, replacing only a key with a lower
// (stale) or equal (our own) token; it returns the write's revision.
func (e *Election) claim(ctx context.Context, token uint64, value []byte) (int64, error) {
	kv, s := e.h.s.c.KV(), e.h.s
	put := OpPutLease(e.key, encodeLeader(token, value), s)
	resp, err := kv.Txn(ctx, Txn{If: []api.Compare{KeyMissing(e.key)}, Then: []api.Op{put}, Else: []api.Op{OpGet(e.key)}})
	for attempt := 0; attempt < 4; attempt++ {
		if err != nil {
			s.noteErr(err)
			return 0, err
		}
		if resp.Succeeded {
			return resp.Revision, nil
		}
		if len(resp.Ops) != 1 || len(resp.Ops[0].KVs) != 1 {
			// Deleted between the compare and now: try the empty case again.
			resp, err = kv.Txn(ctx, Txn{If: []api.Compare{KeyMissing(e.key)}, Then: []api.Op{put}, Else: []api.Op{OpGet(e.key)}})
			continue
		}
		cur := resp.Ops[0].KVs[0]
		if t, _, derr := decodeLeader(cur.Value); derr == nil && t > token {
			return 0, fmt.Errorf("a newer leader holds token %d > %d: %w", t, token, ErrNotLeader)
		}
		resp, err = kv.Txn(ctx, Txn{If: []api.Compare{CompareModRevision(e.key, api.Equal, cur.ModRevision)},
			Then: []api.Op{put}, Else: []api.Op{OpGet(e.key)}})
	}
	return 0, fmt.Errorf("the leader key kept changing under a granted lock: %w", api.ErrInvalid)
}

// Proclaim changes the leader's value without an election.
func (e *Election) Proclaim(ctx context.Context, value []byte) error {
	g, ok := e.h.current()
	e.mu.Lock()
	rev := e.modRev
	e.mu.Unlock()
	if !ok || rev == 0 {
		return fmt.Errorf("election %q: %w", e.Name(), ErrNotLeader)
	}
	resp, err := e.h.s.c.KV().Txn(ctx, Txn{If: []api.Compare{CompareModRevision(e.key, api.Equal, rev)},
		Then: []api.Op{OpPutLease(e.key, encodeLeader(g.Token, value), e.h.s)}})
	if err != nil {
		e.h.s.noteErr(err)
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("election %q: the leader key changed under us: %w", e.Name(), ErrNotLeader)
	}
	e.mu.Lock()
	e.modRev = resp.Revision
	e.mu.Unlock()
	return nil
}

// Resign gives up leadership: it deletes the leader key (if still ours)
// and releases the lock, so the next candidate in line leads. Resigning
// when not leading does nothing.
func (e *Election) Resign(ctx context.Context) error {
	e.mu.Lock()
	rev := e.modRev
	e.modRev = 0
	e.mu.Unlock()
	if _, ok := e.h.current(); !ok && rev == 0 {
		return nil
	}
	if rev != 0 && e.h.s.Err() == nil {
		_, err := e.h.s.c.KV().Txn(ctx, Txn{If: []api.Compare{CompareModRevision(e.key, api.Equal, rev)},
			Then: []api.Op{OpDelete(e.key)}})
		if err != nil {
			e.h.s.noteErr(err)
			e.mu.Lock()
			e.modRev = rev
			e.mu.Unlock()
			return err
		}
	}
	err := e.h.release(ctx)
	if errors.Is(err, ErrNotLocked) {
		return nil
	}
	return err
}

// IsLeader reports whether this session leads the election as far as the
// client knows.
func (e *Election) IsLeader() bool {
	e.mu.Lock()
	rev := e.modRev
	e.mu.Unlock()
	_, ok := e.h.current()
	return ok && rev != 0
}

// Token returns the leadership's fencing token, 0 if not leading.
func (e *Election) Token() uint64 {
	if !e.IsLeader() {
		return 0
	}
	return e.h.token()
}

// Lost returns a channel closed when this leadership ends (Resign or the
// session's end); closed already if not leading.
func (e *Election) Lost() <-chan struct{} { return e.h.lostChan() }

// Leader returns the election's current leader (linearizable), or
// ErrNoLeader.
func (e *Election) Leader(ctx context.Context) (LeaderInfo, error) {
	li, _, err := e.read(ctx)
	if err == nil && li.Vacant() {
		err = fmt.Errorf("election %q: %w", e.Name(), ErrNoLeader)
	}
	return li, err
}

// read returns the leader (Vacant if none) and the revision read at.
func (e *Election) read(ctx context.Context) (LeaderInfo, int64, error) {
	resp, err := e.h.s.c.KV().Get(ctx, e.key)
	if err != nil {
		return LeaderInfo{}, 0, err
	}
	if resp.KV == nil {
		return LeaderInfo{Election: e.Name()}, resp.Read.Revision, nil
	}
	li, err := e.info(*resp.KV)
	return li, resp.Read.Revision, err
}

func (e *Election) info(kv api.KeyValue) (LeaderInfo, error) {
	token, value, err := decodeLeader(kv.Value)
	if err != nil {
		return LeaderInfo{}, fmt.Errorf("election %q: key %q: %w", e.Name(), e.key, err)
	}
	return LeaderInfo{Election: e.Name(), Value: value, Session: kv.Session, Token: token, Revision: kv.ModRevision}, nil
}

// Observe reports the election's leader now and every change after it, in
// order: a new leader, a new value, or a vacancy (Token 0). It follows
// the leader key with Watch (surviving node failures; if the watch falls
// behind the history it reads the key again and goes on). The channel is
// closed when ctx ends or the client closes.
func (e *Election) Observe(ctx context.Context) <-chan LeaderInfo {
	out := make(chan LeaderInfo, 4)
	c := e.h.s.c
	if !c.goroutine(func() { e.observe(ctx, out) }) {
		close(out)
	}
	return out
}

func (e *Election) observe(ctx context.Context, out chan<- LeaderInfo) {
	defer close(out)
	c := e.h.s.c
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	var last LeaderInfo
	first := true
	emit := func(li LeaderInfo) bool {
		if !first && li.Token == last.Token && li.Session == last.Session && bytes.Equal(li.Value, last.Value) {
			return true
		}
		first, last = false, li
		select {
		case out <- li:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// Each round reads the key, then follows it; a round that ends
	// without delivering anything backs off longer than the last.
	for failures := 0; ctx.Err() == nil; {
		li, rev, err := e.read(ctx)
		if err != nil {
			failures++
			c.logger.Warn("election observe: reading the leader failed; retrying", "election", e.Name(), "error", err)
			if !sleep(ctx, c.backoff(failures)) {
				return
			}
			continue
		}
		if !emit(li) {
			return
		}
		failures++
		for wr := range c.Watch(ctx, e.key, WithRevision(rev+1)) {
			if wr.Err != nil {
				c.logger.Info("election observe: watch ended; reading again", "election", e.Name(), "error", wr.Err)
				break
			}
			failures = 1
			for _, ev := range wr.Events {
				li := LeaderInfo{Election: e.Name()}
				if ev.Type == api.EventPut {
					var derr error
					if li, derr = e.info(ev.KV); derr != nil {
						c.logger.Warn("election observe: undecodable leader key", "election", e.Name(), "error", derr)
						continue
					}
				}
				if !emit(li) {
					return
				}
			}
		}
		if !sleep(ctx, c.backoff(failures)) {
			return
		}
	}
}

// encodeLeader is the leader key's value: the token as 20 digits, '\n',
// the value.
func encodeLeader(token uint64, value []byte) []byte {
	b := make([]byte, 0, 21+len(value))
	b = fmt.Appendf(b, "%020d\n", token)
	return append(b, value...)
}

func decodeLeader(b []byte) (uint64, []byte, error) {
	if len(b) < 21 || b[20] != '\n' {
		return 0, nil, fmt.Errorf("not a leader record (want 20 digits and a newline first): %w", api.ErrInvalid)
	}
	t, err := strconv.ParseUint(string(b[:20]), 10, 64)
	if err != nil || t == 0 {
		return 0, nil, fmt.Errorf("leader record token %q: %w", b[:20], api.ErrInvalid)
	}
	return t, b[21:], nil
}
