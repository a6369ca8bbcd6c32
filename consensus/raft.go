package consensus

import (
	"fmt"
	"slices"

	"github.com/hashicorp/go-hclog"
)

// contextTransfer marks a vote requested because of a leadership transfer:
// voters grant it even while they still hear from the current leader.
const contextTransfer = 1

// Restored is the durable state a core starts from.
type Restored struct {
	HardState HardState
	// SnapIndex and SnapTerm describe the last entry covered by a snapshot
	// (0, 0 when there is none); Entries follow it contiguously.
	SnapIndex Index
	SnapTerm  Term
	Entries   []Entry
	// Config, if set, is the configuration as of ConfigIndex (a
	// snapshot's); otherwise the bootstrap configuration of Config holds
	// as of index 0. Configuration entries after that index apply on top.
	Config      *Configuration
	ConfigIndex Index
}

// Raft is the consensus core: a deterministic state machine. Its inputs are
// Tick, Step, Propose, ReadIndex and TransferLeadership; its output is a
// Ready, which the driver carries out and then acknowledges with Advance.
// It is not safe for concurrent use, and no input may be given between
// Ready and the matching Advance.
type Raft struct {
	id     NodeID
	cfg    Config
	logger hclog.Logger

	term Term
	vote NodeID
	lead NodeID
	role Role
	log  raftLog

	// voters and learners are the latest configuration in the log
	// (confs.latest()), sorted; confVersion counts its changes so that
	// Ready reports each one.
	voters      []NodeID
	learners    []NodeID
	others      []NodeID // voters and learners but us: see replicas
	confs       confHistory
	confVersion uint64
	prevConfVer uint64
	// prs is the leader's view of every member (itself included; its own
	// match is the durable part of its log). Learners are replicated to
	// but never counted.
	prs   map[NodeID]*progress
	votes map[NodeID]bool

	electionElapsed  int
	heartbeatElapsed int
	// leaderTicks counts ticks since this node became leader; CheckQuorum
	// compares it with each follower's lastActive.
	leaderTicks     int
	electionTimeout int // randomized, in [ElectionTicks, 2*ElectionTicks)

	leadTransferee NodeID

	// msgs may leave at once; msgsAfterPersist vouch for state (a vote, an
	// appended entry, a term) and may leave only after the Ready that holds
	// that state is durable (dissertation §3.8).
	msgs             []Message
	msgsAfterPersist []Message
	// bcastPending batches appends: proposals and commit advances within one
	// Ready cycle go out in one MsgApp per follower.
	bcastPending bool
	// commitUntold: the commit index advanced and, with
	// DeferCommitBroadcast, the followers were not told yet; the next
	// broadcast (a proposal's, or FlushCommit's) tells them.
	commitUntold bool

	reads readIndexQueue

	// snapshotsToSend are followers the driver must stream a snapshot to;
	// pendingInstall is a received snapshot the driver must restore.
	snapshotsToSend []NodeID
	pendingInstall  *SnapshotInstall

	// prevHard is the hard state last made durable (Advance, Persisted).
	prevHard HardState
	prevSoft SoftState

	// writing is set between AdvanceAsync and Persisted: the driver is
	// still writing an earlier Ready's entries and hard state. Until it
	// is done, Ready hands out no new write, none of the messages that
	// must follow one (they may vouch for state in that write or after
	// it), and no received snapshot, so the write, the next one and an
	// install reach the disk in the order the core made them.
	writing bool
}

// New creates a core from its durable state.
func New(cfg Config, st Restored) (*Raft, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("consensus config: %w", err)
	}
	if err := checkRestored(st); err != nil {
		return nil, err
	}
	r := &Raft{
		id:     cfg.ID,
		cfg:    cfg,
		logger: cfg.Logger,
		term:   st.HardState.Term,
		vote:   st.HardState.Vote,
	}
	r.confs = confHistory{base: cfg.bootstrap()}
	if st.Config != nil {
		if err := st.Config.Validate(); err != nil {
			return nil, fmt.Errorf("restored configuration: %w", err)
		}
		r.confs = confHistory{base: st.Config.Clone(), baseIndex: st.ConfigIndex}
	}
	if err := r.confs.scan(st.Entries); err != nil {
		return nil, fmt.Errorf("reading the configurations in the log: %w", err)
	}
	r.applyConf()
	r.prevConfVer = r.confVersion
	r.log = raftLog{
		snapIndex: st.SnapIndex,
		snapTerm:  st.SnapTerm,
		entries:   slices.Clone(st.Entries),
		committed: max(st.HardState.Commit, st.SnapIndex),
		applied:   max(cfg.Applied, st.SnapIndex),
	}
	r.log.stabled = r.log.lastIndex()
	if lt := r.log.lastTerm(); lt > r.term {
		// A driver that stores entries and hard state in two writes can
		// crash between them. Nothing that vouched for the newer term left
		// the node (that waits for both writes), so adopt the term with no
		// vote; the first Ready persists it.
		r.logger.Warn("log holds a newer term than the stable state: adopting it", "term", r.term, "last_log_term", lt)
		r.term, r.vote = lt, None
	}
	if r.log.applied > r.log.committed {
		return nil, fmt.Errorf("applied index %d is beyond the commit index %d: the state machine is ahead of the log", r.log.applied, r.log.committed)
	}
	r.prevHard = st.HardState // what is durable; anything else is saved by the first Ready
	r.becomeFollower(r.term, None)
	r.prevSoft = r.softState()
	r.logger.Info("raft node started", "term", r.term, "vote", r.vote, "last_index", r.log.lastIndex(),
		"commit", r.log.committed, "applied", r.log.applied, "voters", r.voters, "learners", r.learners)
	return r, nil
}

func checkRestored(st Restored) error {
	prev := st.SnapIndex
	prevTerm := st.SnapTerm
	for i := range st.Entries {
		e := &st.Entries[i]
		if e.Index != prev+1 {
			return fmt.Errorf("log has a gap: entry %d follows %d; restore from a snapshot or remove and re-add this member", e.Index, prev)
		}
		if e.Term < prevTerm {
			return fmt.Errorf("log entry %d has term %d below the previous entry's term %d; the log is corrupt", e.Index, e.Term, prevTerm)
		}
		prev, prevTerm = e.Index, e.Term
	}
	if st.HardState.Commit > prev {
		return fmt.Errorf("commit index %d is beyond the last log index %d; the log lost entries that were committed", st.HardState.Commit, prev)
	}
	return nil
}

func (r *Raft) quorum() int { return len(r.voters)/2 + 1 }

// applyConf makes the latest configuration in the log the one in use
// (§4.1: a server uses the latest configuration in its log, committed or
// not). A leader starts replicating to new members and forgets removed
// ones; it keeps its own progress even when it removed itself, since it
// goes on leading until that change commits.
func (r *Raft) applyConf() {
	c := r.confs.latest()
	r.voters, r.learners = c.Voters(), c.Learners()
	r.others = r.others[:0]
	for _, ids := range [][]NodeID{r.voters, r.learners} {
		for _, v := range ids {
			if v != r.id {
				r.others = append(r.others, v)
			}
		}
	}
	r.confVersion++
	if r.role != Leader {
		return
	}
	for _, id := range append(slices.Clone(r.voters), r.learners...) {
		if r.prs[id] == nil {
			r.prs[id] = &progress{next: r.log.lastIndex() + 1, lastActive: r.leaderTicks}
		}
	}
	for id := range r.prs {
		if id != r.id && !r.isMember(id) {
			delete(r.prs, id)
		}
	}
}

func (r *Raft) isMember(id NodeID) bool {
	if r.isVoter(id) {
		return true
	}
	_, ok := slices.BinarySearch(r.learners, id)
	return ok
}

// Configuration returns the configuration in use (the latest in the log).
func (r *Raft) Configuration() Configuration { return r.confs.latest().Clone() }

// ConfigAt returns the configuration as of index i, which must not be
// before the log's base (the driver asks for its applied index when it
// takes a snapshot).
func (r *Raft) ConfigAt(i Index) Configuration { return r.confs.at(i).Clone() }

func (r *Raft) isVoter(id NodeID) bool {
	_, ok := slices.BinarySearch(r.voters, id)
	return ok
}

func (r *Raft) hardState() HardState {
	return HardState{Term: r.term, Vote: r.vote, Commit: r.log.committed}
}

func (r *Raft) softState() SoftState { return SoftState{Lead: r.lead, Role: r.role} }

// send queues m. Leader traffic (appends, heartbeats, read confirmations)
// leaves at once: it vouches only for state the leader already made durable
// when it became candidate, and a leader may replicate before its own fsync.
// Everything else may vouch for just-changed state and waits for persist.
func (r *Raft) send(m Message) {
	m.From = r.id
	if m.Term == 0 {
		m.Term = r.term
	}
	switch m.Type {
	case MsgApp, MsgHeartbeat, MsgTimeoutNow, MsgReadIndexResp:
		// A leader's messages may leave before its fsync only once its
		// term is durable. A lone voter (with learners) wins in the same
		// Step that raised its term; had its first MsgApp left before the
		// term was stored, a crash and a second win of the same term could
		// send the learner other entries at the same index and term.
		if r.role == Leader && r.prevHard.Term == r.term {
			r.msgs = append(r.msgs, m)
			return
		}
	case MsgHeartbeatResp, MsgReadIndex:
		// They vouch for nothing but the term, so once the term is durable
		// they need not wait behind a write of entries: a leader's read and
		// keepalive confirmations, and reads forwarded by a follower, would
		// otherwise wait for our fsync.
		if r.prevHard.Term == r.term {
			r.msgs = append(r.msgs, m)
			return
		}
	}
	r.msgsAfterPersist = append(r.msgsAfterPersist, m)
}

func (r *Raft) resetTimers() {
	r.electionElapsed = 0
	r.heartbeatElapsed = 0
	r.electionTimeout = r.cfg.ElectionTicks + r.cfg.Rand.Intn(r.cfg.ElectionTicks)
}

func (r *Raft) becomeFollower(term Term, lead NodeID) {
	wasLeader := r.role == Leader
	if term > r.term {
		r.term = term
		r.vote = None
	}
	r.role = Follower
	r.lead = lead
	r.resetTimers()
	r.prs = nil
	r.votes = nil
	r.leadTransferee = None
	r.bcastPending = false
	r.commitUntold = false
	r.dropReads()
	if wasLeader {
		r.logger.Info("leader stepped down", "term", r.term, "last_index", r.log.lastIndex(), "commit", r.log.committed, "new_leader", lead)
	}
}

func (r *Raft) becomePreCandidate() {
	// Pre-vote changes neither term nor vote: a node cut off from the
	// cluster can campaign forever without inflating terms (§9.6).
	r.role = PreCandidate
	r.lead = None
	r.resetTimers()
	r.votes = map[NodeID]bool{}
}

func (r *Raft) becomeCandidate() {
	r.term++
	r.vote = r.id
	r.role = Candidate
	r.lead = None
	r.resetTimers()
	r.votes = map[NodeID]bool{}
}

func (r *Raft) becomeLeader() {
	r.role = Leader
	r.lead = r.id
	r.resetTimers()
	r.leaderTicks = 0
	r.votes = nil
	r.leadTransferee = None
	r.prs = make(map[NodeID]*progress, len(r.voters)+len(r.learners)+1)
	r.prs[r.id] = &progress{next: r.log.lastIndex() + 1}
	for _, v := range append(slices.Clone(r.voters), r.learners...) {
		r.prs[v] = &progress{next: r.log.lastIndex() + 1}
	}
	// The no-op of §8: it is of our term, so committing it by counting
	// commits every earlier entry too (Figure 8). Its timestamp is the last
	// one we know; the leader has no clock of its own.
	r.appendEntries(EntryNoop, r.lastTime(), nil)
	r.logger.Info("leader elected", "term", r.term, "noop_index", r.log.lastIndex(), "commit", r.log.committed)
	r.bcastPending = true
	r.maybeCommit()
}

func (r *Raft) lastTime() int64 {
	if n := len(r.log.entries); n > 0 {
		return r.log.entries[n-1].Time
	}
	return 0
}

func (r *Raft) appendEntries(typ EntryType, now int64, data [][]byte) (Index, error) {
	first := r.log.lastIndex() + 1
	if data == nil {
		e := Entry{Index: first, Term: r.term, Type: typ, Time: now}
		e.Seal()
		r.log.append(e)
		return first, nil
	}
	ents := make([]Entry, len(data))
	for i, d := range data {
		ents[i] = Entry{Index: first + Index(i), Term: r.term, Type: typ, Time: now, Data: d}
		ents[i].Seal()
	}
	r.log.append(ents...)
	return first, nil
}

// campaign starts a pre-vote (if enabled and not forced) or an election.
func (r *Raft) campaign(preVote, transfer bool) {
	if !r.promotable() {
		return
	}
	var msgType MessageType
	var term Term
	if preVote {
		r.becomePreCandidate()
		msgType, term = MsgPreVote, r.term+1
		r.logger.Info("pre-vote started", "term", r.term, "next_term", term, "last_index", r.log.lastIndex(), "last_term", r.log.lastTerm())
	} else {
		r.becomeCandidate()
		msgType, term = MsgVote, r.term
		r.logger.Info("election started", "term", r.term, "last_index", r.log.lastIndex(), "last_term", r.log.lastTerm(), "transfer", transfer)
	}
	if r.recordVote(r.id, true) {
		return
	}
	ctx := uint64(0)
	if transfer {
		ctx = contextTransfer
	}
	for _, v := range r.voters {
		if v == r.id {
			continue
		}
		r.send(Message{Type: msgType, To: v, Term: term, PrevIndex: r.log.lastIndex(), PrevTerm: r.log.lastTerm(), Context: ctx})
	}
}

// recordVote counts one answer and reports whether the campaign ended.
func (r *Raft) recordVote(from NodeID, granted bool) bool {
	if !r.isVoter(from) {
		// An answer from a node outside our configuration does not count.
		return false
	}
	if _, dup := r.votes[from]; !dup {
		r.votes[from] = granted
	}
	yes, no := 0, 0
	for _, g := range r.votes {
		if g {
			yes++
		} else {
			no++
		}
	}
	switch {
	case yes >= r.quorum():
		if r.role == PreCandidate {
			r.logger.Info("pre-vote won", "term", r.term, "votes", yes)
			r.campaign(false, false)
		} else {
			r.becomeLeader()
		}
		return true
	case no >= len(r.voters)-r.quorum()+1:
		r.logger.Info("campaign lost", "role", r.role.String(), "term", r.term, "rejections", no)
		r.becomeFollower(r.term, None)
		return true
	}
	return false
}

// Tick advances logical time by one tick.
func (r *Raft) Tick() {
	if r.role == Leader {
		r.tickLeader()
		return
	}
	r.electionElapsed++
	if r.electionElapsed >= r.electionTimeout && r.promotable() {
		// Learners and removed nodes do not campaign (see promotable).
		if r.lead != None {
			r.logger.Info("leader suspected: no contact within election timeout", "term", r.term, "leader", r.lead, "ticks", r.electionElapsed)
		}
		r.campaign(!r.cfg.DisablePreVote, false)
	}
}

// peerUnreachable handles the driver's report that the connection from
// peer id closed. If id is our leader, its process has most likely died:
// rather than wait out the whole election timeout (1–2 s by default) for
// its silence, the follower forgets the leader — so it no longer refuses
// other nodes' votes on the leader's behalf — and campaigns (PreVote
// first) within a few ticks unless it hears from the leader meanwhile.
//
// Safety does not rest on this: PreVote still needs a majority, and only
// followers that forgot the leader (their connection closed too, or their
// election timeout passed) grant it; a leader that is alive keeps sending
// heartbeats every HeartbeatTicks, which restores it as leader and resets
// the timer. A closed connection to a live leader costs at most one
// PreVote round. A leader that goes silent without closing its
// connections (paused, partitioned) is still found by the election
// timeout.
//
// The wait is at least one heartbeat interval plus a tick, so a live
// leader's next heartbeat lands first even when every follower got the
// report. The followers are staggered by rank (their place among the
// voters other than the leader, by id) two heartbeat intervals apart,
// plus a random part, so that two of them rarely campaign at once and
// split the vote, which would cost a full election timeout.
func (r *Raft) peerUnreachable(id NodeID) {
	if r.role != Follower || r.lead != id {
		return
	}
	rank := 0
	for _, v := range r.voters {
		if v != id && v < r.id {
			rank++
		}
	}
	hb := r.cfg.HeartbeatTicks
	delay := hb + 1 + 2*rank*hb + r.cfg.Rand.Intn(hb+1)
	r.logger.Info("connection from the leader closed: campaigning soon unless it is heard from",
		"term", r.term, "leader", id, "in_ticks", delay)
	r.lead = None
	r.electionElapsed = max(r.electionElapsed, r.electionTimeout-delay)
}

func (r *Raft) tickLeader() {
	r.heartbeatElapsed++
	r.electionElapsed++
	r.leaderTicks++
	if !r.cfg.DisableCheckQuorum {
		if active := r.activeVoters(); active < r.quorum() {
			r.logger.Warn("check quorum failed: no majority heard within an election timeout; stepping down",
				"term", r.term, "active", active, "quorum", r.quorum(), "commit", r.log.committed)
			r.becomeFollower(r.term, None)
			return
		}
	}
	if r.electionElapsed >= r.cfg.ElectionTicks {
		r.electionElapsed = 0
		if r.leadTransferee != None {
			r.logger.Warn("leadership transfer timed out", "term", r.term, "to", r.leadTransferee)
			r.leadTransferee = None
		}
	}
	if r.heartbeatElapsed >= r.cfg.HeartbeatTicks {
		r.heartbeatElapsed = 0
		r.bcastHeartbeat(r.reads.round)
	}
	r.maybeAutoPromote()
}

// activeVoters counts the voters (itself included) the leader heard from
// within the last election timeout.
func (r *Raft) activeVoters() int {
	active := 0
	for _, id := range r.voters {
		if r.recentActive(id) {
			active++
		}
	}
	return active
}

// recentActive reports whether the leader heard from id within the last
// election timeout (always true of itself).
func (r *Raft) recentActive(id NodeID) bool {
	if id == r.id {
		return true
	}
	pr := r.prs[id]
	return pr != nil && r.leaderTicks-pr.lastActive < r.cfg.ElectionTicks
}

func (r *Raft) bcastHeartbeat(round uint64) {
	for _, v := range r.replicas() {
		pr := r.prs[v]
		// A follower may only commit what it is known to hold (§5.3): cap
		// the commit index at its match.
		r.send(Message{Type: MsgHeartbeat, To: v, Commit: min(pr.match, r.log.committed), Context: round})
	}
}

// bcastAppend sends pending entries (or just the commit index) to every follower.
func (r *Raft) bcastAppend() {
	r.commitUntold = false
	for _, v := range r.replicas() {
		r.sendAppend(v, true)
	}
}

// replicas lists the members the leader replicates to (voters, then
// learners; itself left out), in a fixed order so that a simulation
// replays exactly. Computed by applyConf.
func (r *Raft) replicas() []NodeID { return r.others }

// sendAppend sends one MsgApp to a follower unless flow control pauses it.
// With sendEmpty it sends even with no entries, to carry the commit index.
// A follower whose next entry was compacted away gets a snapshot instead.
func (r *Raft) sendAppend(to NodeID, sendEmpty bool) bool {
	pr := r.prs[to]
	if pr.paused(r.cfg.MaxInflightMsgs) {
		return false
	}
	prevIndex := pr.next - 1
	prevTerm, ok := r.log.term(prevIndex)
	if !ok {
		if prevIndex < r.log.snapIndex {
			r.logger.Info("follower needs compacted entries: sending a snapshot", "term", r.term, "to", to,
				"next", pr.next, "match", pr.match, "log_base", r.log.snapIndex)
			pr.becomeSnapshot(r.log.snapIndex)
			r.snapshotsToSend = append(r.snapshotsToSend, to)
			return false
		}
		r.logger.Warn("follower's next index is beyond our log", "term", r.term, "to", to, "next", pr.next, "last_index", r.log.lastIndex())
		return false
	}
	ents := r.log.entriesFrom(pr.next, r.cfg.MaxEntriesPerMsg, r.cfg.MaxBytesPerMsg)
	if len(ents) == 0 && !sendEmpty {
		return false
	}
	if pr.state == replicating {
		if n := len(ents); n > 0 {
			last := ents[n-1].Index
			pr.next = last + 1
			pr.inflight = append(pr.inflight, last)
		}
	} else {
		pr.probeSent = true
	}
	r.send(Message{Type: MsgApp, To: to, PrevIndex: prevIndex, PrevTerm: prevTerm, Entries: ents, Commit: r.log.committed})
	return true
}

// commitAdvanced arranges for the followers to learn a new commit index:
// with the next Ready, or with DeferCommitBroadcast when the next
// broadcast or FlushCommit goes out.
func (r *Raft) commitAdvanced() {
	if len(r.others) == 0 {
		return // no one to tell
	}
	if r.cfg.DeferCommitBroadcast {
		r.commitUntold = true
		return
	}
	r.bcastPending = true
}

// CommitUntold reports whether the leader holds back a commit index its
// followers have not been told (DeferCommitBroadcast). The driver then
// calls FlushCommit after a short wait, unless a proposal's append told
// them first.
func (r *Raft) CommitUntold() bool { return r.role == Leader && r.commitUntold }

// FlushCommit makes the next Ready tell every follower the commit index
// held back by DeferCommitBroadcast (an append, empty if there is nothing
// new to send). It does nothing when nothing is held back.
func (r *Raft) FlushCommit() {
	if r.CommitUntold() {
		r.bcastPending = true
	}
}

// maybeCommit advances the commit index to the highest index durable on a
// quorum, but only if that entry is of the current term (§5.4.2, Figure 8).
func (r *Raft) maybeCommit() bool {
	if len(r.voters) == 0 {
		return false
	}
	matches := make([]Index, 0, len(r.voters))
	for _, v := range r.voters {
		if v == r.id {
			// The leader counts itself only for what it has made durable.
			matches = append(matches, r.log.stabled)
			continue
		}
		matches = append(matches, r.prs[v].match)
	}
	slices.Sort(matches)
	n := matches[len(matches)-r.quorum()]
	if n <= r.log.committed {
		return false
	}
	if t, _ := r.log.term(n); t != r.term && r.cfg.breakRule != breakCurrentTermCommit {
		return false
	}
	r.log.commitTo(n)
	r.reads.onCommit(r)
	return true
}

// Step feeds one message from a peer into the core. Messages that are stale,
// from unknown nodes or malformed are dropped (with an error for the
// caller's logs); the node keeps running.
func (r *Raft) Step(m Message) error {
	// Messages from nodes outside our configuration are taken: our log
	// (and so our configuration) may lag the sender's, as for a new
	// member, or a node cut off while members were added. Votes from
	// outside the configuration are not counted (recordVote).
	if m.From == None || m.From == r.id {
		return fmt.Errorf("%w: message %s from node %d", ErrUnknownNode, m.Type, m.From)
	}
	if m.Type == MsgUnreachable {
		r.peerUnreachable(m.From)
		return nil
	}
	if err := r.validate(m); err != nil {
		return err
	}

	switch {
	case m.Term > r.term:
		if m.Type == MsgVote || m.Type == MsgPreVote {
			inLease := !r.cfg.DisableCheckQuorum && r.lead != None && r.electionElapsed < r.cfg.ElectionTicks
			if inLease && m.Context != contextTransfer {
				// We heard from a leader within the election timeout: a
				// candidate is likely a node that was cut off. Ignore it
				// rather than depose a healthy leader (§4.2.3).
				r.logger.Debug("ignoring vote request: leader is alive", "term", r.term, "from", m.From, "their_term", m.Term, "leader", r.lead)
				return nil
			}
		}
		switch {
		case m.Type == MsgPreVote:
			// A pre-vote never changes our term.
		case m.Type == MsgPreVoteResp && !m.Reject:
			// A granted pre-vote echoes the term we would campaign at.
		case m.Type == MsgApp || m.Type == MsgHeartbeat:
			r.logger.Info("new leader seen", "term", m.Term, "leader", m.From, "old_term", r.term)
			r.becomeFollower(m.Term, m.From)
		default:
			r.logger.Info("higher term seen", "term", m.Term, "from", m.From, "type", m.Type.String(), "old_term", r.term)
			r.becomeFollower(m.Term, None)
		}
	case m.Term < r.term:
		switch m.Type {
		case MsgApp, MsgHeartbeat:
			// A leader of an older term (cut off, then healed). Tell it our
			// term so it steps down; with pre-vote it could otherwise keep
			// disrupting us forever.
			r.send(Message{Type: MsgAppResp, To: m.From})
		case MsgPreVote:
			r.send(Message{Type: MsgPreVoteResp, To: m.From, Reject: true})
		case MsgReadIndex:
			// Refuse with our term: the follower learns it and its caller
			// gets a Dropped read instead of waiting forever (the leader may
			// be the same node, re-elected, so no leader change fails it).
			r.send(Message{Type: MsgReadIndexResp, To: m.From, Reject: true, Context: m.Context})
		case MsgReadIndexResp:
			// Still valid: the leader confirmed it with a quorum after the
			// request arrived, which is all linearizability needs.
			r.reads.ready = append(r.reads.ready, ReadState{ID: m.Context, Index: m.Index, Dropped: m.Reject})
		}
		return nil
	}

	switch m.Type {
	case MsgVote, MsgPreVote:
		r.handleVote(m)
		return nil
	}
	switch r.role {
	case Leader:
		r.stepLeader(m)
		// Not inside stepLeader: the step-down must not pull the
		// progress map from under its callers.
		r.maybeStepDownRemoved()
	case Candidate, PreCandidate:
		r.stepCandidate(m)
	default:
		r.stepFollower(m)
	}
	return nil
}

// validate checks what a message from the network claims before the core
// trusts it: a bad message is refused, never half-applied.
func (r *Raft) validate(m Message) error {
	if m.Type < MsgApp || m.Type > MsgReadIndexResp {
		return fmt.Errorf("message of unknown type %d from node %d", uint8(m.Type), m.From)
	}
	if m.To != r.id {
		return fmt.Errorf("%s from node %d is addressed to node %d, not to us (%d)", m.Type, m.From, m.To, r.id)
	}
	if m.Term == 0 {
		return fmt.Errorf("%s from node %d has no term", m.Type, m.From)
	}
	if m.Type != MsgApp && len(m.Entries) > 0 {
		return fmt.Errorf("%s from node %d carries entries", m.Type, m.From)
	}
	prevTerm := m.PrevTerm
	for i := range m.Entries {
		e := &m.Entries[i]
		if err := e.Verify(); err != nil {
			return fmt.Errorf("dropping %s from node %d: %w", m.Type, m.From, err)
		}
		if e.Index != m.PrevIndex+1+Index(i) {
			return fmt.Errorf("dropping %s from node %d: entry %d out of sequence after %d", m.Type, m.From, e.Index, m.PrevIndex)
		}
		if e.Term < prevTerm || e.Term > m.Term {
			return fmt.Errorf("dropping %s from node %d: entry %d has term %d outside [%d, %d]", m.Type, m.From, e.Index, e.Term, prevTerm, m.Term)
		}
		if e.Type == EntryConfig {
			if _, _, err := DecodeConfEntry(e.Data); err != nil {
				return fmt.Errorf("dropping %s from node %d: entry %d: %w", m.Type, m.From, e.Index, err)
			}
		}
		prevTerm = e.Term
	}
	return nil
}

func (r *Raft) handleVote(m Message) {
	respType := MsgVoteResp
	if m.Type == MsgPreVote {
		respType = MsgPreVoteResp
	}
	canVote := r.vote == m.From ||
		(r.vote == None && r.lead == None) ||
		(m.Type == MsgPreVote && m.Term > r.term)
	if r.cfg.breakRule == breakVoteOnce {
		canVote = true
	}
	upToDate := r.log.isUpToDate(m.PrevIndex, m.PrevTerm) || r.cfg.breakRule == breakUpToDateCheck
	if canVote && upToDate {
		if m.Type == MsgVote {
			// The vote is persisted with the Ready that carries this
			// answer, before the answer leaves.
			r.electionElapsed = 0
			r.vote = m.From
			r.logger.Info("vote granted", "term", r.term, "candidate", m.From, "last_index", r.log.lastIndex())
		} else {
			r.logger.Info("pre-vote granted", "term", r.term, "candidate", m.From, "candidate_term", m.Term)
		}
		r.send(Message{Type: respType, To: m.From, Term: m.Term})
		return
	}
	r.logger.Debug("vote rejected", "type", m.Type.String(), "term", r.term, "candidate", m.From, "voted_for", r.vote, "up_to_date", upToDate)
	r.send(Message{Type: respType, To: m.From, Reject: true})
}

func (r *Raft) stepCandidate(m Message) {
	switch m.Type {
	case MsgApp, MsgHeartbeat:
		// A leader exists for this term: we lost.
		r.becomeFollower(m.Term, m.From)
		r.stepFollower(m)
	case MsgVoteResp:
		if r.role == Candidate {
			r.recordVote(m.From, !m.Reject)
		}
	case MsgPreVoteResp:
		if r.role == PreCandidate {
			r.recordVote(m.From, !m.Reject)
		}
	case MsgReadIndex:
		r.send(Message{Type: MsgReadIndexResp, To: m.From, Reject: true, Context: m.Context})
	case MsgTimeoutNow:
		// A transfer aimed at us while we already campaign: ignore.
	}
}

func (r *Raft) stepFollower(m Message) {
	switch m.Type {
	case MsgApp:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleAppend(m)
	case MsgHeartbeat:
		r.electionElapsed = 0
		r.lead = m.From
		// The leader capped Commit at what it knows we hold.
		r.log.commitTo(min(m.Commit, r.log.lastIndex()))
		r.send(Message{Type: MsgHeartbeatResp, To: m.From, Context: m.Context})
	case MsgTimeoutNow:
		r.logger.Info("leadership transfer: starting election at once", "term", r.term, "from", m.From)
		r.campaign(false, true)
	case MsgReadIndexResp:
		r.reads.ready = append(r.reads.ready, ReadState{ID: m.Context, Index: m.Index, Dropped: m.Reject})
	case MsgReadIndex:
		r.send(Message{Type: MsgReadIndexResp, To: m.From, Reject: true, Context: m.Context})
	}
}

// handleAppend is the receiver side of AppendEntries (Figure 2).
func (r *Raft) handleAppend(m Message) {
	if m.PrevIndex < r.log.committed {
		// Everything up to our commit index is on every future leader
		// (Leader Completeness), so we match the leader at least that far.
		r.send(Message{Type: MsgAppResp, To: m.From, Index: r.log.committed})
		return
	}
	if !r.log.matchTerm(m.PrevIndex, m.PrevTerm) {
		ct, ci := r.log.conflictHint(m.PrevIndex)
		r.send(Message{Type: MsgAppResp, To: m.From, Reject: true, RejectIndex: m.PrevIndex, ConflictTerm: ct, ConflictIndex: ci})
		return
	}
	ents := m.Entries
	if ci := r.log.findConflict(ents); ci != 0 {
		if ci <= r.log.lastIndex() {
			r.dropAcksFrom(ci)
		}
		fresh := ents[ci-m.PrevIndex-1:]
		changed := r.confs.truncate(ci)
		r.log.truncateAndAppend(fresh)
		n := len(r.confs.entries)
		if err := r.confs.scan(fresh); err != nil {
			// validate decoded every configuration entry already.
			panic(fmt.Sprintf("node %d: configuration entry passed validation but does not decode: %v", r.id, err))
		}
		if changed || len(r.confs.entries) != n {
			r.applyConf()
			r.logger.Info("configuration changed", "term", r.term, "config", r.confs.latest().String(), "config_index", r.confs.lastIndex())
		}
	}
	lastVerified := m.PrevIndex + Index(len(ents))
	// Seed 002 mistake 2: the cap is the last entry this message verified,
	// not our log's end, which may hold unverified entries of an old term.
	limit := lastVerified
	if r.cfg.breakRule == breakFollowerCommit {
		limit = r.log.lastIndex()
	}
	r.log.commitTo(min(m.Commit, limit))
	r.send(Message{Type: MsgAppResp, To: m.From, Index: lastVerified})
}

// dropAcksFrom drops acknowledgements not yet handed out that vouch for
// entries from index i on, which a conflicting append is about to
// replace: they were made for an older leader, and once the replacement
// is written they would vouch for entries this node no longer holds.
// Losing them is harmless (that leader is deposed, and any message may be
// lost); sending them would break "acknowledge only what is durable",
// which the simulation checks at every send.
func (r *Raft) dropAcksFrom(i Index) {
	r.msgsAfterPersist = slices.DeleteFunc(r.msgsAfterPersist, func(m Message) bool {
		return m.Type == MsgAppResp && !m.Reject && m.Index >= i
	})
}

func (r *Raft) stepLeader(m Message) {
	pr := r.prs[m.From]
	if pr == nil {
		// Not a member (removed, or never added): nothing to track.
		if m.Type == MsgReadIndex {
			r.send(Message{Type: MsgReadIndexResp, To: m.From, Reject: true, Context: m.Context})
		}
		return
	}
	pr.lastActive = r.leaderTicks
	switch m.Type {
	case MsgAppResp:
		r.handleAppendResp(m, pr)
	case MsgHeartbeatResp:
		// A lost acknowledgement must not leave the window full forever.
		if pr.state == replicating && pr.paused(r.cfg.MaxInflightMsgs) {
			pr.freeFirst()
		}
		pr.probeSent = false
		if pr.match < r.log.lastIndex() {
			// Even with nothing new to send (next ran ahead of appends that
			// were lost), an empty MsgApp at next-1 makes the follower
			// refuse and so restarts replication from where it really is.
			r.sendAppend(m.From, true)
		}
		r.reads.onHeartbeatResp(r, m.From, m.Context)
		if m.From == r.leadTransferee && pr.match == r.log.lastIndex() {
			// The first MsgTimeoutNow may have been lost.
			r.send(Message{Type: MsgTimeoutNow, To: m.From})
		}
	case MsgReadIndex:
		r.reads.request(r, m.From, m.Context)
	}
}

func (r *Raft) handleAppendResp(m Message, pr *progress) {
	if m.Reject && pr.state == snapshotting {
		// An answer to an append sent before the snapshot: where the
		// follower stands is decided by the snapshot now.
		return
	}
	if m.Reject {
		// A refusal of an index we already know matches, or (while
		// probing) of a probe other than the latest, is an old answer.
		stale := m.RejectIndex <= pr.match || (pr.state == probing && m.RejectIndex != pr.next-1)
		if stale {
			return
		}
		next := m.ConflictIndex
		if m.ConflictTerm != 0 {
			if i := r.log.lastIndexOfTerm(m.ConflictTerm, m.RejectIndex); i != 0 {
				next = i + 1
			}
		}
		next = min(next, m.RejectIndex)
		pr.becomeProbe()
		pr.next = min(max(next, pr.match+1), r.log.lastIndex()+1)
		r.logger.Debug("append rejected: backing up", "term", r.term, "follower", m.From, "rejected_prev", m.RejectIndex, "next", pr.next)
		r.sendAppend(m.From, true)
		return
	}
	if m.Index > r.log.lastIndex() {
		r.logger.Warn("ignoring append answer beyond our log", "term", r.term, "from", m.From, "index", m.Index, "last_index", r.log.lastIndex())
		return
	}
	if !pr.maybeUpdate(m.Index) {
		// A repeated answer for what we already know: a probe it answers
		// must not leave the follower paused until the next heartbeat.
		if pr.state == probing && m.Index == pr.next-1 {
			pr.probeSent = false
			r.sendAppend(m.From, false)
		}
		return
	}
	switch pr.state {
	case probing:
		pr.becomeReplicate()
	case replicating:
		pr.freeTo(m.Index)
	case snapshotting:
		// An older acknowledgement must not restart replication while the
		// snapshot is on its way: that would ask for a second snapshot.
		if pr.match < pr.pendingSnapshot {
			if r.maybeCommit() {
				r.commitAdvanced()
			}
			return
		}
		pr.becomeReplicate()
	}
	if r.maybeCommit() {
		r.commitAdvanced()
	}
	for r.sendAppend(m.From, false) {
	}
	if m.From == r.leadTransferee && pr.match == r.log.lastIndex() {
		r.logger.Info("transfer target caught up: sending timeout-now", "term", r.term, "to", m.From)
		r.send(Message{Type: MsgTimeoutNow, To: m.From})
	}
}

// Propose appends commands to the leader's log, all stamped with the
// leader's wall-clock time now (Unix nanoseconds). It returns the index of
// the first and the term; the commands are committed when an applied entry
// with that index and term comes back. A different term at that index
// means the proposal was lost to a leader change.
func (r *Raft) Propose(now int64, data ...[]byte) (Index, Term, error) {
	if r.role != Leader {
		return 0, 0, &NotLeaderError{Leader: r.lead, Term: r.term}
	}
	if r.leadTransferee != None {
		return 0, 0, ErrTransferInProgress
	}
	if len(data) == 0 {
		return 0, 0, fmt.Errorf("%w: no commands", ErrProposalDropped)
	}
	for _, d := range data {
		if len(d) > r.cfg.MaxProposalBytes {
			return 0, 0, fmt.Errorf("%w: command of %d bytes exceeds the %d-byte limit", ErrProposalDropped, len(d), r.cfg.MaxProposalBytes)
		}
	}
	first, _ := r.appendEntries(EntryNormal, now, data)
	r.bcastPending = true
	return first, r.term, nil
}

// TransferLeadership asks the leader to hand over to another voter: it
// stops taking proposals, brings the target up to date, then sends it
// MsgTimeoutNow. The transfer is abandoned after an election timeout.
func (r *Raft) TransferLeadership(to NodeID) error {
	if r.role != Leader {
		return &NotLeaderError{Leader: r.lead, Term: r.term}
	}
	if !r.isVoter(to) {
		return fmt.Errorf("%w: cannot transfer leadership to node %d", ErrUnknownNode, to)
	}
	if to == r.id || to == r.leadTransferee {
		return nil
	}
	if r.leadTransferee == None {
		// Only a new transfer restarts the timeout: retargeting one must
		// not keep proposals refused forever.
		r.electionElapsed = 0
	}
	r.leadTransferee = to
	r.logger.Info("leadership transfer started", "term", r.term, "to", to, "last_index", r.log.lastIndex())
	if r.prs[to].match == r.log.lastIndex() {
		r.send(Message{Type: MsgTimeoutNow, To: to})
	} else {
		r.sendAppend(to, true)
	}
	return nil
}

// HasReady reports whether Ready would return anything to do.
func (r *Raft) HasReady() bool {
	if len(r.msgs) > 0 || r.bcastPending || r.reads.flushPending || len(r.snapshotsToSend) > 0 ||
		len(r.reads.ready) > 0 || r.softState() != r.prevSoft || r.confVersion != r.prevConfVer {
		return true
	}
	if r.log.applied < r.log.committed && !r.installWaits() {
		return true
	}
	return !r.writing && (len(r.msgsAfterPersist) > 0 || r.pendingInstall != nil ||
		r.hardState() != r.prevHard || r.log.stabled < r.log.lastIndex())
}

// installWaits reports that a received snapshot waits for the write in
// flight: entries committed after it must not be applied before it is.
// SnapshotReceived refuses while a write is in flight, so this holds only
// if that refusal is ever relaxed; it keeps apply order safe regardless.
func (r *Raft) installWaits() bool { return r.writing && r.pendingInstall != nil }

// Ready is the work the driver must do, in this order:
//  1. send Messages (they may go before anything is durable) and start
//     streaming a snapshot to each of SendSnapshots;
//  2. if InstallSnapshot is set, restore the state machine from that
//     snapshot (already durable in the snapshot store) and delete the
//     stored log through its index (all of it if DiscardLog);
//  3. durably store Entries (replacing any stored entries from
//     Entries[0].Index on) and HardState if MustSaveHardState;
//  4. send MessagesAfterPersist;
//  5. apply CommittedEntries in order; answer ReadStates once applied
//     (this may come before steps 3 and 4, after step 2: committed
//     entries are durable on a majority already, even those in Entries);
//  6. call Advance.
//
// A driver may instead start the write of step 3 and call AdvanceAsync
// without waiting for it, then send MessagesAfterPersist and call
// Persisted once the write is durable. Until then Ready returns no
// Entries, HardState, MessagesAfterPersist or InstallSnapshot (they wait
// for the next write), so at most one write is in flight and writes stay
// in order; everything else (Messages, CommittedEntries, ReadStates) keeps
// flowing, which is the point: a leader counts toward commit only what
// Persisted reported, and every message that vouches for a write leaves
// after it.
type Ready struct {
	SoftState            *SoftState
	HardState            HardState
	MustSaveHardState    bool
	Entries              []Entry
	Messages             []Message
	MessagesAfterPersist []Message
	CommittedEntries     []Entry
	ReadStates           []ReadState
	// SendSnapshots are followers whose next entry was compacted away. The
	// driver streams its newest snapshot to each and reports the outcome
	// with ReportSnapshot; the core asks again only after that report.
	SendSnapshots []NodeID
	// InstallSnapshot is a received snapshot the core accepted
	// (SnapshotReceived): the core's log already starts after it.
	InstallSnapshot *SnapshotInstall
	// Config is set when the configuration in use changed (an entry
	// appended or truncated, a snapshot installed): the driver updates
	// its peer addresses. It may not be committed yet.
	Config *Configuration
}

// SnapshotInstall tells the driver to install a received snapshot.
type SnapshotInstall struct {
	Meta SnapshotMeta
	// DiscardLog says the stored log does not continue the snapshot (it
	// lacks the snapshot's last entry, or holds another term there): all of
	// it must be deleted. Otherwise entries through Meta.Index are deleted
	// and the rest, which continue the snapshot, are kept.
	DiscardLog bool
	// Config is the configuration as of the snapshot.
	Config Configuration
}

// Ready returns the pending work. Call Advance (or AdvanceAsync) once it
// is done.
func (r *Raft) Ready() Ready {
	if r.role == Leader {
		r.reads.flush(r)
		if r.bcastPending {
			r.bcastPending = false
			r.bcastAppend()
		}
	}
	rd := Ready{
		Messages:      r.msgs,
		ReadStates:    r.reads.ready,
		SendSnapshots: r.snapshotsToSend,
	}
	if !r.installWaits() {
		rd.CommittedEntries = r.log.toApply()
	}
	if !r.writing {
		rd.Entries = r.log.unstable()
		rd.MessagesAfterPersist, r.msgsAfterPersist = r.msgsAfterPersist, nil
		rd.InstallSnapshot, r.pendingInstall = r.pendingInstall, nil
		if hs := r.hardState(); hs != r.prevHard {
			rd.HardState, rd.MustSaveHardState = hs, true
		}
	}
	if r.confVersion != r.prevConfVer {
		c := r.confs.latest().Clone()
		rd.Config = &c
		r.prevConfVer = r.confVersion
	}
	if ss := r.softState(); ss != r.prevSoft {
		rd.SoftState = &ss
	}
	r.msgs, r.reads.ready, r.snapshotsToSend = nil, nil, nil
	return rd
}

// Advance acknowledges that rd has been carried out, its write included.
func (r *Raft) Advance(rd Ready) {
	r.advanceDone(rd)
	r.advanceDurable(rd)
}

// AdvanceAsync acknowledges that rd has been carried out except for its
// write (Entries, HardState) and the MessagesAfterPersist that follow it;
// the driver reports the write with Persisted(rd). A Ready taken while a
// write is in flight holds no write: acknowledge it with Advance.
func (r *Raft) AdvanceAsync(rd Ready) {
	if r.writing {
		panic(fmt.Sprintf("node %d: AdvanceAsync while an earlier write is in flight", r.id))
	}
	r.advanceDone(rd)
	r.writing = true
}

// Persisted reports that the write of rd, acknowledged with AdvanceAsync,
// is durable.
func (r *Raft) Persisted(rd Ready) {
	if !r.writing {
		panic(fmt.Sprintf("node %d: Persisted without a write in flight", r.id))
	}
	r.writing = false
	r.advanceDurable(rd)
}

// advanceDone records what the driver did with rd apart from its write.
func (r *Raft) advanceDone(rd Ready) {
	if n := len(rd.CommittedEntries); n > 0 {
		r.log.applied = rd.CommittedEntries[n-1].Index
	}
	if rd.SoftState != nil {
		r.prevSoft = *rd.SoftState
	}
}

// advanceDurable records that rd's write is durable.
func (r *Raft) advanceDurable(rd Ready) {
	if n := len(rd.Entries); n > 0 {
		last := rd.Entries[n-1]
		// The log may have been cut below the write's end since (a write
		// in flight, or a snapshot installed): then nothing is credited,
		// and the next write rewrites from stabled on.
		if r.log.matchTerm(last.Index, last.Term) && last.Index > r.log.stabled {
			r.log.stabled = last.Index
		}
	}
	if rd.MustSaveHardState {
		r.prevHard = rd.HardState
	}
	if r.role == Leader && len(rd.Entries) > 0 && r.maybeCommit() {
		r.commitAdvanced()
		r.maybeStepDownRemoved()
	}
}

// Status reports the node's state.
func (r *Raft) Status() Status {
	var s Status
	r.UpdateStatus(&s, true)
	return s
}

// UpdateStatus brings s up to date as Status would, reusing what did not
// change: s.Config is cloned anew only if the configuration differs from
// it, and the leader's s.Progress is rebuilt only if progress is set (or
// s has none). The driver refreshes its published status after every
// batch of work; a full Status each time was a clone and a map per
// proposal batch.
func (r *Raft) UpdateStatus(s *Status, progress bool) {
	prevProgress, prevConfig := s.Progress, s.Config
	*s = Status{
		ID: r.id, Role: r.role, Term: r.term, Vote: r.vote, Lead: r.lead,
		Commit: r.log.committed, Applied: r.log.applied, LastIndex: r.log.lastIndex(),
		LogBase: r.log.snapIndex, LeadTransfer: r.leadTransferee,
		Config: prevConfig, ConfigIndex: r.confs.lastIndex(),
	}
	if latest := r.confs.latest(); !latest.Equal(prevConfig) {
		s.Config = latest.Clone()
	}
	s.ConfigCommitted = s.ConfigIndex <= r.log.committed
	if r.role != Leader {
		s.SinceLeaderContact = r.electionElapsed
	}
	if r.role == Leader && !progress && prevProgress != nil {
		s.Progress = prevProgress
	} else if r.role == Leader {
		s.Progress = make(map[NodeID]ProgressStatus, len(r.prs))
		for id, pr := range r.prs {
			match := pr.match
			if id == r.id {
				match = r.log.stabled
			}
			s.Progress[id] = ProgressStatus{Match: match, Next: pr.next, State: pr.state.String(), Inflight: len(pr.inflight),
				RecentActive: r.recentActive(id), Learner: r.isLearner(id)}
		}
	}
}

// Compact drops the log entries through index from memory, making index
// the log's base. The driver calls it once a snapshot covering index is
// durable (keeping a trailing stretch of entries for followers that are
// only slightly behind); it then deletes the same prefix from the log
// store. The core compacts no further than what is applied and durable,
// and returns the index it compacted through (the old base if nothing
// changed). Followers that need compacted entries get a snapshot.
func (r *Raft) Compact(index Index) Index {
	index = min(index, r.log.applied, r.log.stabled)
	if index <= r.log.snapIndex {
		return r.log.snapIndex
	}
	r.log.compact(index)
	r.confs.compact(index)
	r.logger.Debug("log compacted", "through", index, "term", r.log.snapTerm, "last_index", r.log.lastIndex())
	return index
}

// SnapshotReceived tells the core that a snapshot sent by node from is
// durable in the snapshot store and checksum-verified. The core installs it
// only if it is a follower and the snapshot is ahead of its commit index
// (an older one would take the state machine back in time); it then resets
// its log to start after the snapshot, asks the driver (Ready.
// InstallSnapshot) to restore the state machine, and tells the sender how
// far it now matches. It reports whether it installed the snapshot; one
// refused stays harmless in the store (it holds only committed state).
//
// conf is the configuration as of the snapshot's index (the driver reads
// it from the snapshot); it replaces the node's own from there on.
func (r *Raft) SnapshotReceived(from NodeID, meta SnapshotMeta, conf Configuration) bool {
	if meta.Index <= r.log.committed && r.cfg.breakRule != breakStaleSnapshot {
		r.logger.Debug("ignoring snapshot: not ahead of our commit index", "from", from, "index", meta.Index, "commit", r.log.committed)
		return false
	}
	if r.writing || len(r.msgsAfterPersist) > 0 || r.log.stabled < r.log.lastIndex() {
		// An acknowledgement on its way (with a write in flight, or
		// waiting for the next one) may vouch for entries after the
		// snapshot that installing it would discard, since they are not
		// durable yet: the leader would count a copy we no longer hold.
		// The driver offers snapshots once the core is quiet; the leader
		// sends it again otherwise.
		r.logger.Info("ignoring snapshot: writes or acknowledgements in flight", "from", from, "index", meta.Index,
			"stabled", r.log.stabled, "last_index", r.log.lastIndex())
		return false
	}
	if r.role != Follower || r.pendingInstall != nil {
		// A candidate or leader must keep the log it campaigned with; the
		// leader retries once we follow it.
		r.logger.Info("ignoring snapshot: not a follower now", "from", from, "index", meta.Index, "role", r.role.String())
		return false
	}
	if meta.Index == 0 || meta.Term == 0 {
		return false
	}
	if err := conf.Validate(); err != nil {
		r.logger.Warn("ignoring snapshot: its configuration is invalid", "from", from, "index", meta.Index, "error", err)
		return false
	}
	if meta.Term > r.term {
		// The snapshot holds entries of a term we have not seen: adopt it
		// (it is persisted with this Ready) so our log never outruns our term.
		r.becomeFollower(meta.Term, None)
	}
	discarded := r.log.restoreSnapshot(meta.Index, meta.Term)
	if discarded {
		r.confs = confHistory{base: conf.Clone(), baseIndex: meta.Index}
	} else {
		r.confs.reset(conf.Clone(), meta.Index)
	}
	r.applyConf()
	meta.Voters = slices.Clone(meta.Voters)
	r.pendingInstall = &SnapshotInstall{Meta: meta, DiscardLog: discarded, Config: conf.Clone()}
	r.logger.Info("installing snapshot", "from", from, "index", meta.Index, "term", meta.Term, "log_discarded", discarded,
		"last_index", r.log.lastIndex())
	// Our log now matches every leader's through the snapshot (it holds
	// only committed entries); the answer vouches for the install, so it
	// leaves after the Ready that carries it.
	r.send(Message{Type: MsgAppResp, To: from, Index: meta.Index})
	return true
}

// ReportSnapshot tells the leader how streaming a snapshot to follower to
// ended: ok with the index of the snapshot sent, or not ok. After a
// failure the follower is probed again once it answers a heartbeat, which
// asks for a new snapshot if it still needs one.
func (r *Raft) ReportSnapshot(to NodeID, index Index, ok bool) {
	if r.role != Leader {
		return
	}
	pr := r.prs[to]
	if pr == nil || pr.state != snapshotting {
		return
	}
	if ok {
		pending := max(pr.pendingSnapshot, min(index, r.log.lastIndex()))
		pr.becomeProbe()
		pr.next = max(pr.next, pending+1)
		r.logger.Info("snapshot sent: probing from after it", "term", r.term, "to", to, "index", index, "next", pr.next)
		r.sendAppend(to, true)
		return
	}
	pr.becomeProbe()
	// Wait for a heartbeat answer before asking again: an unreachable
	// follower must not get a snapshot attempt per loop iteration.
	pr.probeSent = true
	r.logger.Warn("sending snapshot failed: will retry once the follower answers", "term", r.term, "to", to)
}

// Leader returns the known leader (None if unknown) and the current term.
func (r *Raft) Leader() (NodeID, Term) { return r.lead, r.term }

// TrimLog decides what a restarting node keeps of its stored log, given
// the newest intact snapshot (snapIndex, snapTerm; 0, 0 if none) and the
// stored entries (contiguous, in order). It returns the base to start the
// core from (Restored.SnapIndex/SnapTerm), the entries after it, and
// whether the stored log must be deleted entirely because it does not
// continue the snapshot (a received snapshot replaced a diverging or
// shorter log, and the node stopped before deleting it).
//
// Entries at or before the snapshot are kept as the trailing part of the
// log (for followers slightly behind) when the log holds the snapshot's
// last entry with the snapshot's term; the first stored entry then becomes
// the base, since the term before it is unknown.
func TrimLog(snapIndex Index, snapTerm Term, ents []Entry) (base Index, baseTerm Term, kept []Entry, discard bool, err error) {
	if len(ents) == 0 {
		return snapIndex, snapTerm, nil, false, nil
	}
	first, last := ents[0].Index, ents[len(ents)-1].Index
	switch {
	case snapIndex == 0 && first != 1:
		return 0, 0, nil, false, fmt.Errorf("log starts at index %d but no snapshot covers the entries before it; restore the snapshot directory or remove and re-add this member", first)
	case snapIndex == 0:
		return 0, 0, ents, false, nil
	case first > snapIndex+1:
		return 0, 0, nil, false, fmt.Errorf("log starts at index %d but the newest intact snapshot covers only up to %d: entries %d..%d are lost; remove and re-add this member", first, snapIndex, snapIndex+1, first-1)
	case last < snapIndex:
		return snapIndex, snapTerm, nil, true, nil
	case first == snapIndex+1:
		return snapIndex, snapTerm, ents, false, nil
	}
	if ents[snapIndex-first].Term != snapTerm {
		return snapIndex, snapTerm, nil, true, nil
	}
	return first, ents[0].Term, ents[1:], false, nil
}
