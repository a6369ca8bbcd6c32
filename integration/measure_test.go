package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/session"
)

// Measurements with real processes. They take a few minutes, so they run
// only with LOCKD_MEASURE=1:
//
//	LOCKD_MEASURE=1 go test ./integration -run TestMeasure -v -timeout 30m

func needMeasure(t *testing.T) {
	t.Helper()
	if os.Getenv("LOCKD_MEASURE") == "" {
		t.Skip("set LOCKD_MEASURE=1 to run (spawns real processes for minutes)")
	}
}

func medianMax(ds []time.Duration) (time.Duration, time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// TestMeasureLeaderKillToFirstWrite: SIGKILL the leader of a 3-node
// cluster at lockd's default timing (100 ms ticks, election timeout
// 1–2 s) and time until a write through the client succeeds; 10 trials.
func TestMeasureLeaderKillToFirstWrite(t *testing.T) {
	needMeasure(t)
	c := NewCluster(t, ClusterOptions{Nodes: 3})
	cl := c.NewClient(0, 0, "measure")
	ctx := context.Background()
	var runs []time.Duration
	for i := 0; i < 10; i++ {
		lead := c.WaitStable(60 * time.Second)
		if _, err := cl.KV().Put(ctx, "warm", []byte("x")); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.Kill(lead)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := cl.KV().Put(wctx, fmt.Sprintf("after-kill-%d", i), []byte("x"))
		cancel()
		if err != nil {
			t.Fatalf("trial %d: no write within 30 s of the leader's death: %v", i, err)
		}
		d := time.Since(start)
		runs = append(runs, d)
		c.Logf("trial %d: killed leader %s, first successful write after %v", i, c.Nodes[lead].Name, d.Round(time.Millisecond))
		c.Start(lead)
	}
	med, mx := medianMax(runs)
	c.Logf("FIGURE leader SIGKILL → first successful write (default timing, 10 trials): median %v, max %v; all %v",
		med.Round(time.Millisecond), mx.Round(time.Millisecond), runs)
}

// handover: a holder process (the helper) holds the lock with ttl and
// lockDelay; a waiter in this process queues for it; the holder is
// SIGKILLed. It returns the time until the waiter holds the lock and the
// time until the cluster no longer knows the holder's session.
func handover(t *testing.T, c *Cluster, lock string, ttl time.Duration, lockDelay string) (got, expired time.Duration) {
	t.Helper()
	res := &Resource{}
	h := StartHolder(t, c.Endpoints(0), lock, ttl, lockDelay, ResourceServer(t, res))
	h.WaitFor(t, 30*time.Second, "the lock", func(ls []holderLine) bool { return len(ls) > 0 && ls[0].kind == "acquired" })
	first := h.Lines()[0]
	cl := c.NewClient(0, 1, "waiter")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := cl.NewSession(ctx, client.WithTTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(context.Background()) }()
	m := s.Mutex(lock)
	gotc := make(chan error, 1)
	go func() { gotc <- m.Lock(ctx) }() // waiter: ends with ctx at the latest
	// Wait until the waiter is queued, read from the cluster.
	for {
		resp, err := c.Control().Locks(ctx, lock)
		if err == nil && len(resp.Locks) == 1 && len(resp.Locks[0].Waiters) == 1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the waiter never queued")
		}
		time.Sleep(10 * time.Millisecond)
	}
	expc := make(chan time.Time, 1)
	kill := time.Now()
	h.Signal(syscall.SIGKILL)
	go func() { expc <- waitSessionGone(ctx, c.Control(), first.session) }() // ends with ctx at the latest
	if err := <-gotc; err != nil {
		t.Fatalf("the waiter never got the lock: %v", err)
	}
	got = time.Since(kill)
	if m.Token() <= first.token {
		t.Fatalf("token did not increase: %d → %d", first.token, m.Token())
	}
	at := <-expc
	if at.IsZero() {
		t.Fatal("the killed holder's session never expired")
	}
	return got, at.Sub(kill)
}

// waitSessionGone polls until the cluster answers ErrSessionNotFound for
// id, and returns when it saw that (zero if ctx ended first).
func waitSessionGone(ctx context.Context, cl *client.Client, id session.ID) time.Time {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cl.SessionInfo(rctx, id)
		cancel()
		if errors.Is(err, api.ErrSessionNotFound) {
			return time.Now()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Time{}
}

// TestMeasureLockHandoverAfterHolderDeath: the holder's process is
// SIGKILLed while another client waits; time until the waiter holds the
// lock, for TTL 2 s with lock-delay 0 and the default (5 s). The minimum
// TTL follows the election timeout (1.5 × its maximum), so TTL 2 s needs
// the shorter timing (20 ms ticks); at the default timing the minimum,
// 3 s, is measured too.
func TestMeasureLockHandoverAfterHolderDeath(t *testing.T) {
	needMeasure(t)
	for _, tc := range []struct {
		name   string
		timing Timing
		ttl    time.Duration
	}{
		{"fast-timing-ttl-2s", fastTiming, 2 * time.Second},
		{"default-timing-ttl-3s", Timing{}, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCluster(t, ClusterOptions{Nodes: 3, Timing: tc.timing})
			for _, delay := range []string{"0s", "default"} {
				var gots, exps []time.Duration
				for i := 0; i < 3; i++ {
					got, exp := handover(t, c, fmt.Sprintf("handover/%s/%d", delay, i), tc.ttl, delay)
					gots, exps = append(gots, got), append(exps, exp)
				}
				gm, gx := medianMax(gots)
				em, ex := medianMax(exps)
				c.Logf("FIGURE lock hand-over after the holder's SIGKILL, TTL %v, lock-delay %s: median %v, max %v (session gone after median %v, max %v; TTL + one election timeout = %v)",
					tc.ttl, delay, gm.Round(time.Millisecond), gx.Round(time.Millisecond), em.Round(time.Millisecond), ex.Round(time.Millisecond),
					tc.ttl+tc.timing.ElectionTimeoutMax())
			}
		})
	}
}

// TestMeasurePausedHolder: how often a holder paused (SIGSTOP) longer
// than its TTL still believes it holds the lock after SIGCONT, and that
// the resource refuses its writes; 10 trials.
func TestMeasurePausedHolder(t *testing.T) {
	needMeasure(t)
	c := NewCluster(t, ClusterOptions{Nodes: 3, Timing: fastTiming})
	const trials = 10
	believed, writes := 0, 0
	for i := 0; i < trials; i++ {
		r := pausedHolderTrial(t, c, fmt.Sprintf("paused/%d", i), 2*time.Second, 5*time.Second)
		if r.believedAfterResume {
			believed++
		}
		writes += r.writesAfterResume
	}
	c.Logf("FIGURE paused holder (SIGSTOP 5 s, TTL 2 s): believed it still held the lock right after SIGCONT in %d of %d trials; "+
		"it sent %d writes after resuming, the resource accepted none", believed, trials, writes)
}
