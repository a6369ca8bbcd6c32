package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
)

// txnHelp documents the transaction format (lockctl txn --help, doc.go).
const txnHelp = `A transaction is a list of statements, from --if/--then/--else flags or, without
them, from stdin, one per line (blank lines and lines starting with # are skipped):

   if value KEY = VALUE          compare the value (=, != only)
   if version KEY OP N           OP is =, !=, < or >; a missing key has version 0
   if create KEY OP N            the key's create revision
   if mod KEY OP N               the key's last modification revision
   if exists KEY                 the key exists
   if missing KEY                the key does not exist
   then put KEY VALUE            run if every compare holds
   then del [--prefix] KEY
   then get [--prefix] KEY
   else put|del|get ...          run otherwise

A word may be double-quoted with Go escapes ("a b", "line\n"). With flags, each
--if/--then/--else takes one statement without its keyword: --if 'mod cfg/a = 5'.
Exit 0 if the compares held (then ran), 1 if not (else ran); the output is the
same either way: the branch, its revision and one result per operation.`

func txnCommand(a *app) *cli.Command {
	return &cli.Command{
		Name:        "txn",
		Usage:       "run a transaction: compares, then operations if they hold, else others",
		Description: txnHelp,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "if", Usage: "a compare `STATEMENT` (repeatable)"},
			&cli.StringSliceFlag{Name: "then", Usage: "an operation `STATEMENT` run if the compares hold (repeatable)"},
			&cli.StringSliceFlag{Name: "else", Usage: "an operation `STATEMENT` run otherwise (repeatable)"},
		},
		Action: func(c *cli.Context) error {
			if _, err := args(c, "txn", 0, 0, ""); err != nil {
				return err
			}
			var t client.Txn
			var err error
			if c.IsSet("if") || c.IsSet("then") || c.IsSet("else") {
				t, err = txnFromFlags(c.StringSlice("if"), c.StringSlice("then"), c.StringSlice("else"))
			} else {
				t, err = parseTxn(a.io.in, api.DefaultLimits())
			}
			if err != nil {
				return usageError{err: fmt.Errorf("txn: %w", err), cmd: "txn"}
			}
			cn, err := a.connect(c)
			if err != nil {
				return err
			}
			defer cn.Close()
			ctx, cancel := cn.call()
			defer cancel()
			resp, err := cn.c.KV().Txn(ctx, t)
			if err != nil {
				return fmt.Errorf("txn: %w", err)
			}
			out := txnOutput(resp)
			if err := cn.out(out, func(w io.Writer) { txnText(w, out) }); err != nil {
				return err
			}
			if !out.Succeeded {
				// The answer is on stdout; the exit code says which branch.
				return silentFalse{}
			}
			return nil
		},
	}
}

// silentFalse is exit 1 without a message (the output said it all).
type silentFalse struct{}

func (silentFalse) Error() string { return "" }
func (silentFalse) Unwrap() error { return errFalse }

func txnText(w io.Writer, out TxnOutput) {
	branch := "succeeded"
	if !out.Succeeded {
		branch = "failed"
	}
	fmt.Fprintf(w, "%s rev=%d\n", branch, out.Revision)
	for _, r := range out.Results {
		switch r.Op {
		case "put":
			fmt.Fprintln(w, "OK")
		case "delete":
			fmt.Fprintf(w, "deleted %d\n", r.Deleted)
		case "get":
			if len(r.KVs) == 0 {
				fmt.Fprintln(w, "(no keys)")
			}
			for _, kv := range r.KVs {
				v := ""
				if kv.Value != nil {
					v = valueLine([]byte(*kv.Value))
				} else if kv.ValueBase64 != nil {
					v = "base64:" + *kv.ValueBase64
				}
				fmt.Fprintf(w, "%s=%s\n", kv.Key, v)
			}
		}
	}
}

// txnFromFlags builds a transaction from --if/--then/--else statements.
func txnFromFlags(ifs, thens, elses []string) (client.Txn, error) {
	var lines []string
	for _, group := range []struct {
		kw    string
		stmts []string
	}{{"if", ifs}, {"then", thens}, {"else", elses}} {
		for _, s := range group.stmts {
			lines = append(lines, group.kw+" "+s)
		}
	}
	return parseTxn(strings.NewReader(strings.Join(lines, "\n")), api.DefaultLimits())
}

// maxTxnLine bounds one statement: a value at the limit, quoted.
func maxTxnLine(lim api.Limits) int { return 4*lim.MaxValueBytes + 2*lim.MaxKeyBytes + 64 }

// parseTxn reads the statements of a transaction (see txnHelp). It
// refuses more statements than the cluster's operation limit, and lines
// longer than a statement can be, so its input is bounded.
func parseTxn(r io.Reader, lim api.Limits) (client.Txn, error) {
	var t client.Txn
	sc := bufio.NewScanner(r)
	// The larger of the buffer's capacity and the max bounds a line.
	sc.Buffer(make([]byte, 0, min(64<<10, maxTxnLine(lim))), maxTxnLine(lim))
	n := 0
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if n++; n > lim.MaxTxnOps {
			return t, fmt.Errorf("line %d: more than %d statements (the cluster's limit per transaction)", lineNo, lim.MaxTxnOps)
		}
		words, err := splitWords(line)
		if err != nil {
			return t, fmt.Errorf("line %d: %w", lineNo, err)
		}
		if err := addStatement(&t, words); err != nil {
			return t, fmt.Errorf("line %d %q: %w", lineNo, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return t, fmt.Errorf("a line is longer than %d bytes", maxTxnLine(lim))
		}
		return t, fmt.Errorf("reading the transaction: %w", err)
	}
	if n == 0 {
		return t, errors.New("no statements: give --if/--then/--else, or statements on stdin")
	}
	return t, nil
}

func addStatement(t *client.Txn, w []string) error {
	switch w[0] {
	case "if":
		cmp, err := parseCompare(w[1:])
		if err != nil {
			return err
		}
		t.If = append(t.If, cmp)
	case "then", "else":
		op, err := parseOp(w[1:])
		if err != nil {
			return err
		}
		if w[0] == "then" {
			t.Then = append(t.Then, op)
		} else {
			t.Else = append(t.Else, op)
		}
	default:
		return fmt.Errorf("a statement starts with if, then or else, not %q", w[0])
	}
	return nil
}

var compareOps = map[string]api.CompareOp{"=": api.Equal, "==": api.Equal, "!=": api.NotEqual, "<": api.Less, ">": api.Greater}

func parseCompare(w []string) (api.Compare, error) {
	if len(w) == 2 && (w[0] == "exists" || w[0] == "missing") {
		if w[0] == "exists" {
			return client.KeyExists(w[1]), nil
		}
		return client.KeyMissing(w[1]), nil
	}
	if len(w) != 4 {
		return api.Compare{}, errors.New("want: if value|version|create|mod KEY OP ARG, or if exists|missing KEY")
	}
	op, ok := compareOps[w[2]]
	if !ok {
		return api.Compare{}, fmt.Errorf("compare operator %q is not =, !=, < or >", w[2])
	}
	key := w[1]
	if w[0] == "value" {
		if op != api.Equal && op != api.NotEqual {
			return api.Compare{}, fmt.Errorf("a value compares with = or != only, not %s", w[2])
		}
		return client.CompareValue(key, op, []byte(w[3])), nil
	}
	n, err := strconv.ParseInt(w[3], 10, 64)
	if err != nil || n < 0 {
		return api.Compare{}, fmt.Errorf("%q is not a revision or version (a whole number ≥ 0)", w[3])
	}
	switch w[0] {
	case "version":
		return client.CompareVersion(key, op, n), nil
	case "create":
		return client.CompareCreateRevision(key, op, n), nil
	case "mod":
		return client.CompareModRevision(key, op, n), nil
	}
	return api.Compare{}, fmt.Errorf("compare target %q is not value, version, create, mod, exists or missing", w[0])
}

func parseOp(w []string) (api.Op, error) {
	if len(w) == 0 {
		return api.Op{}, errors.New("missing operation: put, del or get")
	}
	prefix := len(w) == 3 && w[1] == "--prefix"
	switch {
	case len(w) == 2 && w[1] == "--prefix":
		return api.Op{}, fmt.Errorf("want: %s [--prefix] KEY", w[0])
	case w[0] == "put" && len(w) == 3:
		return client.OpPut(w[1], []byte(w[2])), nil
	case w[0] == "put":
		return api.Op{}, errors.New("want: put KEY VALUE")
	case (w[0] == "del" || w[0] == "get") && (len(w) == 2 || prefix):
		key := w[len(w)-1]
		op := api.Op{Type: api.OpDelete, Key: key, Prefix: prefix}
		if w[0] == "get" {
			op.Type = api.OpGet
		}
		return op, nil
	case w[0] == "del" || w[0] == "get":
		return api.Op{}, fmt.Errorf("want: %s [--prefix] KEY", w[0])
	}
	return api.Op{}, fmt.Errorf("operation %q is not put, del or get", w[0])
}

// splitWords splits a line at spaces; a word may be double-quoted with Go
// escapes.
func splitWords(line string) ([]string, error) {
	var words []string
	for s := strings.TrimLeftFunc(line, unicode.IsSpace); s != ""; s = strings.TrimLeftFunc(s, unicode.IsSpace) {
		if s[0] == '"' {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, fmt.Errorf("unterminated or malformed quoted word at %.20q", s)
			}
			w, _ := strconv.Unquote(q) // QuotedPrefix vouched for it
			words = append(words, w)
			s = s[len(q):]
			if s != "" && !unicode.IsSpace(rune(s[0])) {
				return nil, fmt.Errorf("a quoted word must be followed by a space, not %.10q", s)
			}
			continue
		}
		end := strings.IndexFunc(s, unicode.IsSpace)
		if end < 0 {
			end = len(s)
		}
		words = append(words, s[:end])
		s = s[end:]
	}
	return words, nil
}
