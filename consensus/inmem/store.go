package inmem

import (
	"bytes"
	"fmt"
	"slices"
	"sync"

	"github.com/lockd/lockd/consensus"
)

var (
	_ consensus.LogStore    = (*Store)(nil)
	_ consensus.StableStore = (*Store)(nil)
	_ consensus.BatchStore  = (*Store)(nil)
)

// Store is an in-memory log store, stable store and batch store in one.
// It is safe for concurrent use.
type Store struct {
	mu sync.Mutex // protects everything below
	// base is the index before ents[0]: entries up to it were deleted by
	// DeletePrefix (or precede the first entry ever stored).
	base consensus.Index
	ents []consensus.Entry
	hs   consensus.HardState
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{} }

// FirstIndex implements consensus.LogStore.
func (s *Store) FirstIndex() (consensus.Index, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ents) == 0 {
		return 0, nil
	}
	return s.base + 1, nil
}

// LastIndex implements consensus.LogStore.
func (s *Store) LastIndex() (consensus.Index, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastIndexLocked(), nil
}

func (s *Store) lastIndexLocked() consensus.Index {
	if len(s.ents) == 0 {
		return 0
	}
	return s.base + consensus.Index(len(s.ents))
}

// Entries implements consensus.LogStore: entries [lo, hi), copied and
// verified.
func (s *Store) Entries(lo, hi consensus.Index) ([]consensus.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lo > hi {
		return nil, fmt.Errorf("inmem: entries [%d, %d): lo is above hi", lo, hi)
	}
	if lo == hi {
		return nil, nil
	}
	if len(s.ents) == 0 || lo <= s.base || hi > s.lastIndexLocked()+1 {
		return nil, fmt.Errorf("inmem: entries [%d, %d) outside the stored log (%d, %d]", lo, hi, s.base, s.lastIndexLocked())
	}
	out := make([]consensus.Entry, 0, hi-lo)
	for _, e := range s.ents[lo-s.base-1 : hi-s.base-1] {
		if err := e.Verify(); err != nil {
			return nil, err
		}
		e.Data = bytes.Clone(e.Data)
		out = append(out, e)
	}
	return out, nil
}

// StoreEntries implements consensus.LogStore.
func (s *Store) StoreEntries(ents []consensus.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkBatchLocked(ents); err != nil {
		return err
	}
	s.storeLocked(ents)
	return nil
}

// checkBatchLocked enforces invariant 2 before anything changes, so a
// refused batch leaves the store as it was.
func (s *Store) checkBatchLocked(ents []consensus.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	for i := 1; i < len(ents); i++ {
		if ents[i].Index != ents[i-1].Index+1 {
			return fmt.Errorf("inmem: batch is not contiguous: entry %d follows %d", ents[i].Index, ents[i-1].Index)
		}
	}
	first := ents[0].Index
	if len(s.ents) > 0 && first <= s.base {
		return fmt.Errorf("inmem: entry %d is at or before the deleted prefix ending at %d", first, s.base)
	}
	// An empty store takes any start: the log may resume after a snapshot.
	if len(s.ents) > 0 && first > s.lastIndexLocked()+1 {
		return fmt.Errorf("inmem: entry %d leaves a gap after the last stored entry %d", first, s.lastIndexLocked())
	}
	return nil
}

func (s *Store) storeLocked(ents []consensus.Entry) {
	if len(ents) == 0 {
		return
	}
	if len(s.ents) == 0 {
		s.base = ents[0].Index - 1
	}
	s.ents = s.ents[:ents[0].Index-s.base-1]
	for _, e := range ents {
		e.Data = bytes.Clone(e.Data)
		s.ents = append(s.ents, e)
	}
}

// DeletePrefix implements consensus.LogStore.
func (s *Store) DeletePrefix(index consensus.Index) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.base {
		return nil
	}
	n := min(int(index-s.base), len(s.ents))
	s.ents = slices.Clone(s.ents[n:])
	s.base = index
	return nil
}

// HardState implements consensus.StableStore.
func (s *Store) HardState() (consensus.HardState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hs, nil
}

// SetHardState implements consensus.StableStore.
func (s *Store) SetHardState(hs consensus.HardState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hs = hs
	return nil
}

// Save implements consensus.BatchStore: entries and hard state change
// together or not at all.
func (s *Store) Save(hs *consensus.HardState, ents []consensus.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkBatchLocked(ents); err != nil {
		return err
	}
	s.storeLocked(ents)
	if hs != nil {
		s.hs = *hs
	}
	return nil
}
