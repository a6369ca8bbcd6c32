package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockd/lockd/server"
)

func TestMembersAreRecordedAndKept(t *testing.T) {
	dir := t.TempDir()
	three := []server.Member{{ID: 1, Name: "n1", PeerAddr: "a:1"}, {ID: 2, Name: "n2", PeerAddr: "b:1"}, {ID: 3, Name: "n3", PeerAddr: "c:1"}}
	if err := checkMembers(dir, three); err != nil {
		t.Fatal(err)
	}
	// Same voters at new addresses: fine.
	moved := []server.Member{{ID: 1, Name: "n1", PeerAddr: "x:1"}, {ID: 2, Name: "n2", PeerAddr: "y:1"}, {ID: 3, Name: "n3", PeerAddr: "z:1"}}
	if err := checkMembers(dir, moved); err != nil {
		t.Fatalf("moved addresses: %v", err)
	}
	four := append(append([]server.Member(nil), three...), server.Member{ID: 4, Name: "n4", PeerAddr: "d:1"})
	err := checkMembers(dir, four)
	if err == nil || !strings.Contains(err.Error(), "was started with members [n1=1 n2=2 n3=3], but --initial-cluster gives [n1=1 n2=2 n3=3 n4=4]") {
		t.Fatalf("added member: %v", err)
	}
	renamed := []server.Member{{ID: 1, Name: "a1"}, {ID: 2, Name: "n2"}, {ID: 3, Name: "n3"}}
	if err := checkMembers(dir, renamed); err == nil {
		t.Fatal("a renamed member was accepted")
	}

	if err := os.WriteFile(filepath.Join(dir, membersFileName), []byte("1 n1 extra\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkMembers(dir, three); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Fatalf("damaged file: %v", err)
	}
}
