package api

import "github.com/lockd/lockd/session"

// Method numbers of the client API (rpc.Method values). Peers use the
// same numbers when a follower forwards a call to the leader.
const (
	MethodSessionCreate uint16 = 100 + iota
	MethodSessionKeepalive
	MethodSessionDestroy
	MethodSessionList
	MethodSessionInfo
	MethodLockAcquire
	MethodLockRelease
	MethodLockCancel
	MethodLockCheck
	MethodLockList
	MethodKVGet
	MethodKVPut
	MethodKVDelete
	MethodKVList
	MethodKVTxn
	MethodWatch
	MethodClusterStatus
	MethodMemberAdd
	MethodMemberPromote
	MethodMemberRemove
	MethodLeaderTransfer
	// MethodSessionKeepaliveBatch renews several sessions in one call
	// (SessionKeepaliveBatchRequest). Servers older than it answer
	// rpc.ErrUnknownMethod; clients then send MethodSessionKeepalive.
	MethodSessionKeepaliveBatch
)

// FirstErrorCode is where Code values start in the rpc error table:
// rpc code = FirstErrorCode + Code.
const FirstErrorCode = 1000

// WriteHeader makes a write exactly-once: the server remembers the result
// of the last Seq per ClientID and answers a retry with it. ClientID 0
// turns this off.
type WriteHeader struct {
	ClientID uint64 `codec:"cid,omitempty"`
	Seq      uint64 `codec:"seq,omitempty"`
}

// ReadHeader chooses the read's consistency. By default a read is
// linearizable (the serving node confirms with the leader and waits until
// it has applied that far); Stale serves the local state at once.
type ReadHeader struct {
	Stale bool `codec:"stale,omitempty"`
}

// ReadInfo says where a read was served.
type ReadInfo struct {
	// Index is the applied Raft index the answer reflects; Revision the KV
	// revision.
	Index    uint64 `codec:"i"`
	Revision int64  `codec:"r"`
	// Stale reports a stale read, with the time since the serving node
	// last heard from a leader (nanoseconds; 0 on the leader itself).
	Stale            bool  `codec:"s,omitempty"`
	LeaderContactAge int64 `codec:"age,omitempty"`
	// Node is the name of the node that served the read.
	Node string `codec:"n,omitempty"`
}

type SessionCreateRequest struct {
	Write WriteHeader `codec:"w"`
	// TTL and LockDelay in nanoseconds; TTL 0 and LockDelay < 0 ask for
	// the defaults.
	TTL       int64  `codec:"ttl"`
	LockDelay int64  `codec:"ld"`
	Name      string `codec:"n,omitempty"`
}

type SessionCreateResponse struct {
	Session SessionInfo `codec:"s"`
}

type SessionKeepaliveRequest struct {
	ID session.ID `codec:"id"`
}

type SessionKeepaliveResponse struct {
	// TTL is the session's TTL (nanoseconds): the next keepalive is due
	// well within it.
	TTL int64 `codec:"ttl"`
}

// SessionKeepaliveBatchRequest renews every session in IDs with one call:
// a client keeps all of its sessions alive with about one call per TTL/3
// instead of one per session. At most MaxKeepaliveBatch ids.
type SessionKeepaliveBatchRequest struct {
	IDs []session.ID `codec:"ids"`
}

// SessionKeepaliveBatchResponse has one result per requested id, in the
// request's order. The call itself fails (with no results) only for what
// concerns every id alike: no leader in time, a refused request.
type SessionKeepaliveBatchResponse struct {
	Results []KeepaliveResult `codec:"r"`
}

// KeepaliveResult is one session's outcome in a batch: its TTL
// (nanoseconds) when renewed, else Code (CodeSessionNotFound: the session
// is not alive) and Message.
type KeepaliveResult struct {
	TTL     int64  `codec:"t,omitempty"`
	Code    Code   `codec:"c,omitempty"`
	Message string `codec:"m,omitempty"`
}

// Err is nil for a renewed session, else the session's *Error.
func (r KeepaliveResult) Err() error {
	if r.Code == CodeOK {
		return nil
	}
	return &Error{Code: r.Code, Message: r.Message}
}

type SessionDestroyRequest struct {
	Write WriteHeader `codec:"w"`
	ID    session.ID  `codec:"id"`
}

type SessionDestroyResponse struct{}

type SessionListRequest struct {
	Read ReadHeader `codec:"r"`
}

type SessionListResponse struct {
	Sessions []SessionInfo `codec:"s"`
	Read     ReadInfo      `codec:"ri"`
}

type SessionInfoRequest struct {
	Read ReadHeader `codec:"r"`
	ID   session.ID `codec:"id"`
}

type SessionInfoResponse struct {
	Session SessionInfo `codec:"s"`
	Read    ReadInfo    `codec:"ri"`
}

// LockAcquireRequest asks for a lock. With Wait the call blocks (FIFO)
// until granted, until WaitTimeout (nanoseconds; 0 = the call's deadline)
// or until the call is cancelled; a wait that ends without a grant is
// withdrawn through the log, so a late grant cannot leak the lock.
type LockAcquireRequest struct {
	Write       WriteHeader `codec:"w"`
	Name        string      `codec:"n"`
	Session     session.ID  `codec:"s"`
	Mode        Mode        `codec:"m"`
	Limit       int         `codec:"l,omitempty"`
	Wait        bool        `codec:"wait,omitempty"`
	WaitTimeout int64       `codec:"wt,omitempty"`
}

type LockAcquireResponse struct {
	Grant Grant `codec:"g"`
}

type LockReleaseRequest struct {
	Write   WriteHeader `codec:"w"`
	Name    string      `codec:"n"`
	Session session.ID  `codec:"s"`
	Token   uint64      `codec:"t"`
}

type LockReleaseResponse struct{}

type LockCheckRequest struct {
	Read  ReadHeader `codec:"r"`
	Name  string     `codec:"n"`
	Token uint64     `codec:"t"`
}

// LockCheckResponse: Current is true if Token is a grant the lock still
// has; Grant is that grant.
type LockCheckResponse struct {
	Current bool     `codec:"c"`
	Grant   Grant    `codec:"g"`
	Read    ReadInfo `codec:"ri"`
}

type LockListRequest struct {
	Read   ReadHeader `codec:"r"`
	Prefix string     `codec:"p,omitempty"`
}

type LockListResponse struct {
	Locks []LockInfo `codec:"l"`
	Read  ReadInfo   `codec:"ri"`
}

type KVGetRequest struct {
	Read ReadHeader `codec:"r"`
	Key  string     `codec:"k"`
}

// KVGetResponse: KV is nil if the key does not exist.
type KVGetResponse struct {
	KV   *KeyValue `codec:"kv"`
	Read ReadInfo  `codec:"ri"`
}

type KVPutRequest struct {
	Write   WriteHeader `codec:"w"`
	Key     string      `codec:"k"`
	Value   []byte      `codec:"v"`
	Session session.ID  `codec:"s,omitempty"`
}

type KVPutResponse struct {
	Revision int64     `codec:"rev"`
	PrevKV   *KeyValue `codec:"p,omitempty"`
}

type KVDeleteRequest struct {
	Write  WriteHeader `codec:"w"`
	Key    string      `codec:"k"`
	Prefix bool        `codec:"p,omitempty"`
}

type KVDeleteResponse struct {
	Revision int64     `codec:"rev"`
	Deleted  int       `codec:"d"`
	PrevKV   *KeyValue `codec:"p,omitempty"`
}

type KVListRequest struct {
	Read   ReadHeader `codec:"r"`
	Prefix string     `codec:"p"`
	Start  string     `codec:"s,omitempty"`
	Limit  int        `codec:"l,omitempty"`
}

type KVListResponse struct {
	KVs  []KeyValue `codec:"kvs"`
	More bool       `codec:"more,omitempty"`
	Read ReadInfo   `codec:"ri"`
}

type KVTxnRequest struct {
	Write    WriteHeader `codec:"w"`
	Compares []Compare   `codec:"c,omitempty"`
	Then     []Op        `codec:"t,omitempty"`
	Else     []Op        `codec:"e,omitempty"`
}

type KVTxnResponse struct {
	Succeeded bool       `codec:"ok"`
	Ops       []OpResult `codec:"ops"`
	Revision  int64      `codec:"rev"`
}

// WatchRequest opens a stream of events for Key (or every key with the
// prefix) from revision FromRevision on (0 = from the next change).
type WatchRequest struct {
	Key          string `codec:"k"`
	Prefix       bool   `codec:"p,omitempty"`
	FromRevision int64  `codec:"from,omitempty"`
}

// WatchMessage is one message of a watch stream: the events of one or
// more whole revisions, in order. NextRevision is where a reconnecting
// client resumes (its last revision + 1).
type WatchMessage struct {
	Events       []Event `codec:"ev,omitempty"`
	NextRevision int64   `codec:"next"`
}

type ClusterStatusRequest struct{}

// MemberStatus is one node as the answering node sees it.
type MemberStatus struct {
	ID       uint64 `codec:"id"`
	Name     string `codec:"name"`
	PeerAddr string `codec:"peer"`
	Role     string `codec:"role,omitempty"`
	Term     uint64 `codec:"term,omitempty"`
	Commit   uint64 `codec:"commit,omitempty"`
	Applied  uint64 `codec:"applied,omitempty"`
	// Match is the leader's view of how far the member's log matches.
	Match uint64 `codec:"match,omitempty"`
	// Active is false if the leader has not heard from it recently.
	Active bool `codec:"active,omitempty"`
	// Learner: the member receives the log but does not vote (yet).
	Learner bool `codec:"learner,omitempty"`
}

type ClusterStatusResponse struct {
	// Node is the answering node, Leader the leader it knows (0: none).
	Node    MemberStatus   `codec:"node"`
	Leader  uint64         `codec:"leader"`
	Term    uint64         `codec:"term"`
	Members []MemberStatus `codec:"members"`
}

// MemberAddRequest adds a member as a learner: it receives the log but
// does not vote. Unless Learner is set, the leader promotes it to voter
// once it has caught up; with Learner it stays one until MemberPromote.
// The leader refuses a peer address it cannot connect to.
type MemberAddRequest struct {
	Name     string `codec:"name"`
	PeerAddr string `codec:"peer"`
	Learner  bool   `codec:"learner,omitempty"`
}

// MemberChangeResponse answers MemberAdd, MemberPromote and MemberRemove
// once the change is committed: Member is the member changed (for an add,
// with the id the leader gave it), Members the configuration after it.
type MemberChangeResponse struct {
	Member  MemberStatus   `codec:"member"`
	Members []MemberStatus `codec:"members"`
}

// MemberPromoteRequest makes the learner Name a voter.
type MemberPromoteRequest struct {
	Name string `codec:"name"`
}

// MemberRemoveRequest removes the member Name. Removing the leader hands
// leadership to another voter first.
type MemberRemoveRequest struct {
	Name string `codec:"name"`
}

// LeaderTransferRequest hands leadership to the voter To, or ("" ) to the
// most up-to-date voter.
type LeaderTransferRequest struct {
	To string `codec:"to,omitempty"`
}

type LeaderTransferResponse struct {
	Leader MemberStatus `codec:"leader"`
	Term   uint64       `codec:"term"`
}
