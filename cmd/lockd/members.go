package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lockd/lockd/consensus"
	"github.com/lockd/lockd/server"
)

// membersFileName records, in the data dir, the voters the node first
// started with: its bootstrap configuration. Membership changes at run
// time (lockctl member add/remove, lockd --join) are entries in the Raft
// log and snapshots, and that stored configuration wins over the
// bootstrap one as soon as the node replays it. The bootstrap one still
// decides the entries before the first change, so it must never differ
// from what the other members bootstrapped with: every start must give
// the --initial-cluster the cluster was first started with, whatever the
// members are now (addresses may change: they only say where to dial).
const membersFileName = "lockd-members"

const membersHeader = "# lockd: voters (id name) this data dir was first started with; --initial-cluster must keep them\n"

// checkMembers compares the members with those recorded in dir. It
// records them if nothing was recorded yet (a new data dir, or one from
// before this check).
func checkMembers(dir string, members []server.Member) error {
	path := filepath.Join(dir, membersFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return writeFileSync(dir, membersFileName, formatMembers(members))
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	recorded, err := parseMembers(b)
	if err != nil {
		return fmt.Errorf("%s is damaged (%v): it lists this member's first voters; restore it or use an empty data dir", path, err)
	}
	if !sameVoters(recorded, members) {
		return fmt.Errorf("data dir %s was started with members %s, but --initial-cluster gives %s: --initial-cluster must stay "+
			"the list the cluster was first started with (members are changed at run time with lockctl member add/remove "+
			"or lockd --join, and the cluster keeps them)", dir, voterList(recorded), voterList(members))
	}
	return nil
}

func formatMembers(members []server.Member) []byte {
	var b bytes.Buffer
	b.WriteString(membersHeader)
	for _, m := range members {
		fmt.Fprintf(&b, "%d %s\n", m.ID, m.Name)
	}
	return b.Bytes()
}

func parseMembers(b []byte) ([]server.Member, error) {
	var members []server.Member
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"id name\"", line)
		}
		id, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("line %d: bad id %q", line, f[0])
		}
		members = append(members, server.Member{ID: consensus.NodeID(id), Name: f[1]})
	}
	if len(members) == 0 {
		return nil, errors.New("no members")
	}
	return members, sc.Err()
}

func sameVoters(a, b []server.Member) bool {
	if len(a) != len(b) {
		return false
	}
	names := map[consensus.NodeID]string{}
	for _, m := range a {
		names[m.ID] = m.Name
	}
	for _, m := range b {
		if name, ok := names[m.ID]; !ok || name != m.Name {
			return false
		}
	}
	return true
}

func voterList(members []server.Member) string {
	parts := make([]string, len(members))
	for i, m := range members {
		parts[i] = fmt.Sprintf("%s=%d", m.Name, m.ID)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// writeFileSync writes dir/name durably: a temp file, fsynced, renamed
// over name, and the dir fsynced.
func writeFileSync(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", f.Name(), err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", f.Name(), err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", f.Name(), err)
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("renaming %s: %w", f.Name(), err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing dir %s: %w", dir, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("syncing dir %s: %w", dir, err)
	}
	return nil
}
