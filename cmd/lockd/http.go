package main

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"sync/atomic"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/fsm"
)

// maxApplyLag is how far the applied index may trail the commit index for
// /healthz to say ok. The node applies committed entries as soon as it
// learns of them, so a lag beyond a few batches means the applier is
// stuck or far behind.
const maxApplyLag = 100

// nodeView is what the HTTP endpoints read: the Raft status, the state
// machine's counts and the node's activity counters (a running server, or
// a fake in tests).
type nodeView interface {
	Status() consensus.Status
	Stats() fsm.Stats
	Activity() activity
	// Stopped returns why the Raft node stopped; nil while it runs.
	Stopped() error
}

// nodeInfo is the node's static description.
type nodeInfo struct {
	Name      string
	ID        consensus.NodeID
	ClusterID string
	Members   map[consensus.NodeID]string // id → name
	// MaxLeaderSilence is how many ticks a follower may go without hearing
	// from its leader before /healthz stops trusting it (the longest
	// election timeout).
	MaxLeaderSilence int
}

// newHTTPHandler serves /healthz, /metrics and, if pprof, /debug/pprof/.
// stopping is set while the node shuts down.
func newHTTPHandler(view nodeView, info nodeInfo, stopping *atomic.Bool, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if reason := unhealthy(view, info, stopping.Load()); reason != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, reason)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", metricsContentType)
		_, _ = w.Write(renderMetrics(view.Status(), view.Stats(), view.Activity(), info))
	})
	if withPprof {
		// Registered on this mux only: importing net/http/pprof also
		// registers on http.DefaultServeMux, which lockd never serves.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// unhealthy returns why the node should not get traffic, "" if it is
// healthy: it knows a leader it has heard from recently, and it has
// applied (nearly) everything it knows to be committed.
func unhealthy(view nodeView, info nodeInfo, stopping bool) string {
	if stopping {
		return "shutting down"
	}
	if err := view.Stopped(); err != nil {
		return fmt.Sprintf("raft node stopped: %v", err)
	}
	st := view.Status()
	if st.Lead == consensus.None {
		return fmt.Sprintf("no leader known (role %s, term %d)", st.Role, st.Term)
	}
	if st.Role != consensus.Leader && st.SinceLeaderContact > info.MaxLeaderSilence {
		return fmt.Sprintf("no contact with leader %s for %d ticks (term %d)", info.memberName(st.Lead), st.SinceLeaderContact, st.Term)
	}
	if st.Applied+maxApplyLag < st.Commit {
		return fmt.Sprintf("applied index %d trails commit index %d by %d entries (at most %d allowed)",
			st.Applied, st.Commit, st.Commit-st.Applied, maxApplyLag)
	}
	return ""
}

func (info nodeInfo) memberName(id consensus.NodeID) string {
	if name, ok := info.Members[id]; ok {
		return fmt.Sprintf("%s (id %d)", name, id)
	}
	return fmt.Sprintf("id %d", id)
}
