package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
)

func TestParseTxn(t *testing.T) {
	in := `
# a compare-and-set with a fallback read
if mod cfg/a = 5
if version cfg/a > 0
if create cfg/a != 3
if value cfg/b = "two words"
if value cfg/c != x
if exists cfg/d
if missing "cfg/with space"
then put cfg/a "line\nbreak"
then del cfg/old
then del --prefix cfg/tmp/
then get --prefix cfg/
else get cfg/a
else put cfg/n 1,2,3
`
	got, err := parseTxn(strings.NewReader(in), api.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	want := client.Txn{
		If: []api.Compare{
			client.CompareModRevision("cfg/a", api.Equal, 5),
			client.CompareVersion("cfg/a", api.Greater, 0),
			client.CompareCreateRevision("cfg/a", api.NotEqual, 3),
			client.CompareValue("cfg/b", api.Equal, []byte("two words")),
			client.CompareValue("cfg/c", api.NotEqual, []byte("x")),
			client.KeyExists("cfg/d"),
			client.KeyMissing("cfg/with space"),
		},
		Then: []api.Op{
			client.OpPut("cfg/a", []byte("line\nbreak")),
			client.OpDelete("cfg/old"),
			client.OpDeletePrefix("cfg/tmp/"),
			client.OpGetPrefix("cfg/", 0),
		},
		Else: []api.Op{client.OpGet("cfg/a"), client.OpPut("cfg/n", []byte("1,2,3"))},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", got, want)
	}

	// The flag form builds the same statements.
	flags, err := txnFromFlags([]string{"mod cfg/a = 5"}, []string{`put cfg/a "v w"`, "get cfg/a"}, []string{"get cfg/a"})
	if err != nil {
		t.Fatal(err)
	}
	wantFlags := client.Txn{If: []api.Compare{client.CompareModRevision("cfg/a", api.Equal, 5)},
		Then: []api.Op{client.OpPut("cfg/a", []byte("v w")), client.OpGet("cfg/a")}, Else: []api.Op{client.OpGet("cfg/a")}}
	if !reflect.DeepEqual(flags, wantFlags) {
		t.Fatalf("flags parsed\n%+v\nwant\n%+v", flags, wantFlags)
	}
}

func TestParseTxnErrors(t *testing.T) {
	lim := api.DefaultLimits()
	cases := map[string]string{
		"":                              "no statements",
		"# only a comment":              "no statements",
		"when x":                        `starts with if, then or else, not "when"`,
		"if mod k = five":               `"five" is not a revision`,
		"if mod k = -1":                 `"-1" is not a revision`,
		"if mod k ~ 1":                  `operator "~"`,
		"if value k < x":                "a value compares with = or != only",
		"if size k = 1":                 `compare target "size"`,
		"if mod k":                      "want: if value|version|create|mod",
		"then put k":                    "want: put KEY VALUE",
		"then del":                      "want: del [--prefix] KEY",
		"then get --prefix":             "want: get [--prefix] KEY",
		"then get a b":                  "want: get [--prefix] KEY",
		"then":                          "missing operation",
		"then move a b":                 `operation "move"`,
		`then put k "unterminated`:      "unterminated or malformed quoted word",
		`then put k "a"b`:               "must be followed by a space",
		"if exists k\nthen put k v\nxx": `line 3 "xx"`,
	}
	for in, want := range cases {
		_, err := parseTxn(strings.NewReader(in), lim)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseTxn(%q) = %v; want an error containing %q", in, err, want)
		}
	}
	small := lim
	small.MaxTxnOps = 2
	if _, err := parseTxn(strings.NewReader("if exists a\nthen get a\nelse get a\n"), small); err == nil ||
		!strings.Contains(err.Error(), "more than 2 statements") {
		t.Errorf("3 statements with a limit of 2: %v", err)
	}
	small.MaxValueBytes = 8
	long := "then put k " + strings.Repeat("x", maxTxnLine(small)+1)
	if _, err := parseTxn(strings.NewReader(long), small); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("an overlong line: %v", err)
	}
}

func TestSplitWords(t *testing.T) {
	got, err := splitWords(`  put  "a b"   c	"\x00\u00e9" `)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"put", "a b", "c", "\x00é"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("splitWords = %q, want %q", got, want)
	}
}
