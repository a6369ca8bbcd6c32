package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/server"
	"github.com/lockd/lockd/store"
)

// nodeConfig is everything one lockd process needs to start, checked once
// by validate. Past validate the rest of the package trusts it.
type nodeConfig struct {
	Name    string
	ID      consensus.NodeID
	DataDir string

	ClientAddr string
	// PeerAddr is where this node listens for peers; its entry in Members
	// is where the peers dial it (the two differ only by a wildcard host).
	PeerAddr string
	// HTTPAddr serves /healthz and /metrics; empty disables HTTP.
	HTTPAddr string
	Pprof    bool

	ClusterID string
	// Members are sorted by name, with ids 1..n in that order: the
	// bootstrap configuration. With Join they (and ID) are learned from
	// the cluster at the first start, or read from the data dir.
	Members []server.Member
	// Join lists client addresses of a running cluster to ask to add this
	// node (lockd --join); empty for a member of --initial-cluster.
	Join []string

	Tick              time.Duration
	ElectionTicks     int
	HeartbeatTicks    int
	SnapshotThreshold uint64
	SnapshotBytes     int64
	SnapshotTrailing  int
	// RaftLog is the raft log backend of a new data dir (store.RaftLogWAL
	// or store.RaftLogBolt; "": the store's default, the WAL); an existing
	// one keeps its own.
	RaftLog string
	// SyncPersist: the Raft loop waits for each write (--sync-persist).
	SyncPersist bool

	LogLevel hclog.Level
	LogJSON  bool
}

// rawConfig is the flag values as given, before they are checked.
type rawConfig struct {
	Name, DataDir                  string
	ClientAddr, PeerAddr, HTTPAddr string
	// PeerAddrSet says --peer-addr (or its env var) was given explicitly.
	PeerAddrSet       bool
	InitialCluster    string
	Join              string
	ClusterID         string
	Tick              time.Duration
	ElectionTicks     int
	HeartbeatTicks    int
	SnapshotThreshold uint64
	SnapshotBytes     int64
	SnapshotTrailing  int
	RaftLog           string
	SyncPersist       bool
	LogLevel          string
	LogFormat         string
	Pprof             bool
}

// clusterEntry is one "name=host:port" of --initial-cluster.
type clusterEntry struct {
	Name, Addr string
}

// validate checks every value and derives the node id and the member
// list. Each error names the flag and the value.
func (r rawConfig) validate() (nodeConfig, error) {
	var errs []error
	cfg := nodeConfig{
		Name: r.Name, DataDir: r.DataDir, ClientAddr: r.ClientAddr, HTTPAddr: r.HTTPAddr, Pprof: r.Pprof,
		ClusterID: r.ClusterID, Tick: r.Tick, ElectionTicks: r.ElectionTicks, HeartbeatTicks: r.HeartbeatTicks,
		SnapshotThreshold: r.SnapshotThreshold, SnapshotBytes: r.SnapshotBytes, SnapshotTrailing: r.SnapshotTrailing,
		RaftLog: r.RaftLog, SyncPersist: r.SyncPersist,
	}
	if err := validName(r.Name); err != nil {
		errs = append(errs, fmt.Errorf("--name: %w", err))
	}
	if cfg.DataDir == "" {
		cfg.DataDir = defaultDataDir(r.Name)
	}
	if r.ClusterID == "" {
		errs = append(errs, errors.New("--cluster-id must not be empty"))
	}
	if err := checkListenAddr(r.ClientAddr); err != nil {
		errs = append(errs, fmt.Errorf("--client-addr: %w", err))
	}
	if r.HTTPAddr != "" {
		if err := checkListenAddr(r.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("--http-addr: %w", err))
		}
	}
	if err := r.validateCluster(&cfg); err != nil {
		errs = append(errs, err)
	}
	if err := checkDistinct(cfg.ClientAddr, cfg.PeerAddr, cfg.HTTPAddr); err != nil {
		errs = append(errs, err)
	}
	if r.Tick <= 0 {
		errs = append(errs, fmt.Errorf("--tick %v must be positive", r.Tick))
	}
	switch {
	case r.HeartbeatTicks < 1:
		errs = append(errs, fmt.Errorf("--heartbeat-ticks %d must be at least 1", r.HeartbeatTicks))
	case r.ElectionTicks <= r.HeartbeatTicks:
		errs = append(errs, fmt.Errorf("--election-ticks %d must be greater than --heartbeat-ticks %d", r.ElectionTicks, r.HeartbeatTicks))
	}
	if r.SnapshotThreshold < 1 || r.SnapshotThreshold > 1<<31 {
		errs = append(errs, fmt.Errorf("--snapshot-threshold %d must be between 1 and %d", r.SnapshotThreshold, 1<<31))
	}
	if r.SnapshotBytes < 1 {
		errs = append(errs, fmt.Errorf("--snapshot-bytes %d must be at least 1", r.SnapshotBytes))
	}
	if r.SnapshotTrailing < 0 {
		errs = append(errs, fmt.Errorf("--snapshot-trailing %d must not be negative", r.SnapshotTrailing))
	}
	switch r.RaftLog {
	case "", store.RaftLogWAL, store.RaftLogBolt:
	default:
		errs = append(errs, fmt.Errorf("--raft-log %q must be %s or %s", r.RaftLog, store.RaftLogWAL, store.RaftLogBolt))
	}
	cfg.LogLevel = hclog.LevelFromString(r.LogLevel)
	if cfg.LogLevel == hclog.NoLevel {
		errs = append(errs, fmt.Errorf("--log-level %q must be one of trace, debug, info, warn, error, off", r.LogLevel))
	}
	switch strings.ToLower(r.LogFormat) {
	case "text":
	case "json":
		cfg.LogJSON = true
	default:
		errs = append(errs, fmt.Errorf("--log-format %q must be text or json", r.LogFormat))
	}
	if len(errs) > 0 {
		return nodeConfig{}, usageError{errors.Join(errs...)}
	}
	return cfg, nil
}

// validateCluster parses --initial-cluster (default: this node alone at
// --peer-addr), finds this node in it and settles the peer listen address.
func (r rawConfig) validateCluster(cfg *nodeConfig) error {
	if strings.TrimSpace(r.Join) != "" {
		if strings.TrimSpace(r.InitialCluster) != "" {
			return errors.New("--join and --initial-cluster exclude each other: a joining node learns the members from the cluster")
		}
		if err := checkListenAddr(r.PeerAddr); err != nil {
			return fmt.Errorf("--peer-addr: %w", err)
		}
		if host, _, _ := net.SplitHostPort(r.PeerAddr); isWildcard(host) {
			return fmt.Errorf("--peer-addr %s: with --join it is the address the members dial, so give a host, not a wildcard", r.PeerAddr)
		}
		for _, ep := range strings.Split(r.Join, ",") {
			ep = strings.TrimSpace(ep)
			if _, _, err := net.SplitHostPort(ep); err != nil {
				return fmt.Errorf("--join %q: %v; give the client address (host:port) of one or more members", ep, err)
			}
			cfg.Join = append(cfg.Join, ep)
		}
		cfg.PeerAddr = r.PeerAddr
		return nil
	}
	if strings.TrimSpace(r.InitialCluster) == "" {
		if err := checkListenAddr(r.PeerAddr); err != nil {
			return fmt.Errorf("--peer-addr: %w", err)
		}
		cfg.PeerAddr = r.PeerAddr
		members, err := membersOf([]clusterEntry{{Name: r.Name, Addr: r.PeerAddr}})
		cfg.Members, cfg.ID = members, 1
		return err
	}
	entries, err := parseInitialCluster(r.InitialCluster)
	if err != nil {
		return fmt.Errorf("--initial-cluster: %w", err)
	}
	members, err := membersOf(entries)
	if err != nil {
		return fmt.Errorf("--initial-cluster: %w", err)
	}
	self, ok := findMember(members, r.Name)
	if !ok {
		return fmt.Errorf("--name %q is not in --initial-cluster (members: %s)", r.Name, memberNames(members))
	}
	cfg.Members, cfg.ID, cfg.PeerAddr = members, self.ID, self.PeerAddr
	if r.PeerAddrSet {
		if err := checkListenAddr(r.PeerAddr); err != nil {
			return fmt.Errorf("--peer-addr: %w", err)
		}
		if !listensFor(r.PeerAddr, self.PeerAddr) {
			return fmt.Errorf("--peer-addr %s does not serve %s, this node's address in --initial-cluster "+
				"(give the same address, or a wildcard host with the same port)", r.PeerAddr, self.PeerAddr)
		}
		cfg.PeerAddr = r.PeerAddr
	}
	return nil
}

// parseInitialCluster parses "n1=host:port,n2=host:port". Entries are
// checked one by one; duplicates are checked by membersOf.
func parseInitialCluster(spec string) ([]clusterEntry, error) {
	var entries []clusterEntry
	for i, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("entry %d is empty (want name=host:port, comma-separated)", i+1)
		}
		name, addr, ok := strings.Cut(part, "=")
		name, addr = strings.TrimSpace(name), strings.TrimSpace(addr)
		if !ok {
			return nil, fmt.Errorf("entry %q is not name=host:port", part)
		}
		if err := validName(name); err != nil {
			return nil, fmt.Errorf("entry %q: %w", part, err)
		}
		if err := checkPeerAddr(addr); err != nil {
			return nil, fmt.Errorf("entry %q: %w", part, err)
		}
		entries = append(entries, clusterEntry{Name: name, Addr: addr})
	}
	return entries, nil
}

// membersOf numbers the entries: sorted by name, ids 1..n. Every node
// computes the same ids from the same list, whatever order it was
// written in.
func membersOf(entries []clusterEntry) ([]server.Member, error) {
	sorted := append([]clusterEntry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	names := map[string]bool{}
	addrs := map[string]string{}
	members := make([]server.Member, 0, len(sorted))
	for i, e := range sorted {
		if names[e.Name] {
			return nil, fmt.Errorf("name %q appears twice", e.Name)
		}
		names[e.Name] = true
		if other, dup := addrs[e.Addr]; dup {
			return nil, fmt.Errorf("address %s is given to both %s and %s", e.Addr, other, e.Name)
		}
		addrs[e.Addr] = e.Name
		members = append(members, server.Member{ID: consensus.NodeID(i + 1), Name: e.Name, PeerAddr: e.Addr})
	}
	return members, nil
}

func findMember(members []server.Member, name string) (server.Member, bool) {
	for _, m := range members {
		if m.Name == name {
			return m, true
		}
	}
	return server.Member{}, false
}

func memberNames(members []server.Member) string {
	names := make([]string, len(members))
	for i, m := range members {
		names[i] = m.Name
	}
	return strings.Join(names, ", ")
}

// validName accepts names that are safe in a path, a log line and a
// metrics label: letters, digits, '.', '_' and '-', at most 64 bytes.
func validName(name string) error {
	if name == "" {
		return errors.New("node name must not be empty")
	}
	if len(name) > 64 {
		return fmt.Errorf("node name %q is longer than 64 bytes", name)
	}
	for _, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("node name %q may hold only letters, digits, '.', '_' and '-'", name)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("node name %q is not allowed", name)
	}
	return nil
}

func defaultDataDir(name string) string {
	return filepath.Join(".", "lockd-data", name)
}

// checkListenAddr accepts host:port with a numeric port; an empty or
// wildcard host listens on every interface, port 0 on a port the system
// picks (the log says which).
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want host:port", addr)
	}
	return checkPort(addr, port, 0)
}

// checkPeerAddr is checkListenAddr for an address other nodes dial: the
// host must name one interface.
func checkPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want host:port", addr)
	}
	if host == "" || isWildcard(host) {
		return fmt.Errorf("address %q: peers cannot dial a wildcard host; give this node's own address", addr)
	}
	return checkPort(addr, port, 1)
}

func checkPort(addr, port string, lowest int) error {
	n, err := strconv.Atoi(port)
	if err != nil || n < lowest || n > 65535 {
		return fmt.Errorf("address %q: port must be a number from %d to 65535", addr, lowest)
	}
	return nil
}

func isWildcard(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// listensFor says whether listening on listen accepts connections made to
// advertised: the same address, or a wildcard host with the same port.
func listensFor(listen, advertised string) bool {
	if listen == advertised {
		return true
	}
	lh, lp, err1 := net.SplitHostPort(listen)
	_, ap, err2 := net.SplitHostPort(advertised)
	return err1 == nil && err2 == nil && lp == ap && (lh == "" || isWildcard(lh))
}

// checkDistinct refuses to give two listeners the same address (an empty
// address is not listened on; port 0 is a different port each time).
func checkDistinct(client, peer, http string) error {
	named := []struct{ flag, addr string }{{"--client-addr", client}, {"--peer-addr", peer}, {"--http-addr", http}}
	for i := range named {
		for j := i + 1; j < len(named); j++ {
			_, port, _ := net.SplitHostPort(named[i].addr)
			if named[i].addr != "" && port != "0" && named[i].addr == named[j].addr {
				return fmt.Errorf("%s and %s are both %s", named[i].flag, named[j].flag, named[i].addr)
			}
		}
	}
	return nil
}
