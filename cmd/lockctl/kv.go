package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
	"github.com/lockd/lockd/session"
)

func putCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:      "put",
		Usage:     "set a key (VALUE - reads the value from stdin)",
		ArgsUsage: "KEY VALUE|-",
		Description: "--if-rev N puts only if the key was last modified at revision N (compare-and-set;\n" +
			"0 means the key must not exist); --if-absent only if the key does not exist.\n" +
			"A failed condition exits 1 and names the key's current revision.\n" +
			"--session ID binds the key to a session: it is deleted when the session ends.",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "if-rev", Usage: "put only if the key's mod revision is `N`"},
			&cli.BoolFlag{Name: "if-absent", Usage: "put only if the key does not exist"},
			&cli.StringFlag{Name: "session", Usage: "bind the key to session `ID` (ephemeral key)"},
		},
		Action: func(c *cli.Context) error {
			as, err := args(c, "put", 2, 2, "KEY VALUE|-")
			if err != nil {
				return err
			}
			key := as[0]
			if c.IsSet("if-rev") && c.Bool("if-absent") {
				return usagef("put", "--if-rev and --if-absent exclude each other")
			}
			if c.IsSet("if-rev") && c.Int64("if-rev") < 0 {
				return usagef("put", "--if-rev %d must not be negative", c.Int64("if-rev"))
			}
			var sid session.ID
			if s := c.String("session"); s != "" {
				if sid, err = session.ParseID(s); err != nil {
					return usagef("put", "--session: %w", err)
				}
			}
			value := []byte(as[1])
			if as[1] == "-" {
				if value, err = readBounded(a.io.in, api.DefaultLimits().MaxValueBytes, "the value on stdin"); err != nil {
					return err
				}
			}
			cn, err := a.connect(c)
			if err != nil {
				return err
			}
			defer cn.Close()
			ctx, cancel := cn.call()
			defer cancel()
			var out PutOutput
			switch {
			case c.IsSet("if-rev") || c.Bool("if-absent"):
				cmp := client.KeyMissing(key)
				if c.IsSet("if-rev") && c.Int64("if-rev") > 0 {
					cmp = client.CompareModRevision(key, api.Equal, c.Int64("if-rev"))
				}
				put := client.OpPut(key, value)
				put.Session = sid
				resp, err := cn.c.KV().Txn(ctx, client.Txn{If: []api.Compare{cmp}, Then: []api.Op{put}, Else: []api.Op{client.OpGet(key)}})
				if err != nil {
					return fmt.Errorf("put %q: %w", key, err)
				}
				if !resp.Succeeded {
					return casFailed(key, c, resp)
				}
				out = PutOutput{Key: key, Revision: resp.Revision}
				if len(resp.Ops) == 1 {
					out.Prev = kvOutputPtr(resp.Ops[0].PrevKV)
				}
			default:
				var opts []client.OpOption
				if sid != 0 {
					opts = append(opts, client.WithLeaseID(sid))
				}
				resp, err := cn.c.KV().Put(ctx, key, value, opts...)
				if err != nil {
					return fmt.Errorf("put %q: %w", key, err)
				}
				out = PutOutput{Key: key, Revision: resp.Revision, Prev: kvOutputPtr(resp.PrevKV)}
			}
			return cn.out(out, func(w io.Writer) { fmt.Fprintf(w, "OK rev=%d\n", out.Revision) })
		},
	}
}

// casFailed explains a failed conditional put from the key's state read
// in the same transaction.
func casFailed(key string, c *cli.Context, resp *api.KVTxnResponse) error {
	cur := "does not exist"
	if len(resp.Ops) == 1 && len(resp.Ops[0].KVs) == 1 {
		kv := resp.Ops[0].KVs[0]
		cur = fmt.Sprintf("exists with mod revision %d (version %d)", kv.ModRevision, kv.Version)
	}
	want := "not to exist"
	if c.IsSet("if-rev") && c.Int64("if-rev") > 0 {
		want = fmt.Sprintf("mod revision %d", c.Int64("if-rev"))
	}
	return falsef("put %q: not written: the key %s, the condition wanted %s; read it again (lockctl get --meta %s) and retry", key, cur, want, key)
}

// readBounded reads all of r, refusing more than limit bytes.
func readBounded(r io.Reader, limit int, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s is over the %d-byte limit: %w", what, limit, api.ErrTooLarge)
	}
	return b, nil
}

func getCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:      "get",
		Usage:     "print a key's value (exit 1 if the key does not exist)",
		ArgsUsage: "KEY",
		Description: "Text output is the value and a newline (--raw: the value only, byte for byte);\n" +
			"--meta prints the revisions instead. Reads are linearizable unless --stale.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "stale", Usage: "read the answering node's local state at once (may lag)"},
			&cli.BoolFlag{Name: "meta", Usage: "print the key's revisions, version and session too"},
			&cli.BoolFlag{Name: "raw", Usage: "print the value without a trailing newline"},
		},
		Action: func(c *cli.Context) error {
			return a.withCall(c, "get", 1, 1, "KEY", func(ctx context.Context, cn *conn, as []string) error {
				var opts []client.OpOption
				if c.Bool("stale") {
					opts = append(opts, client.WithStale())
				}
				resp, err := cn.c.KV().Get(ctx, as[0], opts...)
				if err != nil {
					return fmt.Errorf("get %q: %w", as[0], err)
				}
				if resp.KV == nil {
					return falsef("key %q not found (at revision %d)", as[0], resp.Read.Revision)
				}
				out := GetOutput{KVOutput: kvOutput(*resp.KV), Read: readOutput(resp.Read)}
				return cn.out(out, func(w io.Writer) {
					switch {
					case c.Bool("meta"):
						fmt.Fprintf(w, "key=%s\ncreate_revision=%d\nmod_revision=%d\nversion=%d\n", out.Key, out.CreateRevision, out.ModRevision, out.Version)
						if out.Session != "" {
							fmt.Fprintf(w, "session=%s\n", out.Session)
						}
						fmt.Fprintf(w, "value=%s\n", valueLine(resp.KV.Value))
					case c.Bool("raw"):
						_, _ = w.Write(resp.KV.Value)
					default:
						_, _ = w.Write(append(resp.KV.Value, '\n'))
					}
				})
			})
		},
	}
}

func delCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:        "del",
		Usage:       "delete a key (or, --prefix, every key with that prefix)",
		ArgsUsage:   "KEY",
		Description: "Prints how many keys were deleted; deleting a missing key is not an error (0).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "prefix", Usage: "delete every key starting with KEY"},
		},
		Action: func(c *cli.Context) error {
			return a.withCall(c, "del", 1, 1, "KEY", func(ctx context.Context, cn *conn, as []string) error {
				var opts []client.OpOption
				if c.Bool("prefix") {
					opts = append(opts, client.WithPrefix())
				}
				resp, err := cn.c.KV().Delete(ctx, as[0], opts...)
				if err != nil {
					return fmt.Errorf("del %q: %w", as[0], err)
				}
				out := DeleteOutput{Key: as[0], Prefix: c.Bool("prefix"), Deleted: resp.Deleted, Revision: resp.Revision}
				return cn.out(out, func(w io.Writer) { fmt.Fprintf(w, "deleted %d\n", out.Deleted) })
			})
		},
	}
}

func lsCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list the keys with a prefix, in key order (text: one key per line)",
		ArgsUsage: "[PREFIX]",
		Description: "At most --limit keys (0: the cluster's list limit, 10000 by default). If more remain,\n" +
			"text output says so on stderr and JSON sets \"more\"; continue with --after the last key.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "limit", Usage: "list at most `N` keys (0: the cluster's limit)"},
			&cli.StringFlag{Name: "after", Usage: "begin after `KEY` (the last key of the previous page)"},
			&cli.BoolFlag{Name: "values", Usage: "text: print KEY=VALUE (values on one line, as watch does)"},
			&cli.BoolFlag{Name: "stale", Usage: "read the answering node's local state at once (may lag)"},
		},
		Action: func(c *cli.Context) error {
			as, err := args(c, "ls", 0, 1, "[PREFIX]")
			if err != nil {
				return err
			}
			prefix := ""
			if len(as) == 1 {
				prefix = as[0]
			}
			if c.Int("limit") < 0 {
				return usagef("ls", "--limit %d must not be negative", c.Int("limit"))
			}
			cn, err := a.connect(c)
			if err != nil {
				return err
			}
			defer cn.Close()
			ctx, cancel := cn.call()
			defer cancel()
			opts := []client.OpOption{client.WithLimit(c.Int("limit"))}
			if s := c.String("after"); s != "" {
				// The first key after s in byte order is s + "\x00".
				opts = append(opts, client.WithStart(s+"\x00"))
			}
			if c.Bool("stale") {
				opts = append(opts, client.WithStale())
			}
			resp, err := cn.c.KV().List(ctx, prefix, opts...)
			if err != nil {
				return fmt.Errorf("ls %q: %w", prefix, err)
			}
			out := ListOutput{Prefix: prefix, KVs: kvOutputs(resp.KVs), More: resp.More, Read: readOutput(resp.Read)}
			return cn.out(out, func(w io.Writer) {
				for _, kv := range resp.KVs {
					if c.Bool("values") {
						fmt.Fprintf(w, "%s=%s\n", kv.Key, valueLine(kv.Value))
					} else {
						fmt.Fprintln(w, kv.Key)
					}
				}
				if resp.More && len(resp.KVs) > 0 {
					fmt.Fprintf(a.io.err, "lockctl: more keys follow; continue with --after %s\n", strconv.Quote(resp.KVs[len(resp.KVs)-1].Key))
				}
			})
		},
	}
}

func watchCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "print every change of a key (or prefix) until Ctrl-C; survives node failures",
		ArgsUsage: "KEY",
		Description: "Text: one line per event, `PUT key rev=N value` or `DELETE key rev=N`.\n" +
			"--rev N starts at revision N (inclusive), else after the current one.\n" +
			"Ctrl-C ends it with exit 0; a watch that falls behind the cluster's history exits 5.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "prefix", Usage: "watch every key starting with KEY"},
			&cli.Int64Flag{Name: "rev", Usage: "start at revision `N` (inclusive)"},
		},
		Action: func(c *cli.Context) error {
			as, err := args(c, "watch", 1, 1, "KEY")
			if err != nil {
				return err
			}
			if c.Int64("rev") < 0 {
				return usagef("watch", "--rev %d must not be negative", c.Int64("rev"))
			}
			cn, err := a.connect(c)
			if err != nil {
				return err
			}
			defer cn.Close()
			var opts []client.OpOption
			if c.Bool("prefix") {
				opts = append(opts, client.WithPrefix())
			}
			if r := c.Int64("rev"); r > 0 {
				opts = append(opts, client.WithRevision(r))
			} else {
				// The first read (the current revision) is a call like any
				// other: bounded by --timeout.
				ctx, cancel := cn.call()
				rev, err := currentRevision(ctx, cn, as[0], c.Bool("prefix"))
				cancel()
				if err != nil {
					return fmt.Errorf("watch %q: reading the current revision: %w", as[0], err)
				}
				opts = append(opts, client.WithRevision(rev+1))
			}
			for wr := range cn.c.Watch(a.ctx, as[0], opts...) {
				if wr.Err != nil {
					return wr.Err
				}
				for _, ev := range wr.Events {
					if err := cn.out(eventOutput(ev), func(w io.Writer) { fmt.Fprintln(w, eventText(ev)) }); err != nil {
						return err
					}
				}
			}
			if a.ctx.Err() != nil {
				return nil // Ctrl-C: the normal end of a watch
			}
			return errors.New("watch ended: the client closed")
		},
	}
}

// currentRevision reads the key (or prefix) to learn the revision now.
func currentRevision(ctx context.Context, cn *conn, key string, prefix bool) (int64, error) {
	if prefix {
		resp, err := cn.c.KV().List(ctx, key, client.WithLimit(1))
		if err != nil {
			return 0, err
		}
		return resp.Read.Revision, nil
	}
	resp, err := cn.c.KV().Get(ctx, key)
	if err != nil {
		return 0, err
	}
	return resp.Read.Revision, nil
}
