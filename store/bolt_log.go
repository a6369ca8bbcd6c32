package store

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	bolt "go.etcd.io/bbolt"

	"github.com/lockd/lockd/consensus"
)

// ErrNotContiguous is wrapped by the error for a batch that would leave a
// gap, overwrite compacted entries, or is not contiguous itself.
var ErrNotContiguous = errors.New("batch would break the log's contiguity")

// appendFillPercent is how full bbolt packs a log page before splitting.
// Every write lands at the right edge of the key space (a batch first
// deletes everything after itself), so the left half of a split is never
// written again: filling it completely halves the pages per entry compared
// with bbolt's default of 0.5, with no cost on later inserts.
const appendFillPercent = 1.0

// errNoChange rolls back a write transaction that found nothing to do, so
// that it does not pay bbolt's two fsyncs for an empty commit.
var errNoChange = errors.New("no change")

// FirstIndex implements consensus.LogStore: the first stored index, 0 if
// the log is empty.
func (s *Store) FirstIndex() (consensus.Index, error) {
	if s.wal != nil {
		first, _, err := s.wal.bounds()
		return first, err
	}
	var first consensus.Index
	err := s.view(func(tx *bolt.Tx) (err error) {
		first, _, err = s.bounds(tx)
		return err
	})
	return first, err
}

// LastIndex implements consensus.LogStore: the last stored index, 0 if the
// log is empty.
func (s *Store) LastIndex() (consensus.Index, error) {
	if s.wal != nil {
		_, last, err := s.wal.bounds()
		return last, err
	}
	var last consensus.Index
	err := s.view(func(tx *bolt.Tx) (err error) {
		_, last, err = s.bounds(tx)
		return err
	})
	return last, err
}

// bounds returns the first and last stored index, 0 and 0 when empty.
func (s *Store) bounds(tx *bolt.Tx) (first, last consensus.Index, err error) {
	c := tx.Bucket(bucketLog).Cursor()
	k, _ := c.First()
	if k == nil {
		return 0, 0, nil
	}
	first, ok := keyIndex(k)
	if !ok {
		return 0, 0, badKeyError(s.path, k)
	}
	k, _ = c.Last()
	last, ok = keyIndex(k)
	if !ok {
		return 0, 0, badKeyError(s.path, k)
	}
	return first, last, nil
}

// Entries implements consensus.LogStore: entries [lo, hi), each decoded,
// matched to its key and its checksum verified. A range not wholly stored
// is an error wrapping ErrOutOfRange; bad data a *CorruptError (wrapping
// the *consensus.EntryCorruptError when the checksum fails).
func (s *Store) Entries(lo, hi consensus.Index) ([]consensus.Entry, error) {
	if lo > hi {
		return nil, fmt.Errorf("entries [%d, %d): lo is above hi", lo, hi)
	}
	if lo == hi {
		return nil, nil
	}
	if s.wal != nil {
		return s.wal.entries(lo, hi)
	}
	var out []consensus.Entry
	err := s.view(func(tx *bolt.Tx) error {
		first, last, err := s.bounds(tx)
		if err != nil {
			return err
		}
		if last == 0 || lo < first || hi > last+1 {
			return fmt.Errorf("entries [%d, %d) requested but %s holds [%d, %d]: %w", lo, hi, s.path, first, last, ErrOutOfRange)
		}
		out = make([]consensus.Entry, 0, hi-lo)
		dec := codec.NewDecoderBytes(nil, s.h)
		c := tx.Bucket(bucketLog).Cursor()
		want := lo
		for k, v := c.Seek(indexKey(lo)); want < hi; k, v = c.Next() {
			e, err := s.decodeAt(dec, want, k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
			want++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodeAt decodes the pair a cursor found where entry want belongs.
func (s *Store) decodeAt(dec *codec.Decoder, want consensus.Index, k, v []byte) (consensus.Entry, error) {
	if k == nil {
		return consensus.Entry{}, &CorruptError{Path: s.path, Index: want,
			What: fmt.Sprintf("gap in the log: entry %d is missing and nothing is stored after it", want)}
	}
	if idx, ok := keyIndex(k); ok && idx != want {
		return consensus.Entry{}, &CorruptError{Path: s.path, Index: want,
			What: fmt.Sprintf("gap in the log: entry %d is missing (the next stored entry is %d)", want, idx)}
	}
	e, err := decodeEntry(dec, k, v)
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Path = s.path
		}
		return consensus.Entry{}, err
	}
	return e, nil
}

// StoreEntries implements consensus.LogStore: the batch replaces every
// stored entry from ents[0].Index on, in one transaction (bbolt) or one
// record (WAL), durable on return.
func (s *Store) StoreEntries(ents []consensus.Entry) error { return s.save(nil, ents) }

// Save implements consensus.BatchStore: the entries (as StoreEntries) and
// the hard state (if hs is not nil) in one transaction (bbolt) or one
// record, one write and one fdatasync (WAL), durable on return.
func (s *Store) Save(hs *consensus.HardState, ents []consensus.Entry) error {
	return s.save(hs, ents)
}

// SetHardState implements consensus.StableStore.
func (s *Store) SetHardState(hs consensus.HardState) error { return s.save(&hs, nil) }

func (s *Store) save(hs *consensus.HardState, ents []consensus.Entry) error {
	if hs == nil && len(ents) == 0 {
		return nil
	}
	if err := checkBatch(ents); err != nil {
		return fmt.Errorf("%s: refusing to store %s: %w", s.logPath(), describeWrite(hs, ents), err)
	}
	if s.wal != nil {
		if err := s.wal.save(hs, ents); err != nil {
			return fmt.Errorf("%s: storing %s: %w", s.logPath(), describeWrite(hs, ents), err)
		}
		return nil
	}
	var hsVal []byte
	if hs != nil {
		var err error
		hsVal, err = sealRecord(s.h, &hardStateRecord{Version: recordVersion,
			Term: uint64(hs.Term), Vote: uint64(hs.Vote), Commit: uint64(hs.Commit)})
		if err != nil {
			return fmt.Errorf("encoding hard state: %w", err)
		}
	}
	err := s.update(func(tx *bolt.Tx) error {
		if len(ents) > 0 {
			if err := s.putEntries(tx, ents); err != nil {
				return err
			}
		}
		if hsVal != nil {
			return tx.Bucket(bucketStable).Put(keyHardState, hsVal)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: storing %s: %w", s.path, describeWrite(hs, ents), err)
	}
	return nil
}

// logPath is where the log is: the WAL dir or the bbolt file.
func (s *Store) logPath() string {
	if s.wal != nil {
		return s.wal.dir
	}
	return s.path
}

func describeWrite(hs *consensus.HardState, ents []consensus.Entry) string {
	var ds string
	if len(ents) > 0 {
		ds = fmt.Sprintf("entries %d..%d", ents[0].Index, ents[len(ents)-1].Index)
	}
	if hs == nil {
		return ds
	}
	h := fmt.Sprintf("hard state (term %d, vote %d, commit %d)", hs.Term, hs.Vote, hs.Commit)
	if ds == "" {
		return h
	}
	return ds + " and " + h
}

// checkBatch checks what can be checked without the store: indexes
// contiguous and non-zero, terms not decreasing, checksums intact (a
// corrupt entry must never become durable).
func checkBatch(ents []consensus.Entry) error {
	for i := range ents {
		e := &ents[i]
		if e.Index == 0 {
			return fmt.Errorf("entry at position %d has index 0, which is never a log index", i)
		}
		if i > 0 {
			if prev := &ents[i-1]; e.Index != prev.Index+1 {
				return fmt.Errorf("entry %d follows entry %d in the batch: %w", e.Index, prev.Index, ErrNotContiguous)
			} else if e.Term < prev.Term {
				return fmt.Errorf("entry %d has term %d, below the term %d of entry %d before it", e.Index, e.Term, prev.Term, prev.Index)
			}
		}
		if err := e.Verify(); err != nil {
			return fmt.Errorf("entry fails its checksum before being stored (corrupted in memory, or never sealed): %w", err)
		}
	}
	return nil
}

// checkPlacement checks where a batch goes in a log [first, last] (empty
// if last is 0): it must start inside the log or right after its end
// (anywhere if the log is empty), and its first term must not be below
// the term of the stored entry before it, which prevTerm returns (called
// only when that entry is in the log).
func checkPlacement(start consensus.Index, term consensus.Term, first, last consensus.Index, prevTerm func() (consensus.Term, error)) error {
	if last == 0 {
		return nil
	}
	if start < first {
		return fmt.Errorf("batch starts at entry %d, before the first stored entry %d (the entries before it were compacted): %w",
			start, first, ErrNotContiguous)
	}
	if start > last+1 {
		return fmt.Errorf("batch starts at entry %d but the log ends at %d, which would leave a gap: %w",
			start, last, ErrNotContiguous)
	}
	if start > first {
		pt, err := prevTerm()
		if err != nil {
			return err
		}
		if pt > term {
			return fmt.Errorf("entry %d has term %d, below the term %d of stored entry %d before it", start, term, pt, start-1)
		}
	}
	return nil
}

// putEntries writes a checked batch inside tx: it must start inside the
// log or right after its end (anywhere if the log is empty), and every
// stored entry after the batch's end is deleted.
func (s *Store) putEntries(tx *bolt.Tx, ents []consensus.Entry) error {
	b := tx.Bucket(bucketLog)
	first, last, err := s.bounds(tx)
	if err != nil {
		return err
	}
	start, end := ents[0].Index, ents[len(ents)-1].Index
	err = checkPlacement(start, ents[0].Term, first, last, func() (consensus.Term, error) {
		prev, err := s.decodeAt(codec.NewDecoderBytes(nil, s.h), start-1, indexKey(start-1), b.Get(indexKey(start-1)))
		return prev.Term, err
	})
	if err != nil {
		return err
	}
	if last != 0 {
		if end < last {
			// Collected first: deleting under a moving cursor skips keys.
			var stale [][]byte
			c := b.Cursor()
			for k, _ := c.Seek(indexKey(end + 1)); k != nil; k, _ = c.Next() {
				stale = append(stale, bytes.Clone(k))
			}
			for _, k := range stale {
				if err := b.Delete(k); err != nil {
					return fmt.Errorf("deleting stale entry %s: %w", shortHex(k), err)
				}
			}
		}
	}
	b.FillPercent = s.fill
	for i := range ents {
		v, err := encodeEntry(s.enc, &ents[i])
		if err != nil {
			return err
		}
		if err := b.Put(indexKey(ents[i].Index), v); err != nil {
			return fmt.Errorf("putting entry %d: %w", ents[i].Index, err)
		}
	}
	return nil
}

// DeletePrefix implements consensus.LogStore: entries up to and including
// index are removed (compaction after a snapshot), in one transaction
// (bbolt), or by a durable record of the new first index after which the
// WAL deletes the segments that hold nothing newer. An index past the end
// empties the log.
func (s *Store) DeletePrefix(index consensus.Index) error {
	if s.wal != nil {
		if err := s.wal.deletePrefix(index); err != nil {
			return fmt.Errorf("%s: deleting log prefix through %d: %w", s.logPath(), index, err)
		}
		return nil
	}
	start := time.Now()
	deleted := 0
	err := s.update(func(tx *bolt.Tx) error {
		first, last, err := s.bounds(tx)
		if err != nil {
			return err
		}
		if last == 0 || index < first {
			return errNoChange
		}
		// The log is contiguous, so its keys are known: each delete seeks
		// straight to its key. (Re-reading the first key after each delete
		// instead walks over every leaf already emptied: quadratic.)
		b := tx.Bucket(bucketLog)
		for i := first; i <= min(index, last); i++ {
			if err := b.Delete(indexKey(i)); err != nil {
				return fmt.Errorf("deleting entry %d: %w", i, err)
			}
			deleted++
		}
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: deleting log prefix through %d: %w", s.path, index, err)
	}
	s.logger.Debug("log prefix deleted", "through", index, "entries", deleted, "took", time.Since(start))
	return nil
}
