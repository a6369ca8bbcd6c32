package consensus

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"time"
)

// Batch limits of one loop iteration. Larger batches mean fewer Readies
// (one fsync and one MsgApp per follower for the lot) but a longer pause
// before the next tick.
const (
	maxProposalBatch = 1024
	maxInboxBatch    = 256
)

type proposal struct {
	ctx  context.Context
	data []byte
	// conf is set for a membership change (ProposeConfChange).
	conf   *ConfChange
	index  Index
	term   Term
	result chan proposeResult // capacity 1: the loop never waits for a caller that left
}

type proposeResult struct {
	value any
	err   error
}

type readRequestW struct {
	ctx    context.Context
	id     uint64
	index  Index
	result chan readResult // capacity 1
}

type readResult struct {
	index Index
	err   error
}

type transferRequest struct {
	ctx    context.Context
	to     NodeID
	result chan error // capacity 1
}

// loopState is everything only the loop goroutine touches.
type loopState struct {
	core *Raft

	// loopStatus is the status publish last made visible, and
	// progressDue asks publish to rebuild the leader's progress map.
	loopStatus  Status
	progressDue bool

	// proposals waits for the entry at each index. Two waiters can share
	// an index when this node led two terms: each is settled by the term
	// of the entry that finally applies there.
	proposals map[Index][]*proposal
	// reads asked the core and await a ReadState; readsAtIndex have one and
	// await apply, sorted by index.
	reads        map[uint64]*readRequestW
	readsAtIndex []*readRequestW
	transfers    []*transferRequest

	applied     Index
	appliedTerm Term // term of the last applied entry
	lastIndex   Index
	// hardState is the core's latest; savedHardState the one last stored.
	// They differ only in Commit (see persist).
	hardState      HardState
	savedHardState HardState
	lead           NodeID

	// writing is the write handed to the writer goroutine and not yet
	// reported back (at most one: the core hands out no other meanwhile).
	writing *writeJob

	snaps snapState
}

// writeJob is one Ready's write, carried out by the writer goroutine while
// the loop goes on (unless NodeConfig.SyncPersist).
type writeJob struct {
	rd   Ready
	hs   *HardState // nil: the Ready's entries only
	took time.Duration
	err  error
}

func (n *Node) initLoop(core *Raft, st Restored, snap SnapshotMeta) {
	n.core = core
	n.snaps = snapState{snap: snap, sending: map[NodeID]bool{}}
	n.appliedTerm = snap.Term
	n.proposals = map[Index][]*proposal{}
	n.reads = map[uint64]*readRequestW{}
	n.applied = core.Status().Applied
	n.hardState, n.savedHardState = st.HardState, st.HardState
	if k := len(st.Entries); k > 0 {
		n.lastIndex = st.Entries[k-1].Index
	}
}

// run is the node's loop goroutine ("consensus.loop"): the only one that
// touches the core, the stores and the state machine.
func (n *Node) run() {
	defer close(n.done)
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(),
		pprof.Labels("goroutine", "consensus.loop", "node", strconv.FormatUint(uint64(n.id), 10))))
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	// commitFlush tells followers a held-back commit index
	// (CommitBroadcastDelay); armed while one is held back.
	commitFlush := time.NewTimer(time.Hour)
	commitFlush.Stop()
	defer commitFlush.Stop()
	flushArmed := false
	writerDone := make(chan struct{})
	go n.runWriter(writerDone)
	defer func() {
		// The stores are closed once Stop returns: no write may be left
		// running into them.
		if n.writing != nil {
			<-n.writtenc
			n.writing = nil
		}
		close(n.writec)
		<-writerDone
	}()
	for {
		var err error
		select {
		case <-n.stopc:
			cause := ErrStopped
			if err := n.waitWrite(); err != nil {
				// No flushCommit then: the hard state the loop holds came
				// with the failed write, and its commit index may cover the
				// entries that write lost; stored alone it would point past
				// the stored log, which the next start refuses.
				n.logger.Warn("the last write before stopping failed; a restart recovers from the leader",
					"id", n.id, "term", n.hardState.Term, "last_index", n.lastIndex, "error", err)
				cause = fmt.Errorf("%w: the last write before stopping failed: %w", ErrStopped, err)
			} else {
				n.flushCommit()
			}
			n.shutdown(cause)
			n.logger.Info("node stopped", "id", n.id, "term", n.hardState.Term, "commit", n.hardState.Commit,
				"applied", n.applied, "last_index", n.lastIndex)
			return
		case <-commitFlush.C:
			flushArmed = false
			n.core.FlushCommit()
		case <-ticker.C:
			n.core.Tick()
			n.dropAbandoned()
			n.progressDue = true
		case m := <-n.inbox:
			n.step(m)
		case p := <-n.propc:
			n.proposeBatch(p)
		case r := <-n.readc:
			n.startRead(r)
		case t := <-n.transferc:
			n.startTransfer(t)
		case p := <-n.confc:
			n.startConfChange(p)
		case res := <-n.snapDone:
			err = n.snapshotTaken(res)
		case res := <-n.sentc:
			n.snapshotSent(res)
		case o := <-n.offerc:
			err = n.snapshotOffered(o)
		case job := <-n.writtenc:
			err = n.finishWrite(job)
		}
		if err == nil {
			err = n.gather()
		}
		// Advance can itself create work (a leader's own fsync may commit),
		// so run Readies until the core is quiet.
		for err == nil && n.core.HasReady() {
			err = n.handleReady(n.core.Ready())
			if err == nil && len(n.snaps.failedSends) > 0 {
				n.reportFailedSends()
			}
		}
		if err != nil {
			n.logger.Error("persisting raft state failed: stopping the node, it must not run without durability",
				"id", n.id, "term", n.hardState.Term, "last_index", n.lastIndex, "error", err)
			n.shutdown(fmt.Errorf("%w: persisting raft state failed: %w", ErrStopped, err))
			return
		}
		n.maybeSnapshot()
		n.checkTransfers()
		n.publish()
		switch untold := n.core.CommitUntold(); {
		case untold && !flushArmed:
			commitFlush.Reset(n.cfg.CommitBroadcastDelay)
			flushArmed = true
		case !untold && flushArmed:
			// A proposal's append told them: a timer left to fire would
			// wake the loop for nothing once per write.
			commitFlush.Stop()
			flushArmed = false
		}
	}
}

// gather takes what else is waiting already (peer messages, proposals, a
// finished write) before the next Ready, so that one Ready, one write and
// one append per follower serve all of it. Without it a loop that no
// longer waits for its fsync would run a Ready, with its messages, for
// nearly every message it receives.
func (n *Node) gather() error {
	for i := 0; i < maxInboxBatch; i++ {
		select {
		case m := <-n.inbox:
			n.step(m)
			continue
		default:
		}
		break
	}
	select {
	case p := <-n.propc:
		n.proposeBatch(p)
	default:
	}
	if n.writing != nil {
		select {
		case job := <-n.writtenc:
			return n.finishWrite(job)
		default:
		}
	}
	return nil
}

func (n *Node) step(m Message) {
	if m.To != n.id {
		n.logger.Warn("dropping misrouted message", "type", m.Type.String(), "from", m.From, "to", m.To)
		return
	}
	if err := n.core.Step(m); err != nil {
		var corrupt *EntryCorruptError
		if errors.As(err, &corrupt) {
			n.logger.Warn("dropping message with a corrupt entry", "from", m.From, "error", err)
			return
		}
		n.logger.Debug("dropping message", "type", m.Type.String(), "from", m.From, "error", err)
	}
}

// proposeBatch proposes everything queued in one core.Propose, so a burst
// of proposals shares one log write and one MsgApp per follower.
func (n *Node) proposeBatch(first *proposal) {
	batch := []*proposal{first}
	for len(batch) < maxProposalBatch {
		select {
		case p := <-n.propc:
			batch = append(batch, p)
			continue
		default:
		}
		break
	}
	live := batch[:0]
	data := make([][]byte, 0, len(batch))
	for _, p := range batch {
		if p.ctx.Err() != nil {
			// The caller has gone; keep the entry out of the log.
			<-n.propSlots
			continue
		}
		live = append(live, p)
		data = append(data, p.data)
	}
	if len(live) == 0 {
		return
	}
	index, term, err := n.core.Propose(n.cfg.Now().UnixNano(), data...)
	n.metrics.Proposals.Add(uint64(len(live)))
	if err != nil {
		n.metrics.ProposalsFailed.Add(uint64(len(live)))
		err = n.withLeaderAddr(err)
		for _, p := range live {
			n.settleProposal(p, nil, err)
		}
		return
	}
	for k, p := range live {
		p.index, p.term = index+Index(k), term
		n.proposals[p.index] = append(n.proposals[p.index], p)
	}
}

// settleProposal frees the slot before answering, so a caller that got its
// answer finds the slot free for its next proposal.
func (n *Node) settleProposal(p *proposal, value any, err error) {
	<-n.propSlots
	p.result <- proposeResult{value: value, err: err}
}

func (n *Node) startRead(r *readRequestW) {
	if r.ctx.Err() != nil {
		<-n.readSlots
		return
	}
	n.reads[r.id] = r
	n.core.ReadIndex(r.id)
}

func (n *Node) settleRead(r *readRequestW, err error) {
	<-n.readSlots
	r.result <- readResult{index: r.index, err: err}
}

func (n *Node) startTransfer(t *transferRequest) {
	if len(n.transfers) >= maxPendingTransfers {
		t.result <- fmt.Errorf("%w: %d leadership transfers pending", ErrOverloaded, len(n.transfers))
		return
	}
	if err := n.core.TransferLeadership(t.to); err != nil {
		t.result <- fmt.Errorf("leadership transfer to node %d: %w", t.to, n.withLeaderAddr(err))
		return
	}
	n.transfers = append(n.transfers, t)
}

// checkTransfers answers transfer waiters once the outcome is visible.
func (n *Node) checkTransfers() {
	if len(n.transfers) == 0 {
		return
	}
	st := n.core.Status()
	keep := n.transfers[:0]
	for _, t := range n.transfers {
		switch {
		case st.Lead == t.to:
			t.result <- nil
		case st.Lead != None && st.Lead != n.id:
			t.result <- fmt.Errorf("leadership transfer to node %d: node %d became leader in term %d instead", t.to, st.Lead, st.Term)
		case st.Role == Leader && st.LeadTransfer != t.to:
			t.result <- fmt.Errorf("leadership transfer to node %d abandoned in term %d: the target did not take over within an election timeout", t.to, st.Term)
		default:
			keep = append(keep, t)
		}
	}
	clear(n.transfers[len(keep):])
	n.transfers = keep
}

// handleReady carries out rd in the order documented on Ready.
func (n *Node) handleReady(rd Ready) error {
	// First, so that the transport knows a new member's address before
	// the first message to it leaves.
	if rd.Config != nil {
		n.onConfig(*rd.Config)
	}
	// The leader's appends may leave before its own fsync: it counts
	// itself toward commit only once durable.
	if len(rd.Messages) > 0 {
		n.cfg.Transport.Send(rd.Messages)
	}
	if len(rd.SendSnapshots) > 0 {
		n.startSnapshotSends(rd.SendSnapshots)
	}
	if rd.InstallSnapshot != nil {
		if err := n.installSnapshot(rd.InstallSnapshot); err != nil {
			return err
		}
	}
	// Committed entries are durable on a majority already, so they are
	// applied (and their callers answered) before this Ready's new
	// entries are persisted: under load every Ready carries both, and
	// applying after the fsync made every answer wait for the next
	// batch's fsync too. On a follower they may include entries of this
	// very Ready; that is safe for the same reason (committed entries
	// never change), and a snapshot taken from them is reconciled with
	// the stored log at restart (TrimLog).
	n.apply(rd.CommittedEntries)
	n.deliverReadStates(rd.ReadStates)
	hs := n.hardStateToSave(rd)
	if rd.SoftState != nil {
		n.onSoftState(*rd.SoftState)
	}
	if hs == nil && len(rd.Entries) == 0 {
		// Nothing to write: whatever the messages vouch for is durable
		// already (the core hands them out only with no write in flight).
		n.sendAfterPersist(rd)
		n.core.Advance(rd)
		return nil
	}
	job := &writeJob{rd: rd, hs: hs}
	if !n.cfg.SyncPersist {
		// The loop goes on stepping acknowledgements, proposals and
		// commits while the writer fsyncs; the core holds back the next
		// write and everything that must follow this one until
		// finishWrite reports it.
		n.writing = job
		n.writec <- job
		n.core.AdvanceAsync(rd)
		return nil
	}
	n.write(job)
	if err := n.wrote(job); err != nil {
		return err
	}
	n.sendAfterPersist(rd)
	n.core.Advance(rd)
	return nil
}

// sendAfterPersist sends the messages that vouch for rd's write: votes and
// acknowledgements.
func (n *Node) sendAfterPersist(rd Ready) {
	if len(rd.MessagesAfterPersist) > 0 {
		n.cfg.Transport.Send(rd.MessagesAfterPersist)
	}
}

// runWriter carries out write jobs in order until writec closes.
func (n *Node) runWriter(done chan<- struct{}) {
	defer close(done)
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(),
		pprof.Labels("goroutine", "consensus.writer", "node", strconv.FormatUint(uint64(n.id), 10))))
	for job := range n.writec {
		n.write(job)
		n.writtenc <- job
	}
}

// finishWrite takes back the writer's report of the write in flight.
func (n *Node) finishWrite(job *writeJob) error {
	n.writing = nil
	if err := n.wrote(job); err != nil {
		return err
	}
	n.sendAfterPersist(job.rd)
	n.core.Persisted(job.rd)
	return nil
}

// waitWrite blocks until the write in flight, if any, is durable, for work
// that must not overlap it (deleting a log prefix, stopping).
func (n *Node) waitWrite() error {
	if n.writing == nil {
		return nil
	}
	return n.finishWrite(<-n.writtenc)
}

// hardStateToSave records rd's hard state and returns it if it must be
// written, nil if not.
func (n *Node) hardStateToSave(rd Ready) *HardState {
	if rd.MustSaveHardState {
		n.hardState = rd.HardState
	}
	// Term and vote must be durable before any message that depends on
	// them leaves. The commit index need not be: it is volatile state in
	// Raft, and a stored one that lags only makes a restarted node wait
	// for the leader to tell it again (a restart never relies on it being
	// current; a snapshot newer than it still wins). So a change of the
	// commit index alone is not synced by itself, which takes one fsync
	// off every commit's critical path (the leader learns of a commit,
	// then applies and answers) and off every follower's. It is stored
	// with the next entries or term/vote change, and when the node stops.
	//
	// Only rd decides: while a write is in flight the core hands out
	// neither entries nor a hard state, and savedHardState lags until the
	// write is reported.
	termOrVote := rd.MustSaveHardState &&
		(rd.HardState.Term != n.savedHardState.Term || rd.HardState.Vote != n.savedHardState.Vote)
	if (len(rd.Entries) > 0 || termOrVote) && n.hardState != n.savedHardState {
		hs := n.hardState
		return &hs
	}
	return nil
}

// write makes job's entries and hard state durable. It runs on the writer
// goroutine (or the loop, with SyncPersist) and touches nothing but the
// stores and job.
func (n *Node) write(job *writeJob) {
	start := time.Now()
	defer func() { job.took = time.Since(start) }()
	ents, hs := job.rd.Entries, job.hs
	if n.batch != nil {
		if err := n.batch.Save(hs, ents); err != nil {
			job.err = fmt.Errorf("saving %d entries and hard state: %w", len(ents), err)
		}
		return
	}
	// Entries first: a stored commit index must never point past the
	// stored log.
	if len(ents) > 0 {
		if err := n.cfg.LogStore.StoreEntries(ents); err != nil {
			job.err = fmt.Errorf("storing entries %d..%d: %w", ents[0].Index, ents[len(ents)-1].Index, err)
			return
		}
	}
	if hs != nil {
		if err := n.cfg.StableStore.SetHardState(*hs); err != nil {
			job.err = fmt.Errorf("storing hard state (term %d, vote %d, commit %d): %w", hs.Term, hs.Vote, hs.Commit, err)
		}
	}
}

// wrote records on the loop what a finished write made durable.
func (n *Node) wrote(job *writeJob) error {
	if job.err != nil {
		return job.err
	}
	n.metrics.Persist.Observe(job.took)
	if k := len(job.rd.Entries); k > 0 {
		// Entries replace the stored log from their first index on, so the
		// last one is the log's end.
		n.lastIndex = job.rd.Entries[k-1].Index
	}
	if job.hs != nil {
		n.savedHardState = *job.hs
	}
	return nil
}

// flushCommit stores a commit index that persist left unsynced, so a
// cleanly stopped node restarts knowing everything it had seen committed.
func (n *Node) flushCommit() {
	if n.hardState == n.savedHardState {
		return
	}
	hs := n.hardState
	var err error
	if n.batch != nil {
		err = n.batch.Save(&hs, nil)
	} else {
		err = n.cfg.StableStore.SetHardState(hs)
	}
	if err != nil {
		n.logger.Warn("storing the commit index at stop failed; a restart learns it from the leader",
			"id", n.id, "term", hs.Term, "commit", hs.Commit, "error", err)
		return
	}
	n.savedHardState = hs
}

// apply feeds committed entries to the state machine and settles the
// proposals and reads they decide.
func (n *Node) apply(ents []Entry) {
	for i := range ents {
		e := ents[i]
		var value any
		switch e.Type {
		case EntryNormal:
			start := time.Now()
			value = n.cfg.StateMachine.Apply(e)
			n.metrics.Apply.Observe(time.Since(start))
		case EntryConfig:
			// Verified when it entered the log; the proposer gets the
			// change as carried out.
			if cc, c, err := DecodeConfEntry(e.Data); err == nil {
				value = ConfChangeResult{Change: cc, Config: c, Index: e.Index}
				n.logger.Info("membership change committed", "index", e.Index, "term", e.Term, "change", cc.String(), "config", c.String())
			}
		}
		n.applied = e.Index
		n.snaps.sinceEntries++
		n.snaps.sinceBytes += int64(e.Size())
		if ws, ok := n.proposals[e.Index]; ok {
			delete(n.proposals, e.Index)
			for _, p := range ws {
				if p.term == e.Term {
					n.settleProposal(p, value, nil)
				} else {
					n.settleProposal(p, nil, fmt.Errorf("%w (proposed at index %d in term %d; term %d's entry committed there)", ErrProposalLost, p.index, p.term, e.Term))
				}
			}
		}
		if e.Term > n.appliedTerm {
			n.appliedTerm = e.Term
			n.dropOlderTerms(e.Term)
		}
	}
	n.releaseReads()
}

// dropOlderTerms fails proposals of terms below t once an entry of term t
// is committed before them: log terms never decrease along the log, so
// every later index of the final log holds an entry of term ≥ t, never
// theirs. Without this, the proposals of a deposed leader whose log the new
// leader truncated would wait until the log grows past their indexes.
func (n *Node) dropOlderTerms(t Term) {
	for idx, ws := range n.proposals {
		keep := ws[:0]
		for _, p := range ws {
			if p.term < t {
				n.settleProposal(p, nil, fmt.Errorf("%w (proposed at index %d in term %d; an entry of term %d committed first)", ErrProposalLost, p.index, p.term, t))
				continue
			}
			keep = append(keep, p)
		}
		if len(keep) == 0 {
			delete(n.proposals, idx)
		} else {
			n.proposals[idx] = keep
		}
	}
}

func (n *Node) deliverReadStates(rss []ReadState) {
	for _, rs := range rss {
		r, ok := n.reads[rs.ID]
		if !ok {
			continue // abandoned, or an answer to a request we already dropped
		}
		delete(n.reads, rs.ID)
		if rs.Dropped {
			n.settleRead(r, ErrReadDropped)
			continue
		}
		r.index = rs.Index
		// After any equal index, so equal reads are answered in arrival order.
		i := sort.Search(len(n.readsAtIndex), func(i int) bool { return n.readsAtIndex[i].index > r.index })
		n.readsAtIndex = slices.Insert(n.readsAtIndex, i, r)
	}
	n.releaseReads()
}

// releaseReads answers reads whose index is applied.
func (n *Node) releaseReads() {
	k := 0
	for k < len(n.readsAtIndex) && n.readsAtIndex[k].index <= n.applied {
		n.settleRead(n.readsAtIndex[k], nil)
		k++
	}
	if k > 0 {
		clear(n.readsAtIndex[:k])
		n.readsAtIndex = n.readsAtIndex[k:]
	}
}

func (n *Node) onSoftState(ss SoftState) {
	if ss.Lead == n.lead {
		return
	}
	old := n.lead
	n.lead = ss.Lead
	// The core's term and commit, not n.hardState's: while a write is in
	// flight the core hands out the leader change but holds back the hard
	// state of the new term, and the line would name the old one.
	st := n.core.Status()
	n.logger.Info("leader changed", "id", n.id, "leader", leaderName(ss.Lead), "old_leader", leaderName(old),
		"role", ss.Role.String(), "term", st.Term, "commit", st.Commit, "last_index", st.LastIndex)
	// Reads still waiting for a ReadState went to the old leader (or to
	// us, and the core has dropped those). A deposed leader may never
	// answer, so fail them now; the caller retries against the new leader.
	// Reads that already hold an index stay valid and keep waiting.
	for id, r := range n.reads {
		delete(n.reads, id)
		n.settleRead(r, ErrReadDropped)
	}
}

func leaderName(id NodeID) string {
	if id == None {
		return "none"
	}
	return strconv.FormatUint(uint64(id), 10)
}

// dropAbandoned forgets waiters whose caller has gone, so their slots are
// free for new requests. Their proposals may still commit and apply.
func (n *Node) dropAbandoned() {
	for idx, ws := range n.proposals {
		keep := ws[:0]
		for _, p := range ws {
			if p.ctx.Err() != nil {
				<-n.propSlots
				continue
			}
			keep = append(keep, p)
		}
		if len(keep) == 0 {
			delete(n.proposals, idx)
		} else {
			n.proposals[idx] = keep
		}
	}
	for id, r := range n.reads {
		if r.ctx.Err() != nil {
			delete(n.reads, id)
			<-n.readSlots
		}
	}
	n.readsAtIndex = slices.DeleteFunc(n.readsAtIndex, func(r *readRequestW) bool {
		if r.ctx.Err() != nil {
			<-n.readSlots
			return true
		}
		return false
	})
	n.transfers = slices.DeleteFunc(n.transfers, func(t *transferRequest) bool { return t.ctx.Err() != nil })
}

// shutdown answers every waiter, including requests still queued, before
// done closes. cause wraps ErrStopped.
func (n *Node) shutdown(cause error) {
	n.mu.Lock()
	n.err = cause
	n.mu.Unlock()
	// An entry in the log may still commit through the other nodes.
	unknown := fmt.Errorf("%w: %w", ErrOutcomeUnknown, cause)
	for idx, ws := range n.proposals {
		for _, p := range ws {
			n.settleProposal(p, nil, unknown)
		}
		delete(n.proposals, idx)
	}
	for id, r := range n.reads {
		delete(n.reads, id)
		n.settleRead(r, cause)
	}
	for _, r := range n.readsAtIndex {
		n.settleRead(r, cause)
	}
	n.readsAtIndex = nil
	for _, t := range n.transfers {
		t.result <- cause
	}
	n.transfers = nil
	for {
		select {
		case p := <-n.propc:
			n.settleProposal(p, nil, cause)
		case r := <-n.readc:
			n.settleRead(r, cause)
		case t := <-n.transferc:
			t.result <- cause
		case p := <-n.confc:
			n.settleProposal(p, nil, cause)
		default:
			return
		}
	}
}
