package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/session"
)

const lockDescription = `Acquires lock NAME through a new session, then:
  - with a COMMAND (after --): runs it with LOCKD_FENCING_TOKEN, LOCKD_LOCK_NAME and
    LOCKD_SESSION_ID in its environment and stdin/stdout/stderr passed through,
    releases the lock when it exits, and exits with its exit code (128+N if signal N
    killed it). The command runs in its own process group; SIGINT, SIGTERM and SIGHUP
    sent to lockctl are passed on to that group. If the session is lost while the
    command runs, the group gets SIGTERM, then SIGKILL after --grace, and lockctl
    exits 4 saying why.
  - without a COMMAND: prints the fencing token, holds the lock until Ctrl-C, releases it.
Without --wait lockctl waits for the lock as long as it takes (FIFO); --wait 0 tries once;
--wait 30s gives up after 30s. Not acquired: exit 1, naming the holder. While waiting
longer than a second, a terminal on stderr shows the holder, the queue position and
the time waited.`

// lockHandle is one of the client's lock kinds, seen alike.
type lockHandle struct {
	mode    api.Mode
	acquire func(context.Context) error
	try     func(context.Context) error
	release func(context.Context) error
	token   func() uint64
	lost    func() <-chan struct{}
}

func newLockHandle(s *client.Session, name string, shared bool, limit int) lockHandle {
	switch {
	case shared:
		rw := s.RWMutex(name)
		return lockHandle{api.Shared, rw.RLock, rw.TryRLock, rw.RUnlock, rw.Token, rw.Lost}
	case limit > 0:
		sem := s.Semaphore(name, limit)
		return lockHandle{api.Semaphore, sem.Acquire, sem.TryAcquire, sem.Release, sem.Token, sem.Lost}
	}
	m := s.Mutex(name)
	return lockHandle{api.Exclusive, m.Lock, m.TryLock, m.Unlock, m.Token, m.Lost}
}

// lockRequest is a parsed `lock` command line.
type lockRequest struct {
	name    string
	command []string
	wait    time.Duration
	waitSet bool
	shared  bool
	limit   int
	grace   time.Duration
}

func parseLockArgs(c *cli.Context) (lockRequest, error) {
	r := lockRequest{wait: c.Duration("wait"), waitSet: c.IsSet("wait"), shared: c.Bool("shared"), limit: c.Int("limit"), grace: c.Duration("grace")}
	as := c.Args().Slice()
	if len(as) == 0 {
		return r, usagef("lock", "missing arguments: lockctl lock [flags] NAME [-- COMMAND [ARGS...]]")
	}
	r.name, as = as[0], as[1:]
	if len(as) > 0 {
		switch {
		case as[0] == "--":
			as = as[1:]
			if len(as) == 0 {
				return r, usagef("lock", "no command after --")
			}
		case strings.HasPrefix(as[0], "-"):
			return r, usagef("lock", "flag %s after the lock name: flags go before it (lockctl lock [flags] NAME -- COMMAND)", as[0])
		}
		r.command = as
	}
	switch {
	case r.shared && c.IsSet("limit"):
		return r, usagef("lock", "--shared and --limit exclude each other")
	case c.IsSet("limit") && r.limit < 1:
		return r, usagef("lock", "--limit %d must be at least 1", r.limit)
	case r.wait < 0:
		return r, usagef("lock", "--wait %v must not be negative", r.wait)
	case r.grace <= 0:
		return r, usagef("lock", "--grace %v must be positive", r.grace)
	}
	return r, nil
}

func lockCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:        "lock",
		Usage:       "hold a lock while a command runs (or until Ctrl-C); list and check locks",
		ArgsUsage:   "NAME [-- COMMAND [ARGS...]]",
		Description: lockDescription,
		Flags: append(sessionFlags(),
			&cli.DurationFlag{Name: "wait", DefaultText: "forever", Usage: "give up after `DURATION` (0: try once)"},
			&cli.BoolFlag{Name: "shared", Usage: "hold the lock shared (a read lock): many shared holders, no exclusive one"},
			&cli.IntFlag{Name: "limit", Usage: "hold one of `N` slots of a semaphore (every holder must give the same N)"},
			&cli.DurationFlag{Name: "grace", Value: 10 * time.Second,
				Usage: "after the session is lost, the command gets SIGTERM, then SIGKILL after this `DURATION`"},
		),
		Action: func(c *cli.Context) error {
			r, err := parseLockArgs(c)
			if err != nil {
				return err
			}
			opts, err := sessionOptions(c, "lock")
			if err != nil {
				return err
			}
			cn, err := a.connect(c)
			if err != nil {
				return err
			}
			defer cn.Close()
			return a.lock(cn, r, opts)
		},
		Subcommands: []*cli.Command{lockListCommand(a), lockCheckCommand(a)},
	}
}

// lock runs a parsed `lock` command.
func (a *app) lock(cn *conn, r lockRequest, opts []client.SessionOption) error {
	ctx, cancel := cn.call()
	s, err := cn.c.NewSession(ctx, append(opts, client.WithName("lockctl lock "+r.name))...)
	cancel()
	if err != nil {
		return fmt.Errorf("lock %q: creating a session: %w", r.name, err)
	}
	// Closing the session releases whatever it still holds, at once.
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), cn.timeout)
		defer cancel()
		_ = s.Close(ctx)
	}()
	h := newLockHandle(s, r.name, r.shared, r.limit)
	if err := a.acquire(cn, r, s, h); err != nil {
		return err
	}
	if a.ctx.Err() != nil {
		// A signal came between the grant and taking signals over: do
		// not start the command (the deferred Close releases the lock).
		return fmt.Errorf("lock %q: acquired, then %w before the command started; released it", r.name, context.Cause(a.ctx))
	}
	env := []string{
		"LOCKD_FENCING_TOKEN=" + strconv.FormatUint(h.token(), 10),
		"LOCKD_LOCK_NAME=" + r.name,
		"LOCKD_SESSION_ID=" + s.ID().String(),
	}
	lost := h.lost()
	var runErr error
	if len(r.command) > 0 {
		runErr = a.runChild(r.name, r.command, env, lost, func() error { return s.Err() }, r.grace)
	} else {
		out := LockHeldOutput{Lock: r.name, Session: s.ID().String(), Token: h.token(), Mode: h.mode.String()}
		if err := cn.out(out, func(w io.Writer) { fmt.Fprintln(w, out.Token) }); err != nil {
			return err
		}
		select {
		case <-a.ctx.Done(): // Ctrl-C: release and exit 0
		case <-lost:
			return fmt.Errorf("lock %q (token %d) was lost: %w", r.name, out.Token, s.Err())
		}
	}
	var ce childExit
	if runErr != nil && !errors.As(runErr, &ce) {
		return runErr
	}
	ctx, cancel = context.WithTimeout(context.Background(), cn.timeout)
	defer cancel()
	if err := h.release(ctx); err != nil && s.Err() == nil {
		fmt.Fprintf(a.io.err, "lockctl: warning: releasing lock %q: %s; it is released when session %s ends (within its TTL %v)\n",
			r.name, oneLine(err.Error()), s.ID(), s.TTL())
	}
	return runErr
}

// errWaitExpired is the cause of a --wait that ran out.
var errWaitExpired = errors.New("--wait ran out")

// acquire takes the lock as --wait says, showing progress on a terminal.
func (a *app) acquire(cn *conn, r lockRequest, s *client.Session, h lockHandle) error {
	if r.waitSet && r.wait == 0 {
		ctx, cancel := cn.call()
		defer cancel()
		err := h.try(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, api.ErrLockHeld) || errors.Is(err, api.ErrLockDelay) {
			return falsef("lock %q %s; retry with --wait 30s", r.name, a.describeLock(cn, r.name, s.ID()))
		}
		return fmt.Errorf("lock %q: %w", r.name, err)
	}
	ctx, cancel := context.WithCancelCause(a.ctx)
	defer cancel(nil)
	if r.waitSet {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeoutCause(ctx, r.wait, errWaitExpired)
		defer c2()
	}
	stopProgress := func() {}
	if isTerminal(a.io.err) {
		stopProgress = a.showProgress(ctx, cn, r.name, s.ID())
	}
	err := h.acquire(ctx)
	stopProgress()
	if err == nil {
		return nil
	}
	if errors.Is(context.Cause(ctx), errWaitExpired) {
		return falsef("lock %q not acquired within --wait %v: it %s; retry with a longer --wait", r.name, r.wait, a.describeLock(cn, r.name, s.ID()))
	}
	return fmt.Errorf("lock %q: %w", r.name, err)
}

// describeLock says who holds lock name now, for messages ("is held by
// session ... (token N)"). It never fails: a failed read says so.
func (a *app) describeLock(cn *conn, name string, self session.ID) string {
	ctx, cancel := context.WithTimeout(context.Background(), cn.timeout)
	defer cancel()
	resp, err := cn.c.Locks(ctx, name)
	if err != nil {
		return "is not free (reading its holders failed: " + oneLine(err.Error()) + ")"
	}
	for _, l := range resp.Locks {
		if l.Name == name {
			return describeHolders(l, self, time.Now())
		}
	}
	return "was not free when asked (it has no holder now)"
}

// describeHolders phrases a lock's state after "lock NAME ".
func describeHolders(l api.LockInfo, self session.ID, now time.Time) string {
	var parts []string
	switch len(l.Holders) {
	case 0:
	case 1:
		g := l.Holders[0]
		parts = append(parts, fmt.Sprintf("is held by session %s (token %d) for %s", g.Session, g.Token, ago(g.Since, now)))
	default:
		var who []string
		for _, g := range l.Holders {
			who = append(who, fmt.Sprintf("%s (token %d)", g.Session, g.Token))
		}
		parts = append(parts, fmt.Sprintf("is held by %d sessions: %s", len(l.Holders), strings.Join(who, ", ")))
	}
	if l.DelayUntil > now.UnixNano() {
		parts = append(parts, fmt.Sprintf("is in lock-delay for another %v (its holder's session expired)",
			time.Duration(l.DelayUntil-now.UnixNano()).Round(time.Millisecond)))
	}
	waiting := 0
	for _, w := range l.Waiters {
		if w.Session != self {
			waiting++
		}
	}
	if waiting > 0 {
		parts = append(parts, fmt.Sprintf("%d other session(s) wait for it", waiting))
	}
	if len(parts) == 0 {
		return "was not free when asked (it has no holder now)"
	}
	return strings.Join(parts, ", ")
}

// ago renders how long ago a Unix-nanosecond time was.
func ago(ns int64, now time.Time) string {
	if ns == 0 {
		return "an unknown time"
	}
	return now.Sub(time.Unix(0, ns)).Round(time.Second).String()
}

// Progress display timing: nothing for the first second, then at most
// two refreshes a second.
const (
	progressDelay    = time.Second
	progressInterval = 500 * time.Millisecond
)

// showProgress draws a one-line status on stderr (a terminal) while the
// wait lasts; the returned func stops it and clears the line.
func (a *app) showProgress(ctx context.Context, cn *conn, name string, self session.ID) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() { // progress drawer: ends with stop
		defer close(done)
		t := time.NewTimer(progressDelay)
		defer t.Stop()
		drawn := false
		defer func() {
			if drawn {
				fmt.Fprint(a.io.err, "\r\033[K")
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rctx, rcancel := context.WithTimeout(ctx, progressInterval)
			resp, err := cn.c.Locks(rctx, name, client.WithStale())
			rcancel()
			var info *api.LockInfo
			if err == nil {
				for i := range resp.Locks {
					if resp.Locks[i].Name == name {
						info = &resp.Locks[i]
					}
				}
			}
			fmt.Fprint(a.io.err, "\r\033[K"+progressLine(name, info, self, time.Since(start), time.Now()))
			drawn = true
			t.Reset(progressInterval)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// progressLine is the waiting status: holder, queue position, time waited.
func progressLine(name string, info *api.LockInfo, self session.ID, waited time.Duration, now time.Time) string {
	line := fmt.Sprintf("waiting for lock %q", name)
	if info == nil {
		return line + fmt.Sprintf(" (%v)", waited.Round(time.Second))
	}
	if len(info.Holders) == 1 {
		g := info.Holders[0]
		line += fmt.Sprintf(": held by session %s (token %d) for %s", g.Session, g.Token, ago(g.Since, now))
	} else if len(info.Holders) > 1 {
		line += fmt.Sprintf(": held by %d sessions", len(info.Holders))
	}
	for i, w := range info.Waiters {
		if w.Session == self {
			line += fmt.Sprintf(", queue position %d of %d", i+1, len(info.Waiters))
		}
	}
	return line + fmt.Sprintf(", waited %v", waited.Round(time.Second))
}

func lockListCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "the locks (with a prefix): holders with session, token and since; waiters in order",
		ArgsUsage: "[PREFIX]",
		Action: func(c *cli.Context) error {
			as, err := args(c, "lock list", 0, 1, "[PREFIX]")
			if err != nil {
				return err
			}
			prefix := ""
			if len(as) == 1 {
				prefix = as[0]
			}
			cn, err := a.connect(c)
			if err != nil {
				return err
			}
			defer cn.Close()
			ctx, cancel := cn.call()
			defer cancel()
			resp, err := cn.c.Locks(ctx, prefix)
			if err != nil {
				return fmt.Errorf("lock list: %w", err)
			}
			out := LockListOutput{Locks: []LockOutput{}}
			for _, l := range resp.Locks {
				out.Locks = append(out.Locks, lockOutput(l))
			}
			return cn.out(out, func(w io.Writer) { lockListText(w, out) })
		},
	}
}

func lockListText(w io.Writer, out LockListOutput) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCK\tROLE\tSESSION\tTOKEN\tMODE\tSINCE")
	for _, l := range out.Locks {
		for _, h := range l.Holders {
			fmt.Fprintf(tw, "%s\tholder\t%s\t%d\t%s\t%s\n", l.Name, h.Session, h.Token, modeText(h.Mode, h.Limit), h.Since)
		}
		for _, wt := range l.Waiters {
			fmt.Fprintf(tw, "%s\twaiter %d\t%s\t-\t%s\t%s\n", l.Name, wt.Position, wt.Session, modeText(wt.Mode, wt.Limit), wt.Since)
		}
		if l.DelayUntil != "" {
			fmt.Fprintf(tw, "%s\tlock-delay\t-\t-\t-\tuntil %s\n", l.Name, l.DelayUntil)
		}
	}
	_ = tw.Flush()
}

func modeText(mode string, limit int) string {
	if limit > 0 {
		return fmt.Sprintf("%s/%d", mode, limit)
	}
	return mode
}

func lockCheckCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:        "check",
		Usage:       "is TOKEN a current grant of lock NAME? (exit 0 yes, 1 no)",
		ArgsUsage:   "NAME TOKEN",
		Description: "What a resource guarded by the lock asks before acting on a holder's request.",
		Action: func(c *cli.Context) error {
			as, err := args(c, "lock check", 2, 2, "NAME TOKEN")
			if err != nil {
				return err
			}
			token, err := strconv.ParseUint(as[1], 10, 64)
			if err != nil || token == 0 {
				return usagef("lock check", "token %q is not a fencing token (a whole number > 0)", as[1])
			}
			cn, err := a.connect(c)
			if err != nil {
				return err
			}
			defer cn.Close()
			ctx, cancel := cn.call()
			defer cancel()
			resp, err := cn.c.CheckToken(ctx, as[0], token)
			if err != nil {
				return fmt.Errorf("lock check %q: %w", as[0], err)
			}
			out := LockCheckOutput{Lock: as[0], Token: token, Current: resp.Current}
			if resp.Current {
				h := holderOutput(resp.Grant)
				out.Holder = &h
			}
			if err := cn.out(out, func(w io.Writer) {
				if out.Current {
					fmt.Fprintf(w, "current: held by session %s\n", out.Holder.Session)
				} else {
					fmt.Fprintln(w, "not current")
				}
			}); err != nil {
				return err
			}
			if !out.Current {
				return silentFalse{}
			}
			return nil
		},
	}
}
