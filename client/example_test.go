package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
)

// Examples without an Output comment are compiled, not run: they need a
// cluster (`go run ./cmd/lockd dev --nodes 3` prints its endpoints).

var endpoints = []string{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"}

func ExampleNew() {
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, st := range c.StatusAll(ctx) {
		if st.Err != nil {
			fmt.Printf("%s: %v\n", st.Endpoint, st.Err)
			continue
		}
		fmt.Printf("%s: %s %s, term %d, leader %d\n", st.Endpoint, st.Status.Node.Name, st.Status.Node.Role, st.Status.Term, st.Status.Leader)
	}
}

// A Config that cannot work says what is wrong with it.
func ExampleConfig_Validate() {
	cfg := client.Config{Endpoints: []string{"localhost"}, RequestTimeout: -time.Second}
	fmt.Println(cfg.Validate())
	// Output:
	// endpoint 0 "localhost" is not host:port: address localhost: missing port in address
	// request timeout -1s must be positive
}

// The usual shape of a lock holder: lock, hand the fencing token to the
// resource, stop the moment the lock is lost, unlock.
func ExampleSession_Mutex() {
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	s, err := c.NewSession(ctx, client.WithTTL(10*time.Second), client.WithName("nightly-report"))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	m := s.Mutex("jobs/nightly-report")
	lockCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := m.Lock(lockCtx); err != nil {
		log.Fatal(err) // context.DeadlineExceeded, or client.ErrSessionLost
	}
	token := m.Token()

	work, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		<-m.Lost() // the session ended: someone else may get the lock now
		stop()
	}()
	runReport(work, token) // the resource refuses tokens lower than the highest it saw

	if err := m.Unlock(ctx); err != nil {
		log.Print(err)
	}
}

func runReport(ctx context.Context, token uint64) { _, _ = ctx, token }

// TryLock fails at once with the server's reason.
func ExampleMutex_TryLock() {
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	s, err := c.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	switch err := s.Mutex("migrations").TryLock(ctx); {
	case errors.Is(err, api.ErrLockHeld), errors.Is(err, api.ErrLockDelay):
		fmt.Println("busy:", err) // the message names the holder, or the end of the lock-delay
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("migrating")
	}
}

func ExampleElection() {
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	s, err := c.NewSession(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)

	e := s.Election("db-primary")
	go func() {
		for li := range e.Observe(ctx) {
			if li.Vacant() {
				fmt.Println("no primary")
				continue
			}
			fmt.Printf("primary is %s (token %d)\n", li.Value, li.Token)
		}
	}()
	if err := e.Campaign(ctx, []byte("10.0.0.7:5432")); err != nil {
		log.Fatal(err)
	}
	select {
	case <-e.Lost():
		log.Print("leadership lost")
	case <-time.After(time.Minute):
		_ = e.Resign(ctx)
	}
}

// Compare-and-set: change a key only if nobody changed it since it was read.
func ExampleKV_Txn() {
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	kv := c.KV()

	got, err := kv.Get(ctx, "config/feature-x")
	if err != nil {
		log.Fatal(err)
	}
	var rev int64 // 0: the key must not exist yet
	if got.KV != nil {
		rev = got.KV.ModRevision
	}
	resp, err := kv.Txn(ctx, client.Txn{
		If:   []api.Compare{client.CompareModRevision("config/feature-x", api.Equal, rev)},
		Then: []api.Op{client.OpPut("config/feature-x", []byte("on"))},
		Else: []api.Op{client.OpGet("config/feature-x")},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("swapped:", resp.Succeeded)
}

func ExampleClient_Watch() {
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	for wr := range c.Watch(ctx, "config/", client.WithPrefix()) {
		if wr.Err != nil {
			// api.ErrCompacted: read again, then watch from after that read.
			log.Fatal(wr.Err)
		}
		for _, ev := range wr.Events {
			fmt.Printf("%s %s = %q at revision %d\n", ev.Type, ev.KV.Key, ev.KV.Value, ev.Revision)
		}
	}
}

// An ephemeral key lives as long as its session: service registration.
func ExampleWithLease() {
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	s, err := c.NewSession(ctx, client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	if _, err := c.KV().Put(ctx, "services/api/10.0.0.7", []byte("10.0.0.7:8080"), client.WithLease(s)); err != nil {
		log.Fatal(err)
	}
	<-s.Done() // the key is deleted when the session ends
}
