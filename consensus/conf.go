package consensus

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Membership changes, one server at a time (dissertation §4.1).
//
// A configuration travels in the log as an EntryConfig whose data holds
// the whole new configuration (not only the change), so that a node that
// reads one entry knows the full membership: names and peer addresses
// included, which the server needs to dial new members. Every node uses
// the latest configuration in its log, committed or not, from the moment
// the entry is appended (§4.1); a follower whose log is truncated goes
// back to the configuration before the removed entries.
//
// The leader refuses a change while another is uncommitted (any two
// majorities of configurations one server apart overlap, so one change
// at a time never lets two leaders count disjoint majorities), and until
// it has committed an entry of its own term: otherwise a configuration
// entry left uncommitted by an earlier leader could still be overwritten
// while the new one already counts majorities of the configuration built
// on a different branch (the bug Ongaro describes on raft-dev, 2015;
// TestConfChangeWaitsForCommitInTerm).

// ConfChangeType says what a ConfChange does.
type ConfChangeType uint8

const (
	// ConfAddLearner adds a non-voting member that receives the log. With
	// ConfChange.AutoPromote the leader promotes it once it has caught up
	// (within Config.PromoteLag entries).
	ConfAddLearner ConfChangeType = iota + 1
	// ConfPromote makes a learner a voter.
	ConfPromote
	// ConfRemove removes a member (learner or voter, the leader included:
	// it keeps leading until the change commits, then hands over).
	ConfRemove
)

func (t ConfChangeType) String() string {
	switch t {
	case ConfAddLearner:
		return "add-learner"
	case ConfPromote:
		return "promote"
	case ConfRemove:
		return "remove"
	}
	return fmt.Sprintf("ConfChangeType(%d)", uint8(t))
}

// ConfChange asks for one membership change.
type ConfChange struct {
	Type ConfChangeType `json:"type"`
	// ID names the member. For ConfAddLearner, 0 asks the leader to assign
	// the next id never used in this cluster (Configuration.NextID).
	ID NodeID `json:"id,omitempty"`
	// Name and Addr (ConfAddLearner) are the new member's name and peer
	// address; the core stores them for the driver and never reads them,
	// except to refuse a second member with the same name.
	Name string `json:"name,omitempty"`
	Addr string `json:"addr,omitempty"`
	// AutoPromote (ConfAddLearner): promote once caught up.
	AutoPromote bool `json:"auto_promote,omitempty"`
}

func (cc ConfChange) String() string {
	s := fmt.Sprintf("%s %d", cc.Type, cc.ID)
	if cc.Name != "" {
		s += " (" + cc.Name + ")"
	}
	return s
}

// ConfMember is one member of a configuration.
type ConfMember struct {
	ID      NodeID `json:"id"`
	Learner bool   `json:"learner,omitempty"`
	// AutoPromote: a learner the leader promotes once it has caught up.
	AutoPromote bool   `json:"auto_promote,omitempty"`
	Name        string `json:"name,omitempty"`
	Addr        string `json:"addr,omitempty"`
}

// Configuration is the cluster's membership: voters and learners, sorted
// by id. NextID is the smallest id never given to a member, so removed
// ids are never reused (a new node with an old id could hold a vote the
// old one cast, and break Election Safety).
type Configuration struct {
	Members []ConfMember `json:"members"`
	NextID  NodeID       `json:"next_id,omitempty"`
}

// Voters returns the voters' ids, sorted.
func (c Configuration) Voters() []NodeID { return c.ids(false) }

// Learners returns the learners' ids, sorted.
func (c Configuration) Learners() []NodeID { return c.ids(true) }

func (c Configuration) ids(learners bool) []NodeID {
	var ids []NodeID
	for _, m := range c.Members {
		if m.Learner == learners {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// Member returns the member with id.
func (c Configuration) Member(id NodeID) (ConfMember, bool) {
	i, ok := slices.BinarySearchFunc(c.Members, id, func(m ConfMember, id NodeID) int { return cmpID(m.ID, id) })
	if !ok {
		return ConfMember{}, false
	}
	return c.Members[i], true
}

// MemberByName returns the member called name.
func (c Configuration) MemberByName(name string) (ConfMember, bool) {
	for _, m := range c.Members {
		if m.Name == name {
			return m, true
		}
	}
	return ConfMember{}, false
}

// Clone returns a deep copy.
func (c Configuration) Clone() Configuration {
	return Configuration{Members: slices.Clone(c.Members), NextID: c.NextID}
}

// Equal reports whether c and o list the same members, alike, and the
// same next id.
func (c Configuration) Equal(o Configuration) bool {
	return c.NextID == o.NextID && slices.Equal(c.Members, o.Members)
}

func (c Configuration) String() string {
	parts := make([]string, len(c.Members))
	for i, m := range c.Members {
		parts[i] = fmt.Sprint(m.ID)
		if m.Name != "" {
			parts[i] += "=" + m.Name
		}
		if m.Learner {
			parts[i] += "(learner)"
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func cmpID(a, b NodeID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// nextID is the id an added member gets when none is asked for.
func (c Configuration) nextID() NodeID {
	next := max(c.NextID, 1)
	for _, m := range c.Members {
		next = max(next, m.ID+1)
	}
	return next
}

// Validate checks a configuration read from the log, a snapshot or a
// caller: ids non-zero, distinct and sorted, at least one voter.
func (c Configuration) Validate() error {
	voters := 0
	for i, m := range c.Members {
		if m.ID == None {
			return errors.New("configuration has a member with id 0")
		}
		if i > 0 && c.Members[i-1].ID >= m.ID {
			return fmt.Errorf("configuration members are not sorted by distinct id (%d after %d)", m.ID, c.Members[i-1].ID)
		}
		if !m.Learner {
			voters++
		}
	}
	if voters == 0 {
		return fmt.Errorf("configuration %v has no voter", c)
	}
	return nil
}

// NewConfiguration builds a configuration from voter and learner ids.
func NewConfiguration(voters, learners []NodeID) Configuration {
	var c Configuration
	for _, v := range voters {
		c.Members = append(c.Members, ConfMember{ID: v})
	}
	for _, l := range learners {
		c.Members = append(c.Members, ConfMember{ID: l, Learner: true})
	}
	slices.SortFunc(c.Members, func(a, b ConfMember) int { return cmpID(a.ID, b.ID) })
	return c
}

// confEntry is the data of an EntryConfig: the change (for logs and for
// the proposer) and the configuration it leads to.
type confEntry struct {
	Change ConfChange    `json:"change"`
	Config Configuration `json:"config"`
}

func encodeConfEntry(cc ConfChange, c Configuration) []byte {
	b, err := json.Marshal(confEntry{Change: cc, Config: c})
	if err != nil {
		panic(fmt.Sprintf("encoding a configuration entry: %v", err)) // plain structs: cannot fail
	}
	return b
}

// DecodeConfEntry reads the data of an EntryConfig.
func DecodeConfEntry(data []byte) (ConfChange, Configuration, error) {
	var ce confEntry
	if err := json.Unmarshal(data, &ce); err != nil {
		return ConfChange{}, Configuration{}, fmt.Errorf("configuration entry does not decode: %w", err)
	}
	if err := ce.Config.Validate(); err != nil {
		return ConfChange{}, Configuration{}, err
	}
	return ce.Change, ce.Config, nil
}

// apply returns the configuration after cc, or why cc is not possible.
// It checks only the membership itself; the leader's other guard rails
// (one change at a time, quorum) are in Raft.ProposeConfChange.
func (c Configuration) apply(cc ConfChange) (ConfChange, Configuration, error) {
	next := c.Clone()
	switch cc.Type {
	case ConfAddLearner:
		if cc.ID == None {
			cc.ID = c.nextID()
		}
		if _, ok := c.Member(cc.ID); ok {
			return cc, c, fmt.Errorf("%w: node %d is already a member", ErrMemberExists, cc.ID)
		}
		if cc.ID < c.NextID {
			return cc, c, fmt.Errorf("%w: id %d was used by a member before; ids are never reused (next free id %d)", ErrMemberExists, cc.ID, c.nextID())
		}
		if cc.Name != "" {
			if m, ok := c.MemberByName(cc.Name); ok {
				return cc, c, fmt.Errorf("%w: name %q is taken by node %d", ErrMemberExists, cc.Name, m.ID)
			}
		}
		next.Members = append(next.Members, ConfMember{ID: cc.ID, Learner: true, AutoPromote: cc.AutoPromote, Name: cc.Name, Addr: cc.Addr})
		slices.SortFunc(next.Members, func(a, b ConfMember) int { return cmpID(a.ID, b.ID) })
		next.NextID = max(next.nextID(), cc.ID+1)
	case ConfPromote:
		m, ok := c.Member(cc.ID)
		if !ok {
			return cc, c, fmt.Errorf("%w: cannot promote node %d, it is not a member", ErrUnknownNode, cc.ID)
		}
		if !m.Learner {
			return cc, c, fmt.Errorf("%w: node %d is already a voter", ErrNotLearner, cc.ID)
		}
		i, _ := slices.BinarySearchFunc(next.Members, cc.ID, func(m ConfMember, id NodeID) int { return cmpID(m.ID, id) })
		next.Members[i].Learner, next.Members[i].AutoPromote = false, false
	case ConfRemove:
		m, ok := c.Member(cc.ID)
		if !ok {
			return cc, c, fmt.Errorf("%w: cannot remove node %d, it is not a member", ErrUnknownNode, cc.ID)
		}
		if !m.Learner && len(c.Voters()) == 1 {
			return cc, c, fmt.Errorf("%w: node %d is the only voter; add and promote another member first", ErrRemoveLastVoter, cc.ID)
		}
		next.NextID = max(next.nextID(), cc.ID+1) // before the member goes: its id stays used
		next.Members = slices.DeleteFunc(next.Members, func(m ConfMember) bool { return m.ID == cc.ID })
	default:
		return cc, c, fmt.Errorf("unknown configuration change type %d", uint8(cc.Type))
	}
	return cc, next, nil
}

// Errors of membership changes. Each is wrapped with the details and
// what to do.
var (
	// ErrConfChangeInProgress: the leader's latest configuration entry is
	// not committed yet; only one change at a time.
	ErrConfChangeInProgress = errors.New("a membership change is already in progress")
	// ErrConfChangeTooEarly: a new leader has not yet committed an entry
	// of its term (dissertation §4.1 fix).
	ErrConfChangeTooEarly = errors.New("the leader has not committed an entry of its term yet")
	// ErrRemoveLastVoter: the cluster would have no voter.
	ErrRemoveLastVoter = errors.New("cannot remove the last voter")
	// ErrQuorumLoss: after the change the reachable voters would not make
	// a majority.
	ErrQuorumLoss = errors.New("the change would lose quorum")
	// ErrMemberExists: the id or name is taken.
	ErrMemberExists = errors.New("member already exists")
	// ErrNotLearner: promote of a voter.
	ErrNotLearner = errors.New("not a learner")
	// ErrLearnerBehind: promote of a learner more than PromoteLag entries
	// behind; as a voter it would hold up every commit until caught up.
	ErrLearnerBehind = errors.New("the learner has not caught up")
)

// confHistory tracks the configurations in a node's log: base holds as of
// baseIndex (the bootstrap configuration at 0, or a snapshot's), and each
// EntryConfig after it, in log order. The latest is what the node uses.
type confHistory struct {
	base      Configuration
	baseIndex Index
	entries   []confAt
}

type confAt struct {
	index  Index
	change ConfChange
	config Configuration
}

func (h *confHistory) latest() Configuration {
	if n := len(h.entries); n > 0 {
		return h.entries[n-1].config
	}
	return h.base
}

// lastIndex is the index of the latest configuration entry (baseIndex if
// none is in the log).
func (h *confHistory) lastIndex() Index {
	if n := len(h.entries); n > 0 {
		return h.entries[n-1].index
	}
	return h.baseIndex
}

// at returns the configuration as of index i (i ≥ baseIndex).
func (h *confHistory) at(i Index) Configuration {
	c := h.base
	for _, e := range h.entries {
		if e.index > i {
			break
		}
		c = e.config
	}
	return c
}

// truncate forgets configuration entries at or after index i (a follower's
// log was cut there).
func (h *confHistory) truncate(i Index) bool {
	k := len(h.entries)
	for k > 0 && h.entries[k-1].index >= i {
		k--
	}
	changed := k < len(h.entries)
	h.entries = h.entries[:k:k]
	return changed
}

// compact folds entries through index i into the base.
func (h *confHistory) compact(i Index) {
	k := 0
	for k < len(h.entries) && h.entries[k].index <= i {
		h.base, h.baseIndex = h.entries[k].config, h.entries[k].index
		k++
	}
	if k > 0 {
		h.entries = append([]confAt(nil), h.entries[k:]...)
	}
}

// reset makes c, as of index i, the base and forgets the entries at or
// before i (a snapshot was installed).
func (h *confHistory) reset(c Configuration, i Index) {
	h.base, h.baseIndex = c, i
	k := 0
	for k < len(h.entries) && h.entries[k].index <= i {
		k++
	}
	h.entries = append([]confAt(nil), h.entries[k:]...)
}

// scan records the configuration entries among ents (appended in order).
func (h *confHistory) scan(ents []Entry) error {
	for i := range ents {
		e := &ents[i]
		if e.Type != EntryConfig || e.Index <= h.baseIndex {
			continue
		}
		cc, c, err := DecodeConfEntry(e.Data)
		if err != nil {
			return fmt.Errorf("log entry %d (term %d): %w", e.Index, e.Term, err)
		}
		h.entries = append(h.entries, confAt{index: e.Index, change: cc, config: c})
	}
	return nil
}
