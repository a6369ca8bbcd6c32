package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
)

// memberNode is one real lockd process of the membership test.
type memberNode struct {
	name string
	args nodeArgs
	proc *proc
}

// TestE2EMembershipGrowReplaceShrink runs real processes: a 3-node
// cluster under a steady write load grows to 5 (two nodes started with
// --join, which catch up by InstallSnapshot: the cluster snapshots every
// 200 entries and keeps 20), a killed member is replaced (remove + a
// fresh node joins), the cluster shrinks to 3 (the leader among the
// removed), and every acknowledged write is then read back, linearizably,
// with its value.
func TestE2EMembershipGrowReplaceShrink(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: this test starts real lockd processes")
	}
	dir := t.TempDir()
	snapFlags := []string{"--snapshot-threshold", "200", "--snapshot-trailing", "20", "--http-addr", ""}
	nodes := map[string]*memberNode{}
	var initial []string
	for _, name := range []string{"n1", "n2", "n3"} {
		nodes[name] = &memberNode{name: name, args: freshNode(t, filepath.Join(dir, name))}
		initial = append(initial, name+"="+nodes[name].args.peer)
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		n := nodes[name]
		n.proc = start(t, append(n.args.args("--name", name, "--initial-cluster", strings.Join(initial, ",")), snapFlags...)...)
	}
	endpoints := func() []string {
		var eps []string
		for _, n := range nodes {
			if n.proc != nil && !n.proc.exited() {
				eps = append(eps, n.args.client)
			}
		}
		return eps
	}
	// live is endpoints() for the writer, which must not read nodes.
	var live, lastErr atomic.Value
	live.Store(endpoints())
	lastErr.Store("")
	admin := func() *client.Client {
		live.Store(endpoints())
		c, err := client.New(client.Config{Endpoints: endpoints(), ClusterID: defaultClusterID})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cl := admin()

	// The write load: one writer, one key per write, bounded in count and
	// time; acked holds what the cluster acknowledged.
	var mu sync.Mutex
	acked := map[string]string{}
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var w *client.Client
		defer func() {
			if w != nil {
				w.Close()
			}
		}()
		deadline := time.Now().Add(90 * time.Second)
		refresh := true
		for i := 0; i < 20000 && loadCtx.Err() == nil && time.Now().Before(deadline); i++ {
			if refresh || i%100 == 0 { // follow the membership
				refresh = false
				if w != nil {
					w.Close()
				}
				var err error
				if w, err = client.New(client.Config{Endpoints: live.Load().([]string), ClusterID: defaultClusterID}); err != nil {
					t.Error(err)
					return
				}
			}
			key, val := fmt.Sprintf("load/%05d", i), fmt.Sprintf("v%d", i)
			ctx, cancel := context.WithTimeout(loadCtx, 5*time.Second)
			_, err := w.KV().Put(ctx, key, []byte(val))
			cancel()
			if err == nil {
				mu.Lock()
				acked[key] = val
				mu.Unlock()
			} else {
				lastErr.Store(err.Error())
				refresh = true
			}
		}
	}()
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitUntil(t, 30*time.Second, "writes acknowledged", func() (bool, string) { return ackedCount() > 500, fmt.Sprint(ackedCount()) })

	voters := func() (int, int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		st, err := cl.Status(ctx)
		if err != nil {
			return 0, 0, err.Error()
		}
		v, l := 0, 0
		for _, m := range st.Members {
			if m.Learner {
				l++
			} else {
				v++
			}
		}
		return v, l, fmt.Sprintf("%d voters, %d learners: %+v", v, l, st.Members)
	}
	join := func(name string) {
		n := &memberNode{name: name, args: freshNode(t, filepath.Join(dir, name))}
		nodes[name] = n
		n.proc = start(t, append(n.args.args("--name", name, "--join", strings.Join(endpoints(), ",")), snapFlags...)...)
		live.Store(endpoints())
	}
	waitVoters := func(want int) {
		waitUntil(t, 60*time.Second, fmt.Sprintf("%d voters and no learner", want), func() (bool, string) {
			for _, n := range nodes {
				if n.proc != nil && n.proc.exited() && n.name != "" {
					if code := n.proc.state.ExitCode(); code != 0 && code != -1 {
						t.Fatalf("%s exited with %d:\n%s", n.name, code, n.proc.stderr.String())
					}
				}
			}
			v, l, saw := voters()
			return v == want && l == 0, saw
		})
	}
	remove := func(name string) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := cl.MemberRemove(ctx, name); err != nil {
			t.Fatalf("removing %s: %v", name, err)
		}
	}

	// Grow 3 → 5.
	join("n4")
	waitVoters(4)
	join("n5")
	waitVoters(5)

	// The cluster had compacted its log: the new members caught up by
	// InstallSnapshot.
	if log := nodes["n4"].proc.stderr.String(); !strings.Contains(log, "installing snapshot") {
		t.Fatalf("n4 did not catch up by a snapshot; its log:\n%s", log)
	}

	// Replace a killed member.
	if err := nodes["n2"].proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-nodes["n2"].proc.done
	cl = admin() // without the dead endpoint
	remove("n2")
	waitVoters(4)
	join("n6")
	waitVoters(5)

	// Shrink 5 → 3, the leader first.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := cl.Status(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	var leaderName string
	for _, m := range st.Members {
		if m.ID == st.Leader {
			leaderName = m.Name
		}
	}
	others := []string{}
	for _, name := range []string{"n1", "n3", "n4", "n5", "n6"} {
		if name != leaderName {
			others = append(others, name)
		}
	}
	for _, name := range []string{leaderName, others[0]} {
		remove(name)
		// A removed node learns it from the others and exits by itself,
		// cleanly, saying why.
		p := nodes[name].proc
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			t.Fatalf("removed node %s did not exit by itself; its log:\n%s", name, p.stderr.String())
		}
		if !p.state.Success() || !strings.Contains(p.stderr.String(), "removed from the cluster") {
			t.Fatalf("removed node %s exited with %v; its log:\n%s", name, p.state, p.stderr.String())
		}
		cl = admin()
	}
	waitVoters(3)
	final := cl
	before := ackedCount()
	waitUntil(t, 30*time.Second, "more writes after the shrink", func() (bool, string) {
		n := ackedCount()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := final.KV().Put(ctx, "probe", []byte("x"))
		_, _, saw := voters()
		return n > before+100, fmt.Sprintf("%d (had %d); probe put: %v; writer's last error: %v; %s", n, before, err, lastErr.Load(), saw)
	})
	stopLoad()
	wg.Wait()

	// Every acknowledged write is there, read linearizably.
	mu.Lock()
	defer mu.Unlock()
	for key, val := range acked {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := final.KV().Get(ctx, key)
		cancel()
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		if resp.KV == nil || string(resp.KV.Value) != val {
			t.Fatalf("acknowledged write %s=%s lost: got %+v", key, val, resp.KV)
		}
	}
	t.Logf("%d acknowledged writes all present after grow 3→5, replace, shrink 5→3", len(acked))
}
