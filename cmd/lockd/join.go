package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/server"
)

// lockd --join ENDPOINT: a new node with an empty data dir asks a running
// cluster (any member's client address) to add it. The leader checks it
// can reach the new node's peer address, adds it as a learner with the
// next id never used in the cluster (the id is in the configuration
// entry, so it is decided once, by the log), and answers once that entry
// is committed with the id and the members. The node records both in the
// data dir (joinFileName, then the store's identity), starts, and catches
// up from the leader — by InstallSnapshot if the log it needs was
// compacted. The leader promotes it to voter once its log is within the
// promote lag. A later start with --join finds the record and does not
// ask again: from then on Raft's stored configuration (log and
// snapshots) is the membership.

// joinFileName records, in the data dir, the id and the configuration a
// joined node was given: its bootstrap configuration, which Raft replays
// the log on top of.
const joinFileName = "lockd-join"

// joinTimeout bounds the whole join call: the leader's reachability
// check, the commit of the change, and retries across endpoints.
const joinTimeout = 60 * time.Second

type joinRecord struct {
	ClusterID string       `json:"cluster_id"`
	ID        uint64       `json:"id"`
	Name      string       `json:"name"`
	Members   []joinMember `json:"members"`
}

type joinMember struct {
	ID      uint64 `json:"id"`
	Name    string `json:"name"`
	Peer    string `json:"peer"`
	Learner bool   `json:"learner,omitempty"`
}

func (r joinRecord) members() []server.Member {
	out := make([]server.Member, len(r.Members))
	for i, m := range r.Members {
		out[i] = server.Member{ID: consensus.NodeID(m.ID), Name: m.Name, PeerAddr: m.Peer, Learner: m.Learner}
	}
	return out
}

// readJoinRecord reads the record of an earlier join; ok is false if
// this data dir never joined.
func readJoinRecord(dir string) (joinRecord, bool, error) {
	path := filepath.Join(dir, joinFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return joinRecord{}, false, nil
	}
	if err != nil {
		return joinRecord{}, false, fmt.Errorf("reading %s: %w", path, err)
	}
	var rec joinRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.ID == 0 || len(rec.Members) == 0 {
		return joinRecord{}, false, fmt.Errorf("%s is damaged (%v): it holds the id this node was given when it joined; "+
			"restore it, or remove the member (lockctl member remove) and join again with an empty data dir", path, err)
	}
	return rec, true, nil
}

// join asks the cluster at endpoints to add this node and returns what
// it was given.
func join(ctx context.Context, cfg nodeConfig, logger hclog.Logger) (joinRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	cl, err := client.New(client.Config{Endpoints: cfg.Join, ClusterID: cfg.ClusterID})
	if err != nil {
		return joinRecord{}, fmt.Errorf("--join %s: %w", strings.Join(cfg.Join, ","), err)
	}
	defer cl.Close()
	logger.Info("asking the cluster to add this node", "join", strings.Join(cfg.Join, ","), "name", cfg.Name, "peer_addr", cfg.PeerAddr)
	resp, err := cl.MemberAdd(ctx, cfg.Name, cfg.PeerAddr, false)
	if err != nil {
		return joinRecord{}, fmt.Errorf("--join %s: %w", strings.Join(cfg.Join, ","), err)
	}
	rec := joinRecord{ClusterID: cfg.ClusterID, ID: resp.Member.ID, Name: cfg.Name}
	for _, m := range resp.Members {
		rec.Members = append(rec.Members, joinMember{ID: m.ID, Name: m.Name, Peer: m.PeerAddr, Learner: m.Learner})
	}
	logger.Info("added to the cluster as a learner", "id", rec.ID, "members", len(rec.Members))
	return rec, nil
}

func writeJoinRecord(dir string, rec joinRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSync(dir, joinFileName, append(b, '\n'))
}
