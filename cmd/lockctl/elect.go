package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/client"
)

func electCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:      "elect",
		Usage:     "campaign in an election and lead until Ctrl-C; --observe prints each leader change",
		ArgsUsage: "NAME VALUE | --observe NAME",
		Description: "Campaigning waits (FIFO, behind earlier candidates) until this session leads, prints\n" +
			"`leading NAME token=N` and holds leadership until Ctrl-C (then resigns: exit 0) or until the\n" +
			"session is lost (exit 4). --observe prints the leader now and every change, until Ctrl-C:\n" +
			"`leader SESSION token=N VALUE`, or `vacant` when there is none.",
		Flags: append(sessionFlags(),
			&cli.BoolFlag{Name: "observe", Usage: "do not campaign: print the leader and every change"}),
		Action: func(c *cli.Context) error {
			if c.Bool("observe") {
				as, err := args(c, "elect", 1, 1, "--observe NAME")
				if err != nil {
					return err
				}
				cn, err := a.connect(c)
				if err != nil {
					return err
				}
				defer cn.Close()
				return a.observe(cn, as[0])
			}
			as, err := args(c, "elect", 2, 2, "NAME VALUE")
			if err != nil {
				return err
			}
			opts, err := sessionOptions(c, "elect")
			if err != nil {
				return err
			}
			cn, err := a.connect(c)
			if err != nil {
				return err
			}
			defer cn.Close()
			return a.campaign(cn, as[0], []byte(as[1]), opts)
		},
	}
}

func (a *app) campaign(cn *conn, name string, value []byte, opts []client.SessionOption) error {
	ctx, cancel := cn.call()
	s, err := cn.c.NewSession(ctx, append(opts, client.WithName("lockctl elect "+name))...)
	cancel()
	if err != nil {
		return fmt.Errorf("elect %q: creating a session: %w", name, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), cn.timeout)
		defer cancel()
		_ = s.Close(ctx)
	}()
	e := s.Election(name)
	if err := e.Campaign(a.ctx, value); err != nil {
		return fmt.Errorf("elect %q: %w", name, err)
	}
	out := LeaderOutput{Event: "leading", Election: name, Session: s.ID().String(), Token: e.Token()}
	out.Value, out.ValueBase64 = valueFields(value)
	if err := cn.out(out, func(w io.Writer) { fmt.Fprintf(w, "leading %s token=%d\n", name, out.Token) }); err != nil {
		return err
	}
	select {
	case <-a.ctx.Done():
		ctx, cancel := context.WithTimeout(context.Background(), cn.timeout)
		defer cancel()
		if err := e.Resign(ctx); err != nil {
			return fmt.Errorf("elect %q: resigning: %w", name, err)
		}
		return nil
	case <-e.Lost():
		return fmt.Errorf("elect %q: leadership (token %d) was lost: %w", name, out.Token, s.Err())
	}
}

func (a *app) observe(cn *conn, name string) error {
	for li := range cn.c.ObserveElection(a.ctx, name) {
		out := LeaderOutput{Event: "vacant", Election: name}
		if !li.Vacant() {
			out = LeaderOutput{Event: "leader", Election: name, Session: li.Session.String(), Token: li.Token, Revision: li.Revision}
			out.Value, out.ValueBase64 = valueFields(li.Value)
		}
		err := cn.out(out, func(w io.Writer) {
			if li.Vacant() {
				fmt.Fprintln(w, "vacant")
				return
			}
			fmt.Fprintf(w, "leader %s token=%d %s\n", li.Session, li.Token, valueLine(li.Value))
		})
		if err != nil {
			return err
		}
	}
	return nil // Ctrl-C (or the client closed): the normal end
}
