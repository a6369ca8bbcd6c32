package store

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
	bolt "go.etcd.io/bbolt"

	"github.com/lockd/lockd/consensus"
)

// corruptStore writes entries 1..20 and the hard state, closes the store,
// applies damage with bbolt directly, and returns the dir.
func corruptStore(t *testing.T, damage func(*bolt.Tx) error) string {
	t.Helper()
	dir := t.TempDir()
	s := openT(t, dir, boltOptions0)
	if err := s.Save(&consensus.HardState{Term: 1, Vote: 1, Commit: 20}, mkEntries(1, 20, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.SetIdentity(Identity{ClusterID: "c", NodeID: 1}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	rewrite(t, dir, damage)
	return dir
}

// wantCorrupt checks that err is a *CorruptError about index (0: not an
// entry) that says what went wrong and how to recover.
func wantCorrupt(t *testing.T, err error, index consensus.Index, says string) *CorruptError {
	t.Helper()
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want a *CorruptError", err)
	}
	if ce.Index != index {
		t.Fatalf("corruption reported at index %d, want %d: %v", ce.Index, index, err)
	}
	msg := err.Error()
	for _, want := range []string{says, ce.Path, "restore the data dir from a snapshot", "remove this member from the cluster and re-add it"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not say %q", msg, want)
		}
	}
	return ce
}

// flipInValue changes one byte of the entry data stored under index.
func flipInValue(index consensus.Index) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		v := bytes.Clone(b.Get(indexKey(index)))
		at := bytes.Index(v, []byte("entry-"))
		v[at+2] ^= 0x20
		return b.Put(indexKey(index), v)
	}
}

func TestOpenReportsEntryWithBadChecksum(t *testing.T) {
	dir := corruptStore(t, flipInValue(7))
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 7, "checksum")
	var ec *consensus.EntryCorruptError
	if !errors.As(err, &ec) || ec.Index != 7 {
		t.Fatalf("error %v does not wrap the *consensus.EntryCorruptError for entry 7", err)
	}
}

// A store opened without verification (as if the damage happened while it
// ran) still never returns the corrupt entry.
func TestEntriesNeverReturnsCorruptEntry(t *testing.T) {
	dir := corruptStore(t, flipInValue(7))
	s, err := open(dir, boltOptions0, boltOptions, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, r := range [][2]consensus.Index{{1, 21}, {7, 8}, {5, 10}} {
		ents, err := s.Entries(r[0], r[1])
		if ents != nil {
			t.Fatalf("Entries(%d, %d) returned entries along with %v", r[0], r[1], err)
		}
		var ec *consensus.EntryCorruptError
		if !errors.As(err, &ec) || ec.Index != 7 {
			t.Fatalf("Entries(%d, %d): %v, want an *EntryCorruptError for entry 7", r[0], r[1], err)
		}
	}
	// The intact parts stay readable.
	if ents, err := s.Entries(1, 7); err != nil || len(ents) != 6 {
		t.Fatalf("Entries(1, 7) = %d entries, %v", len(ents), err)
	}
	if ents, err := s.Entries(8, 21); err != nil || len(ents) != 13 {
		t.Fatalf("Entries(8, 21) = %d entries, %v", len(ents), err)
	}
	// Writing on top of it refuses too: the predecessor of 8 is unreadable.
	if err := s.StoreEntries(mkEntries(8, 8, 2)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("appending after a corrupt entry: %v, want ErrCorrupt", err)
	}
	if err := s.Verify(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify: %v, want ErrCorrupt", err)
	}
}

// Bit rot found in the file itself, not through bbolt.
func TestOpenReportsFlippedByteInFile(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, boltOptions0)
	mustStore(t, s, mkEntries(1, 50, 3))
	s.Close()
	path := filepath.Join(dir, DBFileName)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every copy of entry 33's data: a freed page may hold an old one.
	marker := []byte("entry-33-term-3")
	n := 0
	for at := bytes.Index(raw, marker); at >= 0; {
		raw[at+len(marker)-1] ^= 0x01
		n++
		next := bytes.Index(raw[at+1:], marker)
		if next < 0 {
			break
		}
		at += 1 + next
	}
	if n == 0 {
		t.Fatal("entry 33 not found in the file")
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, boltOptions0)
	wantCorrupt(t, err, 33, "checksum")
}

func TestOpenReportsGap(t *testing.T) {
	dir := corruptStore(t, func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Delete(indexKey(10)) })
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 10, "gap in the log: entry 10 is missing (the next stored entry is 11)")
}

func TestOpenReportsUndecodableEntry(t *testing.T) {
	dir := corruptStore(t, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLog).Put(indexKey(5), []byte{0xc1, 0xff, 0x00})
	})
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 5, "cannot be decoded")
}

func TestOpenReportsTruncatedEntry(t *testing.T) {
	dir := corruptStore(t, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		v := bytes.Clone(b.Get(indexKey(12)))
		return b.Put(indexKey(12), v[:len(v)-3])
	})
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 12, "cannot be decoded")
}

func TestOpenReportsEntryUnderWrongKey(t *testing.T) {
	dir := corruptStore(t, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		return b.Put(indexKey(5), bytes.Clone(b.Get(indexKey(6))))
	})
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 5, "stored under index 5 says it is entry 6")
}

func TestOpenReportsBadKey(t *testing.T) {
	dir := corruptStore(t, func(tx *bolt.Tx) error { return tx.Bucket(bucketLog).Put([]byte{0, 0, 1}, []byte{1}) })
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 0, "is 3 bytes, want 8")
}

func TestOpenReportsTermGoingDown(t *testing.T) {
	dir := corruptStore(t, func(tx *bolt.Tx) error {
		e := mkEntries(21, 21, 1)[0]
		e.Term = 0
		e.Seal()
		v, err := encodeEntry(codec.NewEncoderBytes(nil, newHandle()), &e)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketLog).Put(indexKey(21), v)
	})
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 21, "entry 21 has term 0, below the term 1 of entry 20")
}

func TestOpenReportsUnknownEntryVersion(t *testing.T) {
	dir := corruptStore(t, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLog)
		v := bytes.Clone(b.Get(indexKey(3)))
		v[1] = 9 // first array element: the version, a positive fixint
		return b.Put(indexKey(3), v)
	})
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 3, "format version 9")
}

func TestOpenReportsCorruptHardState(t *testing.T) {
	dir := corruptStore(t, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStable)
		v := bytes.Clone(b.Get(keyHardState))
		v[2] ^= 0x01 // inside the term
		return b.Put(keyHardState, v)
	})
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 0, "hard state")
}

func TestOpenReportsCorruptIdentity(t *testing.T) {
	dir := corruptStore(t, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStable).Put(keyIdentity, []byte("garbage!"))
	})
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 0, "cluster identity")
}

func TestOpenReportsNonBoltFile(t *testing.T) {
	dir := t.TempDir()
	junk := make([]byte, 64<<10)
	rand.New(rand.NewSource(1)).Read(junk)
	if err := os.WriteFile(filepath.Join(dir, DBFileName), junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, boltOptions0)
	wantCorrupt(t, err, 0, "not a valid bbolt file")
	// The lock was released on the way out.
	if _, err := Open(dir, boltOptions0); errors.Is(err, ErrLocked) {
		t.Fatal("a failed Open kept the data dir locked")
	}
}

var (
	flipSeed  = flag.Int64("store.flip-seed", 42, "seed for TestRandomByteFlipsNeverYieldBadEntries")
	flipCount = flag.Int("store.flips", 100, "byte flips in TestRandomByteFlipsNeverYieldBadEntries")
)

// flipEntries is what TestRandomByteFlipsNeverYieldBadEntries stores.
func flipEntries() []consensus.Entry { return mkEntries(1, 600, 2)[50:] }

// flipChild opens a damaged store and says what it found: "refused" and
// the error, "opened" if every entry is the one written, or "BAD" and
// what differs.
func flipChild(dir string, out io.Writer) error {
	s, err := Open(dir, Options{InitialMmapSize: 1 << 20, RaftLog: RaftLogBolt})
	if err != nil {
		fmt.Fprintf(out, "refused %s\n", err)
		return nil
	}
	defer s.Close()
	want := flipEntries()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != want[0].Index || last != want[len(want)-1].Index {
		fmt.Fprintf(out, "BAD store opened with log [%d, %d]\n", first, last)
		return nil
	}
	got, err := s.Entries(first, last+1)
	if err != nil {
		fmt.Fprintf(out, "BAD store opened but Entries fails: %v\n", err)
		return nil
	}
	for j := range got {
		if !sameEntry(got[j], want[j]) {
			fmt.Fprintf(out, "BAD entry %d changed and was returned\n", want[j].Index)
			return nil
		}
	}
	fmt.Fprintln(out, "opened")
	return nil
}

// Random single-byte damage anywhere in the file's pages: Open either
// refuses with an error, or opens a store whose every entry is intact. It
// never returns an entry that differs from what was written, and never
// crashes the process: each Open runs in a child so that a crash is seen
// as one. (bbolt walks the tree in a goroutine of its own at open; a wild
// offset there would be an unrecoverable fault, which is why Open reads
// everything itself first, through a read-only handle.)
func TestRandomByteFlipsNeverYieldBadEntries(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	dir := t.TempDir()
	s := openT(t, dir, boltOptions0)
	all := mkEntries(1, 600, 2)
	for lo := 0; lo < len(all); lo += 100 {
		mustStore(t, s, all[lo:lo+100])
	}
	if err := s.DeletePrefix(50); err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(dir, DBFileName)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The file has room to grow past its last page; flip inside the pages.
	used := len(bytes.TrimRight(raw, "\x00"))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewSource(*flipSeed))
	outcomes := map[string]int{}
	flips := *flipCount
	for i := 0; i < flips; i++ {
		at := rng.Intn(used)
		if _, err := f.WriteAt([]byte{raw[at] ^ byte(1+rng.Intn(255))}, int64(at)); err != nil {
			t.Fatal(err)
		}
		c := startChild(t, "flip", dir, 0, RaftLogBolt, nil)
		lines := c.wait()
		verdict := "crashed"
		if len(lines) > 0 {
			verdict, _, _ = strings.Cut(lines[0], " ")
		}
		switch verdict {
		case "refused", "opened":
		case "BAD":
			t.Errorf("flip at byte %d: %s", at, lines[0])
		default:
			t.Errorf("flip at byte %d: the child %s: %s", at, verdict, lastLines(c.stderr.String(), 12))
		}
		outcomes[verdict]++
		// Start over from the pristine file.
		if _, err := f.WriteAt(raw, 0); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d flips in %d used bytes (seed %d): %v", flips, used, *flipSeed, outcomes)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// metaTestStore writes a few transactions and returns the dir, the bbolt
// file and its page size.
func metaTestStore(t *testing.T) (dir, path string, pageSize int) {
	t.Helper()
	dir = t.TempDir()
	s := openT(t, dir, boltOptions0)
	for i := consensus.Index(1); i <= 30; i += 10 {
		mustStore(t, s, mkEntries(i, i+9, 1))
	}
	pageSize = s.db.Info().PageSize
	s.Close()
	return dir, filepath.Join(dir, DBFileName), pageSize
}

// bbolt silently falls back to the older meta page when the newer is
// damaged; Open refuses instead, whichever of the two it is.
func TestOpenRefusesDamagedMetaPage(t *testing.T) {
	for page := 0; page < 2; page++ {
		t.Run(fmt.Sprintf("page=%d", page), func(t *testing.T) {
			dir, path, ps := metaTestStore(t)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			off := int64(page*ps + boltPageHeaderLen + 50) // inside the txid
			f.ReadAt(b, off)
			b[0] ^= 0x04
			f.WriteAt(b, off)
			f.Close()
			_, err = Open(dir, boltOptions0)
			wantCorrupt(t, err, 0, fmt.Sprintf("bbolt meta page %d is damaged", page))
		})
	}
}

// A meta page older than its twin by more than one transaction (part of
// the file restored from an older copy) is refused too.
func TestOpenRefusesStaleMetaPage(t *testing.T) {
	dir, path, ps := metaTestStore(t)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m0, m1 := parseBoltMeta(raw[:ps]), parseBoltMeta(raw[ps:2*ps])
	older := 0
	if m1.txid < m0.txid {
		older = 1
	}
	stale := bytes.Clone(raw[older*ps : (older+1)*ps])
	s := openT(t, dir, boltOptions0)
	mustStore(t, s, mkEntries(31, 31, 1))
	mustStore(t, s, mkEntries(32, 32, 1))
	s.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(stale, int64(older*ps))
	f.Close()
	_, err = Open(dir, boltOptions0)
	wantCorrupt(t, err, 0, "not consecutive")
}
