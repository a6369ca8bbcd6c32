package main

import (
	"net"
	"strings"
	"testing"

	"github.com/lockd/lockd/bench"
)

// TestBenchEveryWorkloadPrintsValidJSON runs each workload of lockctl
// bench for a tiny --total against the test cluster and decodes its JSON.
func TestBenchEveryWorkloadPrintsValidJSON(t *testing.T) {
	tc := cluster(t)
	for _, w := range bench.Workloads() {
		t.Run(w, func(t *testing.T) {
			var res bench.Result
			tc.expectJSON(t, &res, "bench", "--clients", "2", "--concurrency", "4", "--total", "20",
				"--keys", "10", "--sessions", "10", "--watchers", "2", "--rate", "500", "--value-size", "32", w)
			if res.Workload != w || res.Ops != 20 || res.Errors != 0 || res.Partial || res.Latency.Count != 20 ||
				res.Throughput <= 0 || res.Clients != 2 || res.Concurrency != 4 {
				t.Fatalf("result %+v", res)
			}
			if w == "lock-contended" && (res.Handover == nil || res.Handover.Count != 19) {
				t.Fatalf("hand-over %+v", res.Handover)
			}
			if w == "watch" && (res.Delivery == nil || res.Delivery.Count != 40) {
				t.Fatalf("delivery %+v", res.Delivery)
			}
		})
	}
}

func TestBenchTextAndUsageErrors(t *testing.T) {
	tc := cluster(t)
	r := tc.expect(t, 0, "bench", "--total", "5", "put")
	for _, want := range []string{"workload     put", "throughput", "latency      p50"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("text output lacks %q: %v", want, r)
		}
	}
	if r.stderr != "" {
		t.Fatalf("progress printed although stderr is not a terminal: %v", r)
	}
	tc.expectFailure(t, 2, []string{"bench", "nosuch"}, "unknown workload", "choose one of put")
	tc.expectFailure(t, 2, []string{"bench", "--concurrency", "-1", "put"}, "--concurrency -1")
	tc.expectFailure(t, 2, []string{"bench"}, "missing arguments")
	tc.expectFailure(t, 3, []string{"--endpoints", deadEndpoint(t), "--timeout", "300ms", "bench", "--total", "2", "put"},
		"every one of 2 operations failed")
}

func deadEndpoint(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
