// Package bench runs lockd's benchmark workloads against a cluster through
// the public client package; `lockctl bench` is its command line.
//
// Workloads (see Workloads): put, get (linearizable, or stale with
// Config.Stale), txn (compare + 2 puts), lock (uncontended acquire +
// release, each worker its own lock), lock-contended (every worker on one
// lock: grants/s and hand-over latency), session (create + destroy churn),
// keepalive (N live sessions kept alive while workers put), and watch
// (watchers on a prefix, writers at a fixed rate: delivery latency).
//
// Invariants:
//   - Every run is bounded: it stops after Config.Total operations or
//     Config.Duration, whichever comes first, or when its context ends;
//     a run cut short by its context returns the partial result with
//     Result.Partial set, not an error.
//   - Latencies are kept in fixed-size log-linear histograms (1.6 %
//     precision), one per worker, merged at the end: memory does not grow
//     with the number of operations and workers never share a lock on the
//     hot path.
//   - Operations that fail are counted (Result.Errors, with the first
//     error's text) and are not in the latency histogram; a run whose
//     every operation failed returns an error.
//   - Set-up (prefilled keys, sessions) and clean-up are not timed. Keys
//     live under "bench/<workload>/" and are deleted at the end
//     (best-effort); sessions are closed.
//   - The package holds no global state and starts no goroutine that
//     outlives Run.
package bench
