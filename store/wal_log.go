package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/lockd/lockd/consensus"
)

// maxKeptBuf is the largest encoding buffer kept between writes; a bigger
// batch's buffer is dropped after its write.
const maxKeptBuf = 4 << 20

func (w *wal) bounds() (first, last consensus.Index, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, 0, fmt.Errorf("%s: %w", w.dir, ErrClosed)
	}
	return w.idx.first, w.idx.last, nil
}

func (w *wal) hardState() (consensus.HardState, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return consensus.HardState{}, fmt.Errorf("%s: %w", w.dir, ErrClosed)
	}
	return w.hs, nil
}

// entries reads [lo, hi) with pread from the segments, decoding and
// verifying every entry; each entry's Data is its own copy.
func (w *wal) entries(lo, hi consensus.Index) ([]consensus.Entry, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, fmt.Errorf("%s: %w", w.dir, ErrClosed)
	}
	if w.idx.last == 0 || lo < w.idx.first || hi > w.idx.last+1 {
		return nil, fmt.Errorf("entries [%d, %d) requested but %s holds [%d, %d]: %w", lo, hi, w.dir, w.idx.first, w.idx.last, ErrOutOfRange)
	}
	out := make([]consensus.Entry, 0, hi-lo)
	for i := lo; i < hi; {
		l0, ok := w.idx.loc(i)
		if !ok {
			return nil, &CorruptError{Path: w.dir, Index: i, What: "the WAL index has no place for the entry"}
		}
		// The run of entries in the same segment: within a segment a later
		// entry is always further on (it was written by the same or a
		// later write), so one read covers them.
		j, end := i, l0.off+int64(l0.n)
		for j+1 < hi {
			l, ok := w.idx.loc(j + 1)
			if !ok || l.seq != l0.seq {
				break
			}
			j, end = j+1, l.off+int64(l.n)
		}
		buf := make([]byte, end-l0.off)
		path := segPath(w.dir, l0.seq)
		if err := w.readAt(path, buf, l0.off); err != nil {
			return nil, err
		}
		for k := i; k <= j; k++ {
			l, _ := w.idx.loc(k)
			e, err := decodeWALEntryData(buf[l.off-l0.off:l.off-l0.off+int64(l.n)], k, true)
			if err != nil {
				var ce *CorruptError
				if errors.As(err, &ce) {
					ce.Path = path
				}
				return nil, err
			}
			out = append(out, e)
		}
		i = j + 1
	}
	return out, nil
}

// readAt fills buf from the segment at path, from off.
func (w *wal) readAt(path string, buf []byte, off int64) error {
	// Its own handle, also for the current segment: reads happen at
	// start-up only, and stay possible after a failed write.
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening WAL segment to read entries: %w", err)
	}
	defer f.Close()
	if _, err := f.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) {
			return &CorruptError{Path: path, What: fmt.Sprintf("segment ends before offset %d, where entries are", off+int64(len(buf)))}
		}
		return fmt.Errorf("reading WAL segment %s: %w", path, err)
	}
	return nil
}

// save writes a batch checked by checkBatch and/or the hard state as one
// record, with one write and one fdatasync.
func (w *wal) save(hs *consensus.HardState, ents []consensus.Entry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if len(ents) > 0 {
		start := ents[0].Index
		err := checkPlacement(start, ents[0].Term, w.idx.first, w.idx.last, func() (consensus.Term, error) {
			l, ok := w.idx.loc(start - 1)
			if !ok {
				return 0, &CorruptError{Path: w.dir, Index: start - 1, What: "the WAL index has no place for the entry"}
			}
			return l.term, nil
		})
		if err != nil {
			return err
		}
	}
	var rec []byte
	offs := w.offs[:0]
	if len(ents) > 0 {
		rec, offs = appendEntriesRecord(w.buf[:0], hs, ents, offs)
	} else {
		rec = appendHardStateRecord(w.buf[:0], *hs)
	}
	w.offs = offs
	defer func() {
		if cap(rec) <= maxKeptBuf {
			w.buf = rec[:0]
		} else {
			w.buf = nil
		}
	}()
	if len(rec)-recHeaderLen > maxRecordLen {
		return fmt.Errorf("a record of %d bytes is over the WAL's limit of %d: store the entries in smaller batches", len(rec), maxRecordLen)
	}
	at, err := w.write(rec)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		seq := w.segs[len(w.segs)-1]
		locs := w.locs[:0]
		for i := range ents {
			locs = append(locs, entryLoc{seq: seq, off: at + int64(offs[i]), n: uint32(entryFixedLen + len(ents[i].Data)), term: ents[i].Term})
		}
		w.idx.appendBatch(ents[0].Index, locs)
		w.locs = locs[:0]
	}
	if hs != nil {
		w.hs = *hs
	}
	return nil
}

// write appends rec to the current segment (or starts the next one with
// it) and syncs; it returns rec's offset. Any failure leaves the WAL
// failed.
func (w *wal) write(rec []byte) (int64, error) {
	if w.off+int64(len(rec)) > w.curSize {
		at, err := w.roll(rec)
		if err != nil {
			w.failed = err
			return 0, err
		}
		w.maybePrepare()
		return at, nil
	}
	at := w.off
	if _, err := w.cur.WriteAt(rec, at); err != nil {
		w.failed = fmt.Errorf("writing WAL segment %s: %w", w.cur.Name(), err)
		return 0, w.failed
	}
	if err := fdatasync(w.cur); err != nil {
		w.failed = fmt.Errorf("syncing WAL segment %s: %w", w.cur.Name(), err)
		return 0, w.failed
	}
	w.off += int64(len(rec))
	w.chain = chainRecord(w.chain, rec)
	w.maybePrepare()
	return at, nil
}

// deletePrefix makes the new first index durable, then deletes the
// segments that hold only entries before it (never the current one).
func (w *wal) deletePrefix(index consensus.Index) error {
	start := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if w.idx.last == 0 || index < w.idx.first {
		return nil
	}
	rec := appendCompactRecord(w.buf[:0], index)
	w.buf = rec[:0]
	if _, err := w.write(rec); err != nil {
		return err
	}
	w.idx.compact(index)
	// Entries lie in segments in index order, so every segment before the
	// first entry's holds nothing live. Each segment's header carries the
	// hard state and bounds, so the records lost with it are not needed.
	keepFrom := w.segs[len(w.segs)-1]
	if l, ok := w.idx.loc(w.idx.first); ok {
		keepFrom = l.seq
	}
	removed := 0
	// Oldest first, and the dir synced after each delete: the unlinks of
	// one dir reach the disk in no promised order otherwise, and a power
	// loss that kept an older segment but lost a newer one would leave a
	// gap in the numbering, which Open refuses. A crash part way through
	// leaves the newer segments, without a gap.
	for len(w.segs) > 1 && w.segs[0] < keepFrom {
		path := segPath(w.dir, w.segs[0])
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			// Harmless: replay reads it and the compaction after it. The
			// next compaction tries again.
			w.logger.Warn("deleting a compacted WAL segment failed; it is tried again at the next compaction", "segment", path, "error", err)
			break
		}
		w.segs = w.segs[1:]
		removed++
		if err := w.syncDir(w.dir); err != nil {
			// The next delete could overtake this one on disk: stop here
			// and let the next compaction go on.
			w.logger.Warn("syncing the WAL dir after deleting a segment failed; the rest are deleted at the next compaction", "segment", path, "error", err)
			break
		}
	}
	w.logger.Debug("log prefix deleted", "through", index, "segments_deleted", removed, "segments", len(w.segs), "took", time.Since(start))
	return nil
}

// verify replays every segment again and checks that it finds what the
// WAL holds in memory.
func (w *wal) verify() (summary, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return summary{}, fmt.Errorf("%s: %w", w.dir, ErrClosed)
	}
	r, err := replayWAL(w.dir, w.segs, true)
	if err != nil {
		return summary{}, err
	}
	if r.idx.first != w.idx.first || r.idx.last != w.idx.last || r.hs != w.hs {
		return summary{}, &CorruptError{Path: w.dir, What: fmt.Sprintf("the segments hold log [%d, %d] and hard state %+v, but this process wrote [%d, %d] and %+v",
			r.idx.first, r.idx.last, r.hs, w.idx.first, w.idx.last, w.hs)}
	}
	return summary{first: w.idx.first, last: w.idx.last, hs: w.hs}, nil
}

// segmentFiles lists the WAL's segment files, oldest first (for tests
// and the start-up log line).
func (w *wal) segmentFiles() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, len(w.segs))
	for i, s := range w.segs {
		out[i] = filepath.Base(segPath(w.dir, s))
	}
	return out
}
