package consensus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// maxSnapshotSends bounds the snapshot transfers in flight from one node
// (at most one per follower in any case).
const maxSnapshotSends = 16

// maxSnapshotOffers bounds received snapshots waiting for the loop.
const maxSnapshotOffers = 4

// snapState is the loop's snapshot bookkeeping (owned by the loop
// goroutine, like loopState).
type snapState struct {
	// snap is the newest snapshot known durable in the store (taken here,
	// restored at start, or installed).
	snap SnapshotMeta
	// sinceEntries/sinceBytes count what was applied since snap.
	sinceEntries int
	sinceBytes   int64
	// taking is set while a snapshot is being written.
	taking bool
	// sending holds followers a snapshot is streaming to.
	sending map[NodeID]bool
	// failedSends are sends refused before they started; reported to the
	// core after the current Ready.
	failedSends []NodeID
}

type snapTaken struct {
	meta SnapshotMeta
	err  error
	took time.Duration
}

type snapSent struct {
	to   NodeID
	meta SnapshotMeta
	err  error
}

type snapOffer struct {
	from NodeID
	meta SnapshotMeta
	conf Configuration
}

// maybeSnapshot starts a snapshot once the log since the last one passes
// a threshold. It runs on the loop goroutine between Readies.
//
// Not stopping the world: a SnapshotCapturer hands back a point-in-time
// copy here, between two applies, and the copy is written to the store on
// another goroutine while applies continue. The snapshot's index and term
// are those of the last applied entry at the copy, so they describe it
// exactly.
func (n *Node) maybeSnapshot() {
	ss := &n.snaps
	if n.cfg.SnapshotStore == nil || ss.taking || n.applied <= ss.snap.Index {
		return
	}
	if ss.sinceEntries < n.cfg.SnapshotEntries && ss.sinceBytes < n.cfg.SnapshotBytes {
		return
	}
	conf := n.core.ConfigAt(n.applied)
	meta := SnapshotMeta{Index: n.applied, Term: n.appliedTerm, Voters: conf.Voters()}
	var write func(io.Writer) error
	if c, ok := n.cfg.StateMachine.(SnapshotCapturer); ok {
		w, err := c.CaptureSnapshot()
		if err != nil {
			n.logger.Warn("capturing a snapshot failed; will retry after more entries", "index", meta.Index, "error", err)
			ss.sinceEntries, ss.sinceBytes = 0, 0
			return
		}
		write = w
	}
	ss.taking = true
	start := time.Now()
	if write == nil {
		// No cheap copy: write it here, before the next apply. The loop
		// takes the result from snapDone (room for it: one snapshot at a
		// time) like a snapshot written on a goroutine, so that a failed
		// raft write met while compacting (snapshotTaken waits for the
		// write in flight) stops the node, and the Readies it leaves run.
		err := n.writeSnapshot(meta, conf, n.cfg.StateMachine.Snapshot)
		n.snapDone <- snapTaken{meta: meta, err: err, took: time.Since(start)}
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		err := n.writeSnapshot(meta, conf, write)
		n.snapDone <- snapTaken{meta: meta, err: err, took: time.Since(start)}
	}()
}

// writeSnapshot writes one snapshot to the store, the configuration as of
// its index first (snapshot_conf.go); it is durable when this returns nil.
func (n *Node) writeSnapshot(meta SnapshotMeta, conf Configuration, write func(io.Writer) error) error {
	sink, err := n.cfg.SnapshotStore.Create(meta)
	if err != nil {
		return err
	}
	if err := writeConfHeader(sink, conf); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("writing snapshot %d: %w", meta.Index, err)
	}
	if err := write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("writing snapshot %d: %w", meta.Index, err)
	}
	return sink.Close()
}

// snapshotTaken compacts the log once a snapshot is durable: the core
// first, then the store, keeping SnapshotTrailing entries. Its error is a
// failed raft write, which stops the node.
func (n *Node) snapshotTaken(res snapTaken) error {
	ss := &n.snaps
	ss.taking = false
	if res.err != nil {
		n.metrics.SnapshotsFailed.Add(1)
		n.logger.Warn("taking a snapshot failed; will retry after more entries", "index", res.meta.Index, "error", res.err)
		ss.sinceEntries, ss.sinceBytes = 0, 0
		return nil
	}
	n.metrics.Snapshots.Add(1)
	if res.meta.Index > ss.snap.Index {
		ss.snap = res.meta
	}
	// Entries applied while it was written count toward the next one
	// (their bytes are not known any more; entries suffice).
	ss.sinceEntries, ss.sinceBytes = int(n.applied-min(n.applied, res.meta.Index)), 0
	var through Index
	if trail := Index(n.cfg.SnapshotTrailing); res.meta.Index > trail {
		through = n.core.Compact(res.meta.Index - trail)
	}
	n.logger.Info("snapshot taken", "index", res.meta.Index, "term", res.meta.Term, "took", res.took, "log_base", through)
	if through > 0 {
		// Stores need not take a delete and a write at once.
		if err := n.waitWrite(); err != nil {
			return err
		}
		if err := n.cfg.LogStore.DeletePrefix(through); err != nil {
			// The entries stay on disk until the next compaction; the
			// snapshot covers them either way.
			n.logger.Warn("deleting the compacted log prefix failed; will retry at the next snapshot", "through", through, "error", err)
		}
	}
	return nil
}

// startSnapshotSends streams the newest snapshot to each follower the core
// asked for. Called inside handleReady, so outcomes reach the core later
// (through snapSent, or failedSends after Advance).
func (n *Node) startSnapshotSends(tos []NodeID) {
	ss := &n.snaps
	sender, ok := n.cfg.Transport.(SnapshotSender)
	for _, to := range tos {
		if ss.sending[to] {
			continue // the outcome of the one in flight will be reported
		}
		if !ok || n.cfg.SnapshotStore == nil || len(ss.sending) >= maxSnapshotSends {
			n.logger.Warn("cannot send a snapshot to a follower that needs one", "to", to,
				"transport_streams_snapshots", ok, "snapshot_store", n.cfg.SnapshotStore != nil, "sends_in_flight", len(ss.sending))
			ss.failedSends = append(ss.failedSends, to)
			continue
		}
		ss.sending[to] = true
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			res := snapSent{to: to}
			res.meta, res.err = n.sendSnapshot(sender, to)
			n.sentc <- res
		}()
	}
}

func (n *Node) sendSnapshot(sender SnapshotSender, to NodeID) (SnapshotMeta, error) {
	meta, rc, ok, err := n.cfg.SnapshotStore.Latest()
	if err != nil {
		return meta, err
	}
	if !ok {
		return meta, errors.New("no intact snapshot in the store")
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(n.bgctx, n.cfg.SnapshotTimeout)
	defer cancel()
	start := time.Now()
	if err := sender.SendSnapshot(ctx, to, meta, rc); err != nil {
		return meta, err
	}
	n.logger.Info("snapshot sent", "to", to, "index", meta.Index, "term", meta.Term, "bytes", meta.Size, "took", time.Since(start))
	return meta, nil
}

func (n *Node) snapshotSent(res snapSent) {
	delete(n.snaps.sending, res.to)
	if res.err != nil {
		n.metrics.SnapshotSendsFailed.Add(1)
		n.logger.Warn("sending a snapshot failed; the leader retries once the follower answers", "to", res.to, "index", res.meta.Index, "error", res.err)
	} else {
		n.metrics.SnapshotsSent.Add(1)
	}
	n.core.ReportSnapshot(res.to, res.meta.Index, res.err == nil)
}

// reportFailedSends tells the core about sends that never started.
func (n *Node) reportFailedSends() {
	for _, to := range n.snaps.failedSends {
		n.core.ReportSnapshot(to, 0, false)
	}
	n.snaps.failedSends = n.snaps.failedSends[:0]
}

// installSnapshot carries out Ready.InstallSnapshot: the state machine is
// restored from the received snapshot (durable and verified in the store),
// then the stored log it replaces is deleted. A failure here stops the
// node: the core has already moved its log past the snapshot.
func (n *Node) installSnapshot(in *SnapshotInstall) error {
	meta, rc, err := n.cfg.SnapshotStore.Open(in.Meta.Index, in.Meta.Term)
	if err != nil {
		return fmt.Errorf("opening received snapshot %d (term %d): %w", in.Meta.Index, in.Meta.Term, err)
	}
	start := time.Now()
	_, body, err := readConfHeader(rc)
	if err == nil {
		err = n.cfg.StateMachine.Restore(body)
	}
	rc.Close()
	if err != nil {
		return fmt.Errorf("restoring the state machine from received snapshot %d (term %d): %w", meta.Index, meta.Term, err)
	}
	through := meta.Index
	if in.DiscardLog {
		through = max(through, n.lastIndex)
	}
	if err := n.cfg.LogStore.DeletePrefix(through); err != nil {
		return fmt.Errorf("deleting the log replaced by snapshot %d: %w", meta.Index, err)
	}
	if in.DiscardLog {
		n.lastIndex = meta.Index
	}
	n.applied, n.appliedTerm = meta.Index, meta.Term
	n.snaps.snap = meta
	n.snaps.sinceEntries, n.snaps.sinceBytes = 0, 0
	n.metrics.SnapshotsInstalled.Add(1)
	n.logger.Info("snapshot installed", "index", meta.Index, "term", meta.Term, "bytes", meta.Size,
		"log_discarded", in.DiscardLog, "took", time.Since(start))
	// Proposals at indexes the snapshot covers cannot be told apart from
	// what committed there; their callers must not wait forever.
	for idx, ws := range n.proposals {
		if idx > meta.Index {
			continue
		}
		for _, p := range ws {
			n.settleProposal(p, nil, fmt.Errorf("%w: a snapshot through index %d replaced the log where it was proposed (index %d)", ErrOutcomeUnknown, meta.Index, p.index))
		}
		delete(n.proposals, idx)
	}
	n.dropOlderTerms(meta.Term)
	return nil
}

// ReceiveSnapshot opens where a snapshot streamed by node from is written
// (the peer transport's SnapshotSink factory). The sink writes into the
// snapshot store; its Close, called once the transfer's size and checksum
// checked out, makes the snapshot durable and offers it to the core, which
// installs it if it is ahead of the commit index. A transfer that fails is
// cancelled and leaves the node's state as it was.
func (n *Node) ReceiveSnapshot(ctx context.Context, from NodeID, meta SnapshotMeta) (SnapshotSink, error) {
	if n.cfg.SnapshotStore == nil {
		return nil, fmt.Errorf("node %d has no snapshot store: it cannot take snapshots", n.id)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-n.done:
		return nil, n.stoppedErr()
	default:
	}
	if st := n.Status(); meta.Index <= st.Commit {
		return nil, fmt.Errorf("snapshot %d from node %d is not ahead of node %d's commit index %d: not needed", meta.Index, from, n.id, st.Commit)
	}
	sink, err := n.cfg.SnapshotStore.Create(meta)
	if err != nil {
		return nil, fmt.Errorf("creating a snapshot for the one from node %d: %w", from, err)
	}
	return &offerSink{SnapshotSink: sink, n: n, offer: snapOffer{from: from, meta: meta}}, nil
}

// offerSink hands a snapshot to the loop once it is durable, with the
// configuration read from its header on the way in.
type offerSink struct {
	SnapshotSink
	n     *Node
	offer snapOffer
	sniff confSniffer
}

func (s *offerSink) Write(p []byte) (int, error) {
	s.sniff.observe(p)
	return s.SnapshotSink.Write(p)
}

func (s *offerSink) Close() error {
	conf, err := s.sniff.result()
	if err != nil {
		_ = s.SnapshotSink.Cancel()
		return fmt.Errorf("snapshot %d from node %d: %w", s.offer.meta.Index, s.offer.from, err)
	}
	if conf == nil {
		// Written before configurations were stored in snapshots.
		c := NewConfiguration(s.offer.meta.Voters, nil)
		conf = &c
	}
	s.offer.conf = *conf
	if err := s.SnapshotSink.Close(); err != nil {
		return err
	}
	select {
	case s.n.offerc <- s.offer:
		return nil
	case <-s.n.done:
		return fmt.Errorf("snapshot %d stored, but the node stopped before installing it: %w", s.offer.meta.Index, ErrStopped)
	default:
		return fmt.Errorf("%w: %d received snapshots wait to be installed; snapshot %d is stored and will be sent again",
			ErrOverloaded, maxSnapshotOffers, s.offer.meta.Index)
	}
}

func (n *Node) snapshotOffered(o snapOffer) error {
	// The core refuses a snapshot while a write or an acknowledgement is
	// in flight (Raft.SnapshotReceived): let them all land first, unless
	// it will be refused anyway (a leader's loop must not wait for its
	// writes over a stale offer).
	if st := n.core.Status(); st.Role == Follower && o.meta.Index > st.Commit {
		if err := n.quiesce(); err != nil {
			return err
		}
	}
	if !n.core.SnapshotReceived(o.from, o.meta, o.conf) {
		n.logger.Info("received snapshot not installed (not ahead of the commit index, or not following now)",
			"from", o.from, "index", o.meta.Index)
	}
	return nil
}

// quiesce carries out the core's pending work, waiting for each write,
// until nothing is left in flight. Its error is a failed write.
func (n *Node) quiesce() error {
	for {
		switch {
		case n.writing != nil:
			if err := n.waitWrite(); err != nil {
				return err
			}
		case n.core.HasReady():
			if err := n.handleReady(n.core.Ready()); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}
