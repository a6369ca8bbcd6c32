// Command lockctl is lockd's command line: cluster status, config keys,
// sessions, locks and elections, for operators and shell scripts. It is
// built on the public client package only (and api for the wire types);
// it never imports server, fsm, consensus or rpc.
//
// # Files
//
// app.go builds the command list from one function per command
// (statusCommand, putCommand, ...): a new command is one more file and
// one line in commands. exit.go maps errors to exit codes and messages;
// output.go holds every JSON shape; child.go runs a command under a lock.
//
// # Invariants
//
//  1. Exit codes: 0 ok; 1 the condition was false (a lock not acquired
//     within --wait, `lock check` says the token is not current, a
//     --if-rev / --if-absent / txn compare failed, `get` found no key);
//     2 usage (bad flags or arguments, urfave/cli's parse errors too);
//     3 cluster unavailable (no node answered, or none knew a leader,
//     within --timeout); 4 the session was lost, or the named session
//     does not exist; 5 any other error (the server refused: a limit, a
//     stale token, a compacted watch...); 130 interrupted by a signal
//     before a call or wait was done. `lock NAME -- COMMAND` exits with
//     COMMAND's code (128+N if signal N killed it) unless lockctl itself
//     failed first (then the codes above). One function, exitCode, maps
//     errors to codes with errors.Is on the api and client sentinels.
//  2. Errors are one line on stderr, "lockctl: " then what failed and
//     what to do (message adds a hint by exit code: where lockd was
//     looked for, that a session must be made anew, which --help to read).
//     Two exit-1 answers print no error line because their output is the
//     answer: `txn` whose compares failed, and `lock check` of a token
//     that is not current.
//  3. stdout carries data only: a command prints its result there when
//     it exits 0, or 1 for txn and lock check (above); on any other
//     failure it prints nothing there, except what a streaming command
//     (watch, elect, session keepalive, lock without a command) or the
//     command run under a lock printed before. Notes for people (`ls` has more keys, a release
//     that failed) go to stderr, and waiting progress goes to stderr only
//     when it is a terminal.
//  4. --output json prints exactly one JSON document per command, on one
//     line; watch, elect (campaign and --observe) and session keepalive
//     print one object per line, one per event. The shapes are the
//     structs of output.go, documented there; they only ever grow
//     (fields are added, never renamed, removed or retyped). Values are
//     "value" when valid UTF-8, else "value_base64"; durations are
//     integers in milliseconds (_ms); times are RFC 3339 in UTC; session
//     ids are 16 hex digits.
//  5. `lock NAME -- COMMAND` runs COMMAND in its own process group with
//     LOCKD_FENCING_TOKEN, LOCKD_LOCK_NAME and LOCKD_SESSION_ID set and
//     the standard streams passed through; SIGINT, SIGTERM and SIGHUP
//     sent to lockctl go to that group. If the lock's session is lost
//     while it runs (expired, destroyed), the group gets SIGTERM, then
//     SIGKILL after --grace (default 10s); lockctl says why in one line
//     and exits 4. Otherwise lockctl releases the lock once COMMAND has
//     exited, then exits with its code. A command that reads the
//     terminal is not in the terminal's foreground group: it is meant for
//     batch jobs.
//  6. Without --wait, `lock` waits as long as it takes (like consul
//     lock); --wait 0 tries once; --wait D gives up after D (exit 1,
//     naming the holder). Every other call is bounded by --timeout.
//  7. Nothing is global: one app value per run holds the streams, the
//     root context (ended by the first signal unless a running command
//     has taken signals over) and the signal route.
//
// # JSON shapes per command
//
//	status            StatusOutput          member list     MemberListOutput
//	put               PutOutput             get             GetOutput
//	del               DeleteOutput          ls              ListOutput
//	watch             EventOutput per line  txn             TxnOutput
//	session create    SessionOutput         session info    SessionOutput
//	session list      SessionListOutput     session destroy SessionDestroyOutput
//	session keepalive KeepaliveEvent per line
//	lock NAME         LockHeldOutput        lock list       LockListOutput
//	lock check        LockCheckOutput       elect           LeaderOutput per line
//	member add        MemberChangeOutput    member promote  MemberChangeOutput
//	member remove     MemberChangeOutput    leader transfer LeaderTransferOutput
//	bench             bench.Result (package bench; a run cut short by Ctrl-C
//	                  prints its partial result with "partial": true and exits 0)
//
// # Transactions
//
// `lockctl txn` reads statements from --if/--then/--else flags or from
// stdin, one per line (see txnHelp in txn.go, printed by lockctl txn
// --help):
//
//	if mod cfg/a = 5
//	if missing cfg/lock
//	then put cfg/a "new value"
//	then del --prefix cfg/tmp/
//	else get cfg/a
package main
