package main

import (
	"bytes"
	"sort"
	"strconv"
	"strings"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/fsm"
	"github.com/lockd/lockd/server"
)

// metricsContentType is the Prometheus text exposition format, 0.0.4.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// activity is what the node has counted since it started.
type activity struct {
	Proposals, ProposalsFailed uint64
	Persist, Apply             consensus.HistogramSnapshot
	Server                     server.Metrics
}

// renderMetrics writes the node's metrics in the Prometheus text format.
// Every value is read from the node at the time of the scrape.
func renderMetrics(st consensus.Status, stats fsm.Stats, act activity, info nodeInfo) []byte {
	var w promWriter
	w.family("lockd_node_info", "gauge", "Always 1; the labels name this node and its cluster.")
	w.sample("lockd_node_info", "1", "cluster_id", info.ClusterID, "name", info.Name, "node_id", u(uint64(info.ID)))
	w.gauge("lockd_cluster_members", "Voting members in this node's configuration.", uint64(len(info.Members)))
	writeRaft(&w, st, info)

	w.counter("lockd_raft_proposals_total", "Commands this node proposed as leader.", act.Proposals)
	w.counter("lockd_raft_proposals_failed_total",
		"Proposals this node's Raft core refused (not the leader, leadership transfer in progress, too large).", act.ProposalsFailed)
	w.histogram("lockd_raft_persist_duration_seconds",
		"Duration of each durable write of new log entries and hard state (one store transaction, fsync included).", act.Persist)
	w.histogram("lockd_fsm_apply_duration_seconds", "Duration of applying each committed command to the state machine.", act.Apply)

	w.gauge("lockd_sessions", "Live sessions in the state machine.", uint64(stats.Sessions))
	w.gauge("lockd_locks", "Locks in the state machine (held or waited for).", uint64(stats.Locks))
	w.gauge("lockd_lock_waiters", "Queued waits on locks in the state machine.", uint64(stats.Waiters))
	w.gauge("lockd_keys", "Config keys in the state machine.", uint64(stats.Keys))
	w.gauge("lockd_kv_revision", "Current KV revision.", uint64(max(stats.Revision, 0)))
	w.gauge("lockd_watch_history_events", "Events kept in the watch history.", uint64(stats.HistoryEvents))
	w.gauge("lockd_dedup_clients", "Clients whose last result is remembered for exactly-once retries.", uint64(stats.DedupClients))
	w.gauge("lockd_watchers", "Watch streams open on this node.", uint64(max(act.Server.Watchers, 0)))
	w.gauge("lockd_blocked_acquires", "Lock acquire calls on this node waiting for a grant.", uint64(max(act.Server.BlockedAcquires, 0)))
	return w.buf.Bytes()
}

// writeRaft writes the Raft status.
func writeRaft(w *promWriter, st consensus.Status, info nodeInfo) {
	w.family("lockd_raft_role", "gauge", "1 for the role this node holds now, 0 for the others.")
	for _, r := range []consensus.Role{consensus.Follower, consensus.PreCandidate, consensus.Candidate, consensus.Leader} {
		w.sample("lockd_raft_role", u(boolValue(st.Role == r)), "role", r.String())
	}
	w.gauge("lockd_is_leader", "1 if this node is the leader.", boolValue(st.Role == consensus.Leader))
	w.gauge("lockd_raft_term", "Current Raft term.", uint64(st.Term))
	w.gauge("lockd_raft_leader_id", "Node id of the leader this node knows of; 0 if none.", uint64(st.Lead))
	w.gauge("lockd_raft_ticks_since_leader_contact", "Ticks since this follower last heard from its leader (0 on the leader).",
		uint64(max(st.SinceLeaderContact, 0)))
	w.gauge("lockd_raft_commit_index", "Highest log index known to be committed.", uint64(st.Commit))
	w.gauge("lockd_raft_applied_index", "Highest log index applied to the state machine.", uint64(st.Applied))
	w.gauge("lockd_raft_last_index", "Index of the last entry in this node's log.", uint64(st.LastIndex))

	w.family("lockd_raft_follower_match_index", "gauge", "On the leader: highest log index known to be replicated on each follower.")
	ids := make([]consensus.NodeID, 0, len(st.Progress))
	for id := range st.Progress {
		if id != info.ID {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		name := info.Members[id]
		if name == "" {
			name = u(uint64(id))
		}
		w.sample("lockd_raft_follower_match_index", u(uint64(st.Progress[id].Match)), "follower", name)
	}
}

func boolValue(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// promWriter writes the text exposition format: for each family a HELP
// and a TYPE line, then its samples.
type promWriter struct {
	buf bytes.Buffer
}

func (w *promWriter) family(name, typ, help string) {
	w.buf.WriteString("# HELP " + name + " " + escapeHelp(help) + "\n")
	w.buf.WriteString("# TYPE " + name + " " + typ + "\n")
}

// sample writes one sample; labels are name, value pairs.
func (w *promWriter) sample(name, value string, labels ...string) {
	w.buf.WriteString(name)
	if len(labels) > 0 {
		w.buf.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.buf.WriteByte(',')
			}
			w.buf.WriteString(labels[i] + `="` + escapeLabel(labels[i+1]) + `"`)
		}
		w.buf.WriteByte('}')
	}
	w.buf.WriteString(" " + value + "\n")
}

// gauge writes a gauge with a single unlabelled sample.
func (w *promWriter) gauge(name, help string, v uint64) {
	w.family(name, "gauge", help)
	w.sample(name, u(v))
}

// counter writes a counter (its name ends in _total) with one sample.
func (w *promWriter) counter(name, help string, v uint64) {
	w.family(name, "counter", help)
	w.sample(name, u(v))
}

// histogram writes a histogram of durations in seconds.
func (w *promWriter) histogram(name, help string, h consensus.HistogramSnapshot) {
	w.family(name, "histogram", help)
	for i, b := range h.Bounds {
		w.sample(name+"_bucket", u(h.Cumulative[i]), "le", f(b.Seconds()))
	}
	w.sample(name+"_bucket", u(h.Count), "le", "+Inf")
	w.sample(name+"_sum", f(h.Sum.Seconds()))
	w.sample(name+"_count", u(h.Count))
}

func u(v uint64) string  { return strconv.FormatUint(v, 10) }
func f(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }
