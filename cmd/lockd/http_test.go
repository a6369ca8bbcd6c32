package main

import (
	"bufio"
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/fsm"
	"github.com/lockd/lockd/server"
)

// fakeView is a nodeView with set answers.
type fakeView struct {
	st      consensus.Status
	stats   fsm.Stats
	act     activity
	stopped error
}

func (f fakeView) Status() consensus.Status { return f.st }
func (f fakeView) Stats() fsm.Stats         { return f.stats }
func (f fakeView) Activity() activity       { return f.act }
func (f fakeView) Stopped() error           { return f.stopped }

var testInfo = nodeInfo{Name: "n2", ID: 2, ClusterID: "test", Members: map[consensus.NodeID]string{1: "n1", 2: "n2", 3: "n3"}, MaxLeaderSilence: 20}

func serve(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestHealthz(t *testing.T) {
	follower := consensus.Status{ID: 2, Role: consensus.Follower, Term: 4, Lead: 1, Commit: 500, Applied: 500, SinceLeaderContact: 3}
	cases := []struct {
		name     string
		view     fakeView
		stopping bool
		code     int
		body     string
	}{
		{"follower in step", fakeView{st: follower}, false, 200, "ok"},
		{"leader", fakeView{st: consensus.Status{ID: 2, Role: consensus.Leader, Term: 4, Lead: 2, Commit: 9, Applied: 9}}, false, 200, "ok"},
		{"applied within the allowed lag", fakeView{st: with(follower, func(s *consensus.Status) { s.Applied = 500 - maxApplyLag })}, false, 200, "ok"},
		{"no leader", fakeView{st: consensus.Status{ID: 2, Role: consensus.PreCandidate, Term: 4}}, false, 503,
			"no leader known (role pre-candidate, term 4)"},
		{"leader silent", fakeView{st: with(follower, func(s *consensus.Status) { s.SinceLeaderContact = 21 })}, false, 503,
			"no contact with leader n1 (id 1) for 21 ticks (term 4)"},
		{"applied lags", fakeView{st: with(follower, func(s *consensus.Status) { s.Applied = 399 })}, false, 503,
			"applied index 399 trails commit index 500 by 101 entries (at most 100 allowed)"},
		{"raft stopped", fakeView{st: follower, stopped: errors.New("disk full")}, false, 503, "raft node stopped: disk full"},
		{"shutting down", fakeView{st: follower}, true, 503, "shutting down"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stopping atomic.Bool
			stopping.Store(tc.stopping)
			code, body := serve(t, newHTTPHandler(tc.view, testInfo, &stopping, false), "/healthz")
			if code != tc.code || body != tc.body+"\n" {
				t.Fatalf("got %d %q, want %d %q", code, body, tc.code, tc.body)
			}
		})
	}
}

func with(st consensus.Status, edit func(*consensus.Status)) consensus.Status {
	edit(&st)
	return st
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	var stopping atomic.Bool
	view := fakeView{st: consensus.Status{Lead: 1}}
	if code, _ := serve(t, newHTTPHandler(view, testInfo, &stopping, false), "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("pprof off: %d", code)
	}
	if code, body := serve(t, newHTTPHandler(view, testInfo, &stopping, true), "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof on: %d %.100q", code, body)
	}
}

// checkExposition checks the Prometheus text format: every sample belongs
// to a family announced by a HELP and then a TYPE line, each family
// appears once, names, labels and values are well formed, counters end in
// _total, and a histogram's buckets rise to a +Inf bucket equal to its
// count. It returns each family's type.
func checkExposition(t *testing.T, scrape string) map[string]string {
	t.Helper()
	const label = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"`
	sampleRE := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(` + label + `(?:,` + label + `)*)\})? ` +
		`([0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)$`)
	leRE := regexp.MustCompile(`^le="([^"]+)"$`)
	types := map[string]string{}
	helped, typed := "", ""
	var lastLe float64
	var lastBucket, infBucket uint64
	sc := bufio.NewScanner(strings.NewReader(scrape))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if _, dup := types[name]; dup {
				t.Fatalf("family %s appears twice", name)
			}
			types[name], helped, typed = "", name, ""
			lastLe, lastBucket, infBucket = -1, 0, 0
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(strings.TrimPrefix(line, "# TYPE "))
			if len(f) != 2 || f[0] != helped || (f[1] != "gauge" && f[1] != "counter" && f[1] != "histogram") {
				t.Fatalf("TYPE line %q does not follow the HELP of %s", line, helped)
			}
			if f[1] == "counter" && !strings.HasSuffix(f[0], "_total") {
				t.Fatalf("counter %s does not end in _total", f[0])
			}
			typed, types[f[0]] = f[0], f[1]
		default:
			m := sampleRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("malformed sample line %q", line)
			}
			name, labels, value := m[1], m[2], m[3]
			if types[typed] != "histogram" {
				if name != typed {
					t.Fatalf("sample %q outside its family (current %q)", line, typed)
				}
				continue
			}
			n, _ := strconv.ParseUint(value, 10, 64)
			switch name {
			case typed + "_bucket":
				le := leRE.FindStringSubmatch(labels)
				if le == nil {
					t.Fatalf("bucket without le: %q", line)
				}
				if le[1] == "+Inf" {
					infBucket = n
					lastLe = math.Inf(1)
				} else {
					bound, err := strconv.ParseFloat(le[1], 64)
					if err != nil || bound <= lastLe || math.IsInf(lastLe, 1) {
						t.Fatalf("bucket bound %q out of order", line)
					}
					lastLe = bound
				}
				if n < lastBucket {
					t.Fatalf("bucket counts fall: %q", line)
				}
				lastBucket = n
			case typed + "_sum":
			case typed + "_count":
				if !math.IsInf(lastLe, 1) || n != infBucket {
					t.Fatalf("%s: count %d, +Inf bucket %d", typed, n, infBucket)
				}
			default:
				t.Fatalf("sample %q outside its histogram %s", line, typed)
			}
		}
	}
	return types
}

func TestMetricsFormat(t *testing.T) {
	st := consensus.Status{ID: 2, Role: consensus.Leader, Term: 7, Lead: 2, Commit: 40, Applied: 39, LastIndex: 41,
		Progress: map[consensus.NodeID]consensus.ProgressStatus{1: {Match: 40}, 2: {Match: 41}, 3: {Match: 12}}}
	stats := fsm.Stats{Keys: 3, Sessions: 2, Locks: 1, Waiters: 6, HistoryEvents: 5, DedupClients: 4, Revision: 9}
	persist := consensus.NewHistogram(time.Millisecond, 10*time.Millisecond)
	for _, d := range []time.Duration{500 * time.Microsecond, 2 * time.Millisecond, 3 * time.Millisecond, time.Second} {
		persist.Observe(d)
	}
	act := activity{Proposals: 12, ProposalsFailed: 1, Persist: persist.Snapshot(),
		Apply: consensus.NewHistogram(time.Millisecond).Snapshot(), Server: server.Metrics{Watchers: 2, BlockedAcquires: 3}}
	info := testInfo
	info.ClusterID = "a \"quoted\\\" id\nwith a newline"
	scrape := string(renderMetrics(st, stats, act, info))
	types := checkExposition(t, scrape)
	for name, typ := range map[string]string{
		"lockd_raft_role": "gauge", "lockd_raft_term": "gauge", "lockd_raft_commit_index": "gauge", "lockd_raft_applied_index": "gauge",
		"lockd_raft_last_index": "gauge", "lockd_is_leader": "gauge", "lockd_sessions": "gauge", "lockd_locks": "gauge",
		"lockd_lock_waiters": "gauge", "lockd_keys": "gauge", "lockd_kv_revision": "gauge", "lockd_watch_history_events": "gauge",
		"lockd_watchers": "gauge", "lockd_blocked_acquires": "gauge", "lockd_raft_proposals_total": "counter",
		"lockd_raft_proposals_failed_total": "counter", "lockd_raft_persist_duration_seconds": "histogram",
		"lockd_fsm_apply_duration_seconds": "histogram",
	} {
		if types[name] != typ {
			t.Errorf("family %s: type %q, want %q", name, types[name], typ)
		}
	}
	for _, want := range []string{
		`lockd_raft_role{role="leader"} 1`, `lockd_raft_role{role="follower"} 0`, "lockd_is_leader 1", "lockd_raft_term 7",
		"lockd_raft_commit_index 40", "lockd_raft_applied_index 39", "lockd_raft_last_index 41", "lockd_keys 3",
		"lockd_sessions 2", "lockd_locks 1", "lockd_lock_waiters 6", "lockd_watch_history_events 5", "lockd_kv_revision 9",
		"lockd_watchers 2", "lockd_blocked_acquires 3", "lockd_raft_proposals_total 12", "lockd_raft_proposals_failed_total 1",
		`lockd_raft_persist_duration_seconds_bucket{le="0.001"} 1`, `lockd_raft_persist_duration_seconds_bucket{le="0.01"} 3`,
		`lockd_raft_persist_duration_seconds_bucket{le="+Inf"} 4`, "lockd_raft_persist_duration_seconds_sum 1.0055",
		"lockd_raft_persist_duration_seconds_count 4", "lockd_fsm_apply_duration_seconds_count 0",
		`lockd_raft_follower_match_index{follower="n1"} 40`, `lockd_raft_follower_match_index{follower="n3"} 12`,
		`lockd_node_info{cluster_id="a \"quoted\\\" id\nwith a newline",name="n2",node_id="2"} 1`,
	} {
		if !strings.Contains(scrape, want+"\n") {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Contains(scrape, `follower="n2"`) {
		t.Error("the leader lists itself as a follower")
	}
}

// startTestNode starts a real single-node server in-process on loopback
// ports with a temp data dir, and closes it at the end of the test.
func startTestNode(t *testing.T, pprof bool) *node {
	t.Helper()
	r := defaults()
	r.DataDir = filepath.Join(t.TempDir(), "n1")
	r.ClientAddr, r.PeerAddr, r.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	r.Tick, r.Pprof = 10*time.Millisecond, pprof
	r.LogLevel = "off"
	cfg, err := r.validate()
	if err != nil {
		t.Fatal(err)
	}
	n, err := startNode(cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.close(); err != nil {
			t.Error(err)
		}
	})
	return n
}

func TestEndpointsOfARealNode(t *testing.T) {
	n := startTestNode(t, true)
	httpAddr := n.httpL.Addr().String()
	waitUntil(t, 10*time.Second, "/healthz ok", healthzOK(httpAddr))

	putKey(t, n.srv.ClientAddr(), "cfg/a", "1")
	// The Raft status is published at the end of the node loop's
	// iteration, so it may trail the put's reply briefly.
	var scrape string
	waitUntil(t, 10*time.Second, "the put in the raft metrics", func() (bool, string) {
		var code int
		code, scrape = httpGet("http://" + httpAddr + "/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics: %d %s", code, scrape)
		}
		commit, applied := metricValue(t, scrape, "lockd_raft_commit_index"), metricValue(t, scrape, "lockd_raft_applied_index")
		return commit >= 2 && applied == commit, scrape
	})
	checkExposition(t, scrape)
	if metricValue(t, scrape, "lockd_is_leader") != 1 || metricValue(t, scrape, "lockd_raft_term") < 1 ||
		metricValue(t, scrape, "lockd_keys") != 1 || metricValue(t, scrape, "lockd_kv_revision") < 1 ||
		metricValue(t, scrape, "lockd_watch_history_events") < 1 || metricValue(t, scrape, "lockd_cluster_members") != 1 ||
		metricValue(t, scrape, "lockd_raft_last_index") < 2 || metricValue(t, scrape, "lockd_raft_proposals_total") < 1 ||
		metricValue(t, scrape, "lockd_raft_persist_duration_seconds_count") < 1 ||
		metricValue(t, scrape, "lockd_fsm_apply_duration_seconds_count") < 1 {
		t.Fatalf("unexpected values:\n%s", scrape)
	}
	if code, _ := httpGet("http://" + httpAddr + "/debug/pprof/cmdline"); code != http.StatusOK {
		t.Fatalf("pprof: %d", code)
	}
	if code, _ := httpGet("http://" + httpAddr + "/nope"); code != http.StatusNotFound {
		t.Fatalf("unknown path: %d", code)
	}
}

// The whole life in-process (so the race detector sees it): run starts a
// node, a second run on the same data dir fails at once with one line
// naming the dir and the holder, and cancelling run's context (what a
// signal does) stops the node cleanly with exit code 0.
func TestRunStopsCleanlyAndRefusesALockedDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n1")
	addrs := freeAddrs(t, 5)
	httpAddr := addrs[2]
	args := []string{"lockd", "--data-dir", dir, "--client-addr", addrs[0], "--peer-addr", addrs[1],
		"--http-addr", httpAddr, "--tick", "10ms"}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, args, &strings.Builder{}, &stderr) }()
	waitUntil(t, 10*time.Second, "/healthz ok", func() (bool, string) {
		select {
		case code := <-exit:
			t.Fatalf("run exited with %d: %s", code, stderr.String())
		default:
		}
		return healthzOK(httpAddr)()
	})

	var second strings.Builder
	other := []string{"lockd", "--data-dir", dir, "--client-addr", addrs[3], "--peer-addr", addrs[4], "--http-addr", ""}
	if code := run(context.Background(), other, &strings.Builder{}, &second); code != exitFailure {
		t.Fatalf("second node on the same data dir: exit %d, stderr %q", code, second.String())
	}
	if msg := second.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "data dir "+dir+" is in use by process ") {
		t.Fatalf("second node on the same data dir: %q", msg)
	}

	cancel(errors.New("test stops the node"))
	select {
	case code := <-exit:
		if code != exitOK {
			t.Fatalf("exit %d after a clean stop: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return 10 s after its context ended")
	}
	for _, want := range []string{`n1: shutting down: reason="test stops the node"`, "n1.server: lockd node stopped", "n1: lockd stopped"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, stderr.String())
		}
	}
}

// A failed start prints one line, not the log lines of the start so far.
func TestFailedStartIsOneLine(t *testing.T) {
	busy := startTestNode(t, false)
	var stderr strings.Builder
	args := []string{"lockd", "--data-dir", filepath.Join(t.TempDir(), "n1"), "--client-addr", busy.srv.ClientAddr(),
		"--peer-addr", freeAddrs(t, 1)[0], "--http-addr", ""}
	if code := run(context.Background(), args, &strings.Builder{}, &stderr); code != exitFailure {
		t.Fatalf("exit %d: %q", code, stderr.String())
	}
	want := "lockd: cannot listen for clients (--client-addr): listen tcp " + busy.srv.ClientAddr() + ": bind: address already in use\n"
	if stderr.String() != want {
		t.Fatalf("stderr %q, want %q", stderr.String(), want)
	}
}
