package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockd/lockd/client"
)

// Workloads lists the workload names Run accepts, in the order lockctl
// documents them.
func Workloads() []string {
	return []string{"put", "get", "txn", "lock", "lock-contended", "session", "keepalive", "watch"}
}

// Config is one benchmark run.
type Config struct {
	// Endpoints and ClusterID reach the cluster, as in client.Config.
	Endpoints []string
	ClusterID string
	TLS       *tls.Config

	// Workload is one of Workloads().
	Workload string
	// Clients is how many client connections (client.Client values) the
	// workers share, round-robin. Default 1; at most Concurrency.
	Clients int
	// Concurrency is how many operations are in flight at once (one
	// worker goroutine each). Default 1.
	Concurrency int
	// Total bounds the run by operations, Duration by time; the first
	// reached ends it. With neither, Total is 1,000.
	Total    int
	Duration time.Duration
	// ValueSize is each written value's size in bytes (default 256);
	// Keys the key space put, get and txn draw from (default 1,000).
	ValueSize int
	Keys      int
	// Stale makes the get workload serve reads locally (no ReadIndex).
	Stale bool
	// TTL is the TTL of the sessions the workload creates (default: the
	// cluster's default).
	TTL time.Duration
	// Sessions is how many live sessions the keepalive workload holds
	// while it puts (default 1,000).
	Sessions int
	// Watchers is how many watchers the watch workload runs on its prefix
	// (default 16); Rate the writes per second, shared by the workers
	// (default 1,000).
	Watchers int
	Rate     int
	// PutRate limits put and keepalive to this many puts per second in
	// total (0: as fast as the workers go), e.g. to measure what holding
	// sessions costs the cluster with little else going on.
	PutRate int
	// OpTimeout bounds each operation (default 10 s).
	OpTimeout time.Duration
	// Seed makes the key choices repeatable (0: 1).
	Seed uint64

	// Progress, if set, is called about every ProgressInterval (default
	// 500 ms) from one goroutine while the timed phase runs, and for
	// set-up phases that take a while (creating sessions).
	Progress         func(Progress)
	ProgressInterval time.Duration
}

// Progress is a run's state while it goes.
type Progress struct {
	Phase   string        // "setup" or "run"
	Done    int64         // operations completed (failed ones included)
	Errors  int64         // operations that failed
	Target  int64         // Total (0 if bounded by Duration only)
	Elapsed time.Duration // since the phase began
	Limit   time.Duration // Duration (0 if bounded by Total only)
}

// Result is what a run measured. Its JSON form is what lockctl bench
// --output json prints; fields are only ever added.
type Result struct {
	Workload    string  `json:"workload"`
	Clients     int     `json:"clients"`
	Concurrency int     `json:"concurrency"`
	ValueSize   int     `json:"value_size,omitempty"`
	Keys        int     `json:"keys,omitempty"`
	Stale       bool    `json:"stale,omitempty"`
	Ops         int64   `json:"ops"`
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Elapsed     float64 `json:"elapsed_s"`
	Throughput  float64 `json:"ops_per_s"`
	Latency     Latency `json:"latency"`
	// Partial is set when the run's context ended before its bound.
	Partial bool `json:"partial"`
	// Handover (lock-contended): time from a holder starting its release
	// to the next holder's acquire returning.
	Handover *Latency `json:"handover,omitempty"`
	// Delivery (watch): time from a put being sent to a watcher
	// receiving its event.
	Delivery *Latency `json:"delivery,omitempty"`
	// Extra holds workload-specific figures, named with their unit
	// (e.g. "sessions", "events_per_s", "violations").
	Extra map[string]float64 `json:"extra,omitempty"`
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Endpoints) == 0 {
		return c, errors.New("no endpoints: give --endpoints or set LOCKD_ENDPOINTS")
	}
	known := false
	for _, w := range Workloads() {
		known = known || w == c.Workload
	}
	if !known {
		return c, fmt.Errorf("unknown workload %q: choose one of %s", c.Workload, strings.Join(Workloads(), ", "))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"clients", c.Clients}, {"concurrency", c.Concurrency}, {"total", c.Total}, {"value-size", c.ValueSize},
		{"keys", c.Keys}, {"sessions", c.Sessions}, {"watchers", c.Watchers}, {"rate", c.Rate}, {"put-rate", c.PutRate}} {
		if f.v < 0 {
			return c, fmt.Errorf("--%s %d: must not be negative", f.name, f.v)
		}
	}
	if c.Duration < 0 || c.TTL < 0 || c.OpTimeout < 0 {
		return c, errors.New("durations must not be negative")
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.Clients == 0 {
		c.Clients = 1
	}
	c.Clients = min(c.Clients, c.Concurrency)
	if c.Total == 0 && c.Duration == 0 {
		c.Total = 1000
	}
	if c.ValueSize == 0 {
		c.ValueSize = 256
	}
	if c.Keys == 0 {
		c.Keys = 1000
	}
	if c.Sessions == 0 {
		c.Sessions = 1000
	}
	if c.Watchers == 0 {
		c.Watchers = 16
	}
	if c.Rate == 0 {
		c.Rate = 1000
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 10 * time.Second
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = 500 * time.Millisecond
	}
	if c.Workload == "watch" && c.ValueSize < 8 {
		c.ValueSize = 8 // the value carries the send time
	}
	return c, nil
}

// Run runs one benchmark. It returns an error if the configuration is
// bad, the cluster cannot be reached for set-up, or every operation
// failed; a run cut short by ctx returns its partial result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg}
	defer r.close()
	for i := 0; i < cfg.Clients; i++ {
		c, err := client.New(client.Config{Endpoints: cfg.Endpoints, ClusterID: cfg.ClusterID, TLS: cfg.TLS,
			Name: fmt.Sprintf("lockctl-bench-%d", i), Seed: cfg.Seed + uint64(i),
			MaxConcurrentWrites: max(1024, cfg.Concurrency)})
		if err != nil {
			return nil, err
		}
		r.clients = append(r.clients, c)
	}
	res, err := r.run(ctx)
	if err != nil {
		return nil, err
	}
	res.Workload, res.Clients, res.Concurrency = cfg.Workload, cfg.Clients, cfg.Concurrency
	switch cfg.Workload {
	case "put", "get", "txn", "keepalive", "watch":
		res.ValueSize, res.Keys = cfg.ValueSize, cfg.Keys
	}
	res.Stale = cfg.Workload == "get" && cfg.Stale
	if res.Ops > 0 && res.Errors == res.Ops && !res.Partial {
		return res, fmt.Errorf("every one of %d operations failed; the first: %s", res.Ops, res.FirstError)
	}
	return res, nil
}

type runner struct {
	cfg     Config
	clients []*client.Client
}

func (r *runner) close() {
	for _, c := range r.clients {
		_ = c.Close()
	}
}

// clientOf is worker w's client.
func (r *runner) clientOf(w int) *client.Client { return r.clients[w%len(r.clients)] }

func (r *runner) run(ctx context.Context) (*Result, error) {
	switch r.cfg.Workload {
	case "put":
		return r.put(ctx)
	case "get":
		return r.get(ctx)
	case "txn":
		return r.txn(ctx)
	case "lock":
		return r.lock(ctx)
	case "lock-contended":
		return r.lockContended(ctx)
	case "session":
		return r.sessionChurn(ctx)
	case "keepalive":
		return r.keepalive(ctx)
	case "watch":
		return r.watch(ctx)
	}
	return nil, fmt.Errorf("unknown workload %q", r.cfg.Workload)
}

// opFunc is one operation of one worker. i counts the run's operations.
type opFunc func(ctx context.Context, i int64) error

// bound says when a timed phase stops: after total operations (0: no
// bound) or at the deadline (zero: none).
type bound struct {
	total    int64
	duration time.Duration
}

func (r *runner) runBound() bound {
	return bound{total: int64(r.cfg.Total), duration: r.cfg.Duration}
}

// loop runs workers operations (worker w gets newOp(w)) until the bound
// is reached or ctx ends, timing each one.
func (r *runner) loop(ctx context.Context, phase string, workers int, b bound, newOp func(w int) opFunc) *Result {
	var (
		next, done, failed atomic.Int64
		firstErr           atomic.Pointer[string]
		wg                 sync.WaitGroup
		hists              = make([]Histogram, workers)
	)
	start := time.Now()
	var deadline time.Time
	if b.duration > 0 {
		deadline = start.Add(b.duration)
	}
	stopProgress := r.progress(phase, b, start, &done, &failed)
	for w := 0; w < workers; w++ {
		op := newOp(w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ot := newOpTimer(ctx, r.cfg.OpTimeout)
			defer ot.close()
			for ctx.Err() == nil {
				if !deadline.IsZero() && !time.Now().Before(deadline) {
					return
				}
				i := next.Add(1) - 1
				if b.total > 0 && i >= b.total {
					return
				}
				opCtx := ot.start()
				t := time.Now()
				err := op(opCtx, i)
				d := time.Since(t)
				ot.stop()
				if err != nil && ctx.Err() != nil {
					return // cut short by the caller: neither a result nor an error
				}
				done.Add(1)
				if err != nil {
					failed.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
					continue
				}
				hists[w].Record(d)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	var h Histogram
	for i := range hists {
		h.Merge(&hists[i])
	}
	res := &Result{Ops: done.Load(), Errors: failed.Load(), Elapsed: elapsed.Seconds(), Latency: h.Summary(),
		Partial: ctx.Err() != nil}
	if p := firstErr.Load(); p != nil {
		res.FirstError = *p
	}
	if elapsed > 0 {
		res.Throughput = float64(res.Ops-res.Errors) / elapsed.Seconds()
	}
	return res
}

// progress reports a phase's state every ProgressInterval until the
// returned func is called (which waits for the reporter to stop).
func (r *runner) progress(phase string, b bound, start time.Time, done, failed *atomic.Int64) (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	quit, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(r.cfg.ProgressInterval)
		defer t.Stop()
		report := func() {
			r.cfg.Progress(Progress{Phase: phase, Done: done.Load(), Errors: failed.Load(), Target: b.total,
				Elapsed: time.Since(start), Limit: b.duration})
		}
		for {
			select {
			case <-quit:
				// A last report with the final counts: a phase shorter than
				// the interval is reported too, and a live display ends on
				// the true figures.
				report()
				return
			case <-t.C:
				report()
			}
		}
	}()
	return func() { close(quit); <-stopped }
}

// parallel runs f(i) for i in [0, n) on up to conc goroutines, stopping
// at the first error (returned) or when ctx ends. Used for set-up, which
// is not timed.
func (r *runner) parallel(ctx context.Context, phase string, n, conc int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next, done, failed atomic.Int64
		once               sync.Once
		first              error
		wg                 sync.WaitGroup
	)
	stop := r.progress(phase, bound{total: int64(n)}, time.Now(), &done, &failed)
	defer stop()
	for w := 0; w < min(conc, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				opCtx, opCancel := context.WithTimeout(ctx, r.cfg.OpTimeout)
				err := f(opCtx, int(i))
				opCancel()
				done.Add(1)
				if err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// cleanup runs f with a fresh context bounded by d: set-up state is
// removed even when the run was interrupted.
func cleanup(d time.Duration, f func(ctx context.Context)) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	f(ctx)
}

// sortedExtra returns the names in e, sorted (for text output).
func sortedExtra(e map[string]float64) []string {
	names := make([]string, 0, len(e))
	for k := range e {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
