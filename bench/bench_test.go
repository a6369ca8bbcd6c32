package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/consensus/inmem"
	"github.com/lockd/lockd/server"
)

// startCluster runs an in-process 3-node cluster on loopback with
// in-memory stores and returns its client endpoints.
func startCluster(t *testing.T) []string {
	t.Helper()
	const n = 3
	var members []server.Member
	var peers []net.Listener
	for i := 1; i <= n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, l)
		members = append(members, server.Member{ID: consensus.NodeID(i), Name: fmt.Sprintf("n%d", i), PeerAddr: l.Addr().String()})
	}
	var eps []string
	for i, m := range members {
		cl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		st := inmem.NewStore()
		s, err := server.New(server.Config{ID: m.ID, Name: m.Name, Members: members, ClusterID: "bench",
			ClientListener: cl, PeerListener: peers[i], LogStore: st, StableStore: st,
			TickInterval: 10 * time.Millisecond, ElectionTicks: 10, Logger: hclog.NewNullLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		eps = append(eps, s.ClientAddr())
	}
	return eps
}

// TestEveryWorkloadRunsAndReports runs each workload briefly against a
// real (in-process) cluster and checks the result is complete and
// survives a JSON round trip.
func TestEveryWorkloadRunsAndReports(t *testing.T) {
	eps := startCluster(t)
	for _, w := range Workloads() {
		t.Run(w, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var mu sync.Mutex
			var phases []string
			cfg := Config{Endpoints: eps, ClusterID: "bench", Workload: w, Clients: 2, Concurrency: 4, Total: 40,
				Keys: 20, ValueSize: 64, Sessions: 20, Watchers: 3, Rate: 400, TTL: 5 * time.Second,
				ProgressInterval: time.Millisecond, Progress: func(p Progress) {
					mu.Lock()
					phases = append(phases, p.Phase)
					mu.Unlock()
				}}
			res, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Ops != 40 || res.Errors != 0 || res.Partial {
				t.Fatalf("ops %d errors %d (first: %q) partial %v", res.Ops, res.Errors, res.FirstError, res.Partial)
			}
			if res.Latency.Count != 40 || res.Latency.P50 <= 0 || res.Latency.P50 > res.Latency.Max || res.Throughput <= 0 {
				t.Fatalf("latency %+v throughput %v", res.Latency, res.Throughput)
			}
			switch w {
			case "lock-contended":
				if res.Handover == nil || res.Handover.Count != 39 || res.Extra["violations"] != 0 {
					t.Fatalf("hand-over %+v extra %v", res.Handover, res.Extra)
				}
			case "watch":
				if res.Delivery == nil || res.Extra["events"] != 3*40 || res.Delivery.Count != 3*40 {
					t.Fatalf("delivery %+v extra %v", res.Delivery, res.Extra)
				}
			case "keepalive":
				if res.Extra["sessions"] != 20 || res.Extra["sessions_lost"] != 0 {
					t.Fatalf("extra %v", res.Extra)
				}
			}
			b, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var back Result
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.Workload != w || back.Ops != res.Ops || back.Latency != res.Latency {
				t.Fatalf("JSON round trip: %s", b)
			}
			var text bytes.Buffer
			if err := res.WriteText(&text); err != nil || !strings.Contains(text.String(), "throughput") {
				t.Fatalf("text output %q, %v", text.String(), err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(phases) == 0 {
				t.Fatal("no progress was reported")
			}
		})
	}
}

func TestRunStopsWithItsContextAndReportsPartial(t *testing.T) {
	eps := startCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{Endpoints: eps, ClusterID: "bench", Workload: "put", Concurrency: 4, Duration: time.Hour,
		Progress: func(p Progress) {
			if p.Phase == "run" && p.Done >= 20 {
				cancel()
			}
		}, ProgressInterval: time.Millisecond}
	done := make(chan struct{})
	var res *Result
	var err error
	go func() { res, err = Run(ctx, cfg); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not stop after its context was cancelled")
	}
	if err != nil {
		t.Fatal(err)
	}
	if !res.Partial || res.Ops < 20 || res.Errors != 0 {
		t.Fatalf("partial %v ops %d errors %d", res.Partial, res.Ops, res.Errors)
	}
}

func TestBadConfigIsRefusedWithTheFix(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Workload: "put"}, "LOCKD_ENDPOINTS"},
		{Config{Endpoints: []string{"x"}, Workload: "nope"}, "choose one of put, get"},
		{Config{Endpoints: []string{"x"}, Workload: "put", Concurrency: -1}, "--concurrency -1"},
		{Config{Endpoints: []string{"x"}, Workload: "put", Duration: -time.Second}, "negative"},
	} {
		_, err := Run(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestEveryOperationFailingIsAnError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: every call fails
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, Config{Endpoints: []string{addr}, Workload: "put", Total: 3, OpTimeout: 200 * time.Millisecond})
	if err == nil || res == nil || res.Errors != 3 || !strings.Contains(err.Error(), "every one of 3 operations failed") {
		t.Fatalf("got %+v, %v", res, err)
	}
}

// TestProgressReportsAPhaseShorterThanItsInterval: a phase that ends
// before the first tick still reports its final counts once. (Found as a
// flaky "no progress was reported" when a 40-op get run took under the
// 1 ms interval.)
func TestProgressReportsAPhaseShorterThanItsInterval(t *testing.T) {
	eps := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	var last *Progress
	_, err := Run(ctx, Config{Endpoints: eps, ClusterID: "bench", Workload: "put", Total: 5, Keys: 5,
		ProgressInterval: time.Hour, Progress: func(p Progress) {
			mu.Lock()
			defer mu.Unlock()
			if p.Phase == "run" {
				last = &p
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if last == nil || last.Done != 5 || last.Target != 5 {
		t.Fatalf("last report of the run phase: %+v, want 5 of 5 done", last)
	}
}

func TestKeyNamesKeepTheirFormat(t *testing.T) {
	var r runner
	for _, k := range []int{0, 7, 12345678, 123456789, 1 << 40} {
		if got, want := r.key("put", k), fmt.Sprintf("bench/%s/%08d", "put", k); got != want {
			t.Errorf("key %d = %q, want %q", k, got, want)
		}
	}
}
