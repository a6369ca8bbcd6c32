package server

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/consensus"
)

// These tests drive the real Go client against real servers (in-process,
// loopback rpc): what a user of the library sees.

func (c *testCluster) client(t *testing.T) *client.Client {
	t.Helper()
	var eps []string
	for id := consensus.NodeID(1); int(id) <= len(c.members); id++ {
		if s := c.servers[id]; s != nil {
			eps = append(eps, s.ClientAddr())
		}
	}
	cl, err := client.New(client.Config{Endpoints: eps, ClusterID: "test", RequestTimeout: 2 * time.Second,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func TestClientMutexAcrossLeaderFailure(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.leader()
	cl := c.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	s1, err := cl.NewSession(ctx, client.WithTTL(3*time.Second), client.WithLockDelay(0))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := cl.NewSession(ctx, client.WithTTL(3*time.Second), client.WithLockDelay(0))
	if err != nil {
		t.Fatal(err)
	}
	m1, m2 := s1.Mutex("jobs/report"), s2.Mutex("jobs/report")
	if err := m1.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m2.TryLock(ctx); !errors.Is(err, api.ErrLockHeld) {
		t.Fatalf("TryLock of a held mutex: %v", err)
	}
	got := make(chan error, 1)
	go func() { got <- m2.Lock(ctx) }()
	waitFor(t, 5*time.Second, "s2 queued", func() bool {
		for _, s := range c.servers {
			if len(s.fsm.Lock("jobs/report").Waiters) == 1 {
				return true
			}
		}
		return false
	})
	c.stop(lead)
	if err := m1.Unlock(ctx); err != nil {
		t.Fatalf("unlock after the leader died: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiting Lock across a leader failure: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the waiter never got the lock")
	}
	if m2.Token() <= m1.Token() {
		t.Fatalf("the next holder's token %d must exceed the previous %d", m2.Token(), m1.Token())
	}
	select {
	case <-s1.Done():
		t.Fatalf("session 1 lost across the failover: %v", s1.Err())
	default:
	}
}

func TestClientKVAndWatchSurviveNodeFailure(t *testing.T) {
	c := newTestCluster(t, 3)
	c.leader()
	cl := c.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv := cl.KV()
	if _, err := kv.Put(ctx, "cfg/mode", []byte("blue")); err != nil {
		t.Fatal(err)
	}
	get, err := kv.Get(ctx, "cfg/mode")
	if err != nil || get.KV == nil || string(get.KV.Value) != "blue" {
		t.Fatalf("get: %+v %v", get, err)
	}
	wch := cl.Watch(ctx, "cfg/", client.WithPrefix())
	// Stop the node the client is using, then keep writing.
	var cur consensus.NodeID
	for id, s := range c.servers {
		if s.ClientAddr() == cl.Endpoint() {
			cur = id
		}
	}
	if _, err := kv.Put(ctx, "cfg/0", []byte("x")); err != nil {
		t.Fatal(err)
	}
	c.stop(cur)
	for i := 1; i < 5; i++ {
		if _, err := kv.Put(ctx, fmt.Sprintf("cfg/%d", i), []byte("x")); err != nil {
			t.Fatalf("put %d after a node failure: %v", i, err)
		}
	}
	var keys []string
	for len(keys) < 5 {
		select {
		case resp, ok := <-wch:
			if !ok || resp.Err != nil {
				t.Fatalf("watch ended: %v", resp.Err)
			}
			for _, e := range resp.Events {
				keys = append(keys, e.KV.Key)
			}
		case <-ctx.Done():
			t.Fatalf("watch delivered only %v", keys)
		}
	}
	for i, k := range keys {
		if k != fmt.Sprintf("cfg/%d", i) {
			t.Fatalf("watch events %v: gap or duplicate at %d", keys, i)
		}
	}
}

func TestClientEphemeralKeyGoesWithSession(t *testing.T) {
	c := newTestCluster(t, 3)
	c.leader()
	cl := c.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := cl.NewSession(ctx, client.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.KV().Put(ctx, "members/me", []byte("10.0.0.1"), client.WithLease(s)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	get, err := cl.KV().Get(ctx, "members/me")
	if err != nil || get.KV != nil {
		t.Fatalf("the ephemeral key outlived its destroyed session: %+v %v", get, err)
	}
}
