package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-msgpack/v2/codec"
	bolt "go.etcd.io/bbolt"

	"github.com/lockd/lockd/consensus"
)

func TestEmptyStore(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		checkLog(t, s, nil)
		hs, err := s.HardState()
		if err != nil || !hs.IsEmpty() {
			t.Fatalf("HardState() = %+v, %v; want zero, nil", hs, err)
		}
		if _, ok, err := s.Identity(); ok || err != nil {
			t.Fatalf("Identity() ok=%v err=%v; want none", ok, err)
		}
		if ents, err := s.Entries(1, 1); ents != nil || err != nil {
			t.Fatalf("Entries(1, 1) = %v, %v; want nil, nil", ents, err)
		}
		if _, err := s.Entries(1, 2); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("Entries(1, 2) on an empty log: %v, want ErrOutOfRange", err)
		}
		if err := s.DeletePrefix(10); err != nil {
			t.Fatalf("DeletePrefix on an empty log: %v", err)
		}
		if err := s.StoreEntries(nil); err != nil {
			t.Fatalf("StoreEntries(nil): %v", err)
		}
		if err := s.Save(nil, nil); err != nil {
			t.Fatalf("Save(nil, nil): %v", err)
		}
		if err := s.Verify(); err != nil {
			t.Fatalf("Verify on an empty store: %v", err)
		}
	})
}

func TestStoreAndReadEntries(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		ents := mkEntries(1, 10, 1)
		ents[0].Type = consensus.EntryNoop
		ents[0].Data = nil
		ents[0].Seal()
		mustStore(t, s, ents)
		checkLog(t, s, ents)

		got, err := s.Entries(3, 6)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0].Index != 3 || got[2].Index != 5 {
			t.Fatalf("Entries(3, 6) = %+v, want entries 3..5", got)
		}
		// What Entries returns is the caller's: changing it changes nothing stored.
		got[0].Data[0] ^= 0xff
		again, err := s.Entries(3, 4)
		if err != nil || !sameEntry(again[0], ents[2]) {
			t.Fatalf("after changing a returned entry, Entries(3, 4) = %+v, %v; want the stored entry", again, err)
		}
	})
}

func TestEntriesRangeErrors(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		mustStore(t, s, mkEntries(5, 10, 1))
		for _, r := range []struct{ lo, hi consensus.Index }{{4, 6}, {0, 6}, {5, 12}, {11, 12}, {1, 3}} {
			if _, err := s.Entries(r.lo, r.hi); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("Entries(%d, %d) on [5, 10]: %v, want ErrOutOfRange", r.lo, r.hi, err)
			}
		}
		if _, err := s.Entries(7, 6); err == nil || errors.Is(err, ErrOutOfRange) {
			t.Errorf("Entries(7, 6): %v, want an error about lo above hi", err)
		}
		if got, err := s.Entries(5, 11); err != nil || len(got) != 6 {
			t.Errorf("Entries(5, 11) = %d entries, %v; want 6", len(got), err)
		}
	})
}

// Reference: §5.3, a follower deletes a conflicting entry and all that
// follow it, then appends the leader's.
func TestStoreEntriesReplacesSuffix(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		mustStore(t, s, mkEntries(1, 10, 1))
		mustStore(t, s, mkEntries(6, 7, 2))
		want := append(mkEntries(1, 5, 1), mkEntries(6, 7, 2)...)
		checkLog(t, s, want)

		// Appending after a truncation continues the new suffix.
		mustStore(t, s, mkEntries(8, 9, 2))
		want = append(want, mkEntries(8, 9, 2)...)
		checkLog(t, s, want)

		// A batch at the first index replaces the whole log.
		mustStore(t, s, mkEntries(1, 3, 3))
		checkLog(t, s, mkEntries(1, 3, 3))

		// Rewriting the same entries (a duplicate append) changes nothing.
		mustStore(t, s, mkEntries(2, 3, 3))
		checkLog(t, s, mkEntries(1, 3, 3))
	})
}

func TestStoreEntriesOnEmptyLogTakesAnyStart(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		mustStore(t, s, mkEntries(100, 104, 7))
		checkLog(t, s, mkEntries(100, 104, 7))
	})
}

func TestStoreEntriesRefusesBadBatches(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		mustStore(t, s, mkEntries(1, 10, 2))
		if err := s.DeletePrefix(3); err != nil {
			t.Fatal(err)
		}
		before := mkEntries(4, 10, 2)

		unsealed := mkEntries(11, 11, 2)
		unsealed[0].Data = []byte("changed after sealing")
		gapInBatch := append(mkEntries(11, 11, 2), mkEntries(13, 13, 2)...)
		termDown := append(mkEntries(11, 11, 3), mkEntries(12, 12, 2)...)
		zero := []consensus.Entry{{Index: 0, Term: 2}}
		zero[0].Seal()

		cases := []struct {
			name     string
			ents     []consensus.Entry
			sentinel error
			says     string
		}{
			{"gap after the last entry", mkEntries(12, 13, 2), ErrNotContiguous, "gap"},
			{"before the first entry", mkEntries(2, 5, 2), ErrNotContiguous, "compacted"},
			{"not contiguous", gapInBatch, ErrNotContiguous, "follows"},
			{"term decreases in the batch", termDown, nil, "below the term"},
			{"term below the entry before", mkEntries(8, 9, 1), nil, "below the term"},
			{"index 0", zero, nil, "index 0"},
			{"bad checksum", unsealed, nil, "checksum"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				for _, save := range []bool{false, true} {
					var err error
					if save {
						err = s.Save(&consensus.HardState{Term: 9, Vote: 1, Commit: 4}, c.ents)
					} else {
						err = s.StoreEntries(c.ents)
					}
					if err == nil {
						t.Fatalf("save=%v: batch accepted, want an error", save)
					}
					if c.sentinel != nil && !errors.Is(err, c.sentinel) {
						t.Fatalf("save=%v: %v, want it to wrap %v", save, err, c.sentinel)
					}
					if !strings.Contains(err.Error(), c.says) {
						t.Fatalf("save=%v: %q does not say %q", save, err, c.says)
					}
					checkLog(t, s, before)
					if hs, _ := s.HardState(); !hs.IsEmpty() {
						t.Fatalf("save=%v: hard state %+v stored with a refused batch", save, hs)
					}
				}
			})
		}
		var ce *consensus.EntryCorruptError
		if err := s.StoreEntries(unsealed); !errors.As(err, &ce) || ce.Index != 11 {
			t.Fatalf("unsealed entry: %v, want an *EntryCorruptError for entry 11", err)
		}
	})
}

func TestSaveWritesEntriesAndHardStateTogether(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		hs := consensus.HardState{Term: 3, Vote: 2, Commit: 0}
		if err := s.Save(&hs, mkEntries(1, 5, 3)); err != nil {
			t.Fatal(err)
		}
		checkLog(t, s, mkEntries(1, 5, 3))
		if got, err := s.HardState(); err != nil || got != hs {
			t.Fatalf("HardState() = %+v, %v; want %+v", got, err, hs)
		}
		// Entries only: the hard state stays.
		if err := s.Save(nil, mkEntries(6, 6, 3)); err != nil {
			t.Fatal(err)
		}
		// Hard state only: the log stays.
		hs2 := consensus.HardState{Term: 4, Vote: 1, Commit: 6}
		if err := s.Save(&hs2, nil); err != nil {
			t.Fatal(err)
		}
		checkLog(t, s, mkEntries(1, 6, 3))
		if got, _ := s.HardState(); got != hs2 {
			t.Fatalf("HardState() = %+v, want %+v", got, hs2)
		}
		hs3 := consensus.HardState{Term: 5}
		if err := s.SetHardState(hs3); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.HardState(); got != hs3 {
			t.Fatalf("after SetHardState, HardState() = %+v, want %+v", got, hs3)
		}
	})
}

func TestDeletePrefix(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		all := mkEntries(1, 100, 1)
		mustStore(t, s, all)
		if err := s.DeletePrefix(0); err != nil {
			t.Fatal(err)
		}
		checkLog(t, s, all)
		if err := s.DeletePrefix(30); err != nil {
			t.Fatal(err)
		}
		checkLog(t, s, all[30:])
		if _, err := s.Entries(30, 32); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("Entries(30, 32) after compacting through 30: %v, want ErrOutOfRange", err)
		}
		// Again, and below the first index: nothing to do.
		for _, i := range []consensus.Index{30, 10} {
			if err := s.DeletePrefix(i); err != nil {
				t.Fatal(err)
			}
			checkLog(t, s, all[30:])
		}
		// Past the end empties the log; a new log may then start anywhere.
		if err := s.DeletePrefix(500); err != nil {
			t.Fatal(err)
		}
		checkLog(t, s, nil)
		mustStore(t, s, mkEntries(501, 503, 2))
		checkLog(t, s, mkEntries(501, 503, 2))
	})
}

// Many pages: deleting under a cursor must not skip a key.
func TestDeletePrefixAcrossManyPages(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		var all []consensus.Entry
		for lo := consensus.Index(1); lo <= 5000; lo += 500 {
			batch := mkEntries(lo, lo+499, 1)
			for i := range batch {
				batch[i].Data = append(batch[i].Data, make([]byte, 200)...)
				batch[i].Seal()
			}
			mustStore(t, s, batch)
			all = append(all, batch...)
		}
		if err := s.DeletePrefix(4321); err != nil {
			t.Fatal(err)
		}
		checkLog(t, s, all[4321:])
		if err := s.Verify(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestReopenAfterClose(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		s, err := Open(dir, o)
		if err != nil {
			t.Fatal(err)
		}
		ents := append(mkEntries(1, 20, 1), mkEntries(21, 30, 2)...)
		hs := consensus.HardState{Term: 2, Vote: 3, Commit: 25}
		if err := s.Save(&hs, ents); err != nil {
			t.Fatal(err)
		}
		if err := s.DeletePrefix(4); err != nil {
			t.Fatal(err)
		}
		id := Identity{ClusterID: "c-1", NodeID: 3}
		if err := s.SetIdentity(id); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}

		s = openT(t, dir, o)
		checkLog(t, s, ents[4:])
		if got, _ := s.HardState(); got != hs {
			t.Fatalf("after reopen HardState() = %+v, want %+v", got, hs)
		}
		if got, ok, err := s.Identity(); err != nil || !ok || got != id {
			t.Fatalf("after reopen Identity() = %+v, %v, %v; want %+v", got, ok, err, id)
		}
		// And it keeps working: truncate and append across the reopen.
		mustStore(t, s, mkEntries(29, 31, 3))
		checkLog(t, s, append(slices.Clone(ents[4:28]), mkEntries(29, 31, 3)...))
	})
}

func TestUseAfterClose(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s, err := Open(t.TempDir(), o)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		calls := map[string]error{}
		_, calls["FirstIndex"] = s.FirstIndex()
		_, calls["LastIndex"] = s.LastIndex()
		_, calls["Entries"] = s.Entries(1, 2)
		calls["StoreEntries"] = s.StoreEntries(mkEntries(1, 1, 1))
		calls["Save"] = s.Save(&consensus.HardState{Term: 1}, nil)
		calls["DeletePrefix"] = s.DeletePrefix(1)
		_, calls["HardState"] = s.HardState()
		_, _, calls["Identity"] = s.Identity()
		calls["SetIdentity"] = s.SetIdentity(Identity{ClusterID: "c", NodeID: 1})
		calls["Verify"] = s.Verify()
		for name, err := range calls {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close: %v, want ErrClosed", name, err)
			}
		}
	})
}

func TestIdentity(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		s := openT(t, t.TempDir(), o)
		for _, bad := range []Identity{{ClusterID: "", NodeID: 1}, {ClusterID: "c", NodeID: 0}} {
			if err := s.SetIdentity(bad); err == nil {
				t.Errorf("SetIdentity(%+v) accepted", bad)
			}
		}
		id := Identity{ClusterID: "prod-eu", NodeID: 2}
		if err := s.SetIdentity(id); err != nil {
			t.Fatal(err)
		}
		if err := s.SetIdentity(id); err != nil {
			t.Fatalf("setting the same identity again: %v", err)
		}
		for _, other := range []Identity{{ClusterID: "prod-us", NodeID: 2}, {ClusterID: "prod-eu", NodeID: 3}} {
			err := s.SetIdentity(other)
			if !errors.Is(err, ErrIdentityMismatch) || !strings.Contains(err.Error(), `"prod-eu" node 2`) {
				t.Errorf("SetIdentity(%+v) over %+v: %v, want ErrIdentityMismatch naming the stored identity", other, id, err)
			}
		}
		if got, ok, _ := s.Identity(); !ok || got != id {
			t.Fatalf("Identity() = %+v, %v; want %+v", got, ok, id)
		}
	})
}

func TestOpenOptions(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{InitialMmapSize: -1}); err == nil {
		t.Fatal("negative InitialMmapSize accepted")
	}
	var logs logBuffer
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: logs.logger(), InitialMmapSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Path() != filepath.Join(dir, DBFileName) {
		t.Fatalf("Path() = %s", s.Path())
	}
	if !strings.Contains(logs.String(), "raft store opened") {
		t.Fatalf("no open line in the log: %q", logs.String())
	}
}

func TestOpenRefusesNewerFormat(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		s := openT(t, dir, o)
		s.Close()
		rewrite(t, dir, func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyFormat, indexKey(formatVersion+1))
		})
		_, err := Open(dir, o)
		if err == nil || !strings.Contains(err.Error(), "newer") {
			t.Fatalf("Open of a newer format: %v, want an error saying it is newer", err)
		}
	})
}

// The decoded entry must not share memory with the value it came from
// (in bbolt that is the read-only mmap, gone after the transaction).
func TestDecodeEntryCopiesData(t *testing.T) {
	h := newHandle()
	e := mkEntries(1, 1, 1)[0]
	val, err := encodeEntry(codec.NewEncoderBytes(nil, h), &e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeEntry(codec.NewDecoderBytes(nil, h), indexKey(1), val)
	if err != nil {
		t.Fatal(err)
	}
	for i := range val {
		val[i] = 0
	}
	if err := got.Verify(); err != nil || !sameEntry(got, e) {
		t.Fatalf("decoded entry changed with its source buffer: %+v, %v", got, err)
	}
}

// rewrite changes a closed store's file with bbolt directly.
func rewrite(t testing.TB, dir string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, DBFileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestOpenFailsOnUnusableDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file, Options{}); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("Open on a regular file: %v, want an error naming it", err)
	}
}

// A process that died between creating raft.db and bbolt's first write
// leaves an empty file; that is a new store, not a corrupt one.
func TestOpenEmptyFileIsNewStore(t *testing.T) {
	bothBackends(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, DBFileName), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		s := openT(t, dir, o)
		checkLog(t, s, nil)
		mustStore(t, s, mkEntries(1, 3, 1))
		checkLog(t, s, mkEntries(1, 3, 1))
	})
}

func TestMkdirDurableCreatesParents(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "c")
	if err := mkdirDurable(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("%s not created: %v", dir, err)
	}
	if err := mkdirDurable(dir); err != nil {
		t.Fatalf("again: %v", err)
	}
}
