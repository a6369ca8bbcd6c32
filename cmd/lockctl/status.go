package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/client"
)

func statusCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "every endpoint's node: role, term, commit and applied index, lag, last leader contact",
		Description: "Asks every endpoint at once (one attempt each). The leader is marked with *.\n" +
			"Exit 0 if some node answered and knows a leader, else 3.",
		Action: func(c *cli.Context) error {
			if _, err := args(c, "status", 0, 0, ""); err != nil {
				return err
			}
			cn, err := a.connect(c)
			if err != nil {
				return err
			}
			defer cn.Close()
			ctx, cancel := cn.call()
			defer cancel()
			var sts []client.EndpointStatus
			var contacts []client.LeaderContact
			done := make(chan struct{})
			go func() { // both surveys at once: each waits for its slowest node
				defer close(done)
				contacts = cn.c.LeaderContactAll(ctx)
			}()
			sts = cn.c.StatusAll(ctx)
			<-done
			out := statusOutput(sts, contacts)
			if out.Leader == "" {
				var errs []string
				for _, m := range out.Members {
					if m.Error != "" {
						errs = append(errs, m.Endpoint+": "+m.Error)
					}
				}
				detail := "no answering node knows a leader"
				if len(errs) == len(out.Members) {
					detail = "no node answered (" + strings.Join(errs, "; ") + ")"
				}
				return fmt.Errorf("cluster status: %s: %w", detail, errUnavailable)
			}
			return cn.out(out, func(w io.Writer) { statusText(w, out) })
		},
	}
}

// statusOutput merges the endpoints' answers. Lag counts against the
// leader's commit index when the leader answered, else the node's own.
func statusOutput(sts []client.EndpointStatus, contacts []client.LeaderContact) StatusOutput {
	var out StatusOutput
	var leaderCommit uint64
	var leaderID uint64
	for _, st := range sts {
		if st.Status == nil {
			continue
		}
		out.Term = max(out.Term, st.Status.Term)
		if st.Status.Leader != 0 && st.Status.Term >= out.Term {
			leaderID = st.Status.Leader
		}
	}
	for _, st := range sts {
		if st.Status != nil && st.Status.Node.ID == leaderID && st.Status.Node.Role == "leader" {
			leaderCommit = st.Status.Node.Commit
		}
	}
	for i, st := range sts {
		m := MemberStatusOutput{Endpoint: st.Endpoint, LastContactMS: -1}
		if st.Status == nil {
			m.Error = oneLine(fmt.Sprint(st.Err))
			out.Members = append(out.Members, m)
			continue
		}
		n := st.Status.Node
		m.ID, m.Name, m.Role, m.Term, m.Commit, m.Applied = n.ID, n.Name, n.Role, n.Term, n.Commit, n.Applied
		m.Leader = leaderID != 0 && n.ID == leaderID
		ref := max(n.Commit, leaderCommit)
		if ref > n.Applied {
			m.Lag = ref - n.Applied
		}
		if i < len(contacts) && contacts[i].Err == nil {
			m.LastContactMS = contacts[i].Age.Milliseconds()
		}
		for _, mem := range st.Status.Members {
			if mem.ID == leaderID && out.Leader == "" {
				out.Leader = mem.Name
			}
		}
		out.Members = append(out.Members, m)
	}
	return out
}

func statusText(w io.Writer, out StatusOutput) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tNAME\tID\tROLE\tTERM\tCOMMIT\tAPPLIED\tLAG\tLAST CONTACT")
	for _, m := range out.Members {
		if m.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\tunreachable\t-\t-\t-\t-\t%s\n", m.Endpoint, m.Error)
			continue
		}
		role := m.Role
		if m.Leader {
			role += " *"
		}
		contact := "-"
		if m.LastContactMS >= 0 {
			contact = (time.Duration(m.LastContactMS) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\t%s\n", m.Endpoint, m.Name, m.ID, role, m.Term, m.Commit, m.Applied, m.Lag, contact)
	}
	_ = tw.Flush()
}

func memberCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:  "member",
		Usage: "cluster members: list, add, promote, remove",
		Subcommands: append([]*cli.Command{{
			Name:  "list",
			Usage: "the members as the answering node knows them (id, name, peer address, leader)",
			Action: func(c *cli.Context) error {
				if _, err := args(c, "member list", 0, 0, ""); err != nil {
					return err
				}
				cn, err := a.connect(c)
				if err != nil {
					return err
				}
				defer cn.Close()
				ctx, cancel := cn.call()
				defer cancel()
				st, err := cn.c.Status(ctx)
				if err != nil {
					return fmt.Errorf("member list: %w", err)
				}
				out := MemberListOutput{Node: st.Node.Name, Leader: st.Leader, Term: st.Term, Members: []MemberOutput{}}
				for _, m := range st.Members {
					out.Members = append(out.Members, MemberOutput{ID: m.ID, Name: m.Name, PeerAddr: m.PeerAddr, Leader: m.ID == st.Leader, Learner: m.Learner})
				}
				return cn.out(out, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tNAME\tPEER ADDRESS\tLEADER\tKIND")
					for _, m := range out.Members {
						lead, kind := "", "voter"
						if m.Leader {
							lead = "*"
						}
						if m.Learner {
							kind = "learner"
						}
						fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", m.ID, m.Name, m.PeerAddr, lead, kind)
					}
					_ = tw.Flush()
				})
			},
		}}, memberChangeCommands(a)...),
	}
}
