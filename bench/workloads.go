package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
)

func (r *runner) value() []byte {
	v := make([]byte, r.cfg.ValueSize)
	rng := rand.New(rand.NewPCG(r.cfg.Seed, 0))
	for i := range v {
		v[i] = 'a' + byte(rng.IntN(26))
	}
	return v
}

func (r *runner) rng(w int) *rand.Rand { return rand.New(rand.NewPCG(r.cfg.Seed, uint64(w)+1)) }

// key returns the name of key k of a workload: "bench/WORKLOAD/%08d",
// built without fmt, which took 3 % of the load generator's CPU under the
// 64-way put.
func (r *runner) key(workload string, k int) string {
	var digits [20]byte
	d := strconv.AppendUint(digits[:0], uint64(k), 10)
	b := make([]byte, 0, len("bench/")+len(workload)+1+max(8, len(d)))
	b = append(b, "bench/"...)
	b = append(b, workload...)
	b = append(b, '/')
	for range 8 - len(d) {
		b = append(b, '0')
	}
	return string(append(b, d...))
}

// dropPrefix deletes what a workload wrote (best-effort: a benchmark
// against a shared cluster should not leave its keys behind).
func (r *runner) dropPrefix(workload string) {
	cleanup(r.cfg.OpTimeout, func(ctx context.Context) {
		_, _ = r.clients[0].KV().Delete(ctx, "bench/"+workload+"/", client.WithPrefix())
	})
}

// pacer returns a wait that spaces one worker's operations so that all
// workers together do rate per second (each owns 1/Concurrency of it),
// starting at a random phase; rate 0 does not wait.
func (r *runner) pacer(rng *rand.Rand, rate int) func(ctx context.Context) error {
	if rate <= 0 {
		return func(context.Context) error { return nil }
	}
	interval := time.Duration(float64(time.Second) * float64(r.cfg.Concurrency) / float64(rate))
	next := time.Now().Add(time.Duration(rng.Int64N(int64(interval) + 1)))
	return func(ctx context.Context) error {
		if d := time.Until(next); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		next = next.Add(interval)
		return nil
	}
}

func (r *runner) put(ctx context.Context) (*Result, error) {
	defer r.dropPrefix("put")
	val := r.value()
	return r.loop(ctx, "run", r.cfg.Concurrency, r.runBound(), func(w int) opFunc {
		kv, rng := r.clientOf(w).KV(), r.rng(w)
		pace := r.pacer(rng, r.cfg.PutRate)
		return func(ctx context.Context, _ int64) error {
			if err := pace(ctx); err != nil {
				return err
			}
			_, err := kv.Put(ctx, r.key("put", rng.IntN(r.cfg.Keys)), val)
			return err
		}
	}), nil
}

func (r *runner) get(ctx context.Context) (*Result, error) {
	defer r.dropPrefix("get")
	val := r.value()
	err := r.parallel(ctx, "setup", r.cfg.Keys, max(r.cfg.Concurrency, 16), func(ctx context.Context, i int) error {
		_, err := r.clientOf(i).KV().Put(ctx, r.key("get", i), val)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("writing the %d keys to read: %w", r.cfg.Keys, err)
	}
	var opts []client.OpOption
	if r.cfg.Stale {
		opts = append(opts, client.WithStale())
	}
	return r.loop(ctx, "run", r.cfg.Concurrency, r.runBound(), func(w int) opFunc {
		kv, rng := r.clientOf(w).KV(), r.rng(w)
		return func(ctx context.Context, _ int64) error {
			resp, err := kv.Get(ctx, r.key("get", rng.IntN(r.cfg.Keys)), opts...)
			if err == nil && resp.KV == nil {
				err = errors.New("a prefilled key was not found")
			}
			return err
		}
	}), nil
}

func (r *runner) txn(ctx context.Context) (*Result, error) {
	defer r.dropPrefix("txn")
	val := r.value()
	return r.loop(ctx, "run", r.cfg.Concurrency, r.runBound(), func(w int) opFunc {
		kv, rng := r.clientOf(w).KV(), r.rng(w)
		return func(ctx context.Context, _ int64) error {
			a, b := rng.IntN(r.cfg.Keys), rng.IntN(r.cfg.Keys)
			ka, kb := r.key("txn", a), r.key("txn", b)
			// A compare every key passes (versions are ≥ 0), so each
			// transaction does its two puts: the cost of the compare is
			// measured, not a mix of branches.
			resp, err := kv.Txn(ctx, client.Txn{
				If:   []api.Compare{client.CompareVersion(ka, api.Greater, -1)},
				Then: []api.Op{client.OpPut(ka, val), client.OpPut(kb, val)},
			})
			if err == nil && !resp.Succeeded {
				err = errors.New("transaction compare failed where it cannot")
			}
			return err
		}
	}), nil
}

// sessions creates n sessions spread over the clients (not timed).
func (r *runner) sessions(ctx context.Context, n int, opts ...client.SessionOption) ([]*client.Session, error) {
	return r.sessionsOn(ctx, r.clients, n, opts...)
}

func (r *runner) sessionsOn(ctx context.Context, cs []*client.Client, n int, opts ...client.SessionOption) ([]*client.Session, error) {
	out := make([]*client.Session, n)
	if r.cfg.TTL > 0 {
		opts = append(opts, client.WithTTL(r.cfg.TTL))
	}
	err := r.parallel(ctx, "setup", n, max(r.cfg.Concurrency, 16), func(ctx context.Context, i int) error {
		s, err := cs[i%len(cs)].NewSession(ctx, opts...)
		out[i] = s
		return err
	})
	if err != nil {
		r.closeSessions(out)
		return nil, fmt.Errorf("creating %d sessions: %w", n, err)
	}
	return out, nil
}

// closeSessions destroys the sessions, 64 at a time, each bounded by
// OpTimeout and all by a minute; those not destroyed expire by TTL.
func (r *runner) closeSessions(ss []*client.Session) {
	cleanup(time.Minute, func(ctx context.Context) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, s := range ss {
			if s == nil {
				continue
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				cctx, cancel := context.WithTimeout(ctx, r.cfg.OpTimeout)
				defer cancel()
				if s.Close(cctx) != nil {
					s.Orphan() // the cluster expires it after its TTL
				}
			}()
		}
		wg.Wait()
	})
}

func (r *runner) lock(ctx context.Context) (*Result, error) {
	ss, err := r.sessions(ctx, r.cfg.Concurrency)
	if err != nil {
		return nil, err
	}
	defer r.closeSessions(ss)
	return r.loop(ctx, "run", r.cfg.Concurrency, r.runBound(), func(w int) opFunc {
		m := ss[w].Mutex(fmt.Sprintf("bench/lock/%d", w))
		return func(ctx context.Context, _ int64) error {
			if err := m.Lock(ctx); err != nil {
				return err
			}
			return m.Unlock(ctx)
		}
	}), nil
}

// lockContended has every worker take one lock in turn. The hand-over
// is measured like peerbench measures etcd's: from just before the
// holder's release to the next holder's acquire returning.
func (r *runner) lockContended(ctx context.Context) (*Result, error) {
	ss, err := r.sessions(ctx, r.cfg.Concurrency, client.WithLockDelay(0))
	if err != nil {
		return nil, err
	}
	defer r.closeSessions(ss)
	var (
		mu         sync.Mutex
		lastUnlock time.Time
		handover   Histogram
		holders    atomic.Int32
		violations atomic.Int64
	)
	const name = "bench/lock-contended"
	res := r.loop(ctx, "run", r.cfg.Concurrency, r.runBound(), func(w int) opFunc {
		m := ss[w].Mutex(name)
		return func(ctx context.Context, _ int64) error {
			if err := m.Lock(ctx); err != nil {
				return err
			}
			now := time.Now()
			if holders.Add(1) != 1 {
				violations.Add(1)
			}
			mu.Lock()
			if !lastUnlock.IsZero() {
				handover.Record(now.Sub(lastUnlock))
			}
			holders.Add(-1)
			lastUnlock = time.Now()
			mu.Unlock()
			return m.Unlock(ctx)
		}
	})
	h := handover.Summary()
	res.Handover = &h
	res.Extra = map[string]float64{"violations": float64(violations.Load())}
	return res, nil
}

func (r *runner) sessionChurn(ctx context.Context) (*Result, error) {
	var opts []client.SessionOption
	if r.cfg.TTL > 0 {
		opts = append(opts, client.WithTTL(r.cfg.TTL))
	}
	return r.loop(ctx, "run", r.cfg.Concurrency, r.runBound(), func(w int) opFunc {
		c := r.clientOf(w)
		return func(ctx context.Context, _ int64) error {
			s, err := c.NewSession(ctx, opts...)
			if err != nil {
				return err
			}
			return s.Close(ctx)
		}
	}), nil
}

// sessionsPerHolder is how many sessions the keepalive workload puts on
// one client: below the default per-client limit of 1,024.
const sessionsPerHolder = 1000

// keepalive holds Sessions live sessions (each kept alive by its client
// in the background, as an application would) while the workers put.
func (r *runner) keepalive(ctx context.Context) (*Result, error) {
	// The cluster bounds the sessions one client may hold
	// (api.Limits.MaxSessionsPerClient), so the sessions get clients of
	// their own, as many applications' would: one per sessionsPerHolder.
	holders := make([]*client.Client, (r.cfg.Sessions+sessionsPerHolder-1)/sessionsPerHolder)
	for i := range holders {
		c, err := client.New(client.Config{Endpoints: r.cfg.Endpoints, ClusterID: r.cfg.ClusterID, TLS: r.cfg.TLS,
			Name: fmt.Sprintf("lockctl-bench-holder-%d", i), Seed: r.cfg.Seed + uint64(1000+i)})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		holders[i] = c
	}
	t := time.Now()
	ss, err := r.sessionsOn(ctx, holders, r.cfg.Sessions)
	if err != nil {
		return nil, err
	}
	created := time.Since(t)
	defer r.closeSessions(ss)
	res, err := r.put(ctx)
	if err != nil {
		return nil, err
	}
	lost := 0
	for _, s := range ss {
		if s.Err() != nil {
			lost++
		}
	}
	res.Extra = map[string]float64{
		"sessions":             float64(len(ss)),
		"sessions_lost":        float64(lost),
		"session_create_per_s": float64(len(ss)) / created.Seconds(),
	}
	return res, nil
}

// watch runs Watchers watchers on one prefix while the workers write at
// Rate puts per second in total; each value carries its send time, so a
// watcher measures delivery latency per event.
func (r *runner) watch(ctx context.Context) (*Result, error) {
	defer r.dropPrefix("watch")
	const prefix = "bench/watch/"
	wctx, stopWatchers := context.WithCancel(ctx)
	defer stopWatchers()
	var (
		events   atomic.Int64
		watchers sync.WaitGroup
		hists    = make([]Histogram, r.cfg.Watchers)
		werrs    = make([]error, r.cfg.Watchers)
		started  sync.WaitGroup
	)
	for i := 0; i < r.cfg.Watchers; i++ {
		watchers.Add(1)
		started.Add(1)
		go func() {
			defer watchers.Done()
			ch := r.clientOf(i).Watch(wctx, prefix, client.WithPrefix())
			started.Done() // Watch has read the current revision: every later put is delivered
			for resp := range ch {
				now := time.Now()
				for _, ev := range resp.Events {
					if v := ev.KV.Value; len(v) >= 8 {
						hists[i].Record(now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(v)))))
					}
					events.Add(1)
				}
				if resp.Err != nil {
					werrs[i] = resp.Err
				}
			}
		}()
	}
	started.Wait()
	val := r.value()
	res := r.loop(ctx, "run", r.cfg.Concurrency, r.runBound(), func(w int) opFunc {
		kv, rng := r.clientOf(w).KV(), r.rng(w)
		pace := r.pacer(rng, r.cfg.Rate)
		v := append([]byte(nil), val...)
		return func(ctx context.Context, _ int64) error {
			if err := pace(ctx); err != nil {
				return err
			}
			binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
			_, err := kv.Put(ctx, r.key("watch", rng.IntN(r.cfg.Keys)), v)
			return err
		}
	})
	// Wait (bounded) for the watchers to receive every acknowledged write.
	want := (res.Ops - res.Errors) * int64(r.cfg.Watchers)
	for deadline := time.Now().Add(10 * time.Second); events.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil; {
		time.Sleep(10 * time.Millisecond)
	}
	stopWatchers()
	watchers.Wait()
	var h Histogram
	for i := range hists {
		h.Merge(&hists[i])
	}
	d := h.Summary()
	res.Delivery = &d
	res.Extra = map[string]float64{
		"watchers":        float64(r.cfg.Watchers),
		"events":          float64(events.Load()),
		"events_expected": float64(want),
		"events_per_s":    float64(events.Load()) / res.Elapsed,
	}
	for i, err := range werrs {
		if err != nil && res.FirstError == "" {
			res.FirstError = fmt.Sprintf("watcher %d: %v", i, err)
		}
	}
	return res, nil
}
