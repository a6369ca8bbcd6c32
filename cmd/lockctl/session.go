package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/session"
)

// sessionFlags are the flags of every command that creates a session.
func sessionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "ttl", DefaultText: "the cluster's, 10s",
			Usage: "the session ends when no keepalive reached the cluster for this `DURATION`"},
		&cli.DurationFlag{Name: "lock-delay", DefaultText: "the cluster's, 5s",
			Usage: "after the session expires, its locks stay unavailable this `DURATION`"},
	}
}

// sessionOptions reads sessionFlags.
func sessionOptions(c *cli.Context, cmd string) ([]client.SessionOption, error) {
	var opts []client.SessionOption
	if c.Duration("ttl") < 0 {
		return nil, usagef(cmd, "--ttl %v must not be negative", c.Duration("ttl"))
	}
	if c.Duration("lock-delay") < 0 {
		return nil, usagef(cmd, "--lock-delay %v must not be negative", c.Duration("lock-delay"))
	}
	opts = append(opts, client.WithTTL(c.Duration("ttl")))
	if c.IsSet("lock-delay") {
		opts = append(opts, client.WithLockDelay(c.Duration("lock-delay")))
	}
	return opts, nil
}

// parseSessionID reads a session id argument.
func parseSessionID(cmd, s string) (session.ID, error) {
	id, err := session.ParseID(s)
	if err != nil {
		return 0, usagef(cmd, "%w", err)
	}
	return id, nil
}

func sessionCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:  "session",
		Usage: "create, keep alive, list, describe and destroy sessions",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "create a session and print its id; it lives for its TTL unless kept alive",
				Description: "The session is not kept alive after lockctl exits: run `lockctl session keepalive ID`\n" +
					"(or use it within its TTL). Text output is the id alone, for SID=$(lockctl session create).",
				Flags: append(sessionFlags(), &cli.StringFlag{Name: "name", Usage: "a `LABEL` for people (session list)"}),
				Action: func(c *cli.Context) error {
					if _, err := args(c, "session create", 0, 0, ""); err != nil {
						return err
					}
					opts, err := sessionOptions(c, "session create")
					if err != nil {
						return err
					}
					if n := c.String("name"); n != "" {
						opts = append(opts, client.WithName(n))
					}
					cn, err := a.connect(c)
					if err != nil {
						return err
					}
					defer cn.Close()
					ctx, cancel := cn.call()
					defer cancel()
					s, err := cn.c.NewSession(ctx, opts...)
					if err != nil {
						return fmt.Errorf("session create: %w", err)
					}
					// Leave it to live out its TTL: whoever asked for it
					// keeps it alive from now on.
					s.Orphan()
					out := SessionOutput{ID: s.ID().String(), Name: s.Name(), TTLMS: s.TTL().Milliseconds(),
						LockDelayMS: s.LockDelay().Milliseconds(), Locks: []string{}}
					return cn.out(out, func(w io.Writer) { fmt.Fprintln(w, out.ID) })
				},
			},
			{
				Name:      "keepalive",
				Usage:     "keep a session alive until Ctrl-C (then it expires after its TTL)",
				ArgsUsage: "ID",
				Description: "Prints one line when it starts and one when it ends. Exit 0 on Ctrl-C,\n" +
					"4 if the session is lost (it expired or was destroyed).",
				Action: func(c *cli.Context) error {
					as, err := args(c, "session keepalive", 1, 1, "ID")
					if err != nil {
						return err
					}
					id, err := parseSessionID("session keepalive", as[0])
					if err != nil {
						return err
					}
					cn, err := a.connect(c)
					if err != nil {
						return err
					}
					defer cn.Close()
					ctx, cancel := cn.call()
					s, err := cn.c.NewSession(ctx, client.WithSessionID(id))
					cancel()
					if err != nil {
						return fmt.Errorf("session keepalive: %w", err)
					}
					ev := KeepaliveEvent{Event: "started", Session: id.String(), TTLMS: s.TTL().Milliseconds()}
					if err := cn.out(ev, func(w io.Writer) {
						fmt.Fprintf(w, "keeping session %s alive (TTL %v); Ctrl-C stops\n", id, s.TTL())
					}); err != nil {
						s.Orphan()
						return err
					}
					select {
					case <-a.ctx.Done():
						s.Orphan()
						ev = KeepaliveEvent{Event: "stopped", Session: id.String(), TTLMS: s.TTL().Milliseconds()}
						return cn.out(ev, func(w io.Writer) {
							fmt.Fprintf(w, "stopped keeping session %s alive; it expires within %v\n", id, s.TTL())
						})
					case <-s.Done():
						ev = KeepaliveEvent{Event: "lost", Session: id.String(), TTLMS: s.TTL().Milliseconds(), Reason: oneLine(s.Err().Error())}
						if err := cn.out(ev, func(io.Writer) {}); err != nil {
							return err
						}
						return fmt.Errorf("session keepalive: %w", s.Err())
					}
				},
			},
			{
				Name:  "list",
				Usage: "list the cluster's sessions",
				Action: func(c *cli.Context) error {
					if _, err := args(c, "session list", 0, 0, ""); err != nil {
						return err
					}
					cn, err := a.connect(c)
					if err != nil {
						return err
					}
					defer cn.Close()
					ctx, cancel := cn.call()
					defer cancel()
					resp, err := cn.c.Sessions(ctx)
					if err != nil {
						return fmt.Errorf("session list: %w", err)
					}
					out := SessionListOutput{Sessions: []SessionOutput{}}
					for _, s := range resp.Sessions {
						out.Sessions = append(out.Sessions, sessionOutput(s))
					}
					return cn.out(out, func(w io.Writer) {
						tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "ID\tNAME\tTTL\tLOCK-DELAY\tLOCKS\tKEYS\tCREATED")
						for _, s := range out.Sessions {
							fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\t%d\t%s\n", s.ID, dash(s.Name), ms(s.TTLMS), ms(s.LockDelayMS),
								dash(strings.Join(s.Locks, ",")), s.Keys, s.CreatedAt)
						}
						_ = tw.Flush()
					})
				},
			},
			{
				Name:      "info",
				Usage:     "describe a session (exit 4 if it does not exist)",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					as, err := args(c, "session info", 1, 1, "ID")
					if err != nil {
						return err
					}
					id, err := parseSessionID("session info", as[0])
					if err != nil {
						return err
					}
					cn, err := a.connect(c)
					if err != nil {
						return err
					}
					defer cn.Close()
					ctx, cancel := cn.call()
					defer cancel()
					resp, err := cn.c.SessionInfo(ctx, id)
					if err != nil {
						return fmt.Errorf("session info %s: %w", id, err)
					}
					out := sessionOutput(resp.Session)
					return cn.out(out, func(w io.Writer) {
						fmt.Fprintf(w, "id=%s\nname=%s\nttl=%v\nlock_delay=%v\nclient_id=%s\ncreated_at=%s\nexpires_at=%s\nlocks=%s\nkeys=%d\n",
							out.ID, out.Name, ms(out.TTLMS), ms(out.LockDelayMS), out.ClientID, out.CreatedAt, out.ExpiresAt,
							strings.Join(out.Locks, ","), out.Keys)
					})
				},
			},
			{
				Name:      "destroy",
				Usage:     "end a session now: its locks are released (no lock-delay), its ephemeral keys deleted",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					as, err := args(c, "session destroy", 1, 1, "ID")
					if err != nil {
						return err
					}
					id, err := parseSessionID("session destroy", as[0])
					if err != nil {
						return err
					}
					cn, err := a.connect(c)
					if err != nil {
						return err
					}
					defer cn.Close()
					ctx, cancel := cn.call()
					defer cancel()
					if err := cn.c.DestroySession(ctx, id); err != nil {
						return fmt.Errorf("session destroy: %w", err)
					}
					out := SessionDestroyOutput{ID: id.String(), Destroyed: true}
					return cn.out(out, func(w io.Writer) { fmt.Fprintf(w, "destroyed %s\n", id) })
				},
			},
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
