package store

import (
	"fmt"
	"runtime/debug"

	"github.com/hashicorp/go-msgpack/v2/codec"
	bolt "go.etcd.io/bbolt"

	"github.com/lockd/lockd/consensus"
)

// summary is what a verification found, for the start-up log line.
type summary struct {
	first, last consensus.Index
	hs          consensus.HardState
}

// Verify reads everything stored and checks it: every log key is an
// 8-byte index, the indexes have no gap, every entry decodes, matches its
// key and its checksum, terms never decrease along the log, and the
// stable records decode with intact checksums. The first failure is
// returned as a *CorruptError saying what, where, and how to recover.
// Open runs it; it may run at any time (it reads one consistent view).
//
// With the WAL, the bbolt file holds no log and no hard state, and the
// WAL's segments are replayed again (as at Open) and must hold what the
// store holds in memory.
func (s *Store) Verify() error {
	_, err := s.verify()
	if err != nil || s.wal == nil {
		return err
	}
	_, err = s.wal.verify()
	return err
}

func (s *Store) verify() (sum summary, err error) {
	err = s.view(func(tx *bolt.Tx) (err error) {
		// bbolt panics on some malformed pages, and a corrupt offset in a
		// page makes it read outside the mapping. Both are corruption to
		// report here, not a reason to crash: SetPanicOnFault turns a fault
		// in this goroutine into a panic that can be recovered.
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if r := recover(); r != nil {
				err = &CorruptError{Path: s.path, What: "bbolt failed reading the file", Err: panicError(r)}
			}
		}()
		logB, stable, meta := tx.Bucket(bucketLog), tx.Bucket(bucketStable), tx.Bucket(bucketMeta)
		if logB == nil && stable == nil && meta == nil {
			return nil // created, but the process died before the buckets were
		}
		if logB == nil || stable == nil || meta == nil {
			return &CorruptError{Path: s.path, What: fmt.Sprintf("a bucket is missing (log %v, stable %v, meta %v)", logB != nil, stable != nil, meta != nil)}
		}
		backend, _, err := s.dirBackend(meta)
		if err != nil {
			return err
		}
		if backend == RaftLogWAL {
			if k, _ := logB.Cursor().First(); k != nil || stable.Get(keyHardState) != nil {
				return &CorruptError{Path: s.path, What: "the raft log is in the WAL, yet this file holds log entries or a hard state too"}
			}
		}
		if sum.hs, err = s.readHardState(tx); err != nil {
			return err
		}
		if _, _, err = s.readIdentity(tx); err != nil {
			return err
		}
		sum.first, sum.last, err = s.verifyLog(tx)
		return err
	})
	return sum, err
}

// verifyLog scans the log bucket in key order.
func (s *Store) verifyLog(tx *bolt.Tx) (first, last consensus.Index, err error) {
	dec := codec.NewDecoderBytes(nil, s.h)
	var prev consensus.Entry
	c := tx.Bucket(bucketLog).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		want := prev.Index + 1
		if prev.Index == 0 {
			// The log may start anywhere: compaction removes its front.
			idx, ok := keyIndex(k)
			if !ok {
				return 0, 0, badKeyError(s.path, k)
			}
			want, first = idx, idx
		}
		e, err := s.decodeAt(dec, want, k, v)
		if err != nil {
			return 0, 0, err
		}
		if e.Term < prev.Term {
			return 0, 0, &CorruptError{Path: s.path, Index: e.Index,
				What: fmt.Sprintf("entry %d has term %d, below the term %d of entry %d before it", e.Index, e.Term, prev.Term, prev.Index)}
		}
		prev = e
	}
	return first, prev.Index, nil
}
