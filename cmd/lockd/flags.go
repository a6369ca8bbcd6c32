package main

import (
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/store"
)

// Flag names shared by the node and by lockd dev (which passes them on).
const (
	flagName              = "name"
	flagDataDir           = "data-dir"
	flagClientAddr        = "client-addr"
	flagPeerAddr          = "peer-addr"
	flagHTTPAddr          = "http-addr"
	flagInitialCluster    = "initial-cluster"
	flagJoin              = "join"
	flagClusterID         = "cluster-id"
	flagTick              = "tick"
	flagElectionTicks     = "election-ticks"
	flagHeartbeatTicks    = "heartbeat-ticks"
	flagSnapshotThreshold = "snapshot-threshold"
	flagSnapshotBytes     = "snapshot-bytes"
	flagSnapshotTrailing  = "snapshot-trailing"
	flagRaftLog           = "raft-log"
	flagSyncPersist       = "sync-persist"
	flagLogLevel          = "log-level"
	flagLogFormat         = "log-format"
	flagPprof             = "pprof"
	flagParentPID         = "parent-pid"
)

// Defaults.
const (
	defaultName              = "n1"
	defaultClientAddr        = "127.0.0.1:7301"
	defaultPeerAddr          = "127.0.0.1:7401"
	defaultHTTPAddr          = "127.0.0.1:7501"
	defaultClusterID         = "lockd"
	defaultTick              = 100 * time.Millisecond
	defaultElectionTicks     = 10
	defaultHeartbeatTicks    = 1
	defaultSnapshotThreshold = 50000
	defaultSnapshotBytes     = 64 << 20
	defaultSnapshotTrailing  = 5000
)

const (
	catNode    = "Node"
	catCluster = "Cluster"
	catRaft    = "Raft timing"
	catOps     = "Operations"
)

func env(name string) []string { return []string{"LOCKD_" + name} }

// nodeFlags returns new flag values: urfave/cli keeps parse state in
// them, so every App needs its own.
func nodeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagName, Category: catNode, Value: defaultName, EnvVars: env("NAME"),
			Usage: "this node's `NAME`; it must appear in --initial-cluster"},
		&cli.StringFlag{Name: flagDataDir, Category: catNode, EnvVars: env("DATA_DIR"), DefaultText: "./lockd-data/<name>",
			Usage: "`DIR` for the node's Raft log and state (locked while the node runs)"},
		&cli.StringFlag{Name: flagClientAddr, Category: catNode, Value: defaultClientAddr, EnvVars: env("CLIENT_ADDR"),
			Usage: "client address (lockctl, the Go client) as `HOST:PORT`"},
		&cli.StringFlag{Name: flagPeerAddr, Category: catNode, Value: defaultPeerAddr, EnvVars: env("PEER_ADDR"),
			DefaultText: "this node's address in --initial-cluster, else " + defaultPeerAddr,
			Usage:       "address to listen on for peers as `HOST:PORT` (a wildcard host may serve the address in --initial-cluster)"},
		&cli.StringFlag{Name: flagHTTPAddr, Category: catOps, Value: defaultHTTPAddr, EnvVars: env("HTTP_ADDR"),
			Usage: "`HOST:PORT` serving /healthz and /metrics (\"\" disables HTTP)"},
		&cli.BoolFlag{Name: flagPprof, Category: catOps, EnvVars: env("PPROF"),
			Usage: "serve /debug/pprof/ on --http-addr"},
		&cli.StringFlag{Name: flagInitialCluster, Category: catCluster, EnvVars: env("INITIAL_CLUSTER"), DefaultText: "<name>=<peer-addr>, a single-node cluster",
			Usage: "every member with its peer address, as `NAME=HOST:PORT,...`; give all nodes the same list"},
		&cli.StringFlag{Name: flagJoin, Category: catCluster, EnvVars: env("JOIN"),
			Usage: "join a running cluster: ask the members at `HOST:PORT,...` (client addresses) to add this node " +
				"(a learner, promoted once caught up); the data dir must be new or from an earlier join"},
		&cli.StringFlag{Name: flagClusterID, Category: catCluster, Value: defaultClusterID, EnvVars: env("CLUSTER_ID"),
			Usage: "cluster `ID` that peers and clients must share; stored in the data dir at first start"},
		&cli.DurationFlag{Name: flagTick, Category: catRaft, Value: defaultTick, EnvVars: env("TICK"),
			Usage: "Raft tick `DURATION`; the election and heartbeat timeouts are counted in ticks"},
		&cli.IntFlag{Name: flagElectionTicks, Category: catRaft, Value: defaultElectionTicks, EnvVars: env("ELECTION_TICKS"),
			Usage: "minimum election timeout in `TICKS` (each timeout is drawn from [N, 2N))"},
		&cli.IntFlag{Name: flagHeartbeatTicks, Category: catRaft, Value: defaultHeartbeatTicks, EnvVars: env("HEARTBEAT_TICKS"),
			Usage: "leader heartbeat interval in `TICKS`"},
		&cli.Uint64Flag{Name: flagSnapshotThreshold, Category: catRaft, Value: defaultSnapshotThreshold, EnvVars: env("SNAPSHOT_THRESHOLD"),
			Usage: "take a snapshot of the state machine (in <data-dir>/snapshots) once this many `ENTRIES` were applied " +
				"since the last one, then compact the log; applies go on while it is written"},
		&cli.Int64Flag{Name: flagSnapshotBytes, Category: catRaft, Value: defaultSnapshotBytes, EnvVars: env("SNAPSHOT_BYTES"),
			Usage: "also take a snapshot once the entries applied since the last one total this many `BYTES`"},
		&cli.IntFlag{Name: flagSnapshotTrailing, Category: catRaft, Value: defaultSnapshotTrailing, EnvVars: env("SNAPSHOT_TRAILING"),
			Usage: "`ENTRIES` kept in the log before each snapshot when compacting, so a follower less than this far " +
				"behind catches up from the log instead of by a snapshot transfer (0 keeps none)"},
		&cli.StringFlag{Name: flagRaftLog, Category: catRaft, EnvVars: env("RAFT_LOG"), DefaultText: store.RaftLogWAL,
			Usage: "where a NEW data dir keeps the Raft log: `BACKEND` wal (append-only segments in <data-dir>/wal, " +
				"one fsync per write) or bolt (in raft.db, two fsyncs per write); an existing data dir keeps the one it " +
				"was created with (a different value given here is logged and ignored)"},
		&cli.BoolFlag{Name: flagSyncPersist, Category: catRaft, EnvVars: env("SYNC_PERSIST"),
			Usage: "make the Raft loop wait for each write's fsync before it goes on, as plain Raft drivers do (by default " +
				"a writer goroutine fsyncs while the loop keeps replicating, committing and applying, so that a leader " +
				"whose disk stalls does not stall the cluster; throughput is the same)"},
		&cli.StringFlag{Name: flagLogLevel, Category: catOps, Value: "info", EnvVars: env("LOG_LEVEL"),
			Usage: "log `LEVEL`: trace, debug, info, warn, error or off"},
		&cli.StringFlag{Name: flagLogFormat, Category: catOps, Value: "text", EnvVars: env("LOG_FORMAT"),
			Usage: "log `FORMAT`: text or json"},
		// Set by lockd dev on its children: stop when that process is gone.
		&cli.IntFlag{Name: flagParentPID, Hidden: true},
	}
}

// rawFromContext reads the node flags.
func rawFromContext(c *cli.Context) rawConfig {
	return rawConfig{
		Name: c.String(flagName), DataDir: c.String(flagDataDir),
		ClientAddr: c.String(flagClientAddr), PeerAddr: c.String(flagPeerAddr), HTTPAddr: c.String(flagHTTPAddr),
		PeerAddrSet:    c.IsSet(flagPeerAddr),
		InitialCluster: c.String(flagInitialCluster), Join: c.String(flagJoin), ClusterID: c.String(flagClusterID),
		Tick: c.Duration(flagTick), ElectionTicks: c.Int(flagElectionTicks), HeartbeatTicks: c.Int(flagHeartbeatTicks),
		SnapshotThreshold: c.Uint64(flagSnapshotThreshold),
		SnapshotBytes:     c.Int64(flagSnapshotBytes),
		SnapshotTrailing:  c.Int(flagSnapshotTrailing),
		RaftLog:           c.String(flagRaftLog),
		SyncPersist:       c.Bool(flagSyncPersist),
		LogLevel:          c.String(flagLogLevel), LogFormat: c.String(flagLogFormat), Pprof: c.Bool(flagPprof),
	}
}

// nodeAction runs one node until the context (signals) ends it.
func nodeAction(stderr io.Writer) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := checkNoArgs(c); err != nil {
			return err
		}
		cfg, err := rawFromContext(c).validate()
		if err != nil {
			return err
		}
		ctx := c.Context
		if ppid := c.Int(flagParentPID); ppid > 0 {
			var stop func()
			ctx, stop = watchParent(ctx, ppid)
			defer stop()
		}
		return runNode(ctx, cfg, stderr)
	}
}
