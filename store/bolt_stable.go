package store

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/lockd/lockd/consensus"
)

// Identity names the cluster a data dir belongs to and this member's id in
// it. It is written once, when the member first joins, and checked at
// every start so that a data dir is never run as another member.
type Identity struct {
	ClusterID string
	NodeID    consensus.NodeID
}

func (id Identity) valid() error {
	if id.ClusterID == "" {
		return fmt.Errorf("cluster id must not be empty")
	}
	if id.NodeID == consensus.None {
		return fmt.Errorf("node id must not be 0")
	}
	return nil
}

// HardState implements consensus.StableStore: the stored state, zero if
// none was ever stored.
func (s *Store) HardState() (consensus.HardState, error) {
	if s.wal != nil {
		return s.wal.hardState()
	}
	var hs consensus.HardState
	err := s.view(func(tx *bolt.Tx) (err error) {
		hs, err = s.readHardState(tx)
		return err
	})
	return hs, err
}

func (s *Store) readHardState(tx *bolt.Tx) (consensus.HardState, error) {
	v := tx.Bucket(bucketStable).Get(keyHardState)
	if v == nil {
		return consensus.HardState{}, nil
	}
	var rec hardStateRecord
	if err := openRecord(s.h, v, &rec); err != nil {
		return consensus.HardState{}, &CorruptError{Path: s.path, What: "hard state (term, vote, commit) record", Err: err}
	}
	if rec.Version != recordVersion {
		return consensus.HardState{}, &CorruptError{Path: s.path, What: fmt.Sprintf("hard state record version %d", rec.Version), Err: errUnknownVersion}
	}
	return consensus.HardState{Term: consensus.Term(rec.Term), Vote: consensus.NodeID(rec.Vote), Commit: consensus.Index(rec.Commit)}, nil
}

// Identity returns the stored identity; ok is false if none was set.
func (s *Store) Identity() (id Identity, ok bool, err error) {
	err = s.view(func(tx *bolt.Tx) error {
		id, ok, err = s.readIdentity(tx)
		return err
	})
	return id, ok, err
}

func (s *Store) readIdentity(tx *bolt.Tx) (Identity, bool, error) {
	v := tx.Bucket(bucketStable).Get(keyIdentity)
	if v == nil {
		return Identity{}, false, nil
	}
	var rec identityRecord
	if err := openRecord(s.h, v, &rec); err != nil {
		return Identity{}, false, &CorruptError{Path: s.path, What: "cluster identity record", Err: err}
	}
	if rec.Version != recordVersion {
		return Identity{}, false, &CorruptError{Path: s.path, What: fmt.Sprintf("cluster identity record version %d", rec.Version), Err: errUnknownVersion}
	}
	id := Identity{ClusterID: rec.ClusterID, NodeID: consensus.NodeID(rec.NodeID)}
	if err := id.valid(); err != nil {
		return Identity{}, false, &CorruptError{Path: s.path, What: "cluster identity record", Err: err}
	}
	return id, true, nil
}

// SetIdentity stores the identity durably. Setting the identity already
// stored does nothing; setting a different one fails with an error
// wrapping ErrIdentityMismatch: a data dir never changes owner.
func (s *Store) SetIdentity(id Identity) error {
	if err := id.valid(); err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	val, err := sealRecord(s.h, &identityRecord{Version: recordVersion, ClusterID: id.ClusterID, NodeID: uint64(id.NodeID)})
	if err != nil {
		return fmt.Errorf("encoding identity: %w", err)
	}
	err = s.update(func(tx *bolt.Tx) error {
		old, ok, err := s.readIdentity(tx)
		if err != nil {
			return err
		}
		if ok && old == id {
			return errNoChange
		}
		if ok {
			return fmt.Errorf("%s holds cluster %q node %d, not cluster %q node %d: use this member's own data dir, or an empty one to join as a new member: %w",
				s.dir, old.ClusterID, old.NodeID, id.ClusterID, id.NodeID, ErrIdentityMismatch)
		}
		return tx.Bucket(bucketStable).Put(keyIdentity, val)
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("setting identity: %w", err)
	}
	return nil
}
