// Package integration holds tests that build the lockd binary and run
// real processes. Today: measurements of failover and lock hand-over
// behind LOCKD_MEASURE=1; the fault-injection harness and history checkers
// come with their own issue.
package integration
