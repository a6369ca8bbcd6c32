package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/client"
)

// The seed scenario: the failover of the Redis Sentinel article in
// ../shared/seeds/ (kill -9 the master, watch the Sentinels notice it,
// vote, elect, switch), replayed on lockd at its default timing. Unlike
// Redis, which acknowledges a write before replicating it, lockd must not
// lose a single acknowledged write, and the old leader, cut off from its
// peers but not from some clients, must acknowledge none of their writes.

// writer puts unique keys one after another, recording what was
// acknowledged and when.
type writer struct {
	prefix string
	mu     sync.Mutex // protects the fields below
	acked  map[string]string
	ackAt  []time.Time
	callAt map[string]time.Time // every key sent, with its invocation time
	// ackedCalls are the invocation times of the acknowledged writes.
	ackedCalls []time.Time
	failed     int
}

func newWriter(prefix string) *writer {
	return &writer{prefix: prefix, acked: map[string]string{}, callAt: map[string]time.Time{}}
}

func (w *writer) run(ctx context.Context, cl *client.Client, id int, opTimeout time.Duration) {
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		key := fmt.Sprintf("%sw%d-%06d", w.prefix, id, i)
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		call := time.Now()
		w.mu.Lock()
		w.callAt[key] = call
		w.mu.Unlock()
		_, err := cl.KV().Put(octx, key, []byte(key))
		cancel()
		w.mu.Lock()
		if err == nil {
			w.acked[key] = key
			w.ackAt = append(w.ackAt, time.Now())
			w.ackedCalls = append(w.ackedCalls, call)
		} else {
			w.failed++
		}
		w.mu.Unlock()
		sleepCtx(ctx, 10*time.Millisecond)
	}
}

// firstAckAfter returns the first acknowledgement at or after t.
func (w *writer) firstAckAfter(t time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, at := range w.ackAt {
		if !at.Before(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

func (w *writer) ackedSince(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, at := range w.ackAt {
		if !at.Before(t) {
			n++
		}
	}
	return n
}

// ackedInvokedSince counts the acknowledged writes invoked at or after t.
func (w *writer) ackedInvokedSince(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, at := range w.ackedCalls {
		if !at.Before(t) {
			n++
		}
	}
	return n
}

// listAll reads every key under prefix (linearizable unless opts say
// otherwise).
func listAll(ctx context.Context, cl *client.Client, prefix string, opts ...client.OpOption) (map[string]string, error) {
	out := map[string]string{}
	start := ""
	for {
		o := append([]client.OpOption(nil), opts...)
		if start != "" {
			o = append(o, client.WithStart(start))
		}
		resp, err := cl.KV().List(ctx, prefix, o...)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", prefix, err)
		}
		for _, kv := range resp.KVs {
			out[kv.Key] = string(kv.Value)
		}
		if !resp.More || len(resp.KVs) == 0 {
			return out, nil
		}
		start = resp.KVs[len(resp.KVs)-1].Key + "\x00"
	}
}

// missing returns the acknowledged keys absent from present.
func (w *writer) missing(present map[string]string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for k, v := range w.acked {
		if present[k] != v {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// story logs, in time order from t0, the Raft events of the node logs
// in the words of the article's Sentinel log.
func story(t *testing.T, c *Cluster, t0 time.Time, extra []storyLine) {
	t.Helper()
	// Most specific first: a message matches the first entry it contains.
	words := []struct{ msg, text string }{
		{"leader suspected", "+sdown     %s suspects the leader (no contact within its election timeout)"},
		{"check quorum failed", "-leader    %s: no majority heard within an election timeout; steps down"},
		{"pre-vote started", "+odown?    %s asks the others whether they agree the leader is gone (pre-vote)"},
		{"pre-vote granted", "+is-down   %s agrees the leader is gone (grants a pre-vote)"},
		{"pre-vote won", "+odown     %s: a quorum agrees (pre-vote won)"},
		{"election started", "+try-failover %s starts an election"},
		{"vote granted", "+vote-for-leader %s votes"},
		{"leader elected", "+elected-leader %s is the new leader"},
		{"leader stepped down", "-leader    %s steps down"},
		{"raft node started", "+restart   %s restarts from its data dir"},
		{"new leader seen", "+slave     %s follows the new leader"},
		{"leader changed", "+switch-master %s: the leader it knows changed"},
		{"leader took over", "+sessions  %s takes over the session deadlines"},
		{"higher term seen", "+term      %s sees a higher term"},
		{"campaign lost", "-failover  %s lost its campaign"},
	}
	var keys []string
	for _, w := range words {
		keys = append(keys, w.msg)
	}
	var lines []storyLine
	for _, ev := range c.Events(keys...) {
		if ev.At.Before(t0) {
			continue
		}
		for _, w := range words {
			if strings.Contains(ev.Message, w.msg) {
				detail := ev.Line
				if i := strings.Index(detail, `"@timestamp"`); i >= 0 { // keep the fields after the time
					if j := strings.Index(detail[i:], ","); j >= 0 {
						detail = detail[i+j+1:]
					}
				}
				lines = append(lines, storyLine{at: ev.At, text: fmt.Sprintf(w.text, ev.Node) + "  " + strings.TrimSuffix(detail, "}")})
				break
			}
		}
	}
	lines = append(lines, extra...)
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "  %+9.3fs  %s\n", l.at.Sub(t0).Seconds(), l.text)
	}
	t.Logf("the story, in seconds from the fault:\n%s", b.String())
}

type storyLine struct {
	at   time.Time
	text string
}

// TestSeedScenarioSentinelFailover: under a steady write load the
// leader's process dies (kill -9); the followers notice, one is elected,
// the clients carry on against it; the old node restarts from its data
// dir and rejoins as a follower that catches up. Every acknowledged write
// is present at the end. Default timing (100 ms ticks, election timeout
// 1–2 s).
func TestSeedScenarioSentinelFailover(t *testing.T) {
	c := NewCluster(t, ClusterOptions{Nodes: 3})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	w := newWriter("seed/")
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		cl := c.NewClient(0, i, fmt.Sprintf("writer%d", i))
		wg.Add(1)
		go func() { // writer: ends with ctx
			defer wg.Done()
			w.run(ctx, cl, i, 10*time.Second)
		}()
	}
	for w.ackedSince(time.Time{}) < 30 && sleepCtx(ctx, 20*time.Millisecond) {
	}
	old := c.WaitStable(30 * time.Second)
	var extra []storyLine
	note := func(at time.Time, format string, args ...any) {
		extra = append(extra, storyLine{at: at, text: fmt.Sprintf(format, args...)})
	}
	pid := c.PID(old)
	kill := time.Now()
	c.Kill(old)
	note(kill, "kill -9   leader %s (pid %d) under a steady write load", c.Nodes[old].Name, pid)

	// The followers elect a new leader; the clients carry on against it.
	var newLead int
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		i, term := c.Leader(sctx)
		cancel()
		if i >= 0 && i != old {
			newLead = i
			note(time.Now(), "status    %s reports itself leader in term %d", c.Nodes[i].Name, term)
			break
		}
		if time.Since(kill) > 60*time.Second {
			t.Fatal("no new leader within 60 s of the leader's death")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		if at, ok := w.firstAckAfter(kill); ok {
			note(at, "client    first write acknowledged after the failover (%v after the kill)", at.Sub(kill).Round(time.Millisecond))
			break
		}
		if time.Since(kill) > 60*time.Second {
			t.Fatal("no write acknowledged within 60 s of the leader's death")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for w.ackedSince(kill) < 50 && sleepCtx(ctx, 20*time.Millisecond) {
	}

	// The old node restarts from its data dir and rejoins as a follower.
	restart := time.Now()
	c.Start(old)
	note(restart, "restart   %s from its data dir", c.Nodes[old].Name)
	lead := c.WaitStable(60 * time.Second)
	if lead == old {
		// Possible only by a later election; the node still rejoined.
		t.Logf("%s was elected again after rejoining", c.Nodes[old].Name)
	}
	note(time.Now(), "status    %s is back, matched up to the leader's commit (leader %s)", c.Nodes[old].Name, c.Nodes[lead].Name)

	// It catches up: its own (stale) read holds every write acknowledged
	// so far.
	only, err := client.New(client.Config{Endpoints: []string{c.Nodes[old].clientAddr}, ClusterID: "itest", RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	snapshot := func() map[string]string {
		w.mu.Lock()
		defer w.mu.Unlock()
		m := make(map[string]string, len(w.acked))
		for k, v := range w.acked {
			m[k] = v
		}
		return m
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := listAll(ctx, only, "seed/", client.WithStale())
		lacking := 0
		if err == nil {
			for k := range snapshot {
				if _, ok := got[k]; !ok {
					lacking++
				}
			}
		}
		if err == nil && lacking == 0 {
			note(time.Now(), "caught up %s serves all %d writes acknowledged before it was back", c.Nodes[old].Name, len(snapshot))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not catch up within 60 s: %d acknowledged writes missing from its state (err %v)", c.Nodes[old].Name, lacking, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	wg.Wait()

	present, err := listAll(context.Background(), c.Control(), "seed/")
	if err != nil {
		t.Fatal(err)
	}
	if miss := w.missing(present); len(miss) > 0 {
		t.Errorf("%d acknowledged writes lost, e.g. %v", len(miss), miss[:min(5, len(miss))])
	}
	_ = newLead
	story(t, c, kill.Add(-100*time.Millisecond), extra)
	t.Logf("%d writes acknowledged, %d failed or timed out; all acknowledged writes present", len(w.acked), w.failed)
}

// TestSeedScenarioPartitionedOldLeader is the case the article warns
// about: the old leader is cut off from the other nodes but not from
// some clients, which keep writing to it. lockd must acknowledge none of
// those writes (they fail or time out), and nothing acknowledged anywhere
// is lost after the partition heals.
func TestSeedScenarioPartitionedOldLeader(t *testing.T) {
	c := NewCluster(t, ClusterOptions{Nodes: 3, ClientGroups: 2})
	old := c.WaitStable(30 * time.Second)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	majority := newWriter("seed/maj/")
	minority := newWriter("seed/min/")
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		cl := c.NewClient(0, old+1+i, fmt.Sprintf("majority-writer%d", i))
		wg.Add(1)
		go func() { // majority writer: ends with ctx
			defer wg.Done()
			majority.run(ctx, cl, i, 10*time.Second)
		}()
	}
	// The minority's clients know only the old leader.
	minCtx, stopMin := context.WithCancel(ctx)
	var minWG sync.WaitGroup
	for i := 0; i < 2; i++ {
		cl, err := client.New(client.Config{Endpoints: []string{c.clientP[1][old].Addr()}, ClusterID: "itest",
			Name: fmt.Sprintf("minority-writer%d", i), RequestTimeout: time.Second, BackoffMax: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		minWG.Add(1)
		go func() { // minority writer: ends with minCtx
			defer minWG.Done()
			minority.run(minCtx, cl, i, 2*time.Second)
		}()
	}
	for (majority.ackedSince(time.Time{}) < 20 || minority.ackedSince(time.Time{}) < 20) && sleepCtx(ctx, 20*time.Millisecond) {
	}
	var extra []storyLine
	note := func(at time.Time, format string, args ...any) {
		extra = append(extra, storyLine{at: at, text: fmt.Sprintf(format, args...)})
	}
	var rest []int
	for i := range c.Nodes {
		if i != old {
			rest = append(rest, i)
		}
	}
	cut := time.Now()
	c.Partition([]int{old}, rest)
	note(cut, "partition leader %s cut off from %s; its clients still reach it", c.Nodes[old].Name, names(c, rest))
	for {
		if at, ok := majority.firstAckAfter(cut); ok {
			note(at, "client    first majority write acknowledged after the cut (%v)", at.Sub(cut).Round(time.Millisecond))
			break
		}
		if time.Since(cut) > 60*time.Second {
			t.Fatal("the majority acknowledged no write within 60 s of the partition")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Keep the minority's clients writing to the old leader a while (a
	// few election timeouts), then stop them before the heal, so that
	// every one of their calls ended while the partition held.
	sleepCtx(ctx, 6*time.Second)
	stopMin()
	minWG.Wait()
	// A write sent before the cut may be acknowledged after it (it was
	// committed in time); only writes sent to the cut-off leader count.
	minAcked := minority.ackedInvokedSince(cut)
	note(time.Now(), "client    the old leader's clients stop: %d writes sent after the cut acknowledged, %d failed or timed out", minAcked, minority.failed)
	heal := time.Now()
	c.HealNetwork()
	note(heal, "heal      the partition ends")
	lead := c.WaitStable(60 * time.Second)
	note(time.Now(), "status    every node follows %s; %s caught up", c.Nodes[lead].Name, c.Nodes[old].Name)
	for majority.ackedSince(heal) < 20 && sleepCtx(ctx, 20*time.Millisecond) {
	}
	stop()
	wg.Wait()

	if minAcked > 0 {
		t.Errorf("the partitioned old leader acknowledged %d writes its clients sent while it was cut off from a majority", minAcked)
	}
	present, err := listAll(context.Background(), c.Control(), "seed/")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*writer{majority, minority} {
		if miss := w.missing(present); len(miss) > 0 {
			t.Errorf("%d acknowledged writes under %s lost after the heal, e.g. %v", len(miss), w.prefix, miss[:min(5, len(miss))])
		}
	}
	// Writes sent to the old leader after the cut: it could not reach a
	// majority, so none of them can have committed; Raft discards them
	// when the old leader's log is overwritten. (A write sent before the
	// cut and not acknowledged may legally have committed.)
	surfaced := 0
	minority.mu.Lock()
	for k := range present {
		if at, ok := minority.callAt[k]; ok && !at.Before(cut) {
			surfaced++
		}
	}
	minority.mu.Unlock()
	if surfaced > 0 {
		t.Errorf("%d writes sent to the cut-off old leader were applied after the heal", surfaced)
	}
	story(t, c, cut.Add(-100*time.Millisecond), extra)
	t.Logf("majority: %d acknowledged, %d failed; old leader's clients: %d acknowledged before the cut, %d during it, %d failed or timed out",
		len(majority.acked), majority.failed, len(minority.acked)-minAcked, minAcked, minority.failed)
}
