package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/server"
)

// defaults is the raw configuration of `lockd` without flags.
func defaults() rawConfig {
	return rawConfig{
		Name: defaultName, ClientAddr: defaultClientAddr, PeerAddr: defaultPeerAddr, HTTPAddr: defaultHTTPAddr,
		ClusterID: defaultClusterID, Tick: defaultTick, ElectionTicks: defaultElectionTicks, HeartbeatTicks: defaultHeartbeatTicks,
		SnapshotThreshold: defaultSnapshotThreshold, SnapshotBytes: defaultSnapshotBytes, SnapshotTrailing: defaultSnapshotTrailing,
		LogLevel: "info", LogFormat: "text",
	}
}

func TestNoFlagsIsASingleNodeClusterOnLoopback(t *testing.T) {
	cfg, err := defaults().validate()
	if err != nil {
		t.Fatal(err)
	}
	want := []server.Member{{ID: 1, Name: "n1", PeerAddr: "127.0.0.1:7401"}}
	if cfg.ID != 1 || !reflect.DeepEqual(cfg.Members, want) {
		t.Fatalf("id %d members %+v, want id 1 members %+v", cfg.ID, cfg.Members, want)
	}
	if cfg.DataDir != filepath.Join("lockd-data", "n1") || cfg.PeerAddr != "127.0.0.1:7401" || cfg.LogLevel != hclog.Info || cfg.LogJSON {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestParseInitialCluster(t *testing.T) {
	got, err := parseInitialCluster(" n1=127.0.0.1:7401, n2 = 10.0.0.2:7401,node-3=[::1]:7401 ")
	if err != nil {
		t.Fatal(err)
	}
	want := []clusterEntry{{"n1", "127.0.0.1:7401"}, {"n2", "10.0.0.2:7401"}, {"node-3", "[::1]:7401"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestParseInitialClusterRejectsMalformedEntries(t *testing.T) {
	for spec, wantErr := range map[string]string{
		"n1=127.0.0.1:7401,":          "entry 2 is empty",
		"n1":                          `entry "n1" is not name=host:port`,
		"=127.0.0.1:7401":             "node name must not be empty",
		"n/1=127.0.0.1:7401":          "may hold only letters",
		"n1=127.0.0.1":                "want host:port",
		"n1=127.0.0.1:http":           "port must be a number",
		"n1=127.0.0.1:70000":          "port must be a number",
		"n1=127.0.0.1:0":              "port must be a number from 1 to 65535",
		"n1=0.0.0.0:7401":             "wildcard host",
		"n1=:7401":                    "wildcard host",
		"n1=127.0.0.1:7401=127.0.0.1": "port must be a number",
	} {
		_, err := parseInitialCluster(spec)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: error %v, want one containing %q", spec, err, wantErr)
		}
	}
}

// Every node must derive the same ids from the same member list, however
// it was written: ids follow the names' sorted order.
func TestNodeIDsFollowSortedNames(t *testing.T) {
	specs := []string{
		"n1=127.0.0.1:7401,n2=127.0.0.1:7402,n3=127.0.0.1:7403",
		"n3=127.0.0.1:7403,n1=127.0.0.1:7401,n2=127.0.0.1:7402",
		"n2=127.0.0.1:7402,n3=127.0.0.1:7403,n1=127.0.0.1:7401",
	}
	want := []server.Member{{ID: 1, Name: "n1", PeerAddr: "127.0.0.1:7401"}, {ID: 2, Name: "n2", PeerAddr: "127.0.0.1:7402"},
		{ID: 3, Name: "n3", PeerAddr: "127.0.0.1:7403"}}
	for _, spec := range specs {
		for _, self := range want {
			r := defaults()
			r.Name, r.InitialCluster = self.Name, spec
			cfg, err := r.validate()
			if err != nil {
				t.Fatalf("%s as %s: %v", spec, self.Name, err)
			}
			if cfg.ID != self.ID || cfg.PeerAddr != self.PeerAddr || !reflect.DeepEqual(cfg.Members, want) {
				t.Fatalf("%s as %s: id %d peer %s members %+v", spec, self.Name, cfg.ID, cfg.PeerAddr, cfg.Members)
			}
		}
	}
}

func TestValidateRejectsBadUsage(t *testing.T) {
	three := "n1=127.0.0.1:7401,n2=127.0.0.1:7402,n3=127.0.0.1:7403"
	cases := []struct {
		name    string
		edit    func(*rawConfig)
		wantErr string
	}{
		{"name not in cluster", func(r *rawConfig) { r.Name, r.InitialCluster = "n4", three }, `--name "n4" is not in --initial-cluster (members: n1, n2, n3)`},
		{"duplicate name", func(r *rawConfig) { r.InitialCluster = "n1=127.0.0.1:7401,n1=127.0.0.1:7402" }, `name "n1" appears twice`},
		{"duplicate address", func(r *rawConfig) { r.InitialCluster = "n1=127.0.0.1:7401,n2=127.0.0.1:7401" },
			"address 127.0.0.1:7401 is given to both n1 and n2"},
		{"malformed cluster", func(r *rawConfig) { r.InitialCluster = "n1:127.0.0.1:7401" }, "--initial-cluster: entry"},
		{"peer addr contradicts cluster", func(r *rawConfig) { r.InitialCluster, r.PeerAddr, r.PeerAddrSet = three, "127.0.0.1:9999", true },
			"--peer-addr 127.0.0.1:9999 does not serve 127.0.0.1:7401"},
		{"bad name", func(r *rawConfig) { r.Name = "../etc" }, "--name: node name"},
		{"bad client addr", func(r *rawConfig) { r.ClientAddr = "localhost" }, "--client-addr: address"},
		{"bad http addr", func(r *rawConfig) { r.HTTPAddr = "127.0.0.1:x" }, "--http-addr: address"},
		{"same addresses", func(r *rawConfig) { r.HTTPAddr = r.ClientAddr }, "--client-addr and --http-addr are both"},
		{"empty cluster id", func(r *rawConfig) { r.ClusterID = "" }, "--cluster-id must not be empty"},
		{"zero tick", func(r *rawConfig) { r.Tick = 0 }, "--tick 0s must be positive"},
		{"election not above heartbeat", func(r *rawConfig) { r.ElectionTicks, r.HeartbeatTicks = 3, 3 },
			"--election-ticks 3 must be greater than --heartbeat-ticks 3"},
		{"zero heartbeat", func(r *rawConfig) { r.HeartbeatTicks = 0 }, "--heartbeat-ticks 0 must be at least 1"},
		{"zero snapshot threshold", func(r *rawConfig) { r.SnapshotThreshold = 0 }, "--snapshot-threshold 0 must be between 1 and"},
		{"zero snapshot bytes", func(r *rawConfig) { r.SnapshotBytes = 0 }, "--snapshot-bytes 0 must be at least 1"},
		{"negative snapshot trailing", func(r *rawConfig) { r.SnapshotTrailing = -1 }, "--snapshot-trailing -1 must not be negative"},
		{"log level", func(r *rawConfig) { r.LogLevel = "loud" }, `--log-level "loud"`},
		{"log format", func(r *rawConfig) { r.LogFormat = "xml" }, `--log-format "xml" must be text or json`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := defaults()
			tc.edit(&r)
			_, err := r.validate()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if _, ok := err.(usageError); !ok {
				t.Fatalf("error %T is not a usage error", err)
			}
		})
	}
}

func TestPeerAddrMayBeAWildcardWithTheSamePort(t *testing.T) {
	r := defaults()
	r.InitialCluster, r.PeerAddr, r.PeerAddrSet = "n1=10.0.0.1:7401,n2=10.0.0.2:7401", "0.0.0.0:7401", true
	cfg, err := r.validate()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PeerAddr != "0.0.0.0:7401" || cfg.Members[0].PeerAddr != "10.0.0.1:7401" {
		t.Fatalf("listen %s, advertised %s", cfg.PeerAddr, cfg.Members[0].PeerAddr)
	}
}

func TestHTTPAddrEmptyDisablesHTTP(t *testing.T) {
	r := defaults()
	r.HTTPAddr = ""
	cfg, err := r.validate()
	if err != nil || cfg.HTTPAddr != "" {
		t.Fatalf("cfg %+v, err %v", cfg, err)
	}
}

// clearLockdEnv unsets every LOCKD_* variable for the test.
func clearLockdEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "LOCKD_") {
			t.Setenv(k, "") // restores the value after the test
			os.Unsetenv(k)
		}
	}
}

// parseFlags runs the node flags through urfave/cli as lockd does and
// returns what the action would see.
func parseFlags(t *testing.T, args ...string) rawConfig {
	t.Helper()
	var got rawConfig
	app := &cli.App{Name: "lockd", Flags: nodeFlags(), ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error { got = rawFromContext(c); return nil }}
	if err := app.Run(append([]string{"lockd"}, args...)); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestFlagsAndEnvVars(t *testing.T) {
	clearLockdEnv(t)
	if got := parseFlags(t); got != defaults() {
		t.Fatalf("no flags: %+v, want %+v", got, defaults())
	}
	t.Setenv("LOCKD_NAME", "n2")
	t.Setenv("LOCKD_DATA_DIR", "/var/lib/lockd")
	t.Setenv("LOCKD_CLIENT_ADDR", "127.0.0.1:8301")
	t.Setenv("LOCKD_PEER_ADDR", "0.0.0.0:8401")
	t.Setenv("LOCKD_HTTP_ADDR", "")
	t.Setenv("LOCKD_INITIAL_CLUSTER", "n1=10.0.0.1:8401,n2=10.0.0.2:8401")
	t.Setenv("LOCKD_CLUSTER_ID", "prod")
	t.Setenv("LOCKD_TICK", "50ms")
	t.Setenv("LOCKD_ELECTION_TICKS", "20")
	t.Setenv("LOCKD_HEARTBEAT_TICKS", "2")
	t.Setenv("LOCKD_SNAPSHOT_THRESHOLD", "5000")
	t.Setenv("LOCKD_SNAPSHOT_BYTES", "1048576")
	t.Setenv("LOCKD_SNAPSHOT_TRAILING", "0")
	t.Setenv("LOCKD_RAFT_LOG", "bolt")
	t.Setenv("LOCKD_SYNC_PERSIST", "true")
	t.Setenv("LOCKD_LOG_LEVEL", "debug")
	t.Setenv("LOCKD_LOG_FORMAT", "json")
	t.Setenv("LOCKD_PPROF", "true")
	want := rawConfig{
		Name: "n2", DataDir: "/var/lib/lockd", ClientAddr: "127.0.0.1:8301", PeerAddr: "0.0.0.0:8401", PeerAddrSet: true,
		InitialCluster: "n1=10.0.0.1:8401,n2=10.0.0.2:8401", ClusterID: "prod", Tick: 50 * time.Millisecond,
		ElectionTicks: 20, HeartbeatTicks: 2, SnapshotThreshold: 5000, SnapshotBytes: 1 << 20, SnapshotTrailing: 0,
		RaftLog: "bolt", SyncPersist: true, LogLevel: "debug", LogFormat: "json", Pprof: true,
	}
	got := parseFlags(t)
	if got != want {
		t.Fatalf("from env: %+v\nwant        %+v", got, want)
	}
	cfg, err := got.validate()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != 2 || cfg.PeerAddr != "0.0.0.0:8401" || cfg.HTTPAddr != "" || !cfg.LogJSON || cfg.LogLevel != hclog.Debug || !cfg.SyncPersist {
		t.Fatalf("validated: %+v", cfg)
	}
	// A flag beats its env var.
	if got := parseFlags(t, "--name", "n1", "--tick", "10ms"); got.Name != "n1" || got.Tick != 10*time.Millisecond {
		t.Fatalf("flags over env: %+v", got)
	}
}

// Bad usage is one line on stderr and exit code 2; nothing starts.
func TestBadUsageExitsTwoWithOneLine(t *testing.T) {
	cases := map[string][]string{
		"unknown flag":       {"--nmae", "n1"},
		"bad duration":       {"--tick", "fast"},
		"positional arg":     {"n1"},
		"malformed cluster":  {"--initial-cluster", "n1=127.0.0.1"},
		"name not in list":   {"--name", "n9", "--initial-cluster", "n1=127.0.0.1:7401"},
		"several errors":     {"--tick", "0s", "--log-format", "xml"},
		"unknown raft log":   {"--raft-log", "lsm"},
		"dev: too many":      {"dev", "--nodes", "10"},
		"dev: unknown flag":  {"dev", "--node", "3"},
		"dev: bad base port": {"dev", "--base-port", "65500"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"lockd"}, args...), &stdout, &stderr)
			if code != exitUsage {
				t.Fatalf("exit code %d, want %d; stderr %q", code, exitUsage, stderr.String())
			}
			if lines := strings.Count(stderr.String(), "\n"); lines != 1 || !strings.HasPrefix(stderr.String(), "lockd: ") {
				t.Fatalf("stderr is not one line starting with \"lockd: \": %q", stderr.String())
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout: %q", stdout.String())
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"lockd", "--help"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit code %d, stderr %q", code, stderr.String())
	}
	for _, want := range []string{"--initial-cluster", "LOCKD_INITIAL_CLUSTER", "--snapshot-trailing", "dev"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestDevPlan(t *testing.T) {
	o := devOptions{Nodes: 3, BasePort: 7300, DataDir: "d", ClusterID: "c", LogLevel: "info", LogFormat: "text"}
	nodes := o.plan()
	if got := initialCluster(nodes); got != "n1=127.0.0.1:7401,n2=127.0.0.1:7402,n3=127.0.0.1:7403" {
		t.Fatalf("initial cluster %s", got)
	}
	if n := nodes[2]; n.ClientAddr != "127.0.0.1:7303" || n.HTTPAddr != "127.0.0.1:7503" || n.DataDir != filepath.Join("d", "n3") {
		t.Fatalf("n3: %+v", n)
	}
	// What lockd dev passes to a child is a valid node configuration.
	var got rawConfig
	app := &cli.App{Name: "lockd", Flags: nodeFlags(), ExitErrHandler: func(*cli.Context, error) {},
		Action: func(c *cli.Context) error { got = rawFromContext(c); return nil }}
	if err := app.Run(append([]string{"lockd"}, o.args(nodes[1], initialCluster(nodes), 1)...)); err != nil {
		t.Fatal(err)
	}
	cfg, err := got.validate()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != consensus.NodeID(2) || cfg.Name != "n2" || len(cfg.Members) != 3 || cfg.ClientAddr != "127.0.0.1:7302" {
		t.Fatalf("child n2: %+v", cfg)
	}
}
