package consensus

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestFailoverLogsTellTheStory: reading the logs of a failover must show
// the sequence an operator looks for, each line with its term.
func TestFailoverLogsTellTheStory(t *testing.T) {
	var buf bytes.Buffer
	sc := newScenario(t, 3, func(o *simOptions) {
		o.configure = func(c *Config) {
			c.Logger = hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info, Name: "raft"}).With("node", c.ID)
		}
	})
	sc.elect(1)
	buf.Reset()
	sc.crash(1)
	sc.tick(40, 2, 3)
	story := buf.String()
	want := []string{
		"leader suspected: no contact within election timeout",
		"pre-vote started",
		"pre-vote won",
		"election started",
		"vote granted",
		"leader elected",
	}
	at := 0
	for _, w := range want {
		i := strings.Index(story[at:], w)
		if i < 0 {
			t.Fatalf("failover log lacks %q after position %d:\n%s", w, at, story)
		}
		at += i
	}
	for _, line := range strings.Split(strings.TrimSpace(story), "\n") {
		if !strings.Contains(line, "term=") {
			t.Errorf("log line without a term: %s", line)
		}
	}
}
