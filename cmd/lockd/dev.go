package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
)

// Port layout of lockd dev: node i (1-based) listens for clients on
// base+i, for peers on base+100+i and for HTTP on base+200+i, so with the
// default base node 1 has lockd's default ports.
const (
	devPeerOffset = 100
	devHTTPOffset = 200
	devMaxNodes   = 9
)

// devOptions configure lockd dev.
type devOptions struct {
	Nodes       int
	BasePort    int
	DataDir     string
	ClusterID   string
	LogLevel    string
	LogFormat   string
	StopTimeout time.Duration
	// Extra are arguments given after the flags (after "--"), passed to
	// every node.
	Extra []string
}

// devNode is one planned child.
type devNode struct {
	Name, DataDir                  string
	ClientAddr, PeerAddr, HTTPAddr string
}

func devCommand(stdout, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      "dev",
		Usage:     "run a local cluster of real lockd processes (Ctrl-C stops them all)",
		ArgsUsage: "[-- NODE FLAGS...]",
		Description: "Starts --nodes children of this binary on 127.0.0.1: node i listens for clients on base-port+i,\n" +
			"for peers on base-port+100+i and for HTTP on base-port+200+i, with its data in DIR/n<i>.\n" +
			"Arguments after -- are passed to every node (e.g. -- --tick 50ms --pprof).",
		OnUsageError: onUsageError,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "nodes", Value: 3, EnvVars: env("DEV_NODES"), Usage: fmt.Sprintf("number of nodes (1 to %d)", devMaxNodes)},
			&cli.IntFlag{Name: "base-port", Value: 7300, EnvVars: env("DEV_BASE_PORT"), Usage: "ports are counted from this `PORT`"},
			&cli.StringFlag{Name: "data-dir", Value: "./lockd-dev", EnvVars: env("DEV_DATA_DIR"), Usage: "`DIR` holding one data dir per node"},
			&cli.StringFlag{Name: flagClusterID, Value: defaultClusterID, EnvVars: env("CLUSTER_ID"), Usage: "cluster `ID`"},
			&cli.StringFlag{Name: flagLogLevel, Value: "info", EnvVars: env("LOG_LEVEL"), Usage: "nodes' log `LEVEL`"},
			&cli.StringFlag{Name: flagLogFormat, Value: "text", EnvVars: env("LOG_FORMAT"), Usage: "nodes' log `FORMAT`: text or json"},
			&cli.DurationFlag{Name: "stop-timeout", Value: 10 * time.Second, EnvVars: env("DEV_STOP_TIMEOUT"),
				Usage: "how long nodes get to stop after SIGTERM before they are killed"},
		},
		Action: func(c *cli.Context) error {
			o := devOptions{
				Nodes: c.Int("nodes"), BasePort: c.Int("base-port"), DataDir: c.String("data-dir"),
				ClusterID: c.String(flagClusterID), LogLevel: c.String(flagLogLevel), LogFormat: c.String(flagLogFormat),
				StopTimeout: c.Duration("stop-timeout"), Extra: c.Args().Slice(),
			}
			if err := o.validate(); err != nil {
				return usageError{fmt.Errorf("dev: %w", err)}
			}
			if err := runDev(c.Context, o, stdout, stderr); err != nil {
				return fmt.Errorf("dev: %w", err)
			}
			return nil
		},
	}
}

func (o devOptions) validate() error {
	var errs []error
	if o.Nodes < 1 || o.Nodes > devMaxNodes {
		errs = append(errs, fmt.Errorf("--nodes %d must be from 1 to %d", o.Nodes, devMaxNodes))
	}
	if top := o.BasePort + devHTTPOffset + o.Nodes; o.BasePort < 1 || top > 65535 {
		errs = append(errs, fmt.Errorf("--base-port %d puts ports outside 1..65535 (the highest would be %d)", o.BasePort, top))
	}
	if o.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if o.ClusterID == "" {
		errs = append(errs, errors.New("--cluster-id must not be empty"))
	}
	if hclog.LevelFromString(o.LogLevel) == hclog.NoLevel {
		errs = append(errs, fmt.Errorf("--log-level %q must be one of trace, debug, info, warn, error, off", o.LogLevel))
	}
	if f := strings.ToLower(o.LogFormat); f != "text" && f != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q must be text or json", o.LogFormat))
	}
	if o.StopTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--stop-timeout %v must be positive", o.StopTimeout))
	}
	return errors.Join(errs...)
}

// plan lays out the nodes.
func (o devOptions) plan() []devNode {
	nodes := make([]devNode, o.Nodes)
	for i := range nodes {
		name := "n" + strconv.Itoa(i+1)
		port := func(offset int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(o.BasePort+offset+i+1)) }
		nodes[i] = devNode{Name: name, DataDir: filepath.Join(o.DataDir, name),
			ClientAddr: port(0), PeerAddr: port(devPeerOffset), HTTPAddr: port(devHTTPOffset)}
	}
	return nodes
}

// args are the command line of one child.
func (o devOptions) args(n devNode, cluster string, ppid int) []string {
	args := []string{
		"--" + flagName, n.Name, "--" + flagDataDir, n.DataDir,
		"--" + flagClientAddr, n.ClientAddr, "--" + flagPeerAddr, n.PeerAddr, "--" + flagHTTPAddr, n.HTTPAddr,
		"--" + flagInitialCluster, cluster, "--" + flagClusterID, o.ClusterID,
		"--" + flagLogLevel, o.LogLevel, "--" + flagLogFormat, o.LogFormat,
		"--" + flagParentPID, strconv.Itoa(ppid),
	}
	return append(args, o.Extra...)
}

func initialCluster(nodes []devNode) string {
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = n.Name + "=" + n.PeerAddr
	}
	return strings.Join(parts, ",")
}

// child is one started node.
type child struct {
	devNode
	cmd *exec.Cmd
	out *prefixWriter
	err error // Wait's result; read after the child was received from exited
}

// runDev starts the children, waits for ctx (Ctrl-C, SIGTERM) or for one
// child to exit, and stops the others. It returns an error if a child
// exited on its own, or did not stop cleanly.
func runDev(ctx context.Context, o devOptions, stdout, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this binary to start the nodes: %w", err)
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	nodes := o.plan()
	cluster := initialCluster(nodes)
	var outMu sync.Mutex // serializes lines from all children on stderr
	exited := make(chan *child, len(nodes))
	var children []*child
	for _, n := range nodes {
		c := &child{devNode: n, out: &prefixWriter{mu: &outMu, w: stderr, prefix: "[" + n.Name + "] "}}
		c.cmd = exec.Command(exe, o.args(n, cluster, os.Getpid())...)
		c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
		c.cmd.SysProcAttr = childProcAttr()
		if err := c.cmd.Start(); err != nil {
			stopErr := stopChildren(children, exited, o.StopTimeout, stderr)
			return errors.Join(fmt.Errorf("starting %s: %w", n.Name, err), stopErr)
		}
		children = append(children, c)
		go func() { // child waiter: ends when the child has exited
			c.err = c.cmd.Wait()
			c.out.flush()
			exited <- c
		}()
	}
	printPlan(stdout, o, children)

	readyCtx, cancelReady := context.WithCancel(ctx)
	readyDone := make(chan struct{})
	go func() { // readiness reporter: ends when all are healthy or on stop
		defer close(readyDone)
		if waitHealthy(readyCtx, nodes) {
			fmt.Fprintf(stdout, "lockd dev: all %d nodes are healthy\n", len(nodes))
		}
	}()
	defer func() {
		cancelReady()
		<-readyDone
	}()

	var failure error
	select {
	case <-ctx.Done():
		fmt.Fprintf(stderr, "lockd dev: %v: stopping %d nodes\n", context.Cause(ctx), len(children))
	case c := <-exited:
		failure = fmt.Errorf("%s (pid %d) exited unexpectedly (%s); stopped the other nodes", c.Name, c.cmd.Process.Pid, exitText(c.err))
		fmt.Fprintf(stderr, "lockd dev: %s exited (%s): stopping the other nodes\n", c.Name, exitText(c.err))
		children = without(children, c)
	}
	return errors.Join(failure, stopChildren(children, exited, o.StopTimeout, stderr))
}

func printPlan(w io.Writer, o devOptions, children []*child) {
	fmt.Fprintf(w, "lockd dev: %d nodes, data in %s\n", len(children), o.DataDir)
	endpoints := make([]string, len(children))
	for i, c := range children {
		endpoints[i] = c.ClientAddr
		fmt.Fprintf(w, "  %s  pid %d  client %s  peer %s  http http://%s  logs prefixed %q\n",
			c.Name, c.cmd.Process.Pid, c.ClientAddr, c.PeerAddr, c.HTTPAddr, c.out.prefix)
	}
	fmt.Fprintf(w, "export LOCKD_ENDPOINTS=%s\n", strings.Join(endpoints, ","))
	fmt.Fprintln(w, "lockd dev: Ctrl-C stops all nodes")
}

// devKillWait bounds the wait for children after SIGKILL (a process in
// uninterruptible sleep may take a while to go).
const devKillWait = 5 * time.Second

// stopChildren sends SIGTERM to every child in alive, gives them grace to
// exit, then kills those left. Children are signalled by pid only.
func stopChildren(alive []*child, exited <-chan *child, grace time.Duration, stderr io.Writer) error {
	var errs []error
	for _, c := range alive {
		if err := terminate(c.cmd.Process); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("signalling %s (pid %d): %w", c.Name, c.cmd.Process.Pid, err))
		}
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	killed := false
	for len(alive) > 0 {
		select {
		case c := <-exited:
			alive = without(alive, c)
			if c.err != nil && !killed {
				errs = append(errs, fmt.Errorf("%s did not stop cleanly (%s)", c.Name, exitText(c.err)))
			}
		case <-timer.C:
			if killed {
				for _, c := range alive {
					errs = append(errs, fmt.Errorf("%s (pid %d) is still running after SIGKILL", c.Name, c.cmd.Process.Pid))
				}
				return errors.Join(errs...)
			}
			killed = true
			for _, c := range alive {
				fmt.Fprintf(stderr, "lockd dev: %s (pid %d) did not stop within %v: killing it\n", c.Name, c.cmd.Process.Pid, grace)
				errs = append(errs, fmt.Errorf("%s did not stop within %v and was killed", c.Name, grace))
				_ = c.cmd.Process.Kill()
			}
			timer.Reset(devKillWait)
		}
	}
	return errors.Join(errs...)
}

func without(cs []*child, c *child) []*child {
	out := cs[:0:0]
	for _, x := range cs {
		if x != c {
			out = append(out, x)
		}
	}
	return out
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// devHealthPoll is how often lockd dev polls the nodes' /healthz while
// waiting for the cluster to come up.
const devHealthPoll = 200 * time.Millisecond

// waitHealthy polls every node's /healthz until all say ok (true) or ctx
// ends (false).
func waitHealthy(ctx context.Context, nodes []devNode) bool {
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(devHealthPoll)
	defer t.Stop()
	for {
		all := true
		for _, n := range nodes {
			if !healthy(ctx, client, "http://"+n.HTTPAddr+"/healthz") {
				all = false
				break
			}
		}
		if all {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

func healthy(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// maxPartialLine bounds a line held while waiting for its end.
const maxPartialLine = 64 << 10

// prefixWriter writes each complete line with a prefix ("[n1] "). All of
// a dev cluster's writers share mu, so lines never interleave.
type prefixWriter struct {
	mu      *sync.Mutex // shared; protects w and every writer's partial
	w       io.Writer
	prefix  string
	partial []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.writeLine(p.partial[:i])
		p.partial = p.partial[i+1:]
	}
	if len(p.partial) > maxPartialLine {
		p.writeLine(p.partial)
		p.partial = nil
	}
	// A failed write to our own stderr must not kill the child's pipe.
	return len(b), nil
}

func (p *prefixWriter) writeLine(line []byte) {
	_, _ = io.WriteString(p.w, p.prefix+string(line)+"\n")
}

// flush writes a last line that had no newline.
func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.partial) > 0 {
		p.writeLine(p.partial)
		p.partial = nil
	}
}
