// Command lockd runs one node of a lockd cluster, or with `lockd dev` a
// local cluster of real lockd processes for demos and tests.
//
// Files:
//
//   - app.go, flags.go: the command line (urfave/cli/v2; every node flag
//     also reads a LOCKD_* variable) and the mapping of outcomes to exit
//     codes.
//   - config.go: the one gateway that checks flag values and derives the
//     node id and member list from --initial-cluster.
//   - node.go, logging.go, members.go: start-up (data dir, identity and
//     voters, listeners, server), the wait for a signal or a failure, and
//     the clean stop.
//   - http.go, metrics.go: /healthz, /metrics (Prometheus text, written by
//     hand) and the optional /debug/pprof/.
//   - dev.go, proc_*.go: lockd dev, which runs its nodes as child processes.
//   - signals.go: SIGINT/SIGTERM, and a dev node's watch on its parent.
//
// Invariants:
//
//  1. Every failure ends as ONE line on stderr, "lockd: ...", and a
//     non-zero exit code: 2 for bad usage (flags, arguments, member list),
//     1 for anything that fails at start-up or while running. A failed
//     start does not print the log lines of the start so far (unless
//     --log-level is debug or trace). A clean stop exits 0.
//  2. Node ids are the 1-based positions of the names in --initial-cluster
//     sorted by name, so every node derives the same ids from the same
//     list, in whatever order it was written.
//  3. A data dir belongs to one member: the first start stores its cluster
//     id and node id (store.Identity) and the voters (members.go), and
//     every later start must match both. The data dir is opened before any
//     port, so a second lockd on the same dir is told who holds it.
//  4. A stop (SIGINT, SIGTERM) closes the server first (a leader hands
//     leadership over), then HTTP, then the store. A second signal exits
//     at once with status 1.
//  5. lockd dev signals its children by pid only, never by process group
//     or name; each child runs in its own process group (so Ctrl-C reaches
//     only lockd dev) and stops by itself if lockd dev disappears.
//  6. /metrics reports only values read from the node at scrape time:
//     nothing is estimated or made up.
//
// Goroutines: a signal watcher (joined by main), a parent watcher in dev
// children, the HTTP server (joined by node.close); in lockd dev one waiter
// per child and a readiness reporter (both joined before it returns).
//
// This package imports server, store, consensus and fsm; nothing imports
// it.
package main
