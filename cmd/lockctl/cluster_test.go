//go:build unix

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The end-to-end tests run the built lockctl against one real 3-node
// cluster per test binary run: `lockd dev --nodes 3` on free ports with a
// temp data dir, started by the first test that needs it and stopped by
// TestMain, by pid. Tests share it, so each uses key and lock names of
// its own (the test's name is in them).

// testCluster is the shared cluster and the built binaries. It is the
// test binary's state (TestMain tears it down), not lockctl's.
type testCluster struct {
	once      sync.Once
	err       error
	dir       string
	lockctl   string
	lockd     string
	dev       *exec.Cmd
	devDone   chan struct{}
	devOut    *lockedBuffer
	devErr    *lockedBuffer
	pids      []int
	endpoints string
}

var shared testCluster

func TestMain(m *testing.M) {
	code := m.Run()
	shared.stop()
	os.Exit(code)
}

// cluster returns the running cluster, starting it (and building the
// binaries) the first time.
func cluster(t *testing.T) *testCluster {
	t.Helper()
	shared.once.Do(func() { shared.err = shared.start() })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return &shared
}

func (tc *testCluster) start() error {
	dir, err := os.MkdirTemp("", "lockctl-e2e-")
	if err != nil {
		return err
	}
	tc.dir = dir
	tc.lockctl, tc.lockd = filepath.Join(dir, "lockctl"), filepath.Join(dir, "lockd")
	for _, b := range []struct{ out, pkg string }{{tc.lockctl, "."}, {tc.lockd, "../lockd"}} {
		if out, err := exec.Command("go", "build", "-o", b.out, b.pkg).CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		lost, err := tc.startDev(attempt)
		if err != nil || !lost {
			return err
		}
		last = tc.devErr.String()
	}
	return fmt.Errorf("lockd dev lost the race for its ports 3 times; last stderr:\n%s", last)
}

// startDev starts lockd dev on ports that were free a moment ago and
// waits until lockctl status says the cluster has a leader. lost reports
// that a node found its port taken meanwhile (try other ports).
func (tc *testCluster) startDev(attempt int) (lost bool, err error) {
	base := freeBasePort()
	if base == 0 {
		return false, errors.New("no free port range for lockd dev")
	}
	tc.devOut, tc.devErr, tc.devDone = &lockedBuffer{}, &lockedBuffer{}, make(chan struct{})
	tc.dev = exec.Command(tc.lockd, "dev", "--nodes", "3", "--base-port", strconv.Itoa(base),
		"--data-dir", filepath.Join(tc.dir, fmt.Sprintf("dev%d", attempt)), "--stop-timeout", "10s")
	// 50 ms ticks: elections in well under a second, and a session TTL
	// minimum of 2 s.
	tc.dev.Env = append(cleanEnv(), "LOCKD_TICK=50ms")
	tc.dev.Stdout, tc.dev.Stderr = tc.devOut, tc.devErr
	if err := tc.dev.Start(); err != nil {
		return false, err
	}
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(tc.dev, tc.devDone)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-tc.devDone:
			if strings.Contains(tc.devErr.String(), "address already in use") {
				tc.killNodes()
				return true, nil
			}
			return false, fmt.Errorf("lockd dev exited; stderr:\n%s", tc.devErr.String())
		default:
		}
		if tc.endpoints == "" {
			tc.parsePlan()
		}
		if tc.endpoints != "" {
			cmd := exec.Command(tc.lockctl, "--timeout", "1s", "status")
			cmd.Env = append(cleanEnv(), "LOCKD_ENDPOINTS="+tc.endpoints)
			if cmd.Run() == nil {
				return false, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false, fmt.Errorf("the cluster had no leader within 30s; lockd dev stderr:\n%s", tc.devErr.String())
}

// parsePlan reads the node pids and the endpoints lockd dev printed.
func (tc *testCluster) parsePlan() {
	out := tc.devOut.String()
	if !strings.Contains(out, "export LOCKD_ENDPOINTS=") {
		return
	}
	tc.pids = nil
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "pid" {
			if pid, err := strconv.Atoi(f[2]); err == nil {
				tc.pids = append(tc.pids, pid)
			}
		}
		if e, ok := strings.CutPrefix(line, "export LOCKD_ENDPOINTS="); ok {
			tc.endpoints = strings.TrimSpace(e)
		}
	}
}

// stop ends lockd dev (which stops its nodes) and kills, by pid, any
// node left; then removes the binaries and data.
func (tc *testCluster) stop() {
	if tc.dev != nil && tc.dev.Process != nil {
		_ = tc.dev.Process.Signal(syscall.SIGTERM)
		select {
		case <-tc.devDone:
		case <-time.After(20 * time.Second):
			_ = tc.dev.Process.Kill()
			<-tc.devDone
		}
	}
	tc.killNodes()
	if tc.dir != "" {
		_ = os.RemoveAll(tc.dir)
	}
}

func (tc *testCluster) killNodes() {
	for _, pid := range tc.pids {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	tc.pids, tc.endpoints = nil, ""
}

// freeBasePort finds a base port whose dev ports (base+1..3, +101..,
// +201..) are free now, below the kernel's ephemeral range.
func freeBasePort() int {
	for range 100 {
		base := 10000 + rand.IntN(22000)
		if portsFree(base) {
			return base
		}
	}
	return 0
}

func portsFree(base int) bool {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for _, off := range []int{0, 100, 200} {
		for i := 1; i <= 3; i++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+off+i)))
			if err != nil {
				return false
			}
			ls = append(ls, l)
		}
	}
	return true
}

// cleanEnv is the environment without LOCKD_ variables (the test decides
// them).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LOCKD_") {
			env = append(env, kv)
		}
	}
	return env
}

// result is a finished lockctl run.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("lockctl %q: exit %d\nstdout: %q\nstderr: %q", r.args, r.code, r.stdout, r.stderr)
}

// ctlTimeout bounds one lockctl run in the tests.
const ctlTimeout = 30 * time.Second

// ctl runs lockctl with stdin and waits for it.
func (tc *testCluster) ctlIn(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	p := tc.startCtl(t, stdin, args...)
	return p.wait(t, ctlTimeout)
}

func (tc *testCluster) ctl(t *testing.T, args ...string) result {
	t.Helper()
	return tc.ctlIn(t, "", args...)
}

// expect runs lockctl and checks its exit code.
func (tc *testCluster) expect(t *testing.T, code int, args ...string) result {
	t.Helper()
	r := tc.ctl(t, args...)
	if r.code != code {
		t.Fatalf("want exit %d; %v", code, r)
	}
	return r
}

// expectJSON runs lockctl --output json, checks exit 0 and decodes its
// one JSON document into v.
func (tc *testCluster) expectJSON(t *testing.T, v any, args ...string) result {
	t.Helper()
	r := tc.expect(t, 0, append([]string{"-o", "json"}, args...)...)
	decodeOne(t, r.stdout, v)
	return r
}

// decodeOne decodes exactly one JSON document, on one line, strictly
// (unknown fields fail: the structs are the documented shape).
func decodeOne(t *testing.T, s string, v any) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Fatalf("want one JSON line, got %q", s)
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decoding %q into %T: %v", s, v, err)
	}
}

// expectFailure runs lockctl, checks the exit code, an empty stdout and
// one stderr line starting "lockctl: " containing every want.
func (tc *testCluster) expectFailure(t *testing.T, code int, args []string, want ...string) result {
	t.Helper()
	r := tc.expect(t, code, args...)
	checkOneLine(t, r, want...)
	if r.stdout != "" {
		t.Errorf("a failure printed on stdout: %v", r)
	}
	return r
}

func checkOneLine(t *testing.T, r result, want ...string) {
	t.Helper()
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "lockctl: ") {
		t.Errorf("stderr is not one line: %v", r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q: %v", w, r)
		}
	}
}

// ctlProc is a lockctl running in the background.
type ctlProc struct {
	cmd            *exec.Cmd
	args           []string
	stdout, stderr *lockedBuffer
	done           chan struct{}
	code           int
}

// startCtl starts lockctl; t.Cleanup ends it (SIGTERM, which it passes on
// to a command it runs, then SIGKILL) by pid if it still runs.
func (tc *testCluster) startCtl(t *testing.T, stdin string, args ...string) *ctlProc {
	t.Helper()
	p := &ctlProc{cmd: exec.Command(tc.lockctl, args...), args: args, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(cleanEnv(), "LOCKD_ENDPOINTS="+tc.endpoints)
	p.cmd.Stdin = strings.NewReader(stdin)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.code = 128 + int(ws.Signal())
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.exited() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *ctlProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *ctlProc) result() result {
	return result{args: p.args, code: p.code, stdout: p.stdout.String(), stderr: p.stderr.String()}
}

// wait waits for lockctl to exit, failing the test after timeout.
func (p *ctlProc) wait(t *testing.T, timeout time.Duration) result {
	t.Helper()
	select {
	case <-p.done:
		return p.result()
	case <-time.After(timeout):
		t.Fatalf("lockctl %q still running after %v; stdout %q stderr %q", p.args, timeout, p.stdout.String(), p.stderr.String())
		return result{}
	}
}

// signal sends sig to lockctl.
func (p *ctlProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// lines waits until lockctl printed at least n lines on stdout and
// returns them.
func (p *ctlProc) lines(t *testing.T, n int) []string {
	t.Helper()
	var lines []string
	waitUntil(t, 20*time.Second, fmt.Sprintf("%d lines from lockctl %q", n, p.args), func() (bool, string) {
		lines = nil
		sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		if p.exited() && len(lines) < n {
			t.Fatalf("lockctl exited early: %v", p.result())
		}
		return len(lines) >= n, fmt.Sprintf("stdout %q stderr %q", p.stdout.String(), p.stderr.String())
	})
	return lines
}

// waitUntil polls cond until it holds, failing the test at the deadline.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last saw: %s", timeout, what, saw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive says whether pid runs (a zombie counts as stopped).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return noProcfs() // with procfs, no stat file means gone
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

// noProcfs reports whether there is no procfs (then the signal test is
// all there is).
func noProcfs() bool {
	_, err := os.Stat("/proc/self/stat")
	return err != nil
}

// lockedBuffer is a buffer safe for a writer and a concurrent reader.
type lockedBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
