package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/lockd/lockd/consensus"
)

// WAL records. Every record is
//
//	length      uint32  payload bytes
//	data CRC    uint32  CRC-32C of the payload
//	type        uint8
//	header CRC  uint32  CRC-32C of the 9 bytes before it
//	payload     length bytes
//
// little-endian, unpadded, one after the other from offset 0 of a segment.
// The header has its own CRC so that replay can tell a damaged header
// (corruption) from an intact header whose payload did not all reach the
// disk (a torn write), and never follows a damaged length. A region of
// zeros (the preallocated, never written part of a segment) is no record:
// its header CRC fails.
const (
	recHeaderLen = 13
	// maxRecordLen bounds one record's payload, and with it what a damaged
	// length can make replay read or allocate.
	maxRecordLen = 1 << 30
)

// Record types. 0 is never used: it is what zero-filled space reads as.
const (
	recSegment   = 1 // segment header: first in every segment
	recEntries   = 2 // a batch of entries, and the hard state saved with it
	recHardState = 3 // the hard state alone
	recCompact   = 4 // the log's front was compacted through an index
)

// walVersion is the layout of the records; in every segment header.
// Version 1 (development builds only) had no chain fields in the segment
// header. A segment of another version is refused at open: version 1's
// header is shorter and carries nothing to check the segment before it
// against, and reading it as version 2 would be a misread.
const walVersion = 2

// Payload layouts (little-endian):
//
//	segment:   version u8, seq u64, first u64, last u64, hard state (3 x u64),
//	           last term u64, prev end u64, prev chain u32
//	entries:   has-hard-state u8, [hard state (3 x u64)], count u32, entries
//	entry:     index u64, term u64, type u8, time u64, checksum u32, len u32, data
//	hardstate: term u64, vote u64, commit u64
//	compact:   through u64
const (
	hardStateLen  = 24
	segHeaderLen  = 1 + 8 + 8 + 8 + hardStateLen + 8 + 8 + 4
	entryFixedLen = 8 + 8 + 1 + 8 + 4 + 4
)

// segHeader is a segment's first record: the log's bounds and hard state
// when the segment was started. Replay from any segment on therefore knows
// the hard state and the compaction point even when every older segment
// (and the records in it) has been deleted.
//
// It also records how the segment before it ended: the offset after its
// last record, the term of the log's last entry, and the chain value of
// every record written before this header (see chainRecord). Replay
// checks them against what it read, so a record lost from the end of a
// segment that is not the last (zeros where an acknowledged record was,
// which the torn-tail rule would otherwise take for the unwritten rest of
// the segment) is found even when it changed nothing else the header says.
// In the first segment these describe segments since deleted: replay
// starts from them unchecked.
type segHeader struct {
	seq         uint64
	first, last consensus.Index
	hs          consensus.HardState
	// lastTerm is the term of entry last; 0 if the log is empty.
	lastTerm consensus.Term
	// prevEnd is the offset after the last record of segment seq-1; 0
	// for segment 1.
	prevEnd int64
	// prevChain is the chain value after the last record of segment
	// seq-1; 0 for segment 1.
	prevChain uint32
}

// chainRecord returns the chain value after the record rec (which starts
// with its header) given the value before it. The chain is a CRC-32C over
// the header CRCs of every record ever written, in order, segment headers
// included; a header CRC covers the record's length, type and payload CRC,
// so the chain changes when any record is lost, added, reordered or
// replaced. (etcd's WAL chains its record CRCs the same way.)
func chainRecord(chain uint32, rec []byte) uint32 {
	return crc32.Update(chain, castagnoli, rec[9:recHeaderLen])
}

// appendRecord appends to b a record of type typ whose payload fill
// appends to its argument.
func appendRecord(b []byte, typ byte, fill func([]byte) []byte) []byte {
	start := len(b)
	b = append(b, make([]byte, recHeaderLen)...)
	b = fill(b)
	rec := b[start:]
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(rec)-recHeaderLen))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(rec[recHeaderLen:], castagnoli))
	rec[8] = typ
	binary.LittleEndian.PutUint32(rec[9:], crc32.Checksum(rec[:9], castagnoli))
	return b
}

func appendHardState(b []byte, hs consensus.HardState) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(hs.Term))
	b = binary.LittleEndian.AppendUint64(b, uint64(hs.Vote))
	return binary.LittleEndian.AppendUint64(b, uint64(hs.Commit))
}

func readHardState(p []byte) consensus.HardState {
	return consensus.HardState{
		Term:   consensus.Term(binary.LittleEndian.Uint64(p[0:])),
		Vote:   consensus.NodeID(binary.LittleEndian.Uint64(p[8:])),
		Commit: consensus.Index(binary.LittleEndian.Uint64(p[16:])),
	}
}

func appendSegHeader(b []byte, h segHeader) []byte {
	return appendRecord(b, recSegment, func(b []byte) []byte {
		b = append(b, walVersion)
		b = binary.LittleEndian.AppendUint64(b, h.seq)
		b = binary.LittleEndian.AppendUint64(b, uint64(h.first))
		b = binary.LittleEndian.AppendUint64(b, uint64(h.last))
		b = appendHardState(b, h.hs)
		b = binary.LittleEndian.AppendUint64(b, uint64(h.lastTerm))
		b = binary.LittleEndian.AppendUint64(b, uint64(h.prevEnd))
		return binary.LittleEndian.AppendUint32(b, h.prevChain)
	})
}

// appendEntriesRecord appends one record holding ents and, if hs is not
// nil, the hard state: a Save is one record, so a torn write loses all of
// it or nothing. offs receives each entry's offset from the start of the
// record (the caller adds the record's file offset).
func appendEntriesRecord(b []byte, hs *consensus.HardState, ents []consensus.Entry, offs []int) ([]byte, []int) {
	start := len(b)
	b = appendRecord(b, recEntries, func(b []byte) []byte {
		if hs != nil {
			b = append(b, 1)
			b = appendHardState(b, *hs)
		} else {
			b = append(b, 0)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(ents)))
		for i := range ents {
			e := &ents[i]
			offs = append(offs, len(b)-start)
			b = binary.LittleEndian.AppendUint64(b, uint64(e.Index))
			b = binary.LittleEndian.AppendUint64(b, uint64(e.Term))
			b = append(b, byte(e.Type))
			b = binary.LittleEndian.AppendUint64(b, uint64(e.Time))
			b = binary.LittleEndian.AppendUint32(b, e.Checksum)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Data)))
			b = append(b, e.Data...)
		}
		return b
	})
	return b, offs
}

func appendHardStateRecord(b []byte, hs consensus.HardState) []byte {
	return appendRecord(b, recHardState, func(b []byte) []byte { return appendHardState(b, hs) })
}

func appendCompactRecord(b []byte, through consensus.Index) []byte {
	return appendRecord(b, recCompact, func(b []byte) []byte {
		return binary.LittleEndian.AppendUint64(b, uint64(through))
	})
}

// recordStatus is what readRecord found at an offset.
type recordStatus int

const (
	recOK      recordStatus = iota
	recZero                 // an all-zero header: the unwritten part of a segment
	recBadHdr               // the header fails its CRC, or does not fit in what is left
	recBadLen               // an intact header with a length of 0 or over maxRecordLen
	recPastEOF              // an intact header whose payload runs past the end of the file
	recBadCRC               // an intact header, but the payload fails its CRC
)

// readRecord reads the record at buf[off:]. For recOK it returns the type
// and payload (a view of buf) and the offset after the record; for
// recBadCRC, the offset after where the record's header says it ends.
func readRecord(buf []byte, off int) (typ byte, payload []byte, next int, st recordStatus) {
	if len(buf)-off < recHeaderLen {
		if allZero(buf[off:]) {
			return 0, nil, off, recZero
		}
		return 0, nil, off, recBadHdr
	}
	h := buf[off : off+recHeaderLen]
	if allZero(h) {
		return 0, nil, off, recZero
	}
	if crc32.Checksum(h[:9], castagnoli) != binary.LittleEndian.Uint32(h[9:]) {
		return 0, nil, off, recBadHdr
	}
	n := binary.LittleEndian.Uint32(h[0:])
	if n == 0 || n > maxRecordLen {
		return 0, nil, off, recBadLen
	}
	if int64(n) > int64(len(buf)-off-recHeaderLen) {
		return 0, nil, off, recPastEOF
	}
	end := off + recHeaderLen + int(n)
	if crc32.Checksum(buf[off+recHeaderLen:end], castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
		return 0, nil, end, recBadCRC
	}
	return h[8], buf[off+recHeaderLen : end], end, recOK
}

var zeroChunk = make([]byte, 64<<10)

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroChunk))
		if string(b[:n]) != string(zeroChunk[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// lastNonZero returns the index of the last non-zero byte of b, -1 if none.
func lastNonZero(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			return i
		}
	}
	return -1
}

var errShortPayload = errors.New("payload too short")

func decodeSegHeader(p []byte) (segHeader, error) {
	// The version first: another version's header has another length,
	// and the error must name the version, not the length.
	switch {
	case len(p) == 0:
		return segHeader{}, errShortPayload
	case p[0] == 1:
		return segHeader{}, fmt.Errorf("WAL format version 1, written by a development build of lockd before segment headers "+
			"chained each segment to the one before it; this lockd reads version %d only and cannot use this WAL: %w", walVersion, errUnknownVersion)
	case p[0] != walVersion:
		return segHeader{}, fmt.Errorf("WAL format version %d (written by a newer lockd?), this lockd reads version %d: %w", p[0], walVersion, errUnknownVersion)
	case len(p) != segHeaderLen:
		return segHeader{}, fmt.Errorf("segment header of %d bytes, want %d", len(p), segHeaderLen)
	}
	h := segHeader{
		seq:       binary.LittleEndian.Uint64(p[1:]),
		first:     consensus.Index(binary.LittleEndian.Uint64(p[9:])),
		last:      consensus.Index(binary.LittleEndian.Uint64(p[17:])),
		hs:        readHardState(p[25:]),
		lastTerm:  consensus.Term(binary.LittleEndian.Uint64(p[49:])),
		prevEnd:   int64(binary.LittleEndian.Uint64(p[57:])),
		prevChain: binary.LittleEndian.Uint32(p[65:]),
	}
	// The WAL writes 0, 0 (empty) or 1 <= first <= last. Anything else
	// would hand the node a log whose first index is past its last.
	if (h.first == 0) != (h.last == 0) || h.first > h.last {
		return segHeader{}, fmt.Errorf("segment header says the log was [%d, %d], which no log can be", h.first, h.last)
	}
	if h.last == 0 && h.lastTerm != 0 {
		return segHeader{}, fmt.Errorf("segment header says the log was an empty log whose last entry had term %d, which no log can be", h.lastTerm)
	}
	return h, nil
}

// walEntry is one entry as found in a record: where it is, and its index
// and term (replay needs no more than that of entries it does not return).
type walEntry struct {
	index consensus.Index
	term  consensus.Term
	off   int // offset in the payload
	n     int // encoded length
}

// decodeEntriesRecord parses an entries record's payload without copying
// any entry data. It checks the framing only; decodeWALEntryData checks
// the entries.
func decodeEntriesRecord(p []byte, ents []walEntry) (hs *consensus.HardState, _ []walEntry, err error) {
	if len(p) < 1 {
		return nil, ents, errShortPayload
	}
	off := 1
	switch p[0] {
	case 0:
	case 1:
		if len(p) < 1+hardStateLen {
			return nil, ents, errShortPayload
		}
		h := readHardState(p[1:])
		hs = &h
		off += hardStateLen
	default:
		return nil, ents, fmt.Errorf("hard-state flag %d is neither 0 nor 1", p[0])
	}
	if len(p)-off < 4 {
		return nil, ents, errShortPayload
	}
	count := int(binary.LittleEndian.Uint32(p[off:]))
	off += 4
	if count == 0 && hs == nil {
		return nil, ents, errors.New("entries record with neither entries nor hard state")
	}
	// Each entry takes at least entryFixedLen bytes: a damaged count
	// cannot make this loop longer than the payload justifies.
	if count > (len(p)-off)/entryFixedLen {
		return nil, ents, fmt.Errorf("record claims %d entries in %d bytes", count, len(p)-off)
	}
	for i := 0; i < count; i++ {
		if len(p)-off < entryFixedLen {
			return nil, ents, errShortPayload
		}
		dl := int(binary.LittleEndian.Uint32(p[off+29:]))
		if dl > len(p)-off-entryFixedLen {
			return nil, ents, fmt.Errorf("entry %d of the record claims %d data bytes, past the record's end", i, dl)
		}
		e := walEntry{
			index: consensus.Index(binary.LittleEndian.Uint64(p[off:])),
			term:  consensus.Term(binary.LittleEndian.Uint64(p[off+8:])),
			off:   off, n: entryFixedLen + dl,
		}
		if i > 0 && e.index != ents[len(ents)-1].index+1 {
			return nil, ents, fmt.Errorf("entry %d follows entry %d in one record", e.index, ents[len(ents)-1].index)
		}
		ents = append(ents, e)
		off += e.n
	}
	if off != len(p) {
		return nil, ents, fmt.Errorf("%d bytes after the last entry of the record", len(p)-off)
	}
	return hs, ents, nil
}

// decodeWALEntryData decodes one encoded entry and verifies its checksum.
// With copyData the entry's Data is a copy (b is a read buffer); without,
// a view of b, for checking only. A failure is a *CorruptError without
// Path.
func decodeWALEntryData(b []byte, want consensus.Index, copyData bool) (consensus.Entry, error) {
	if len(b) < entryFixedLen {
		return consensus.Entry{}, &CorruptError{Index: want, What: fmt.Sprintf("entry of %d bytes is too short", len(b))}
	}
	dl := int(binary.LittleEndian.Uint32(b[29:]))
	if dl != len(b)-entryFixedLen {
		return consensus.Entry{}, &CorruptError{Index: want, What: fmt.Sprintf("entry claims %d data bytes in %d", dl, len(b)-entryFixedLen)}
	}
	e := consensus.Entry{
		Index:    consensus.Index(binary.LittleEndian.Uint64(b[0:])),
		Term:     consensus.Term(binary.LittleEndian.Uint64(b[8:])),
		Type:     consensus.EntryType(b[16]),
		Time:     int64(binary.LittleEndian.Uint64(b[17:])),
		Checksum: binary.LittleEndian.Uint32(b[25:]),
	}
	switch {
	case dl == 0:
	case copyData:
		e.Data = append([]byte(nil), b[entryFixedLen:]...)
	default:
		e.Data = b[entryFixedLen:]
	}
	if e.Index != want {
		return consensus.Entry{}, &CorruptError{Index: want, What: fmt.Sprintf("entry found where entry %d belongs says it is entry %d", want, e.Index)}
	}
	if err := e.Verify(); err != nil {
		return consensus.Entry{}, &CorruptError{Index: want, What: "entry checksum mismatch", Err: err}
	}
	return e, nil
}
