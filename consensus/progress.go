package consensus

// replState is how the leader replicates to one follower.
type replState uint8

const (
	// probing: we do not know where the follower's log matches ours. Send one
	// MsgApp and wait for its answer (or a heartbeat answer) before the next.
	probing replState = iota
	// replicating: the follower matched; stream MsgApps without waiting, up
	// to MaxInflightMsgs unacknowledged.
	replicating
	// snapshotting: the entries the follower needs were compacted away; the
	// driver is streaming it a snapshot. Nothing else is sent until the
	// driver reports the outcome (ReportSnapshot) or the follower answers
	// at or past the snapshot.
	snapshotting
)

func (s replState) String() string {
	switch s {
	case replicating:
		return "replicate"
	case snapshotting:
		return "snapshot"
	}
	return "probe"
}

// progress is the leader's record of one follower (nextIndex[] and
// matchIndex[] of the paper, plus flow control).
//
// Invariant: match < next. match only moves forward, and only on a
// successful MsgAppResp (seed 002 mistake 4: next may run ahead optimistically
// while pipelining, match may not).
type progress struct {
	match, next Index
	state       replState
	// probeSent pauses a probing follower until it answers.
	probeSent bool
	// inflight holds the last index of each unacknowledged MsgApp, oldest
	// first; len(inflight) ≤ MaxInflightMsgs.
	inflight []Index
	// lastActive is the leader tick at which the follower last spoke.
	lastActive int
	// pendingSnapshot is, while snapshotting, the leader's log base when
	// the snapshot was asked for (the snapshot sent covers at least that).
	pendingSnapshot Index
}

func (p *progress) paused(maxInflight int) bool {
	switch p.state {
	case probing:
		return p.probeSent
	case snapshotting:
		return true
	}
	return len(p.inflight) >= maxInflight
}

// maybeUpdate records a successful append up to n.
func (p *progress) maybeUpdate(n Index) bool {
	updated := false
	if p.match < n {
		p.match = n
		updated = true
		p.probeSent = false
	}
	if p.next < n+1 {
		p.next = n + 1
	}
	return updated
}

func (p *progress) becomeProbe() {
	p.state = probing
	p.probeSent = false
	p.inflight = p.inflight[:0]
	p.next = p.match + 1
}

// becomeSnapshot pauses replication while the driver sends a snapshot
// covering at least index.
func (p *progress) becomeSnapshot(index Index) {
	p.state = snapshotting
	p.probeSent = false
	p.inflight = p.inflight[:0]
	p.pendingSnapshot = index
}

func (p *progress) becomeReplicate() {
	p.state = replicating
	p.probeSent = false
	p.inflight = p.inflight[:0]
	p.next = p.match + 1
}

// freeTo drops in-flight records for messages acknowledged up to n.
func (p *progress) freeTo(n Index) {
	i := 0
	for i < len(p.inflight) && p.inflight[i] <= n {
		i++
	}
	if i > 0 {
		p.inflight = append(p.inflight[:0], p.inflight[i:]...)
	}
}

// freeFirst drops the oldest in-flight record so a follower whose
// acknowledgements were lost is not stuck behind a full window.
func (p *progress) freeFirst() {
	if len(p.inflight) > 0 {
		p.inflight = append(p.inflight[:0], p.inflight[1:]...)
	}
}
