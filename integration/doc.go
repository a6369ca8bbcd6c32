// Package integration breaks lockd on purpose, the way Jepsen tests etcd,
// Consul and ZooKeeper: real lockd processes on 127.0.0.1, real faults,
// and histories checked by a machine. Everything is in _test.go files.
//
// Files:
//
//   - harness_test.go: builds cmd/lockd once per test binary (or takes
//     LOCKD_BIN), starts clusters of 3 or 5 processes with their own data
//     dirs, kills, pauses (SIGSTOP/SIGCONT), restarts; polls /healthz and
//     Status for readiness; copies every node's log into a failing test's
//     output.
//   - proxy_test.go: the fault-injecting TCP proxy on every peer link
//     (one per ordered pair of nodes: each node's --initial-cluster names
//     the proxies as its peers' addresses) and every client link; it cuts,
//     blackholes one or both directions, and delays, so no test needs root.
//   - nemesis_test.go: the faults (kill or pause the leader or a follower,
//     majority/minority partitions, an isolated leader, a bridge, one-way
//     links, slow links, a rolling restart) on a schedule drawn from a seed.
//   - history_test.go, checkers_test.go: the workloads (KV get/put/CAS,
//     unique puts, lock holders writing to a fenced resource, a lock
//     monitor, watchers, a kept session) and the checkers: linearizability
//     with porcupine, no lost acknowledged write, fencing and mutual
//     exclusion, watch completeness and order, session liveness.
//   - jepsen_test.go: one test per nemesis; seed_test.go: the seed
//     scenario (the Redis Sentinel failover story, and its partitioned
//     old leader); helper_test.go: a lock holder as a process of its own
//     (the test binary re-executed), the paused-holder and killed-client
//     tests; measure_test.go: the figures behind LOCKD_MEASURE=1;
//     soak_test.go: long randomized runs behind LOCKD_SOAK=1.
//
// Invariants:
//
//  1. Every process a test starts is killed by PID in t.Cleanup, even on
//     failure; lockd nodes also get --parent-pid so they stop by
//     themselves if the test binary dies first.
//  2. No fixed sleeps for readiness: the harness polls for conditions
//     with generous deadlines. Sleeps only pace load or hold a fault.
//  3. A write without an answer has an unknown outcome, never a failed
//     one: the checkers allow it to have applied at any later time.
//  4. Default runs are deterministic by seed (LOCKD_SEED overrides the
//     per-test seed); every load loop is bounded in count and time.
//  5. Everything listens and dials on 127.0.0.1 only.
package integration
