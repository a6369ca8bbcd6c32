package consensus

// ReadIndex asks for a linearizable read point (dissertation §6.4). The
// answer comes back as a ReadState with the same id in a later Ready: once
// the local state machine has applied ReadState.Index, a read reflects
// every write acknowledged before ReadIndex was called. A follower asks the
// leader; with no known leader the request is dropped at once.
func (r *Raft) ReadIndex(id uint64) {
	if r.role == Leader {
		r.reads.request(r, r.id, id)
		return
	}
	if r.lead == None {
		r.reads.ready = append(r.reads.ready, ReadState{ID: id, Dropped: true})
		return
	}
	r.send(Message{Type: MsgReadIndex, To: r.lead, Context: id})
}

type readRequest struct {
	from  NodeID
	id    uint64
	index Index
	round uint64
}

// readIndexQueue holds the leader's read requests.
//
// A request is answered with the commit index it saw on arrival, once a
// quorum has answered a heartbeat sent after it arrived: then no other
// leader can have committed anything we do not know of. Requests that arrive
// before the leader has committed an entry of its own term wait, because
// until then the leader's commit index may lag the real one (§6.4 step 1).
type readIndexQueue struct {
	waiting []readRequest
	queue   []readRequest
	// round numbers heartbeat broadcasts; a request needs acks of a round
	// at least as new as its own.
	round        uint64
	flushPending bool
	acked        map[NodeID]uint64
	ready        []ReadState
}

func committedInTerm(r *Raft) bool {
	t, _ := r.log.term(r.log.committed)
	return t == r.term
}

func (q *readIndexQueue) request(r *Raft, from NodeID, id uint64) {
	if !committedInTerm(r) {
		q.waiting = append(q.waiting, readRequest{from: from, id: id})
		return
	}
	req := readRequest{from: from, id: id, index: r.log.committed, round: q.round + 1}
	if r.quorum() == 1 && r.isVoter(r.id) {
		q.respond(r, req)
		return
	}
	q.queue = append(q.queue, req)
	q.flushPending = true
}

// onCommit releases requests that waited for the term's first commit.
func (q *readIndexQueue) onCommit(r *Raft) {
	if len(q.waiting) == 0 || !committedInTerm(r) {
		return
	}
	waiting := q.waiting
	q.waiting = nil
	for _, w := range waiting {
		q.request(r, w.from, w.id)
	}
}

// flush broadcasts one heartbeat round for every request queued since the
// last flush, so a burst of reads costs one round trip.
func (q *readIndexQueue) flush(r *Raft) {
	if !q.flushPending {
		return
	}
	q.flushPending = false
	q.round++
	r.heartbeatElapsed = 0
	r.bcastHeartbeat(q.round)
}

func (q *readIndexQueue) onHeartbeatResp(r *Raft, from NodeID, round uint64) {
	if q.acked == nil {
		q.acked = map[NodeID]uint64{}
	}
	if round > q.acked[from] {
		q.acked[from] = round
	}
	n := 0
	for n < len(q.queue) {
		// Only voters confirm leadership: a learner's answer proves
		// nothing about who could elect another leader.
		acks := 0
		if r.isVoter(r.id) {
			acks++
		}
		for id, a := range q.acked {
			if a >= q.queue[n].round && r.isVoter(id) {
				acks++
			}
		}
		if acks < r.quorum() {
			break
		}
		q.respond(r, q.queue[n])
		n++
	}
	q.queue = q.queue[n:]
}

func (q *readIndexQueue) respond(r *Raft, req readRequest) {
	if req.from == r.id {
		q.ready = append(q.ready, ReadState{ID: req.id, Index: req.index})
		return
	}
	r.send(Message{Type: MsgReadIndexResp, To: req.from, Index: req.index, Context: req.id})
}

// dropReads fails every pending request: we are no longer leader.
func (r *Raft) dropReads() {
	q := &r.reads
	for _, reqs := range [][]readRequest{q.waiting, q.queue} {
		for _, req := range reqs {
			if req.from == r.id {
				q.ready = append(q.ready, ReadState{ID: req.id, Dropped: true})
			} else {
				r.send(Message{Type: MsgReadIndexResp, To: req.from, Reject: true, Context: req.id})
			}
		}
	}
	q.waiting, q.queue, q.acked, q.flushPending = nil, nil, nil, false
}
