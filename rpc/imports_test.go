package rpc

import (
	"os/exec"
	"strings"
	"testing"
)

// The architecture keeps imports one-way: client and lockctl build on rpc
// and api, never on the Raft core (only servers import rpc/peer).
func TestClientSideDoesNotDependOnConsensus(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".", "../client", "../cmd/lockctl").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/lockd/lockd/consensus" || strings.HasPrefix(pkg, "github.com/lockd/lockd/consensus/") ||
			pkg == "github.com/lockd/lockd/rpc/peer" {
			t.Errorf("rpc, client or cmd/lockctl depends on %s", pkg)
		}
	}
}
