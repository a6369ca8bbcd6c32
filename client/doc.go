// Package client is lockd's Go client: sessions with automatic
// keepalive, locks (exclusive, shared, semaphores) with fencing tokens,
// leader election, config keys with transactions, and watches that
// survive node failures.
//
//	c, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"}})
//	s, err := c.NewSession(ctx, client.WithTTL(10*time.Second))
//	m := s.Mutex("jobs/nightly")
//	err = m.Lock(ctx)       // waits in the lock's FIFO queue
//	token := m.Token()      // pass it to the resource you guard
//	<-m.Lost()              // closed when the lock is gone (Unlock or the session's end)
//	err = m.Unlock(ctx)
//
// # Endpoints and retries
//
// The client holds one rpc client per endpoint and sends every call to
// the current one; any node serves any call (a follower forwards writes
// and keepalives to the leader). When an attempt fails for a reason that
// says nothing about the request — no connection (rpc.ErrUnavailable), a
// connection that died with the call in flight (rpc.ErrConnClosed,
// rpc.ErrShuttingDown, rpc.ErrIdle), load (rpc.ErrOverloaded), no
// leader in time (api.ErrUnavailable), or the attempt's RequestTimeout
// passing (at most 2 s for an attempt routed to the leader's endpoint, so
// that a leader cut off from its peers, or paused, does not hold calls
// that the rest of the cluster could serve) — the client moves to the
// next endpoint and tries again: at once
// for each endpoint of a round, then with exponential backoff and jitter
// (seeded per client) between rounds, until the call's ctx ends. The
// error then wraps the context's error and names what the last attempt
// met. Every other error is the server's answer and is returned at once:
// *api.Error values with the server's message, matching the api sentinels
// with errors.Is (api.ErrLockHeld, api.ErrSessionNotFound, ...).
//
// # Exactly-once writes
//
// Every write carries (ClientID, Seq); the server remembers the result of
// the last Seq per ClientID, answers a repeat of it from that record, and
// refuses an older Seq. A retry of a write reuses its Seq, so a write
// whose answer was lost is never applied twice. Because only the last
// Seq is remembered, two writes in flight under one ClientID could refuse
// each other when they arrive out of order; so the client keeps a pool of
// lanes, each a ClientID (crypto/rand) with its own Seq counter, and each
// write holds one lane for all its attempts. Session creation uses the
// primary lane, whose id is Client.ID, so the server counts a client's
// sessions under one id. Lock acquires are the one exception to "reuse
// the Seq": acquiring is idempotent per (session, lock) on the server,
// and each attempt takes a fresh Seq on its lane (see lock.go).
//
// # Sessions and the lost-lock signal
//
// Each session is renewed every TTL/3. A Client renews all of its
// sessions together with one goroutine: when one is due, every session
// of the client due within the smallest TTL/6 goes in the same batch call
// (api.MethodSessionKeepaliveBatch, at most api.MaxKeepaliveBatch ids),
// so sessions renewed together stay due together and a client with 1,000
// sessions sends about one call per TTL/3. A failed call is retried
// within about 200 ms on the next endpoint, for every session in it; a
// server without the batch method gets one call per session. A session
// is lost when the server says it does not know it, or when a TTL passed
// since the last successful keepalive was sent (even while a keepalive
// call is still in flight); Done is then closed and Err says why. Locks, semaphores and elections are held through a
// session; each has a Lost channel, closed when its grant ends.
//
// # Invariants
//
//  1. No lock or election reports success after its session ended: the
//     grant is kept only if the session is alive when it arrives, checked
//     under the session's lock against the same state that closes Done
//     (etcd#11456).
//  2. Unlock names the grant's fencing token; the server releases only
//     that grant, so a late or repeated Unlock never frees a newer one
//     (etcd#22082).
//  3. Every grant's Lost channel is closed when the grant ends, by Unlock
//     or by the session's end, whichever comes first (etcd#6127).
//  4. The client declares a session lost no later than the leader that
//     acknowledged its keepalives can expire it: its TTL clock starts when
//     the last successful keepalive was sent, not when its answer arrived.
//     A new leader may expire it earlier, by up to TTL/6 (TTL/2 if the
//     newest deadline checkpoint was lost with the old leader): a
//     lock-delay of at least TTL/2 covers that window (README, "Lock-delay").
//  5. At most one write is in flight per ClientID; all attempts of one
//     write carry the same (ClientID, Seq), except lock acquires (fresh
//     Seq per attempt, same lane). A lane whose write was abandoned
//     without an answer is never used again, so a newer Seq on a lane
//     always means the same call was sent again (what lets the server
//     tell a re-sent acquire from an abandoned one: see lock.go).
//  6. A watch delivers each revision at most once and in order, and
//     resumes from the revision after the last one delivered; it ends
//     with an error (never silently skips) if the history was compacted.
//  7. Every goroutine (one keepalive goroutine per Client while it has
//     sessions, plus, while a keepalive round is in flight, one that ends
//     the sessions whose deadline passes; one per watch or Observe) ends
//     when its sessions, context or the Client end, and Close waits for
//     them; every channel it hands out is bounded.
//
// This package imports api, session, rpc, hclog and the standard library.
// It must never import server, consensus, fsm or store.
package client
