package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/session"
)

// Resource is the simulated protected resource of the lock workload: a
// counter that lock holders increment by read-modify-write. It fences:
// every access (read or write) carries the holder's token, an access with
// a token lower than the highest seen is refused, and an accepted access
// raises the highest. Fencing reads too is what makes the increment safe
// against a holder that was paused between its read and its write.
//
// What it checks: an accepted write must build on the value now stored
// (value = stored + 1). A write that does not is a lost update, which can
// only happen if two holders passed the fence with the same token or with
// tokens the cluster handed out out of order.
type Resource struct {
	mu          sync.Mutex // protects the fields below
	highest     uint64
	value       int
	accepted    int
	rejected    int
	lostUpdates []string
}

// Read returns the counter if token is not stale.
func (r *Resource) Read(token uint64) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if token < r.highest {
		r.rejected++
		return 0, false
	}
	r.highest = token
	return r.value, true
}

// Write stores value if token is not stale.
func (r *Resource) Write(token uint64, value int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if token < r.highest {
		r.rejected++
		return false
	}
	r.highest = token
	if value != r.value+1 {
		r.lostUpdates = append(r.lostUpdates, fmt.Sprintf("token %d wrote %d over %d: an increment was lost", token, value, r.value))
	}
	r.value = value
	r.accepted++
	return true
}

// Stats returns the counters.
func (r *Resource) Stats() (accepted, rejected int, lost []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted, r.rejected, append([]string(nil), r.lostUpdates...)
}

// grantRecord is one successful Lock call.
type grantRecord struct {
	worker    int
	session   session.ID
	token     uint64
	call, ret int64 // the Lock call's invocation and return (history clock)
	// released: the Unlock of this grant succeeded. A grant whose Unlock
	// failed stays with the session, and the session's next Lock of the
	// same lock gets that same grant back (same token): not a double grant.
	released bool
}

// LockWorkload runs workers that take one exclusive lock in turn and
// increment the Resource under it, and a monitor that reads the lock's
// holders from the cluster.
type LockWorkload struct {
	Name string
	Res  *Resource
	Hist *History // the clock only

	mu     sync.Mutex // protects grants, views, errs
	grants []grantRecord
	// views are the monitor's linearizable reads: holders' tokens.
	views     []lockView
	anomalies []string
	sessions  int
}

type lockView struct {
	call, ret int64
	tokens    []uint64
}

func NewLockWorkload(name string, h *History) *LockWorkload {
	return &LockWorkload{Name: name, Res: &Resource{}, Hist: h}
}

func (w *LockWorkload) anomaly(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.anomalies = append(w.anomalies, fmt.Sprintf(format, args...))
}

// Run is one worker: sessions with ttl, at most maxRounds lock rounds,
// until ctx ends.
func (w *LockWorkload) Run(ctx context.Context, id int, cl *client.Client, seed uint64, maxRounds int, ttl time.Duration) {
	rng := rand.New(rand.NewPCG(seed, uint64(1000+id)))
	var s *client.Session
	defer func() {
		if s != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.Close(cctx)
			cancel()
		}
	}()
	for round := 0; round < maxRounds && ctx.Err() == nil; round++ {
		if s == nil || s.Err() != nil {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ns, err := cl.NewSession(sctx, client.WithTTL(ttl), client.WithLockDelay(0))
			cancel()
			if err != nil {
				sleepCtx(ctx, 50*time.Millisecond)
				continue
			}
			s = ns
			w.mu.Lock()
			w.sessions++
			w.mu.Unlock()
		}
		m := s.Mutex(w.Name)
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		call := w.Hist.Now()
		err := m.Lock(lctx)
		ret := w.Hist.Now()
		cancel()
		if err != nil {
			continue
		}
		tok := m.Token()
		w.mu.Lock()
		w.grants = append(w.grants, grantRecord{worker: id, session: s.ID(), token: tok, call: call, ret: ret})
		gi := len(w.grants) - 1
		w.mu.Unlock()
	work:
		for k := 0; k < 3; k++ {
			select {
			case <-m.Lost(): // the client knows it lost the grant: stop acting as holder
				break work
			default:
			}
			v, ok := w.Res.Read(tok)
			if !ok {
				break
			}
			sleepCtx(ctx, time.Duration(2+rng.IntN(10))*time.Millisecond) // the work
			if !w.Res.Write(tok, v+1) {
				break
			}
		}
		// An Unlock that fails leaves the grant to the session's end.
		uctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if m.Unlock(uctx) == nil {
			w.mu.Lock()
			w.grants[gi].released = true
			w.mu.Unlock()
		}
		cancel()
		sleepCtx(ctx, time.Duration(rng.IntN(20))*time.Millisecond)
	}
}

// Monitor reads the lock's holders (linearizable reads) every interval
// until ctx ends: an exclusive lock must never show two holders.
func (w *LockWorkload) Monitor(ctx context.Context, cl *client.Client, interval time.Duration) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		call := w.Hist.Now()
		resp, err := cl.Locks(rctx, w.Name)
		ret := w.Hist.Now()
		cancel()
		if err == nil {
			var toks []uint64
			for _, l := range resp.Locks {
				if l.Name != w.Name {
					continue
				}
				for _, g := range l.Holders {
					toks = append(toks, g.Token)
				}
			}
			if len(toks) > 1 {
				w.anomaly("the cluster shows %d holders of exclusive lock %s at once: tokens %v", len(toks), w.Name, toks)
			}
			w.mu.Lock()
			w.views = append(w.views, lockView{call: call, ret: ret, tokens: toks})
			w.mu.Unlock()
		}
		sleepCtx(ctx, interval)
	}
}

// Check returns the anomalies: two holders seen at once, a token handed
// to two grants, tokens out of real-time order (a grant that returned
// before another was asked for must have the lower token), holders seen
// going back in time, and lost updates at the resource.
func (w *LockWorkload) Check() (anomalies []string, grants int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	anomalies = append(anomalies, w.anomalies...)
	byToken := map[uint64]grantRecord{}
	for _, g := range w.grants {
		if o, ok := byToken[g.token]; ok && (o.session != g.session || o.released) {
			anomalies = append(anomalies, fmt.Sprintf("token %d granted twice: to worker %d (session %v, released %v) and worker %d (session %v)",
				g.token, o.worker, o.session, o.released, g.worker, g.session))
		}
		byToken[g.token] = g
	}
	gs := append([]grantRecord(nil), w.grants...)
	sort.Slice(gs, func(i, j int) bool { return gs[i].ret < gs[j].ret })
	for i := range gs {
		for j := i + 1; j < len(gs); j++ {
			if gs[i].ret < gs[j].call && gs[i].token > gs[j].token {
				anomalies = append(anomalies, fmt.Sprintf("token order: worker %d's grant %d returned before worker %d asked, yet got %d", gs[i].worker, gs[i].token, gs[j].worker, gs[j].token))
			}
		}
	}
	// A linearizable read that starts after another returned cannot see
	// an older holder.
	maxTok := func(v lockView) uint64 {
		var m uint64
		for _, t := range v.tokens {
			m = max(m, t)
		}
		return m
	}
	var highestDone uint64
	var doneAt int64 = -1
	vs := append([]lockView(nil), w.views...)
	sort.Slice(vs, func(i, j int) bool { return vs[i].call < vs[j].call })
	// Views are sequential (one monitor), so compare neighbours.
	for i := 1; i < len(vs); i++ {
		prev, cur := vs[i-1], vs[i]
		if prev.ret <= cur.call {
			highestDone, doneAt = max(highestDone, maxTok(prev)), prev.ret
		}
		if mt := maxTok(cur); mt != 0 && mt < highestDone {
			anomalies = append(anomalies, fmt.Sprintf("lock monitor went back in time: holder %d seen after holder %d (read done at %v)", mt, highestDone, time.Duration(doneAt)))
		}
	}
	_, _, lost := w.Res.Stats()
	anomalies = append(anomalies, lost...)
	return anomalies, len(w.grants)
}

// WatchRecorder follows prefix through one client from a start revision
// and keeps every event.
type WatchRecorder struct {
	id     int
	mu     sync.Mutex // protects events, err
	events []api.Event
	err    error
}

// Watch starts recording from revision from; the goroutine ends with ctx.
func Watch(ctx context.Context, wg *sync.WaitGroup, id int, cl *client.Client, prefix string, from int64) *WatchRecorder {
	r := &WatchRecorder{id: id}
	ch := cl.Watch(ctx, prefix, client.WithPrefix(), client.WithRevision(from))
	wg.Add(1)
	go func() { // watch reader: ends when the watch's channel closes
		defer wg.Done()
		for resp := range ch {
			r.mu.Lock()
			r.events = append(r.events, resp.Events...)
			if resp.Err != nil {
				r.err = resp.Err
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// Sees reports whether an event for key has arrived.
func (r *WatchRecorder) Sees(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.KV.Key == key {
			return true
		}
	}
	return false
}

// CheckWatchers: each watcher saw revisions in strictly increasing order
// (one put per revision here), never one twice, every acknowledged write
// exactly once, and all watchers saw the same sequence.
func CheckWatchers(ws []*WatchRecorder, acked map[int64]string, upTo int64) (anomalies []string, events int) {
	var ref []string
	for _, w := range ws {
		w.mu.Lock()
		evs := append([]api.Event(nil), w.events...)
		werr := w.err
		w.mu.Unlock()
		if werr != nil {
			anomalies = append(anomalies, fmt.Sprintf("watcher %d stopped: %v", w.id, werr))
		}
		seen := map[int64]string{}
		var seq []string
		var last int64
		for _, e := range evs {
			if e.Revision > upTo {
				continue
			}
			events++
			if e.Revision <= last {
				anomalies = append(anomalies, fmt.Sprintf("watcher %d: revision %d (%s) after %d: out of order or repeated", w.id, e.Revision, e.KV.Key, last))
			}
			last = e.Revision
			s := e.KV.Key + "=" + string(e.KV.Value)
			if _, dup := seen[e.Revision]; dup {
				anomalies = append(anomalies, fmt.Sprintf("watcher %d: revision %d delivered twice", w.id, e.Revision))
			}
			seen[e.Revision] = s
			seq = append(seq, fmt.Sprintf("%d:%s", e.Revision, s))
		}
		for rev, want := range acked {
			if rev > upTo {
				continue
			}
			if got, ok := seen[rev]; !ok || got != want {
				anomalies = append(anomalies, fmt.Sprintf("watcher %d: acknowledged write %s at revision %d not delivered (got %q)", w.id, want, rev, got))
			}
		}
		if ref == nil {
			ref = seq
		} else if fmt.Sprint(ref) != fmt.Sprint(seq) {
			anomalies = append(anomalies, fmt.Sprintf("watcher %d saw %d events, watcher %d saw %d different ones", ws[0].id, len(ref), w.id, len(seq)))
		}
	}
	return anomalies, events
}

// SessionKeeper holds one session through the faults: its client keeps
// sending keepalives, so it must never end.
type SessionKeeper struct {
	s    *client.Session
	lost chan struct{}
}

// KeepSession creates a session with ttl through cl.
func KeepSession(ctx context.Context, cl *client.Client, ttl time.Duration) (*SessionKeeper, error) {
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := cl.NewSession(sctx, client.WithTTL(ttl), client.WithName("keeper"))
	if err != nil {
		return nil, fmt.Errorf("creating the kept session: %w", err)
	}
	return &SessionKeeper{s: s}, nil
}

// Check: the session is alive on the client and the server knows it.
func (k *SessionKeeper) Check(ctx context.Context, control *client.Client) []string {
	var out []string
	if err := k.s.Err(); err != nil {
		out = append(out, fmt.Sprintf("a session kept alive by its client ended during the faults: %v", err))
	}
	if _, err := control.SessionInfo(ctx, k.s.ID()); err != nil {
		out = append(out, fmt.Sprintf("the cluster no longer knows the kept session %v: %v", k.s.ID(), err))
	}
	return out
}
