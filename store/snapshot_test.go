package store

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lockd/lockd/consensus"
)

func newSnapStore(t *testing.T, dir string, retain int) (*FileSnapshotStore, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	s, err := NewFileSnapshotStore(dir, SnapshotOptions{Retain: retain, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	return s, logs
}

func snapData(index consensus.Index) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("state-at-%d;", index)), 1000)
}

// writeSnap writes a snapshot at index (term = index/10 + 1) in pieces.
func writeSnap(t *testing.T, s *FileSnapshotStore, index consensus.Index) string {
	t.Helper()
	meta := consensus.SnapshotMeta{Index: index, Term: consensus.Term(index/10 + 1), Voters: []consensus.NodeID{1, 2, 3}}
	sink, err := s.Create(meta)
	if err != nil {
		t.Fatal(err)
	}
	data := snapData(index)
	for len(data) > 0 {
		n := min(len(data), 777)
		if _, err := sink.Write(data[:n]); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(s.Dir(), snapName(meta.Index, meta.Term))
}

// wantLatest checks that Latest opens the snapshot at index, with its
// metadata and exactly its data.
func wantLatest(t *testing.T, s *FileSnapshotStore, index consensus.Index) {
	t.Helper()
	meta, rc, ok, err := s.Latest()
	if err != nil || !ok {
		t.Fatalf("Latest() ok=%v err=%v, want the snapshot at %d", ok, err, index)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading snapshot %d: %v", index, err)
	}
	want := snapData(index)
	if meta.Index != index || meta.Term != consensus.Term(index/10+1) || !slices.Equal(meta.Voters, []consensus.NodeID{1, 2, 3}) ||
		meta.Size != int64(len(want)) || !bytes.Equal(data, want) {
		t.Fatalf("Latest() = %+v with %d bytes, want the snapshot at %d with %d bytes", meta, len(data), index, len(want))
	}
}

func wantNoSnapshot(t *testing.T, s *FileSnapshotStore) {
	t.Helper()
	if _, rc, ok, err := s.Latest(); ok || err != nil || rc != nil {
		t.Fatalf("Latest() ok=%v err=%v, want no snapshot", ok, err)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	s, logs := newSnapStore(t, t.TempDir(), 0)
	wantNoSnapshot(t, s)
	path := writeSnap(t, s, 10)
	wantLatest(t, s, 10)
	writeSnap(t, s, 20)
	wantLatest(t, s, 20)
	if !strings.Contains(logs.String(), "snapshot saved") || !strings.Contains(logs.String(), path) {
		t.Fatalf("no line for the saved snapshot in %q", logs.String())
	}
	// Nothing but the snapshots is left in the directory.
	des, _ := os.ReadDir(s.Dir())
	if len(des) != 2 {
		t.Fatalf("dir holds %d files, want the 2 snapshots", len(des))
	}
}

func TestSnapshotEmptyData(t *testing.T) {
	s, _ := newSnapStore(t, t.TempDir(), 0)
	sink, err := s.Create(consensus.SnapshotMeta{Index: 5, Term: 1, Voters: []consensus.NodeID{1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	meta, rc, ok, err := s.Latest()
	if err != nil || !ok || meta.Size != 0 {
		t.Fatalf("Latest() = %+v, ok=%v, err=%v", meta, ok, err)
	}
	if b, err := io.ReadAll(rc); err != nil || len(b) != 0 {
		t.Fatalf("reading an empty snapshot: %d bytes, %v", len(b), err)
	}
	rc.Close()
}

func TestSnapshotRetain(t *testing.T) {
	for _, retain := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("retain=%d", retain), func(t *testing.T) {
			s, _ := newSnapStore(t, t.TempDir(), retain)
			want := retain
			if want == 0 {
				want = DefaultSnapshotRetain
			}
			var paths []string
			for i := consensus.Index(1); i <= 5; i++ {
				paths = append(paths, writeSnap(t, s, i*10))
			}
			for i, p := range paths {
				_, err := os.Stat(p)
				if kept := i >= len(paths)-want; kept != (err == nil) {
					t.Errorf("snapshot %d: kept=%v, stat error %v", (i+1)*10, kept, err)
				}
			}
			wantLatest(t, s, 50)
		})
	}
	if _, err := NewFileSnapshotStore(t.TempDir(), SnapshotOptions{Retain: -1}); err == nil {
		t.Fatal("negative retain accepted")
	}
}

func TestSnapshotCancelAndMisuse(t *testing.T) {
	s, _ := newSnapStore(t, t.TempDir(), 0)
	meta := consensus.SnapshotMeta{Index: 7, Term: 2, Voters: []consensus.NodeID{1}}
	sink, err := s.Create(meta)
	if err != nil {
		t.Fatal(err)
	}
	sink.Write([]byte("partial"))
	if err := sink.Cancel(); err != nil {
		t.Fatal(err)
	}
	if err := sink.Cancel(); err != nil {
		t.Fatalf("second Cancel: %v", err)
	}
	if _, err := sink.Write([]byte("x")); err == nil {
		t.Fatal("Write after Cancel accepted")
	}
	if err := sink.Close(); err == nil {
		t.Fatal("Close after Cancel accepted")
	}
	wantNoSnapshot(t, s)
	if des, _ := os.ReadDir(s.Dir()); len(des) != 0 {
		t.Fatalf("a cancelled snapshot left %d files", len(des))
	}

	sink, _ = s.Create(meta)
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err == nil {
		t.Fatal("second Close accepted")
	}
	if err := sink.Cancel(); err != nil {
		t.Fatalf("Cancel after Close: %v", err)
	}
	if _, _, ok, _ := s.Latest(); !ok {
		t.Fatal("Cancel after Close removed the snapshot")
	}

	for _, bad := range []consensus.SnapshotMeta{
		{Index: 0, Term: 1, Voters: []consensus.NodeID{1}},
		{Index: 1, Term: 0, Voters: []consensus.NodeID{1}},
		{Index: 1, Term: 1},
		{Index: 1, Term: 1, Voters: []consensus.NodeID{1, 0}},
		{Index: 1, Term: 1, Voters: []consensus.NodeID{2, 2}},
	} {
		if _, err := s.Create(bad); err == nil {
			t.Errorf("Create(%+v) accepted", bad)
		}
	}
}

// The caller's voters slice is copied: changing it after Create changes
// nothing stored.
func TestSnapshotCopiesVoters(t *testing.T) {
	s, _ := newSnapStore(t, t.TempDir(), 0)
	voters := []consensus.NodeID{1, 2, 3}
	sink, _ := s.Create(consensus.SnapshotMeta{Index: 3, Term: 1, Voters: voters})
	voters[0] = 9
	sink.Close()
	meta, rc, _, _ := s.Latest()
	rc.Close()
	if !slices.Equal(meta.Voters, []consensus.NodeID{1, 2, 3}) {
		t.Fatalf("voters %v, want [1 2 3]", meta.Voters)
	}
}

// A process that dies while writing leaves a temp file; it is never
// taken for a snapshot and is removed when the store is next opened.
func TestSnapshotLeftoverTempFileRemoved(t *testing.T) {
	dir := t.TempDir()
	s, _ := newSnapStore(t, dir, 0)
	writeSnap(t, s, 10)
	sink, _ := s.Create(consensus.SnapshotMeta{Index: 20, Term: 3, Voters: []consensus.NodeID{1, 2, 3}})
	sink.Write(snapData(20))
	// Abandoned: neither Close nor Cancel, as if the process died here.
	wantLatest(t, s, 10)

	s2, logs := newSnapStore(t, dir, 0)
	if des, _ := os.ReadDir(dir); len(des) != 1 {
		t.Fatalf("after reopening, the dir holds %d files, want only the snapshot", len(des))
	}
	if !strings.Contains(logs.String(), "removed unfinished snapshot") {
		t.Fatalf("no log line for the removed temp file: %q", logs.String())
	}
	wantLatest(t, s2, 10)
}

// damageCases break the newest of two snapshots in different ways; each
// must be skipped, with a log line, in favour of the older one.
func TestSnapshotCorruptNewestSkipped(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, path string)
		says   string
	}{
		{"flipped data byte", func(t *testing.T, path string) { flipFileByte(t, path, 1234) }, "data checksum"},
		{"flipped metadata byte", func(t *testing.T, path string) { flipFileByte(t, path, -(snapTrailerLen + 3)) }, "metadata checksum"},
		{"flipped trailer magic", func(t *testing.T, path string) { flipFileByte(t, path, -1) }, "magic"},
		{"flipped metadata length", func(t *testing.T, path string) { flipFileByte(t, path, -snapTrailerLen) }, "metadata"},
		{"truncated (torn write)", func(t *testing.T, path string) { truncateFile(t, path, -100) }, "magic"},
		{"cut to a few bytes", func(t *testing.T, path string) { truncateFile(t, path, 5) }, "shorter than"},
		{"empty file", func(t *testing.T, path string) { truncateFile(t, path, 0) }, "shorter than"},
		{"renamed to another index", func(t *testing.T, path string) {
			if err := os.Rename(path, filepath.Join(filepath.Dir(path), snapName(30, 4))); err != nil {
				t.Fatal(err)
			}
		}, "file name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, logs := newSnapStore(t, t.TempDir(), 0)
			writeSnap(t, s, 10)
			newest := writeSnap(t, s, 20)
			c.damage(t, newest)
			wantLatest(t, s, 10)
			out := logs.String()
			if !strings.Contains(out, "skipping snapshot") || !strings.Contains(out, c.says) || !strings.Contains(out, s.Dir()) {
				t.Fatalf("log %q does not report the skipped snapshot with %q", out, c.says)
			}
		})
	}
}

func TestSnapshotAllCorrupt(t *testing.T) {
	s, logs := newSnapStore(t, t.TempDir(), 0)
	flipFileByte(t, writeSnap(t, s, 10), 10)
	flipFileByte(t, writeSnap(t, s, 20), 10)
	wantNoSnapshot(t, s)
	if !strings.Contains(logs.String(), "no intact snapshot") {
		t.Fatalf("log %q does not say no snapshot was intact", logs.String())
	}
}

// A snapshot that changes on disk after Latest verified it is still
// caught: the reader checks the CRC again and fails at the end instead of
// returning io.EOF.
func TestSnapshotReaderRechecksCRC(t *testing.T) {
	s, _ := newSnapStore(t, t.TempDir(), 0)
	path := writeSnap(t, s, 10)
	_, rc, ok, err := s.Latest()
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	defer rc.Close()
	flipFileByte(t, path, 5000)
	_, err = io.ReadAll(rc)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "changed while being read") {
		t.Fatalf("reading a snapshot changed after verification: %v, want a *CorruptError", err)
	}
}

// Files that are not snapshots are ignored.
func TestSnapshotIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	s, _ := newSnapStore(t, dir, 1)
	os.WriteFile(filepath.Join(dir, "README"), []byte("hello"), 0o600)
	os.Mkdir(filepath.Join(dir, snapName(99, 9)), 0o700)
	writeSnap(t, s, 10)
	writeSnap(t, s, 20)
	wantLatest(t, s, 20)
	if _, err := os.Stat(filepath.Join(dir, "README")); err != nil {
		t.Fatalf("pruning removed a file that is not a snapshot: %v", err)
	}
}

func TestParseSnapName(t *testing.T) {
	name := snapName(0x1234, 0x56)
	if i, tm, ok := parseSnapName(name); !ok || i != 0x1234 || tm != 0x56 {
		t.Fatalf("parseSnapName(%q) = %d, %d, %v", name, i, tm, ok)
	}
	for _, bad := range []string{"", "snap-1-2.snap", name + ".tmp", strings.Replace(name, "snap-", "snip-", 1), strings.Replace(name, "0", "g", 1)} {
		if _, _, ok := parseSnapName(bad); ok {
			t.Errorf("parseSnapName(%q) accepted", bad)
		}
	}
}

// flipFileByte flips the byte at off (from the end if negative).
func flipFileByte(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0x10
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// truncateFile cuts the file to size (that much shorter if negative).
func truncateFile(t *testing.T, path string, size int64) {
	t.Helper()
	if size < 0 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		size += fi.Size()
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// Every byte of the metadata and trailer, and a sample of the data:
// flipping any one of them makes Latest skip the snapshot.
func TestSnapshotAnyFlippedByteSkipped(t *testing.T) {
	dir := t.TempDir()
	s, _ := newSnapStore(t, dir, 0)
	writeSnap(t, s, 10)
	newest := writeSnap(t, s, 20)
	pristine, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	var offsets []int
	for off := len(pristine) - 120; off < len(pristine); off++ {
		offsets = append(offsets, off)
	}
	for off := 0; off < len(pristine)-120; off += 397 {
		offsets = append(offsets, off)
	}
	for _, off := range offsets {
		b := bytes.Clone(pristine)
		b[off] ^= 0x01
		if err := os.WriteFile(newest, b, 0o600); err != nil {
			t.Fatal(err)
		}
		meta, rc, ok, err := s.Latest()
		if err != nil || !ok {
			t.Fatalf("flip at %d: Latest() ok=%v err=%v", off, ok, err)
		}
		rc.Close()
		if meta.Index != 10 {
			t.Fatalf("flip at byte %d of %d: Latest() chose the damaged snapshot %d", off, len(pristine), meta.Index)
		}
	}
}

// TestSnapshotOpenByIndexAndTerm: Open finds a snapshot that is not the
// newest, verified, and refuses one that is missing or corrupt.
func TestSnapshotOpenByIndexAndTerm(t *testing.T) {
	s, _ := newSnapStore(t, t.TempDir(), 3)
	writeSnap(t, s, 10)
	path20 := writeSnap(t, s, 20)
	writeSnap(t, s, 30)
	meta, rc, err := s.Open(20, 3)
	if err != nil {
		t.Fatalf("Open(20, 3): %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || meta.Index != 20 || meta.Term != 3 || !bytes.Equal(got, snapData(20)) {
		t.Fatalf("Open(20, 3) = %+v, %d bytes, err %v", meta, len(got), err)
	}
	if _, _, err := s.Open(20, 4); err == nil {
		t.Fatal("Open of a term with no snapshot succeeded")
	}
	b, err := os.ReadFile(path20)
	if err != nil {
		t.Fatal(err)
	}
	b[5] ^= 0xff
	if err := os.WriteFile(path20, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, _, err := s.Open(20, 3); !errors.As(err, &ce) {
		t.Fatalf("Open of a corrupt snapshot: %v, want a *CorruptError", err)
	}
}
