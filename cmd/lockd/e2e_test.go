//go:build unix

package main

import (
	"errors"
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

// The end-to-end tests run the real binary: built once per test binary
// run into a temp dir, started as child processes on free 127.0.0.1
// ports with temp data dirs. Everything they start is killed by pid at
// the end of the test, also when it fails.

// binary builds lockd once and returns its path.
type binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// lockdBin is shared by the e2e tests of this package run; TestMain
// removes its directory.
var lockdBin binary

func TestMain(m *testing.M) {
	code := m.Run()
	if lockdBin.dir != "" {
		os.RemoveAll(lockdBin.dir)
	}
	os.Exit(code)
}

func buildLockd(t *testing.T) string {
	t.Helper()
	lockdBin.once.Do(func() {
		lockdBin.dir, lockdBin.err = os.MkdirTemp("", "lockd-e2e-")
		if lockdBin.err != nil {
			return
		}
		lockdBin.path = filepath.Join(lockdBin.dir, "lockd")
		out, err := exec.Command("go", "build", "-o", lockdBin.path, ".").CombinedOutput()
		if err != nil {
			lockdBin.err = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if lockdBin.err != nil {
		t.Fatal(lockdBin.err)
	}
	return lockdBin.path
}

// testEnv makes the nodes elect fast: 20 ms ticks (through the env var,
// which lockd dev's children inherit too).
func testEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LOCKD_") {
			env = append(env, kv)
		}
	}
	return append(env, "LOCKD_TICK=20ms")
}

// proc is a started lockd.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{} // closed when Wait returned
	state          *os.ProcessState
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(buildLockd(t), args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = testEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait returns the exit code, failing the test if the process has not
// exited within timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("lockd %v still running after %v; stderr:\n%s", p.cmd.Args[1:], timeout, p.stderr.String())
		return -1
	}
}

// waitHealthy polls /healthz until it says ok, failing early if p exits.
func (p *proc) waitHealthy(t *testing.T, httpAddr string) {
	t.Helper()
	waitUntil(t, 15*time.Second, "/healthz ok at "+httpAddr, func() (bool, string) {
		if p.exited() {
			t.Fatalf("lockd exited with %d before it was healthy; stderr:\n%s", p.state.ExitCode(), p.stderr.String())
		}
		return healthzOK(httpAddr)()
	})
}

// nodeArgs are the flags of a single node on fresh ports.
type nodeArgs struct {
	dataDir, client, peer, http string
}

func freshNode(t *testing.T, dataDir string) nodeArgs {
	a := freeAddrs(t, 3)
	return nodeArgs{dataDir: dataDir, client: a[0], peer: a[1], http: a[2]}
}

func (a nodeArgs) args(extra ...string) []string {
	return append([]string{"--data-dir", a.dataDir, "--client-addr", a.client, "--peer-addr", a.peer, "--http-addr", a.http}, extra...)
}

// expectOneLineFailure runs lockd and checks it fails at once with the
// exit code and a single stderr line containing every want.
func expectOneLineFailure(t *testing.T, code int, args []string, want ...string) {
	t.Helper()
	p := start(t, args...)
	if got := p.wait(t, 10*time.Second); got != code {
		t.Fatalf("lockd %v: exit %d, want %d; stderr %q", args, got, code, p.stderr.String())
	}
	msg := p.stderr.String()
	if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "lockd: ") {
		t.Fatalf("lockd %v: stderr is not one line: %q", args, msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Fatalf("lockd %v: stderr %q lacks %q", args, msg, w)
		}
	}
}

func TestE2ESingleNodeLifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n1")
	a := freshNode(t, dir)
	first := start(t, a.args()...)
	first.waitHealthy(t, a.http)
	putKey(t, a.client, "e2e/key", "survives restarts")

	// A second lockd on the same data dir is refused at once and says by
	// whom; its own ports are free, so only the dir can stop it.
	b := freshNode(t, dir)
	expectOneLineFailure(t, exitFailure, b.args(), "data dir "+dir+" is in use by process ", "give this process another data dir")

	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(t, 15*time.Second); code != exitOK {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, first.stderr.String())
	}
	if !strings.Contains(first.stderr.String(), "n1: lockd stopped") {
		t.Fatalf("no clean stop in the log:\n%s", first.stderr.String())
	}

	// The data dir now belongs to cluster "lockd", node 1.
	expectOneLineFailure(t, exitFailure, a.args("--cluster-id", "other"),
		"data dir "+dir+` belongs to cluster "lockd" node 1, not cluster "other" node 1`)
	expectOneLineFailure(t, exitFailure, a.args("--name", "n2", "--initial-cluster", "n1=127.0.0.1:1,n2="+a.peer),
		"data dir "+dir+` belongs to cluster "lockd" node 1, not cluster "lockd" node 2`)
	// Same id, but another voter set: refused too.
	expectOneLineFailure(t, exitFailure, a.args("--initial-cluster", "n1="+a.peer+",n2=127.0.0.1:1"),
		"data dir "+dir+" was started with members [n1=1], but --initial-cluster gives [n1=1 n2=2]")

	second := start(t, a.args()...)
	second.waitHealthy(t, a.http)
	if v, ok := getKey(t, a.client, "e2e/key"); !ok || v != "survives restarts" {
		t.Fatalf("after a restart: key %q, found %v", v, ok)
	}
	_, scrape := httpGet("http://" + a.http + "/metrics")
	if metricValue(t, scrape, "lockd_keys") != 1 || metricValue(t, scrape, "lockd_raft_term") < 2 {
		t.Fatalf("after a restart:\n%s", scrape)
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := second.wait(t, 15*time.Second); code != exitOK {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, second.stderr.String())
	}
}

func TestE2EStartupErrorsAreOneLine(t *testing.T) {
	busy := startTestNode(t, false)
	a := freshNode(t, filepath.Join(t.TempDir(), "n1"))
	a.client = busy.srv.ClientAddr()
	expectOneLineFailure(t, exitFailure, a.args(), "cannot listen for clients (--client-addr)", "address already in use")

	expectOneLineFailure(t, exitUsage, freshNode(t, t.TempDir()).args("--initial-cluster", "n1=127.0.0.1:7401,n2"),
		`--initial-cluster: entry "n2" is not name=host:port`)

	corrupt := filepath.Join(t.TempDir(), "n1")
	if err := os.MkdirAll(corrupt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(corrupt, "raft.db"), []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	expectOneLineFailure(t, exitFailure, freshNode(t, corrupt).args(), "opening data dir "+corrupt, "corrupt data in ")
}

// devCluster is a started `lockd dev`.
type devCluster struct {
	*proc
	pids      map[string]int // node name → pid
	endpoints string
	httpAddrs []string
}

// freeBasePort finds a base port whose dev ports (base+1..n, +101..,
// +201..) are all free now, below the kernel's ephemeral range (where
// outgoing connections would take ports at random).
func freeBasePort(t *testing.T, nodes int) int {
	t.Helper()
	for range 100 {
		base := 10000 + rand.IntN(22000)
		if portsFree(base, nodes) {
			return base
		}
	}
	t.Fatal("no free port range for lockd dev")
	return 0
}

func portsFree(base, nodes int) bool {
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	for _, off := range []int{0, devPeerOffset, devHTTPOffset} {
		for i := 1; i <= nodes; i++ {
			l, err := listenTCP(base + off + i)
			if err != nil {
				return false
			}
			closers = append(closers, l.Close)
		}
	}
	return true
}

// startDev starts `lockd dev` and waits until every node is healthy.
// Between the check that its ports are free and their use another
// process (a parallel test package) may take one; then it tries again on
// other ports.
func startDev(t *testing.T, nodes int) *devCluster {
	t.Helper()
	for attempt := 1; ; attempt++ {
		d, lostRace := tryStartDev(t, nodes)
		if d != nil {
			return d
		}
		if attempt == 3 {
			t.Fatalf("lockd dev lost the race for its ports %d times; last:\n%s", attempt, lostRace)
		}
		t.Logf("lockd dev lost the race for a port; trying other ports")
	}
}

// tryStartDev returns the healthy cluster, or nil and the stderr of a
// lockd dev whose node found a port taken. Any other failure fails t.
func tryStartDev(t *testing.T, nodes int) (_ *devCluster, lostRace string) {
	t.Helper()
	base := freeBasePort(t, nodes)
	p := start(t, "dev", "--nodes", itoa(nodes), "--base-port", itoa(base), "--data-dir", filepath.Join(t.TempDir(), "dev"),
		"--stop-timeout", "10s")
	d := &devCluster{proc: p, pids: map[string]int{}}
	// Kill by pid whatever is left of the cluster, also on failure.
	t.Cleanup(func() {
		for _, pid := range d.pids {
			if alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	exitedEarly := func() (bool, string) {
		if !p.exited() {
			return false, ""
		}
		if strings.Contains(p.stderr.String(), "address already in use") {
			return true, p.stderr.String()
		}
		t.Fatalf("lockd dev exited with %d; stderr:\n%s", p.state.ExitCode(), p.stderr.String())
		return false, ""
	}
	waitUntil(t, 10*time.Second, "lockd dev to print its nodes", func() (bool, string) {
		if lost, _ := exitedEarly(); lost {
			return true, ""
		}
		out := p.stdout.String()
		return strings.Contains(out, "export LOCKD_ENDPOINTS="), out
	})
	if lost, stderr := exitedEarly(); lost {
		return nil, stderr
	}
	for _, line := range strings.Split(d.stdout.String(), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "pid" {
			d.pids[f[0]] = atoi(t, f[2])
		}
		if e, ok := strings.CutPrefix(line, "export LOCKD_ENDPOINTS="); ok {
			d.endpoints = e
		}
	}
	var want []string
	for i := 1; i <= nodes; i++ {
		want = append(want, "127.0.0.1:"+itoa(base+i))
		d.httpAddrs = append(d.httpAddrs, "127.0.0.1:"+itoa(base+devHTTPOffset+i))
	}
	if d.endpoints != strings.Join(want, ",") || len(d.pids) != nodes {
		t.Fatalf("lockd dev printed endpoints %q and pids %v; stdout:\n%s", d.endpoints, d.pids, d.stdout.String())
	}
	for _, h := range d.httpAddrs {
		lost := false
		waitUntil(t, 15*time.Second, "/healthz ok at "+h, func() (bool, string) {
			if lost, _ = exitedEarly(); lost {
				return true, ""
			}
			return healthzOK(h)()
		})
		if lost {
			return nil, p.stderr.String()
		}
	}
	return d, ""
}

// checkAllGone checks that no child of the cluster is still running.
func (d *devCluster) checkAllGone(t *testing.T) {
	t.Helper()
	for name, pid := range d.pids {
		if alive(pid) {
			t.Errorf("%s (pid %d) is still running after lockd dev exited", name, pid)
		}
	}
}

func TestE2EDevClusterStopsAllNodesOnSIGTERM(t *testing.T) {
	d := startDev(t, 3)
	// The cluster serves: a write through one node is read through another.
	putKey(t, strings.Split(d.endpoints, ",")[0], "dev/key", "v")
	if v, ok := getKey(t, strings.Split(d.endpoints, ",")[2], "dev/key"); !ok || v != "v" {
		t.Fatalf("read through n3: %q %v", v, ok)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t, 30*time.Second); code != exitOK {
		t.Fatalf("lockd dev: exit %d after SIGTERM; stderr:\n%s", code, d.stderr.String())
	}
	d.checkAllGone(t)
	// Each node's log is forwarded with its prefix, to the clean stop.
	for _, name := range []string{"n1", "n2", "n3"} {
		if want := "[" + name + "] "; !hasLineWith(d.stderr.String(), want, name+": lockd stopped") {
			t.Errorf("no line prefixed %q saying %s stopped:\n%s", want, name, d.stderr.String())
		}
	}
}

func TestE2EDevClusterStopsWhenANodeDies(t *testing.T) {
	d := startDev(t, 3)
	if err := syscall.Kill(d.pids["n2"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t, 30*time.Second); code != exitFailure {
		t.Fatalf("lockd dev: exit %d after a node died; stderr:\n%s", code, d.stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(d.stderr.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "lockd: dev: n2 (pid ") || !strings.Contains(last, "exited unexpectedly (signal: killed)") {
		t.Fatalf("last line %q", last)
	}
	d.checkAllGone(t)
}

func hasLineWith(text, prefix, substr string) bool {
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, prefix) && strings.Contains(line, substr) {
			return true
		}
	}
	return false
}

// A node of lockd dev stops by itself when lockd dev is gone, even when
// it was killed and could not stop its nodes.
func TestE2EDevNodesStopWhenDevIsKilled(t *testing.T) {
	d := startDev(t, 3)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	d.wait(t, 10*time.Second)
	waitUntil(t, 15*time.Second, "the orphaned nodes to stop", func() (bool, string) {
		var running []string
		for name, pid := range d.pids {
			if alive(pid) {
				running = append(running, name)
			}
		}
		return len(running) == 0, "still running: " + strings.Join(running, ", ")
	})
}

// alive says whether a process with this pid runs. A reaped child is
// gone; an orphan that exited but whose new parent has not reaped it yet
// (a zombie, on Linux) counts as stopped.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return true // no procfs: trust the signal
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false // gone since the signal
	}
	// The state follows the command name, which is in parentheses.
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

func itoa(n int) string { return strconv.Itoa(n) }

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func listenTCP(port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}
