package consensus

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func TestChecksumMatchesCRC32C(t *testing.T) {
	e := Entry{Index: 7, Term: 3, Type: EntryNormal, Time: 1234567, Data: []byte("hello")}
	var hdr [25]byte
	binary.BigEndian.PutUint64(hdr[0:], 7)
	binary.BigEndian.PutUint64(hdr[8:], 3)
	binary.BigEndian.PutUint64(hdr[17:], 1234567)
	want := crc32.Checksum(append(hdr[:], "hello"...), crc32.MakeTable(crc32.Castagnoli))
	if got := e.ComputeChecksum(); got != want {
		t.Fatalf("checksum %08x, want CRC-32C %08x", got, want)
	}
	e.Seal()
	if err := e.Verify(); err != nil {
		t.Fatal(err)
	}
	e.Data = []byte("hellp")
	var ce *EntryCorruptError
	if err := e.Verify(); !errors.As(err, &ce) || ce.Index != 7 {
		t.Fatalf("a flipped byte must fail Verify with EntryCorruptError, got %v", err)
	}
}

func TestCorruptEntryFromNetworkIsDropped(t *testing.T) {
	r, err := New(Config{ID: 2, Voters: []NodeID{1, 2, 3}}, Restored{})
	if err != nil {
		t.Fatal(err)
	}
	e := Entry{Index: 1, Term: 1, Data: []byte("x")}
	e.Seal()
	e.Data = []byte("y")
	err = r.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 1, Entries: []Entry{e}, Commit: 1})
	if err == nil || r.log.lastIndex() != 0 {
		t.Fatalf("corrupt entry accepted: err %v, last index %d", err, r.log.lastIndex())
	}
}

func TestRestoreRejectsGapsAndBadCommit(t *testing.T) {
	mk := func(i Index, term Term) Entry { e := Entry{Index: i, Term: term}; e.Seal(); return e }
	cfg := Config{ID: 1, Voters: []NodeID{1}}
	if _, err := New(cfg, Restored{HardState: HardState{Term: 1}, Entries: []Entry{mk(1, 1), mk(3, 1)}}); err == nil {
		t.Fatal("a log with a gap was accepted")
	}
	if _, err := New(cfg, Restored{HardState: HardState{Term: 1, Commit: 5}, Entries: []Entry{mk(1, 1)}}); err == nil {
		t.Fatal("a commit index beyond the log was accepted")
	}
	if _, err := New(Config{ID: 4, Voters: []NodeID{1, 2}}, Restored{}); err == nil {
		t.Fatal("a node outside the voters was accepted")
	}
}
