package client

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/rpc"
	"github.com/lockd/lockd/session"
)

// keeper keeps every session of one Client alive with batch keepalives.
// When the earliest session is due it sends one call renewing it and
// every other session due within the slack window (the smallest TTL/6
// ahead), so sessions renewed together stay due together: a client with
// 1,000 sessions sends about one call per TTL/3 instead of 1,000. (The
// leader spends most of a keepalive's cost per call, not per session:
// decoding, a leadership confirmation, forwarding.)
//
// It runs one goroutine (joined by Client.Close) while the client has
// sessions, and sends one round at a time; while a round's calls are in
// flight a second goroutine (watchDeadlines, also joined) ends the
// sessions whose deadline passes, so Done never waits for a hung call. Sessions are ordered by when
// they are due, so a client with more than api.MaxKeepaliveBatch sessions
// sends the most urgent first and the rest in the next rounds.
//
// Against a server without the batch method (rpc.ErrUnknownMethod) it
// sends single keepalives, at most keeperSingleConcurrency at a time, and
// tries the batch method again after keeperBatchRetry (a rolling upgrade
// finishes).
type keeper struct {
	c *Client

	wake chan struct{} // cap 1: the set of sessions changed

	mu       sync.Mutex // protects the fields below
	sessions map[*Session]*kaState
	running  bool      // the goroutine runs (or is about to)
	single   time.Time // until then, send single keepalives
	// armed is when the goroutine, asleep, wakes next; zero while it is
	// awake (it looks at every session before it sleeps again). Finding
	// that time takes a pass over all sessions, so add and remove wake the
	// goroutine only when that time changes for the earlier or it must
	// exit: waking it on every change made creating and closing many
	// sessions twice as slow.
	armed time.Time
}

// kaState is one session's schedule; guarded by keeper.mu.
type kaState struct {
	lastOK   time.Time // send time of the last keepalive that succeeded (or of the create)
	next     time.Time // when the next keepalive is due
	failures int       // consecutive failed attempts
}

const (
	// keeperSingleConcurrency bounds the single keepalives in flight in
	// the fallback for servers without the batch method.
	keeperSingleConcurrency = 16
	// keeperBatchRetry: after a server answered the batch method as
	// unknown, how long single keepalives are sent before trying it again.
	keeperBatchRetry = 5 * time.Minute
)

func newKeeper(c *Client) *keeper {
	return &keeper{c: c, wake: make(chan struct{}, 1), sessions: map[*Session]*kaState{}}
}

// add starts keeping s alive; its last successful keepalive (or its
// creation) was sent at lastOK. It fails with ErrClosed once the client
// is closed.
func (k *keeper) add(s *Session, lastOK time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	// Checked under mu: the goroutine's final sweep (closeAll) runs after
	// the client's ctx was cancelled, so a session added past this check
	// is either seen by that sweep or refused here.
	if k.c.ctx.Err() != nil {
		return ErrClosed
	}
	st := &kaState{lastOK: lastOK, next: time.Now().Add(s.TTL() / 3)}
	k.sessions[s] = st
	if !k.running {
		if !k.c.goroutine(k.run) {
			delete(k.sessions, s)
			return ErrClosed
		}
		k.running = true
	}
	if !k.armed.IsZero() && st.wake(s).Before(k.armed) {
		k.poke()
	}
	return nil
}

// remove stops keeping s alive; it is idempotent. No keepalive of s is
// sent after it returns (one already on the way may still arrive).
func (k *keeper) remove(s *Session) {
	k.mu.Lock()
	if _, ok := k.sessions[s]; ok {
		delete(k.sessions, s)
		if len(k.sessions) == 0 {
			k.poke() // the goroutine ends
		}
	}
	k.mu.Unlock()
}

func (k *keeper) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// run is the keeper's goroutine: it returns when the client closes (after
// ending every session as lost) or when no session is left.
func (k *keeper) run() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		k.mu.Lock()
		if len(k.sessions) == 0 {
			k.running = false
			k.mu.Unlock()
			return
		}
		wake := k.nextWake()
		k.armed = wake
		k.mu.Unlock()
		timer.Reset(max(0, time.Until(wake)))
		fired := false
		select {
		case <-k.c.ctx.Done():
			k.closeAll()
			return
		case <-k.wake:
		case <-timer.C:
			fired = true
		}
		k.mu.Lock()
		k.armed = time.Time{}
		k.mu.Unlock()
		if fired {
			k.round()
		}
	}
}

// nextWake is the earliest time a session is due or reaches its deadline.
// Caller holds mu; sessions is not empty.
func (k *keeper) nextWake() time.Time {
	var wake time.Time
	for s, st := range k.sessions {
		if t := st.wake(s); wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	return wake
}

// wake is when s needs the keeper: its next keepalive or its deadline.
func (st *kaState) wake(s *Session) time.Time {
	if d := st.lastOK.Add(s.TTL()); d.Before(st.next) {
		return d
	}
	return st.next
}

// closeAll ends every session as lost with ErrClosed: the client closed.
func (k *keeper) closeAll() {
	k.mu.Lock()
	k.running = false
	ss := make([]*Session, 0, len(k.sessions))
	for s := range k.sessions {
		ss = append(ss, s)
	}
	k.mu.Unlock()
	for _, s := range ss {
		s.lose(ErrClosed)
	}
}

// pending is a session in the round being sent.
type pending struct {
	s    *Session
	sent time.Time
	ttl  time.Duration
	err  error
}

// round sends one batch: the sessions due within the slack window, most
// urgent first. It ends the sessions whose deadline passed, also while
// its calls are in flight (watchDeadlines).
func (k *keeper) round() {
	if k.c.ctx.Err() != nil {
		return // run ends every session
	}
	now := time.Now()
	first := k.expire(now)
	if first.IsZero() {
		return // none left
	}
	var batch []*pending
	k.mu.Lock()
	minTTL := time.Duration(0)
	for s := range k.sessions {
		if ttl := s.TTL(); minTTL == 0 || ttl < minTTL {
			minTTL = ttl
		}
	}
	horizon := now.Add(minTTL / 6)
	due := make([]*Session, 0, len(k.sessions))
	for s, st := range k.sessions {
		// A session added since expire is not expired; one whose deadline
		// passed is not renewed (the watcher ends it).
		if now.Before(st.lastOK.Add(s.TTL())) && !st.next.After(horizon) {
			due = append(due, s)
		}
	}
	slices.SortFunc(due, func(a, b *Session) int { return k.sessions[a].next.Compare(k.sessions[b].next) })
	if len(due) > api.MaxKeepaliveBatch {
		due = due[:api.MaxKeepaliveBatch]
	}
	for _, s := range due {
		batch = append(batch, &pending{s: s})
	}
	single := now.Before(k.single)
	k.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	stop := k.watchDeadlines(first)
	defer stop()
	timeout := min(k.c.cfg.RequestTimeout, max(minTTL/3, keepaliveRetryMax))
	if single {
		k.sendSingles(batch, timeout)
	} else if err := k.sendBatch(batch, timeout); errors.Is(err, rpc.ErrUnknownMethod) {
		k.c.logger.Info("the server has no batch keepalive (an older version); sending one keepalive per session",
			"sessions", len(batch), "retry_batch_in", keeperBatchRetry)
		k.mu.Lock()
		k.single = time.Now().Add(keeperBatchRetry)
		k.mu.Unlock()
		k.sendSingles(batch, timeout)
	}
	// Settled before the watcher stops, so that it never ends a session
	// this round renewed.
	k.settle(batch)
	stop()
}

// expire ends the sessions whose deadline is not after now, and returns
// the earliest deadline of the others (zero if none is left).
func (k *keeper) expire(now time.Time) (next time.Time) {
	type expiry struct {
		s      *Session
		lastOK time.Time
	}
	var expired []expiry
	k.mu.Lock()
	for s, st := range k.sessions {
		switch d := st.lastOK.Add(s.TTL()); {
		case !now.Before(d):
			expired = append(expired, expiry{s, st.lastOK})
		case next.IsZero() || d.Before(next):
			next = d
		}
	}
	k.mu.Unlock()
	for _, e := range expired {
		e.s.lose(fmt.Errorf("%w: the last one that succeeded was sent %v ago; TTL %v", ErrSessionExpired,
			time.Since(e.lastOK).Round(time.Millisecond), e.s.TTL()))
	}
	return next
}

// watchDeadlines ends sessions as their deadlines pass, from first on,
// until the returned func is called (which waits for it). A round's calls
// may take their whole timeout (up to TTL/3; three of them when the
// server lacks the batch method), and the keeper's goroutine, waiting for
// them, cannot close Done meanwhile: without this a holder waiting on
// Lost went on for that long after the cluster could have expired its
// session.
func (k *keeper) watchDeadlines(first time.Time) (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	started := k.c.goroutine(func() {
		defer close(finished)
		timer := time.NewTimer(min(time.Until(first), keepaliveRetryMax))
		defer timer.Stop()
		for {
			select {
			case <-done:
				return
			case <-k.c.ctx.Done():
				return // run ends every session
			case <-timer.C:
			}
			next := k.expire(time.Now())
			if next.IsZero() {
				return
			}
			// A session added meanwhile may have a shorter TTL than any
			// scanned: look again at least every keepaliveRetryMax.
			timer.Reset(min(time.Until(next), keepaliveRetryMax))
		}
	})
	if !started {
		return func() {} // closed: run ends every session
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
		})
	}
}

// sendBatch renews the batch with one call; the call's error, if any,
// becomes every session's.
func (k *keeper) sendBatch(batch []*pending, timeout time.Duration) error {
	req := &api.SessionKeepaliveBatchRequest{IDs: make([]session.ID, len(batch))}
	for i, p := range batch {
		req.IDs[i] = p.s.id
	}
	sent := time.Now()
	resp, err := do[api.SessionKeepaliveBatchResponse](k.c, k.c.ctx, spec{method: api.MethodSessionKeepaliveBatch, leader: true, once: true, timeout: timeout}, req)
	if err == nil && len(resp.Results) != len(batch) {
		err = fmt.Errorf("the server answered a batch keepalive of %d sessions with %d results", len(batch), len(resp.Results))
	}
	for i, p := range batch {
		p.sent = sent
		switch {
		case err != nil:
			p.err = err
		default:
			p.ttl, p.err = time.Duration(resp.Results[i].TTL), resp.Results[i].Err()
		}
	}
	return err
}

// sendSingles renews each session of the batch with its own call, a few
// at a time (servers without the batch method). No call starts once
// timeout has passed since the first: the sessions left out fail this
// round and are retried in the next one, about 50 ms later. Without that
// bound, calls that all hang until their timeout would stretch the round
// to len(batch)/keeperSingleConcurrency timeouts (21 TTLs for 1,024
// sessions), and meanwhile no other session would be renewed and no
// expired session's Done closed.
func (k *keeper) sendSingles(batch []*pending, timeout time.Duration) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, keeperSingleConcurrency)
	stop := time.NewTimer(timeout)
	defer stop.Stop()
	late := false
	for _, p := range batch {
		if !late {
			select {
			case sem <- struct{}{}:
			case <-stop.C:
				late = true
			}
		}
		if late {
			p.err = fmt.Errorf("single keepalive not sent: the round's earlier keepalives took its whole %v; retrying in the next round", timeout)
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p.sent = time.Now()
			resp, err := do[api.SessionKeepaliveResponse](k.c, k.c.ctx, spec{method: api.MethodSessionKeepalive, leader: true, once: true, timeout: timeout},
				&api.SessionKeepaliveRequest{ID: p.s.id})
			p.ttl, p.err = 0, err
			if err == nil {
				p.ttl = time.Duration(resp.TTL)
				// Recorded now, not when the round ends: the round's
				// deadline watcher would otherwise end this session if
				// its old deadline passes while other calls still hang.
				k.renewed(p)
			}
		}()
	}
	wg.Wait()
}

// renewed records that p's keepalive, sent at p.sent, succeeded.
func (k *keeper) renewed(p *pending) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if st := k.sessions[p.s]; st != nil {
		k.renewedLocked(p, st)
	}
}

// renewedLocked moves the session's deadline to p.sent plus its TTL.
// Caller holds mu.
func (k *keeper) renewedLocked(p *pending, st *kaState) {
	if p.ttl > 0 {
		p.s.ttl.Store(int64(p.ttl))
	}
	st.lastOK = p.sent
	p.s.setDeadline(st.lastOK.Add(p.s.TTL()))
}

// settle applies a round's outcomes: renewed sessions are due again in
// TTL/3, sessions the server does not know are lost, and failed ones are
// retried within about 200 ms (the call already moved to the next
// endpoint).
func (k *keeper) settle(batch []*pending) {
	now := time.Now()
	var lost []*pending
	failed, firstErr := 0, error(nil)
	var retryIn time.Duration
	expiresIn := time.Duration(-1)
	retry := map[int]time.Duration{}
	k.mu.Lock()
	for _, p := range batch {
		st := k.sessions[p.s]
		if st == nil {
			continue // closed meanwhile
		}
		switch {
		case p.err == nil:
			k.renewedLocked(p, st)
			st.failures = 0
			st.next = now.Add(p.s.TTL() / 3)
		case errors.Is(p.err, api.ErrSessionNotFound):
			lost = append(lost, p)
		case p.s.ctx.Err() != nil || k.c.ctx.Err() != nil:
			// Closed meanwhile: the client's close or the session's end
			// removes it.
			st.next = now
		default:
			st.failures++
			// One draw per failure count: the sessions of a failed batch
			// stay together for the retry.
			d, ok := retry[st.failures]
			if !ok {
				d = k.c.jitter(min(keepaliveRetryMin<<min(st.failures-1, 8), keepaliveRetryMax))
				retry[st.failures] = d
			}
			st.next = now.Add(d)
			failed++
			if firstErr == nil {
				firstErr, retryIn = p.err, st.next.Sub(now)
			}
			if left := st.lastOK.Add(p.s.TTL()).Sub(now); expiresIn < 0 || left < expiresIn {
				expiresIn = left
			}
		}
	}
	k.mu.Unlock()
	for _, p := range lost {
		p.s.lose(p.err)
	}
	if failed > 0 {
		// One line per round, not per session: a client with 1,000
		// sessions would otherwise log 1,000 lines per failure.
		k.c.logger.Warn("session keepalive failed; retrying", "sessions", failed, "retry_in", retryIn,
			"expires_in", expiresIn.Round(time.Millisecond), "error", firstErr)
	}
}
