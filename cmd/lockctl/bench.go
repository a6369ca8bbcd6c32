package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/bench"
)

// benchCommand is `lockctl bench WORKLOAD`: the workloads of package
// bench against any cluster. Its JSON output is bench.Result.
func benchCommand(a *app) *cli.Command {
	const name = "bench"
	return &cli.Command{
		Name:      name,
		Usage:     "measure throughput and latency of a workload: " + strings.Join(bench.Workloads(), ", "),
		ArgsUsage: "WORKLOAD",
		Description: "Runs --concurrency operations at a time over --clients connections until --total operations\n" +
			"or --duration, whichever comes first, and prints throughput and a latency histogram.\n" +
			"Workloads: put (random keys), get (linearizable; --stale for local reads), txn (compare + 2 puts),\n" +
			"lock (each worker its own lock: acquire + release), lock-contended (all workers on one lock:\n" +
			"grants/s and hand-over latency), session (create + destroy), keepalive (--sessions live sessions\n" +
			"kept alive while workers put), watch (--watchers on a prefix, writes at --rate: delivery latency).\n" +
			"Ctrl-C stops it and prints the partial result. Keys it writes live under bench/<workload>/ and\n" +
			"are deleted at the end; its sessions are destroyed.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "clients", Value: 1, Usage: "client connections the workers share"},
			&cli.IntFlag{Name: "concurrency", Aliases: []string{"c"}, Value: 1, Usage: "operations in flight at once"},
			&cli.IntFlag{Name: "total", Aliases: []string{"n"}, Usage: "stop after `N` operations (default 1000 without --duration)"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Usage: "stop after this long"},
			&cli.IntFlag{Name: "value-size", Value: 256, Usage: "bytes per written value"},
			&cli.IntFlag{Name: "keys", Value: 1000, Usage: "key space of put, get and txn"},
			&cli.BoolFlag{Name: "stale", Usage: "get: serve reads locally, without confirming leadership"},
			&cli.DurationFlag{Name: "ttl", Usage: "TTL of the sessions the workload creates (default: the cluster's)"},
			&cli.IntFlag{Name: "sessions", Value: 1000, Usage: "keepalive: live sessions held while putting"},
			&cli.IntFlag{Name: "watchers", Value: 16, Usage: "watch: watchers on the prefix"},
			&cli.IntFlag{Name: "rate", Value: 1000, Usage: "watch: writes per second, shared by the workers"},
			&cli.IntFlag{Name: "put-rate", Usage: "put, keepalive: at most this many puts per second in total (0: no limit)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the key choices"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of this client (the load generator) to `FILE`; the servers' own profiles are on lockd --pprof"},
		},
		Action: func(c *cli.Context) error {
			got, err := args(c, name, 1, 1, "WORKLOAD")
			if err != nil {
				return err
			}
			for _, f := range []string{"clients", "concurrency", "total", "value-size", "keys", "sessions", "watchers", "rate", "put-rate"} {
				if c.Int(f) < 0 {
					return usagef(name, "--%s %d must not be negative", f, c.Int(f))
				}
			}
			if c.Duration("duration") < 0 || c.Duration("ttl") < 0 {
				return usagef(name, "--duration and --ttl must not be negative")
			}
			known := false
			for _, w := range bench.Workloads() {
				known = known || w == got[0]
			}
			if !known {
				return usagef(name, "unknown workload %q: choose one of %s", got[0], strings.Join(bench.Workloads(), ", "))
			}
			cfg := bench.Config{
				Endpoints: splitEndpoints(c.String(flagEndpoints)), ClusterID: c.String(flagClusterID),
				Workload: got[0], Clients: c.Int("clients"), Concurrency: c.Int("concurrency"),
				Total: c.Int("total"), Duration: c.Duration("duration"), ValueSize: c.Int("value-size"),
				Keys: c.Int("keys"), Stale: c.Bool("stale"), TTL: c.Duration("ttl"), Sessions: c.Int("sessions"),
				Watchers: c.Int("watchers"), Rate: c.Int("rate"), PutRate: c.Int("put-rate"), Seed: c.Uint64("seed"),
			}
			if c.IsSet(flagTimeout) {
				// Otherwise bench's own default (10 s), which leaves room
				// for a contended lock's wait.
				cfg.OpTimeout = c.Duration(flagTimeout)
			}
			jsonOut := c.String(flagOutput) == "json"
			var live *liveLine
			if isTerminal(a.io.err) {
				live = &liveLine{w: a.io.err}
				cfg.Progress = live.show
			}
			if path := c.String("cpuprofile"); path != "" {
				stop, err := startCPUProfile(path)
				if err != nil {
					return usagef(name, "--cpuprofile: %v", err)
				}
				defer stop()
			}
			res, err := bench.Run(a.ctx, cfg)
			live.clear()
			if err != nil {
				if res != nil && res.Errors == res.Ops {
					// Nothing got through: most likely the cluster is down.
					return fmt.Errorf("bench %s: %w: %w", got[0], errUnavailable, err)
				}
				return fmt.Errorf("bench %s: %w", got[0], err)
			}
			if jsonOut {
				return writeJSON(a.io.out, res)
			}
			return res.WriteText(a.io.out)
		},
	}
}

// startCPUProfile profiles this process into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// splitEndpoints turns --endpoints into addresses, dropping blanks.
func splitEndpoints(raw string) []string {
	var eps []string
	for _, e := range strings.Split(raw, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

// liveLine keeps one progress line on a terminal, rewritten in place.
type liveLine struct {
	mu    sync.Mutex
	w     io.Writer
	width int
}

func (l *liveLine) show(p bench.Progress) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d ops", p.Phase, p.Done)
	if p.Target > 0 {
		fmt.Fprintf(&b, " of %d", p.Target)
	}
	if p.Errors > 0 {
		fmt.Fprintf(&b, ", %d failed", p.Errors)
	}
	fmt.Fprintf(&b, ", %.1fs", p.Elapsed.Seconds())
	if p.Limit > 0 {
		fmt.Fprintf(&b, " of %.0fs", p.Limit.Seconds())
	}
	if p.Phase == "run" && p.Elapsed > 0 {
		fmt.Fprintf(&b, ", %.0f ops/s", float64(p.Done-p.Errors)/p.Elapsed.Seconds())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := b.String()
	pad := max(0, l.width-len(s))
	fmt.Fprintf(l.w, "\r%s%s", s, strings.Repeat(" ", pad))
	l.width = len(s)
}

// clear erases the line (nil-safe: no terminal, no line).
func (l *liveLine) clear() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.width > 0 {
		fmt.Fprintf(l.w, "\r%s\r", strings.Repeat(" ", l.width))
		l.width = 0
	}
}
