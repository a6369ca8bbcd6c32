package store

import (
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/consensus"
)

var (
	crashRounds = flag.Int("store.crash-rounds", 60, "kill points in TestCrashKeepsDurableBatches")
	crashSeed   = flag.Int64("store.crash-seed", 0, "seed for TestCrashKeepsDurableBatches (0: from the clock)")
)

// crashModel is what the parent knows the store must hold.
type crashModel struct {
	first consensus.Index
	terms []consensus.Term // terms[i] is the term of entry first+i
	hs    consensus.HardState
}

func (m crashModel) last() consensus.Index {
	if len(m.terms) == 0 {
		return 0
	}
	return m.first + consensus.Index(len(m.terms)) - 1
}

// apply returns the model after op.
func (m crashModel) apply(op crashOp) crashModel {
	m.terms = slices.Clone(m.terms)
	switch op.kind {
	case "store", "save":
		if len(m.terms) == 0 {
			m.first = op.lo
		}
		m.terms = m.terms[:op.lo-m.first]
		for i := op.lo; i <= op.hi; i++ {
			m.terms = append(m.terms, op.term)
		}
	case "compact":
		if op.hi >= m.last() {
			m.terms, m.first = nil, 0
		} else if op.hi >= m.first {
			m.terms = m.terms[op.hi-m.first+1:]
			m.first = op.hi + 1
		}
	}
	if op.hasHS {
		m.hs = op.hs
	}
	return m
}

func (m crashModel) equal(o crashModel) bool {
	return m.first == o.first && slices.Equal(m.terms, o.terms) && m.hs == o.hs
}

func (m crashModel) String() string {
	if len(m.terms) == 0 {
		return fmt.Sprintf("empty log, hard state %+v", m.hs)
	}
	return fmt.Sprintf("log [%d, %d] last term %d, hard state %+v", m.first, m.last(), m.terms[len(m.terms)-1], m.hs)
}

// readCrashModel opens the store (which verifies it), checks that every
// entry is exactly what the child wrote, and returns what it holds.
func readCrashModel(t *testing.T, dir string, opts Options) crashModel {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("reopening after a kill: %v", err)
	}
	defer s.Close()
	var m crashModel
	if m.hs, err = s.HardState(); err != nil {
		t.Fatal(err)
	}
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if last == 0 {
		return m
	}
	ents, err := s.Entries(first, last+1)
	if err != nil {
		t.Fatalf("reading [%d, %d] after a kill: %v", first, last, err)
	}
	m.first = first
	for i, e := range ents {
		if e.Index != first+consensus.Index(i) {
			t.Fatalf("entry %d where %d belongs", e.Index, first+consensus.Index(i))
		}
		if want := crashEntry(e.Index, e.Term); !sameEntry(e, want) {
			t.Fatalf("entry %d (term %d) is not what was written", e.Index, e.Term)
		}
		m.terms = append(m.terms, e.Term)
	}
	return m
}

// TestCrashKeepsDurableBatches kills a writing child process with SIGKILL
// at random moments. After each kill the store must open (it verifies
// every entry), hold every operation the child reported finished, and
// the operation in flight either entirely or not at all: entries of a
// Save together with its hard state. Nothing else may differ, so no
// entry is lost, duplicated, torn or out of order, and there is no gap.
//
// A SIGKILL tests the process dying at any instruction, including
// between bbolt's page writes and its meta page; the page cache survives
// it. Power loss (the page cache lost too) needs a fault-injecting block
// device and is not simulated here.
func TestCrashKeepsDurableBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	for _, raftLog := range []string{RaftLogBolt, RaftLogWAL} {
		t.Run(raftLog, func(t *testing.T) { testCrashKeepsDurableBatches(t, raftLog) })
	}
}

func testCrashKeepsDurableBatches(t *testing.T, raftLog string) {
	opts := crashOptions(raftLog)
	seed := *crashSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (rerun with -store.crash-seed=%d)", seed, seed)
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	start := time.Now()
	var model crashModel
	var kills, midOp, opsDone, opsInFlightKept int
	for round := 0; round < *crashRounds; round++ {
		c := startChild(t, "crash", dir, rng.Int63(), raftLog, nil)
		// Mostly kill while writing; sometimes at any moment, possibly
		// during Open and its verification.
		if rng.Intn(10) > 0 {
			<-c.ready
		}
		// The random delay is the fault, not a wait for a condition.
		time.Sleep(time.Duration(rng.Int63n(int64(25 * time.Millisecond))))
		lines := c.kill()
		kills++
		done, inflight := parseCrashLines(t, lines)
		for _, op := range done {
			model = model.apply(op)
		}
		opsDone += len(done)
		got := readCrashModel(t, dir, opts)
		switch {
		case got.equal(model):
		case inflight.kind != "" && got.equal(model.apply(inflight)):
			model = got
			opsInFlightKept++
		default:
			t.Fatalf("round %d: after the kill the store holds %v;\nwant %v\n(in flight: %q; child stderr: %s)",
				round, got, model, inflight, c.stderr.String())
		}
		if inflight.kind != "" {
			midOp++
		}
	}
	t.Logf("%d kills (%d with a write in flight, %d of those found durable), %d finished writes checked, %v; final %v",
		kills, midOp, opsInFlightKept, opsDone, time.Since(start).Round(time.Millisecond), model)
	if midOp == 0 {
		t.Fatal("no kill landed during a write: the test exercised nothing")
	}
	if raftLog == RaftLogWAL {
		// The WAL's roll-overs and segment deletions were exercised: the
		// newest segment is not the first, and old ones were deleted.
		segs, err := listSegments(filepath.Join(dir, WALDirName), hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("WAL segments at the end: %d to %d", segs[0], segs[len(segs)-1])
		if segs[len(segs)-1] < 3 || segs[0] == 1 {
			t.Errorf("WAL segments %d to %d at the end: want roll-overs and deleted segments", segs[0], segs[len(segs)-1])
		}
	}
}

// A process holding the data dir keeps every other out, and its death
// (however it dies) frees the dir at once.
func TestLockHeldByAnotherProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	// The child holds the store until its stdin ends, which it never does
	// here: it is killed.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	c := startChild(t, "hold", dir, 0, "", pr)
	pr.Close()
	<-c.ready
	c.mu.Lock()
	first := c.lines[0]
	c.mu.Unlock()
	var pid int
	if _, err := fmt.Sscanf(first, "ready %d", &pid); err != nil {
		c.kill()
		t.Fatalf("child said %q: %s", first, c.stderr.String())
	}
	_, err = Open(dir, Options{})
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) || le.PID != pid || le.Dir != dir {
		c.kill()
		t.Fatalf("Open of a dir held by pid %d: %v, want a *LockedError naming %s and the pid", pid, err, dir)
	}
	if msg := err.Error(); !strings.Contains(msg, dir) || !strings.Contains(msg, fmt.Sprint(pid)) {
		t.Fatalf("error %q does not name the dir and the pid", msg)
	}
	c.kill()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after the holder was killed: %v", err)
	}
	s.Close()
}

func TestLockHeldInThisProcess(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	_, err := Open(dir, Options{})
	var le *LockedError
	if !errors.As(err, &le) || le.PID == 0 {
		t.Fatalf("second Open in the same process: %v, want a *LockedError with our pid", err)
	}
	s.Close()
	s2 := openT(t, dir, Options{})
	s2.Close()
}
