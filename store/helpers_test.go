package store

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/consensus"
)

// mkEntries returns sealed entries lo..hi (inclusive) of one term, with
// data that names them.
func mkEntries(lo, hi consensus.Index, term consensus.Term) []consensus.Entry {
	var out []consensus.Entry
	for i := lo; i <= hi; i++ {
		e := consensus.Entry{Index: i, Term: term, Type: consensus.EntryNormal, Time: int64(i) * 1000,
			Data: []byte(fmt.Sprintf("entry-%d-term-%d", i, term))}
		e.Seal()
		out = append(out, e)
	}
	return out
}

// boltOptions0 opens a store whose log is in bbolt.
var boltOptions0 = Options{RaftLog: RaftLogBolt}

// testSegmentSize is the WAL segment size in behaviour tests: small, so
// that they roll over to new segments and read across them.
const testSegmentSize = 8 << 10

// bothBackends runs fn once per raft log backend, with the options that
// choose it. The behaviour must be the same.
func bothBackends(t *testing.T, fn func(t *testing.T, o Options)) {
	t.Run("bolt", func(t *testing.T) { fn(t, boltOptions0) })
	t.Run("wal", func(t *testing.T) { fn(t, Options{RaftLog: RaftLogWAL, WALSegmentSize: testSegmentSize}) })
}

// openT opens a store in dir and closes it when the test ends.
func openT(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustStore(t testing.TB, s *Store, ents []consensus.Entry) {
	t.Helper()
	if err := s.StoreEntries(ents); err != nil {
		t.Fatalf("StoreEntries(%d..%d): %v", ents[0].Index, ents[len(ents)-1].Index, err)
	}
}

// checkLog asserts that the store holds exactly want.
func checkLog(t testing.TB, s *Store, want []consensus.Entry) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		if first != 0 || last != 0 {
			t.Fatalf("log is [%d, %d], want empty", first, last)
		}
		return
	}
	if first != want[0].Index || last != want[len(want)-1].Index {
		t.Fatalf("log is [%d, %d], want [%d, %d]", first, last, want[0].Index, want[len(want)-1].Index)
	}
	got, err := s.Entries(first, last+1)
	if err != nil {
		t.Fatalf("Entries(%d, %d): %v", first, last+1, err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i := range got {
		if !sameEntry(got[i], want[i]) {
			t.Fatalf("entry %d: got %+v, want %+v", want[i].Index, got[i], want[i])
		}
	}
}

func sameEntry(a, b consensus.Entry) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type && a.Time == b.Time &&
		a.Checksum == b.Checksum && bytes.Equal(a.Data, b.Data)
}

// logBuffer collects a logger's output for assertions.
type logBuffer struct {
	mu  sync.Mutex // protects buf
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: b})
}
