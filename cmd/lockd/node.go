package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/fsm"
	"github.com/lockd/lockd/server"
	"github.com/lockd/lockd/store"
)

// httpShutdownTimeout bounds how long a clean stop waits for HTTP
// requests in progress (a pprof profile may take longer; it is cut off).
const httpShutdownTimeout = 5 * time.Second

// node is one running lockd: its store, its server and its HTTP endpoint.
type node struct {
	cfg    nodeConfig
	logger hclog.Logger
	store  *store.Store
	srv    *server.Server

	http     *http.Server // nil when --http-addr is ""
	httpL    net.Listener
	httpErr  chan error    // capacity 1: the HTTP server's exit, if it fails
	httpDone chan struct{} // closed when the HTTP server goroutine ends

	// stopping is set once shutdown begins: /healthz then says so.
	stopping atomic.Bool
}

// runNode starts a node, serves until ctx ends or the node fails, and
// stops it cleanly.
func runNode(ctx context.Context, cfg nodeConfig, stderr io.Writer) error {
	logger, gate := newLogger(cfg, stderr)
	n, err := startNode(cfg, logger)
	if err != nil {
		// The error alone explains a failed start; the lines logged on the
		// way are shown only to who asked for detail.
		gate.release(cfg.LogLevel <= hclog.Debug)
		return err
	}
	gate.release(true)
	return n.serve(ctx)
}

// startNode opens the data dir, checks it belongs to this node, opens the
// listeners and starts the server. On error everything opened is closed
// again and the error is one line that names what failed.
func startNode(cfg nodeConfig, logger hclog.Logger) (_ *node, err error) {
	n := &node{cfg: cfg, logger: logger, httpErr: make(chan error, 1), httpDone: make(chan struct{})}
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()

	// The data dir first: a second lockd started by mistake is told that
	// the dir is in use (and by which pid), not that a port is.
	n.store, err = store.Open(cfg.DataDir, store.Options{Logger: logger.Named("store"), RaftLog: cfg.RaftLog})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, err
		}
		return nil, fmt.Errorf("opening data dir %s: %w", cfg.DataDir, err)
	}
	closers = append(closers, func() { _ = n.store.Close() })
	stored, hasIdentity, err := n.store.Identity()
	if err != nil {
		return nil, fmt.Errorf("reading the identity of data dir %s: %w", cfg.DataDir, err)
	}
	var joined *joinRecord
	if len(cfg.Join) > 0 {
		rec, ok, err := readJoinRecord(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		switch {
		case ok && (rec.ClusterID != cfg.ClusterID || rec.Name != cfg.Name):
			return nil, fmt.Errorf("data dir %s joined cluster %q as %s, not cluster %q as %s: start it with the name and cluster id it joined with, or use an empty data dir",
				cfg.DataDir, rec.ClusterID, rec.Name, cfg.ClusterID, cfg.Name)
		case ok:
			// Joined before: Raft's stored configuration is the membership.
			cfg.ID, cfg.Members = consensus.NodeID(rec.ID), rec.members()
			logger.Info("data dir joined the cluster before: not asking again", "id", rec.ID)
		case hasIdentity:
			return nil, fmt.Errorf("data dir %s belongs to member %d of cluster %q (started with --initial-cluster): start it that way, or use an empty data dir to --join",
				cfg.DataDir, stored.NodeID, stored.ClusterID)
		default:
			joined = &rec
		}
	}
	want := store.Identity{ClusterID: cfg.ClusterID, NodeID: cfg.ID}
	if hasIdentity && joined == nil && stored != want {
		return nil, identityMismatch(cfg, stored)
	}

	clientL, err := listen("clients (--client-addr)", cfg.ClientAddr)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = clientL.Close() })
	peerL, err := listen("peers (--peer-addr)", cfg.PeerAddr)
	if err != nil {
		return nil, err
	}
	closers = append(closers, func() { _ = peerL.Close() })
	if cfg.HTTPAddr != "" {
		if n.httpL, err = listen("HTTP (--http-addr)", cfg.HTTPAddr); err != nil {
			return nil, err
		}
		closers = append(closers, func() { _ = n.httpL.Close() })
	}

	if joined != nil {
		// The peer listener is open: the leader checks it can reach us.
		rec, err := join(context.Background(), cfg, logger)
		if err != nil {
			return nil, err
		}
		if err := writeJoinRecord(cfg.DataDir, rec); err != nil {
			return nil, fmt.Errorf("recording the join in %s: %w; remove member %s (id %d) with lockctl and join again", cfg.DataDir, err, cfg.Name, rec.ID)
		}
		cfg.ID, cfg.Members = consensus.NodeID(rec.ID), rec.members()
		want = store.Identity{ClusterID: cfg.ClusterID, NodeID: cfg.ID}
		n.cfg = cfg
	}

	// Claim the data dir only once nothing else can stop the start, and
	// before Raft writes anything to it. (A joined node's bootstrap
	// members are in its join record instead.)
	if len(cfg.Join) == 0 {
		if err := checkMembers(cfg.DataDir, cfg.Members); err != nil {
			return nil, err
		}
	}
	if !hasIdentity {
		if err := n.store.SetIdentity(want); err != nil {
			return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
		}
		logger.Info("data dir claimed for this member", "data_dir", cfg.DataDir, "cluster_id", cfg.ClusterID, "node_id", cfg.ID)
	}

	snaps, err := store.NewFileSnapshotStore(filepath.Join(cfg.DataDir, "snapshots"), store.SnapshotOptions{Logger: logger.Named("snapshots")})
	if err != nil {
		return nil, fmt.Errorf("opening the snapshot dir: %w", err)
	}
	n.cfg = cfg
	trailing := cfg.SnapshotTrailing
	if trailing == 0 {
		trailing = -1 // server.Config: negative keeps none
	}
	n.srv, err = server.New(server.Config{
		ID: cfg.ID, Name: cfg.Name, Members: cfg.Members, ClusterID: cfg.ClusterID,
		ClientListener: clientL, PeerListener: peerL,
		LogStore: n.store, StableStore: n.store, SnapshotStore: snaps,
		SnapshotEntries: int(cfg.SnapshotThreshold), SnapshotBytes: cfg.SnapshotBytes, SnapshotTrailing: trailing,
		TickInterval: cfg.Tick, ElectionTicks: cfg.ElectionTicks, HeartbeatTicks: cfg.HeartbeatTicks,
		SyncPersist: cfg.SyncPersist,
		Logger:      logger,
	})
	if err != nil {
		return nil, fmt.Errorf("starting the server: %w", err)
	}
	if n.httpL != nil {
		n.startHTTP()
	}
	return n, nil
}

func identityMismatch(cfg nodeConfig, stored store.Identity) error {
	return &mismatchError{fmt.Sprintf("data dir %s belongs to cluster %q node %d, not cluster %q node %d "+
		"(node ids follow the sorted names in --initial-cluster): start it with the --cluster-id and --initial-cluster "+
		"it was created with, or use an empty data dir", cfg.DataDir, stored.ClusterID, stored.NodeID, cfg.ClusterID, cfg.ID)}
}

// mismatchError is a data dir of another member; it wraps
// store.ErrIdentityMismatch.
type mismatchError struct{ msg string }

func (e *mismatchError) Error() string { return e.msg }
func (e *mismatchError) Unwrap() error { return store.ErrIdentityMismatch }

func listen(what, addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen for %s: %w", what, err)
	}
	return l, nil
}

func (n *node) startHTTP() {
	view := serverView{srv: n.srv}
	n.http = &http.Server{
		Handler:           newHTTPHandler(view, n.info(), &n.stopping, n.cfg.Pprof),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          n.logger.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	go func() { // HTTP server: ends with Shutdown in close
		defer close(n.httpDone)
		if err := n.http.Serve(n.httpL); !errors.Is(err, http.ErrServerClosed) {
			n.httpErr <- err
		}
	}()
}

func (n *node) info() nodeInfo {
	names := map[consensus.NodeID]string{}
	for _, m := range n.cfg.Members {
		names[m.ID] = m.Name
	}
	return nodeInfo{Name: n.cfg.Name, ID: n.cfg.ID, ClusterID: n.cfg.ClusterID, Members: names,
		MaxLeaderSilence: 2 * n.cfg.ElectionTicks}
}

// serve waits for the end: ctx (a signal) is a clean stop; the Raft node
// or the HTTP server failing is an error. Either way the node is closed.
func (n *node) serve(ctx context.Context) error {
	httpAddr := "disabled"
	if n.httpL != nil {
		httpAddr = n.httpL.Addr().String()
	}
	n.logger.Info("lockd ready", "client_addr", n.srv.ClientAddr(), "peer_addr", n.cfg.PeerAddr, "http_addr", httpAddr,
		"data_dir", n.cfg.DataDir, "cluster_id", n.cfg.ClusterID, "members", memberNames(n.cfg.Members))
	var failure error
	select {
	case <-ctx.Done():
		n.logger.Info("shutting down", "reason", context.Cause(ctx))
	case <-n.srv.Removed():
		// As etcd does: a member removed from the cluster stops, cleanly
		// (a supervisor restarting it would only see it stop again).
		n.logger.Warn("shutting down: this node was removed from the cluster; its data dir can be deleted")
	case <-n.srv.Node().Done():
		failure = fmt.Errorf("raft node stopped: %w", n.srv.Node().Err())
	case err := <-n.httpErr:
		failure = fmt.Errorf("HTTP server on %s failed: %w", n.cfg.HTTPAddr, err)
	}
	if failure != nil {
		n.logger.Error("stopping after a failure", "error", failure)
	}
	return errors.Join(failure, n.close())
}

// close stops the node: the server first (a leader hands leadership over,
// calls in progress end), then HTTP, then the store.
func (n *node) close() error {
	n.stopping.Store(true)
	var errs []error
	if err := n.srv.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing the server: %w", err))
	}
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
		if err := n.http.Shutdown(ctx); err != nil {
			_ = n.http.Close()
		}
		cancel()
		<-n.httpDone
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing data dir %s: %w", n.cfg.DataDir, err))
	}
	if len(errs) == 0 {
		n.logger.Info("lockd stopped")
	}
	return errors.Join(errs...)
}

// serverView is what the HTTP endpoints read from a running server.
type serverView struct{ srv *server.Server }

var _ nodeView = serverView{}

func (v serverView) Status() consensus.Status { return v.srv.Node().Status() }
func (v serverView) Stats() fsm.Stats         { return v.srv.FSM().Stats() }

func (v serverView) Activity() activity {
	m := v.srv.Node().Metrics()
	return activity{Proposals: m.Proposals.Load(), ProposalsFailed: m.ProposalsFailed.Load(),
		Persist: m.Persist.Snapshot(), Apply: m.Apply.Snapshot(), Server: v.srv.Metrics()}
}

// Stopped returns why the Raft node stopped, nil while it runs.
func (v serverView) Stopped() error {
	select {
	case <-v.srv.Node().Done():
		if err := v.srv.Node().Err(); err != nil {
			return err
		}
		return consensus.ErrStopped
	default:
		return nil
	}
}
