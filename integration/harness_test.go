package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
)

// The harness runs real lockd processes on 127.0.0.1, each with its own
// data dir, and puts a fault-injecting Proxy on every link: one per
// ordered pair of nodes (the address node i dials for node j) and one per
// node and client group (the address those clients dial for the node).
// Each node gets its own --initial-cluster in which its own entry is its
// real peer address and every other entry is the proxy of that link; the
// ids and names are the same everywhere, which is all lockd requires.
//
// Invariants:
//   - Every process is started by the harness and ended by PID in
//     t.Cleanup (SIGCONT, then SIGKILL, then wait), even when the test
//     fails; a node is also started with --parent-pid, so it stops by
//     itself if the test binary dies before its cleanups run.
//   - Readiness is polled (/healthz, Status), never slept for.
//   - On failure every node's log is copied into the test output.

// helperEnv makes the test binary run a helper program instead of tests
// (see helper_test.go): the re-exec that gives a lock holder its own
// process, so that SIGSTOP pauses only the holder.
const helperEnv = "LOCKD_INTEGRATION_HELPER"

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	code := m.Run()
	if build.dir != "" {
		_ = os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// lockdBinary builds cmd/lockd once per test binary, or takes the binary
// named by LOCKD_BIN (to test a given build, or to keep a run independent
// of a working tree that is being edited).
func lockdBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("LOCKD_BIN"); bin != "" {
		return bin
	}
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "lockd-integration-")
		if build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "lockd")
		out, err := exec.Command("go", "build", "-o", build.bin, "github.com/lockd/lockd/cmd/lockd").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("building lockd: %w\n%s", err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

// handedOut holds the addresses freeAddr gave out: they are closed until
// lockd binds them, so the kernel may offer the same port to a proxy of
// this test binary (NewProxy skips them; CI once saw n2's own peer
// address given to its proxy towards n5).
var handedOut sync.Map

// freeAddr returns a 127.0.0.1 address free right now. Another process
// could take it before lockd binds it; start reports that plainly.
func freeAddr(t testing.TB) string {
	t.Helper()
	var held []net.Listener // ports handed out before: never twice
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		if _, again := handedOut.LoadOrStore(l.Addr().String(), true); !again {
			return l.Addr().String()
		}
	}
}

// Timing is a cluster's Raft timing; the zero value is lockd's defaults
// (100 ms ticks, election timeout 10–20 ticks, heartbeat every tick).
type Timing struct {
	Tick          time.Duration
	ElectionTicks int
}

// fastTiming shortens elections tenfold. Used where what is tested does
// not depend on the timing (the order of events is the same, only
// sooner); the seed scenario and the measured figures use the defaults.
var fastTiming = Timing{Tick: 20 * time.Millisecond, ElectionTicks: 10}

func (tm Timing) tick() time.Duration {
	if tm.Tick == 0 {
		return 100 * time.Millisecond
	}
	return tm.Tick
}

func (tm Timing) electionTicks() int {
	if tm.ElectionTicks == 0 {
		return 10
	}
	return tm.ElectionTicks
}

// ElectionTimeoutMax is the longest election timeout (2N ticks).
func (tm Timing) ElectionTimeoutMax() time.Duration {
	return 2 * time.Duration(tm.electionTicks()) * tm.tick()
}

// Node is one lockd process slot: its addresses and data dir outlive the
// process, so it restarts from the same state.
type Node struct {
	Idx                           int
	Name                          string
	dataDir, logPath              string
	clientAddr, peerAddr, httpAdr string

	mu      sync.Mutex // protects cmd, exited, paused, starts
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	paused  bool
	starts  int
	members string
}

// Cluster is a running set of nodes behind their proxies.
type Cluster struct {
	t      testing.TB
	timing Timing
	bin    string
	Nodes  []*Node
	// peer[i][j] carries node i's connections to node j (nil for i == j).
	peer [][]*Proxy
	// clientP[g][i] carries client group g's connections to node i.
	clientP [][]*Proxy
	// control reaches the nodes directly (not through proxies): status,
	// readiness and the final reads of the checkers.
	control *client.Client
	start   time.Time
}

// ClusterOptions configures NewCluster.
type ClusterOptions struct {
	Nodes        int
	Timing       Timing
	ClientGroups int // default 1
}

// NewCluster starts the nodes and waits until they have a leader.
func NewCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	if o.ClientGroups == 0 {
		o.ClientGroups = 1
	}
	c := &Cluster{t: t, timing: o.Timing, bin: lockdBinary(t), start: time.Now()}
	dir := t.TempDir()
	for i := 0; i < o.Nodes; i++ {
		name := fmt.Sprintf("n%d", i+1)
		c.Nodes = append(c.Nodes, &Node{Idx: i, Name: name, dataDir: filepath.Join(dir, name),
			logPath: filepath.Join(dir, name+".log"), clientAddr: freeAddr(t), peerAddr: freeAddr(t), httpAdr: freeAddr(t)})
	}
	t.Cleanup(c.cleanup) // registered before anything that needs cleaning
	c.peer = make([][]*Proxy, o.Nodes)
	for i := range c.Nodes {
		c.peer[i] = make([]*Proxy, o.Nodes)
		for j := range c.Nodes {
			if i != j {
				c.peer[i][j] = c.newProxy(fmt.Sprintf("%s→%s", c.Nodes[i].Name, c.Nodes[j].Name), c.Nodes[j].peerAddr)
			}
		}
	}
	for g := 0; g < o.ClientGroups; g++ {
		var ps []*Proxy
		for _, n := range c.Nodes {
			ps = append(ps, c.newProxy(fmt.Sprintf("clients%d→%s", g, n.Name), n.clientAddr))
		}
		c.clientP = append(c.clientP, ps)
	}
	for i, n := range c.Nodes {
		var ms []string
		for j, m := range c.Nodes {
			addr := m.peerAddr
			if i != j {
				addr = c.peer[i][j].Addr()
			}
			ms = append(ms, m.Name+"="+addr)
		}
		n.members = strings.Join(ms, ",")
	}
	var direct []string
	for _, n := range c.Nodes {
		direct = append(direct, n.clientAddr)
	}
	ctl, err := client.New(client.Config{Endpoints: direct, Name: "harness", RequestTimeout: 2 * time.Second,
		DialTimeout: time.Second, BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.control = ctl
	for _, n := range c.Nodes {
		c.Start(n.Idx)
	}
	c.WaitStable(60 * time.Second)
	return c
}

func (c *Cluster) newProxy(name, target string) *Proxy {
	p, err := NewProxy(name, target)
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// Since is the time since the cluster was created (for logs).
func (c *Cluster) Since() time.Duration { return time.Since(c.start).Round(time.Millisecond) }

// Logf logs with the cluster's clock.
func (c *Cluster) Logf(format string, args ...any) {
	c.t.Helper()
	c.t.Logf("[%8v] %s", c.Since(), fmt.Sprintf(format, args...))
}

// Start starts node i's process (again) from its data dir.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		c.t.Fatalf("start %s: already running (pid %d)", n.Name, n.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	n.starts++
	fmt.Fprintf(logf, "=== harness: start #%d of %s at %v\n", n.starts, n.Name, c.Since())
	args := []string{"--name", n.Name, "--data-dir", n.dataDir, "--client-addr", n.clientAddr,
		"--peer-addr", n.peerAddr, "--http-addr", n.httpAdr, "--initial-cluster", n.members,
		"--cluster-id", "itest", "--log-format", "json", "--parent-pid", fmt.Sprint(os.Getpid())}
	if c.timing.Tick != 0 {
		args = append(args, "--tick", c.timing.Tick.String())
	}
	if c.timing.ElectionTicks != 0 {
		args = append(args, "--election-ticks", fmt.Sprint(c.timing.ElectionTicks))
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start %s: %v", n.Name, err)
	}
	exited := make(chan struct{})
	go func() { // reaper: ends when the process does (the cleanup kills it)
		_ = cmd.Wait()
		logf.Close()
		close(exited)
	}()
	n.cmd, n.exited, n.paused = cmd, exited, false
}

// signal sends sig to node i's process by PID. It reports false if the
// node is not running.
func (c *Cluster) signal(i int, sig syscall.Signal) bool {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	_ = n.cmd.Process.Signal(sig)
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
	return true
}

// Kill SIGKILLs node i and waits until the process is gone.
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.cmd, n.paused = nil, false
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// Stop SIGTERMs node i (a clean stop) and waits for it; SIGKILL after
// 30 s.
func (c *Cluster) Stop(i int) {
	n := c.Nodes[i]
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.cmd = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

// Restart kills node i and starts it again from its data dir.
func (c *Cluster) Restart(i int) {
	c.Kill(i)
	c.Start(i)
}

// Pause SIGSTOPs node i; Resume SIGCONTs it.
func (c *Cluster) Pause(i int)  { c.signal(i, syscall.SIGSTOP) }
func (c *Cluster) Resume(i int) { c.signal(i, syscall.SIGCONT) }

// Running reports whether node i has a process (paused or not).
func (c *Cluster) Running(i int) bool {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// PID returns node i's process id (0 if not running).
func (c *Cluster) PID(i int) int {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

func (c *Cluster) live(i int) bool {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && !n.paused
}

// healthy asks node i's /healthz.
func (c *Cluster) healthy(ctx context.Context, i int) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Nodes[i].httpAdr+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Leader returns the index of the node that says it leads in the highest
// term any node reports, or -1.
func (c *Cluster) Leader(ctx context.Context) (idx int, term uint64) {
	idx = -1
	for i, st := range c.control.StatusAll(ctx) {
		if st.Err == nil && st.Status.Node.Role == "leader" && st.Status.Term >= term {
			idx, term = i, st.Status.Term
		}
	}
	return idx, term
}

// WaitLeader polls until some node leads, and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		i, _ := c.Leader(ctx)
		cancel()
		if i >= 0 {
			return i
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no leader within %v", timeout)
	return -1
}

// WaitStable polls until every running node is healthy and all of them
// name the same leader, which has every node's log matched up to its own
// commit index (so a restarted node has caught up).
func (c *Cluster) WaitStable(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		lead, why := c.stable(ctx)
		cancel()
		if lead >= 0 {
			return lead
		}
		last = why
		time.Sleep(25 * time.Millisecond)
	}
	c.t.Fatalf("cluster not stable within %v: %s", timeout, last)
	return -1
}

func (c *Cluster) stable(ctx context.Context) (int, string) {
	sts := c.control.StatusAll(ctx)
	var leaderID uint64
	lead := -1
	for i, st := range sts {
		if !c.live(i) {
			continue
		}
		if !c.healthy(ctx, i) {
			return -1, c.Nodes[i].Name + " not healthy"
		}
		if st.Err != nil {
			return -1, fmt.Sprintf("%s: %v", c.Nodes[i].Name, st.Err)
		}
		if st.Status.Leader == 0 || (leaderID != 0 && st.Status.Leader != leaderID) {
			return -1, fmt.Sprintf("%s sees leader %d, others %d", c.Nodes[i].Name, st.Status.Leader, leaderID)
		}
		leaderID = st.Status.Leader
		if st.Status.Node.Role == "leader" {
			lead = i
		}
	}
	if lead < 0 {
		return -1, "the leader named is not running"
	}
	ls := sts[lead].Status
	for _, m := range ls.Members {
		for i, n := range c.Nodes {
			if n.Name == m.Name && c.live(i) && i != lead && m.Match < ls.Node.Commit {
				return -1, fmt.Sprintf("%s matched to %d, leader committed %d", n.Name, m.Match, ls.Node.Commit)
			}
		}
	}
	return lead, ""
}

// Endpoints are the client addresses of group g (through its proxies).
func (c *Cluster) Endpoints(g int) []string {
	var eps []string
	for _, p := range c.clientP[g] {
		eps = append(eps, p.Addr())
	}
	return eps
}

// NewClient returns a client of group g whose endpoint list starts at
// node first (so workers spread over the nodes). Closed by t.Cleanup.
func (c *Cluster) NewClient(g, first int, name string) *client.Client {
	c.t.Helper()
	eps := c.Endpoints(g)
	eps = append(eps[first%len(eps):], eps[:first%len(eps)]...)
	cl, err := client.New(client.Config{Endpoints: eps, Name: name, ClusterID: "itest", RequestTimeout: time.Second,
		DialTimeout: time.Second, BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// Control is the direct (proxy-free) client.
func (c *Cluster) Control() *client.Client { return c.control }

// Partition blackholes every peer link between nodes of different sides
// (both directions). Nodes not listed are a side of their own. Client
// links are not touched.
func (c *Cluster) Partition(sides ...[]int) {
	side := make([]int, len(c.Nodes))
	for i := range side {
		side[i] = -1 - i
	}
	for s, nodes := range sides {
		for _, i := range nodes {
			side[i] = s
		}
	}
	for i := range c.Nodes {
		for j := range c.Nodes {
			if i != j && side[i] != side[j] {
				c.peer[i][j].Block(true, true)
			}
		}
	}
}

// Bridge cuts left from right; the bridge node sees both.
func (c *Cluster) Bridge(left []int, bridge int, right []int) {
	for _, i := range left {
		for _, j := range right {
			c.peer[i][j].Block(true, true)
			c.peer[j][i].Block(true, true)
		}
	}
}

// OneWay drops every byte node from sends to node to (on both links
// between them: from's requests and from's answers), while to's bytes
// still reach from.
func (c *Cluster) OneWay(from, to int) {
	c.peer[from][to].Block(true, false)
	c.peer[to][from].Block(false, true)
}

// CutClients blackholes client group g's links to the given nodes.
func (c *Cluster) CutClients(g int, nodes ...int) {
	for _, i := range nodes {
		c.clientP[g][i].Block(true, true)
	}
}

// SetPeerDelay delays every peer link from or to node i.
func (c *Cluster) SetPeerDelay(i int, d time.Duration) {
	for j := range c.Nodes {
		if i != j {
			c.peer[i][j].SetDelay(d)
			c.peer[j][i].SetDelay(d)
		}
	}
}

// HealNetwork lifts every network fault.
func (c *Cluster) HealNetwork() {
	for _, row := range c.peer {
		for _, p := range row {
			if p != nil {
				p.Heal()
			}
		}
	}
	for _, row := range c.clientP {
		for _, p := range row {
			p.Heal()
		}
	}
}

// HealAll lifts network faults, resumes paused nodes and starts stopped
// ones.
func (c *Cluster) HealAll() {
	c.HealNetwork()
	for i := range c.Nodes {
		if !c.Running(i) {
			c.Start(i)
		} else {
			c.Resume(i)
		}
	}
}

// NodeLog returns node i's log so far.
func (c *Cluster) NodeLog(i int) string {
	b, err := os.ReadFile(c.Nodes[i].logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

func (c *Cluster) cleanup() {
	for i := range c.Nodes {
		n := c.Nodes[i]
		n.mu.Lock()
		cmd, exited := n.cmd, n.exited
		n.cmd = nil
		n.mu.Unlock()
		if cmd != nil {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-exited
		}
	}
	if c.control != nil {
		_ = c.control.Close()
	}
	for _, row := range c.peer {
		for _, p := range row {
			if p != nil {
				p.Close()
			}
		}
	}
	for _, row := range c.clientP {
		for _, p := range row {
			p.Close()
		}
	}
	if c.t.Failed() {
		for i, n := range c.Nodes {
			c.t.Logf("===== log of %s (%s) =====\n%s", n.Name, n.logPath, tail(c.NodeLog(i), 400))
		}
	}
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("(%d earlier lines left out)\n%s", len(lines)-n, strings.Join(lines[len(lines)-n:], "\n"))
}

// logEvent is one line of a node's JSON log.
type logEvent struct {
	Node    string
	At      time.Time
	Message string
	Line    string
}

// Events returns the log lines of every node whose message contains one
// of the given substrings, in time order per node.
func (c *Cluster) Events(substrs ...string) []logEvent {
	var out []logEvent
	for _, n := range c.Nodes {
		f, err := os.Open(n.logPath)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			ev, ok := parseLogLine(sc.Text())
			if !ok {
				continue
			}
			for _, s := range substrs {
				if strings.Contains(ev.Message, s) {
					ev.Node = n.Name
					out = append(out, ev)
					break
				}
			}
		}
		f.Close()
	}
	return out
}

// parseLogLine reads one hclog JSON line ("@timestamp", "@message").
func parseLogLine(line string) (logEvent, bool) {
	var m struct {
		At  string `json:"@timestamp"`
		Msg string `json:"@message"`
	}
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &m) != nil {
		return logEvent{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, m.At)
	if err != nil {
		return logEvent{}, false
	}
	return logEvent{At: at, Message: m.Msg, Line: line}, true
}
