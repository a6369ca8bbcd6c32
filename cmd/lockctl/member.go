package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/api"
)

// Membership changes and leadership transfer. Each call goes to any
// endpoint, which hands it to the leader, and returns once the change is
// committed. The leader's refusals (a change already in progress, the
// last voter, a quorum that would be lost, a peer address it cannot
// reach) exit 5 with its message, which says what to do.

// MemberChangeOutput is `member add`, `member promote` and `member
// remove`: the member changed (for add, with the id the leader gave it)
// and the members after the change.
type MemberChangeOutput struct {
	Member  MemberOutput   `json:"member"`
	Members []MemberOutput `json:"members"`
}

// LeaderTransferOutput is `leader transfer`: the leader after it.
type LeaderTransferOutput struct {
	Leader string `json:"leader"`
	ID     uint64 `json:"id"`
	Term   uint64 `json:"term"`
}

func memberOutput(m api.MemberStatus) MemberOutput {
	return MemberOutput{ID: m.ID, Name: m.Name, PeerAddr: m.PeerAddr, Learner: m.Learner}
}

func memberChangeOutput(resp *api.MemberChangeResponse) MemberChangeOutput {
	out := MemberChangeOutput{Member: memberOutput(resp.Member), Members: []MemberOutput{}}
	for _, m := range resp.Members {
		out.Members = append(out.Members, memberOutput(m))
	}
	return out
}

func memberChangeText(verb string, out MemberChangeOutput) func(io.Writer) {
	return func(w io.Writer) {
		kind := "voter"
		if out.Member.Learner {
			kind = "learner"
		}
		if verb == "removed" {
			fmt.Fprintf(w, "removed %s (id %d)\n", out.Member.Name, out.Member.ID)
		} else {
			fmt.Fprintf(w, "%s %s (id %d, %s, peer %s)\n", verb, out.Member.Name, out.Member.ID, kind, out.Member.PeerAddr)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tPEER ADDRESS\tKIND")
		for _, m := range out.Members {
			kind := "voter"
			if m.Learner {
				kind = "learner"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", m.ID, m.Name, m.PeerAddr, kind)
		}
		_ = tw.Flush()
	}
}

// memberChangeCommands are `member add|promote|remove`, under memberCommand.
func memberChangeCommands(a *app) []*cli.Command {
	return []*cli.Command{
		{
			Name:      "add",
			Usage:     "add a member: it joins as a learner and is promoted to voter once caught up",
			ArgsUsage: "NAME PEER_ADDR",
			Description: "Start the new node first (lockd --join does both at once): the leader refuses an address it\n" +
				"cannot connect to. With --learner the member stays a learner (receives the log, does not vote)\n" +
				"until `lockctl member promote NAME`.",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "learner", Usage: "stay a learner until promoted by hand"}},
			Action: func(c *cli.Context) error {
				return a.withCall(c, "member add", 2, 2, "NAME PEER_ADDR", func(ctx context.Context, cn *conn, as []string) error {
					resp, err := cn.c.MemberAdd(ctx, as[0], as[1], c.Bool("learner"))
					if err != nil {
						return err
					}
					out := memberChangeOutput(resp)
					return cn.out(out, memberChangeText("added", out))
				})
			},
		},
		{
			Name:      "promote",
			Usage:     "make a learner a voter",
			ArgsUsage: "NAME",
			Action: func(c *cli.Context) error {
				return a.withCall(c, "member promote", 1, 1, "NAME", func(ctx context.Context, cn *conn, as []string) error {
					resp, err := cn.c.MemberPromote(ctx, as[0])
					if err != nil {
						return err
					}
					out := memberChangeOutput(resp)
					return cn.out(out, memberChangeText("promoted", out))
				})
			},
		},
		{
			Name:        "remove",
			Usage:       "remove a member (the leader hands leadership over first)",
			ArgsUsage:   "NAME",
			Description: "Stop the removed node's lockd once this returns; its data dir is of no further use.",
			Action: func(c *cli.Context) error {
				return a.withCall(c, "member remove", 1, 1, "NAME", func(ctx context.Context, cn *conn, as []string) error {
					resp, err := cn.c.MemberRemove(ctx, as[0])
					if err != nil {
						return err
					}
					out := memberChangeOutput(resp)
					return cn.out(out, memberChangeText("removed", out))
				})
			},
		},
	}
}

func leaderCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:  "leader",
		Usage: "leadership",
		Subcommands: []*cli.Command{{
			Name:  "transfer",
			Usage: "hand leadership to another voter (--to NAME, or the most up-to-date one)",
			Flags: []cli.Flag{&cli.StringFlag{Name: "to", Usage: "the voter to hand leadership to"}},
			Action: func(c *cli.Context) error {
				if _, err := args(c, "leader transfer", 0, 0, ""); err != nil {
					return err
				}
				cn, err := a.connect(c)
				if err != nil {
					return err
				}
				defer cn.Close()
				ctx, cancel := cn.call()
				defer cancel()
				resp, err := cn.c.LeaderTransfer(ctx, c.String("to"))
				if err != nil {
					return err
				}
				out := LeaderTransferOutput{Leader: resp.Leader.Name, ID: resp.Leader.ID, Term: resp.Term}
				return cn.out(out, func(w io.Writer) {
					fmt.Fprintf(w, "leader is %s (id %d) in term %d\n", out.Leader, out.ID, out.Term)
				})
			},
		}},
	}
}
