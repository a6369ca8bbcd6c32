package store

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lockd/lockd/consensus"
)

// Child processes: the crash and lock tests re-execute this test binary
// with -test.run=^TestStoreChild$ and these variables set. The child
// talks to its parent in lines on stdout.
const (
	childModeEnv = "LOCKD_STORE_CHILD_MODE" // "crash", "hold" or "flip"
	childDirEnv  = "LOCKD_STORE_CHILD_DIR"
	childSeedEnv = "LOCKD_STORE_CHILD_SEED"
	// childRaftLogEnv is the raft log backend the child opens with.
	childRaftLogEnv = "LOCKD_STORE_CHILD_RAFTLOG"

	// crashSegmentSize is the WAL segment size of the crash test: small
	// enough that kills land during roll-overs and segment deletions too.
	crashSegmentSize = 256 << 10

	// childMaxLife bounds a child whose parent died before killing it.
	childMaxLife = 30 * time.Second
)

// TestStoreChild is not a test: it is the body of a child process.
func TestStoreChild(t *testing.T) {
	mode := os.Getenv(childModeEnv)
	if mode == "" {
		t.Skip("helper for the crash and lock tests; runs only in a child process they start")
	}
	dir := os.Getenv(childDirEnv)
	seed, _ := strconv.ParseInt(os.Getenv(childSeedEnv), 10, 64)
	var err error
	switch mode {
	case "crash":
		err = crashChild(dir, seed, crashOptions(os.Getenv(childRaftLogEnv)), os.Stdout)
	case "hold":
		err = holdChild(dir, os.Stdout, os.Stdin)
	case "flip":
		err = flipChild(dir, os.Stdout)
	default:
		err = fmt.Errorf("unknown child mode %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stdout, "error %v\n", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// holdChild opens the store, says "ready", and holds it until stdin closes.
func holdChild(dir string, out io.Writer, in io.Reader) error {
	s, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(out, "ready %d\n", os.Getpid())
	io.Copy(io.Discard, in)
	return nil
}

// child is a running child process and the lines it printed.
type child struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	ready  chan struct{} // closed when the first line arrives (or output ends)
	done   chan struct{} // closed when stdout has been read to the end

	mu    sync.Mutex // protects lines
	lines []string
}

// crashOptions are the options the crash test's processes open with.
func crashOptions(raftLog string) Options {
	return Options{RaftLog: raftLog, WALSegmentSize: crashSegmentSize}
}

// startChild starts this binary as a child in mode on dir, opening the
// store with raftLog ("": the default).
func startChild(t testing.TB, mode, dir string, seed int64, raftLog string, stdin io.Reader) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStoreChild$", "-test.count=1")
	// Under -race a binary sleeps a second at exit to catch late reports;
	// children that exit by themselves need not.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(os.Environ(), childModeEnv+"="+mode, childDirEnv+"="+dir, childSeedEnv+"="+strconv.FormatInt(seed, 10),
		"GORACE="+gorace, childRaftLogEnv+"="+raftLog)
	cmd.Stdin = stdin
	c := &child{cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	cmd.Stderr = &c.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting child: %v", err)
	}
	go c.read(out)
	return c
}

func (c *child) read(out io.Reader) {
	defer close(c.done)
	var once sync.Once
	defer once.Do(func() { close(c.ready) })
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		c.mu.Lock()
		c.lines = append(c.lines, sc.Text())
		c.mu.Unlock()
		once.Do(func() { close(c.ready) })
	}
	// A line too long for the scanner must not leave the child blocked
	// on a full pipe.
	io.Copy(io.Discard, out)
}

// kill SIGKILLs the child and returns everything it printed.
func (c *child) kill() []string {
	c.cmd.Process.Kill()
	return c.wait()
}

// wait waits for the child to exit and returns everything it printed.
func (c *child) wait() []string {
	<-c.done
	c.cmd.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lines
}

// The crash child's protocol. Before each write it prints
//
//	B <kind> <lo> <hi> <term> <hasHS> <hsTerm> <hsVote> <hsCommit>
//
// and after the call has returned, "D". kind is "store" (StoreEntries of
// entries lo..hi of term), "save" (Save of the same with the hard state),
// "hs" (SetHardState) or "compact" (DeletePrefix(hi)). An operation
// followed by D is durable; one without may or may not be.
type crashOp struct {
	kind     string
	lo, hi   consensus.Index
	term     consensus.Term
	hasHS    bool
	hs       consensus.HardState
	finished bool
}

func (op crashOp) String() string {
	hs := 0
	if op.hasHS {
		hs = 1
	}
	return fmt.Sprintf("B %s %d %d %d %d %d %d %d", op.kind, op.lo, op.hi, op.term, hs, op.hs.Term, op.hs.Vote, op.hs.Commit)
}

func parseCrashOp(line string) (crashOp, bool) {
	var op crashOp
	var hs int
	_, err := fmt.Sscanf(line, "B %s %d %d %d %d %d %d %d", &op.kind, &op.lo, &op.hi, &op.term, &hs, &op.hs.Term, &op.hs.Vote, &op.hs.Commit)
	op.hasHS = hs == 1
	return op, err == nil
}

// crashEntry is the entry the child writes at index in term; the parent
// recomputes it to check what it finds. Some entries are larger than a
// bbolt page, so overflow pages are exercised too.
func crashEntry(index consensus.Index, term consensus.Term) consensus.Entry {
	n := int(uint64(index)*7+uint64(term)*13) % 300
	if index%97 == 0 {
		n = 5000
	}
	r := rand.New(rand.NewSource(int64(index)<<20 ^ int64(term)))
	data := make([]byte, n)
	r.Read(data)
	e := consensus.Entry{Index: index, Term: term, Type: consensus.EntryNormal, Time: int64(index), Data: data}
	e.Seal()
	return e
}

func crashEntries(lo, hi consensus.Index, term consensus.Term) []consensus.Entry {
	out := make([]consensus.Entry, 0, hi-lo+1)
	for i := lo; i <= hi; i++ {
		out = append(out, crashEntry(i, term))
	}
	return out
}

// crashChild writes random operations until it is killed.
func crashChild(dir string, seed int64, opts Options, out io.Writer) error {
	s, err := Open(dir, opts)
	if err != nil {
		return err
	}
	first, err := s.FirstIndex()
	if err != nil {
		return err
	}
	last, err := s.LastIndex()
	if err != nil {
		return err
	}
	hs, err := s.HardState()
	if err != nil {
		return err
	}
	term := max(hs.Term, 1)
	fmt.Fprintf(out, "ready %d %d\n", first, last)
	rng := rand.New(rand.NewSource(seed))
	for deadline := time.Now().Add(childMaxLife); time.Now().Before(deadline); {
		var op crashOp
		switch p := rng.Intn(100); {
		case p < 60 || last == 0:
			n := consensus.Index(1 + rng.Intn(32))
			if rng.Intn(10) == 0 {
				n = 1 + consensus.Index(rng.Intn(256))
			}
			op = crashOp{kind: "store", lo: last + 1, hi: last + n, term: term}
			if rng.Intn(2) == 0 {
				op.kind, op.hasHS = "save", true
				op.hs = consensus.HardState{Term: term, Vote: 1, Commit: last}
			}
		case p < 80:
			// A new leader's entries replace a suffix: a higher term.
			term++
			lo := last - consensus.Index(rng.Intn(int(min(20, last-first+1))))
			op = crashOp{kind: "save", lo: lo, hi: lo + consensus.Index(rng.Intn(16)), term: term, hasHS: true,
				hs: consensus.HardState{Term: term, Vote: consensus.NodeID(1 + rng.Intn(3)), Commit: first}}
		case p < 90:
			op = crashOp{kind: "hs", hasHS: true, hs: consensus.HardState{Term: term, Vote: 2, Commit: last}}
		default:
			if last-first < 1500 {
				continue
			}
			op = crashOp{kind: "compact", hi: last - 500}
		}
		fmt.Fprintln(out, op.String())
		switch op.kind {
		case "store":
			err = s.StoreEntries(crashEntries(op.lo, op.hi, op.term))
		case "save":
			err = s.Save(&op.hs, crashEntries(op.lo, op.hi, op.term))
		case "hs":
			err = s.SetHardState(op.hs)
		case "compact":
			err = s.DeletePrefix(op.hi)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		fmt.Fprintln(out, "D")
		switch op.kind {
		case "store", "save":
			last = op.hi
			if first == 0 {
				first = op.lo // the log was empty: it starts here
			}
		case "compact":
			first = op.hi + 1
		}
	}
	return s.Close()
}

// parseCrashLines returns the finished operations and the one in flight
// when the child died (kind "" if none).
func parseCrashLines(t testing.TB, lines []string) (done []crashOp, inflight crashOp) {
	t.Helper()
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "ready"):
		case strings.HasPrefix(l, "error"):
			t.Fatalf("child failed: %s", l)
		case l == "D":
			if inflight.kind == "" {
				t.Fatalf("line %d: D without an operation", i)
			}
			inflight.finished = true
			done = append(done, inflight)
			inflight = crashOp{}
		case strings.HasPrefix(l, "B "):
			op, ok := parseCrashOp(l)
			if !ok {
				if i == len(lines)-1 {
					continue // cut off by the kill
				}
				t.Fatalf("line %d: cannot parse %q", i, l)
			}
			inflight = op
		default:
			// The test framework's own output, if any.
		}
	}
	return done, inflight
}
