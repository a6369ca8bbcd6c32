package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// The JSON shapes of `--output json`, one struct per document. They are
// lockctl's stable interface for scripts: fields may be added, never
// renamed, removed or retyped. Conventions:
//   - session ids are 16 hex digits, as lockctl prints them elsewhere;
//   - durations are integers with a _ms suffix (milliseconds);
//   - times are RFC 3339 strings in UTC with nanoseconds;
//   - a value is "value" (a string) when it is valid UTF-8, else
//     "value_base64"; exactly one of them is present.

// KVOutput is one key.
type KVOutput struct {
	Key            string  `json:"key"`
	Value          *string `json:"value,omitempty"`
	ValueBase64    *string `json:"value_base64,omitempty"`
	CreateRevision int64   `json:"create_revision"`
	ModRevision    int64   `json:"mod_revision"`
	Version        int64   `json:"version"`
	// Session is set for an ephemeral key: the session it ends with.
	Session string `json:"session,omitempty"`
}

// ReadOutput says where a read was served.
type ReadOutput struct {
	Index    uint64 `json:"index"`
	Revision int64  `json:"revision"`
	Stale    bool   `json:"stale"`
	// LeaderContactMS is, for a stale read, the time since the serving
	// node last heard from a leader.
	LeaderContactMS int64  `json:"leader_contact_ms"`
	Node            string `json:"node"`
}

// GetOutput is `get`.
type GetOutput struct {
	KVOutput
	Read ReadOutput `json:"read"`
}

// PutOutput is `put`.
type PutOutput struct {
	Key      string    `json:"key"`
	Revision int64     `json:"revision"`
	Prev     *KVOutput `json:"prev,omitempty"`
}

// DeleteOutput is `del`.
type DeleteOutput struct {
	Key      string `json:"key"`
	Prefix   bool   `json:"prefix"`
	Deleted  int    `json:"deleted"`
	Revision int64  `json:"revision"`
}

// ListOutput is `ls`. More is true if keys remain after the last one
// (continue with --start).
type ListOutput struct {
	Prefix string     `json:"prefix"`
	KVs    []KVOutput `json:"kvs"`
	More   bool       `json:"more"`
	Read   ReadOutput `json:"read"`
}

// EventOutput is one line of `watch`: Type is "put" or "delete". For a
// delete, KV holds the key and the deleting revision only.
type EventOutput struct {
	Type     string    `json:"type"`
	Revision int64     `json:"revision"`
	KV       KVOutput  `json:"kv"`
	Prev     *KVOutput `json:"prev,omitempty"`
}

// TxnOutput is `txn`: which branch ran, at which revision, and one result
// per operation of that branch, in order.
type TxnOutput struct {
	Succeeded bool           `json:"succeeded"`
	Revision  int64          `json:"revision"`
	Results   []OpResultJSON `json:"results"`
}

// OpResultJSON is the result of one transaction operation: Op is "put",
// "delete" or "get".
type OpResultJSON struct {
	Op      string     `json:"op"`
	KVs     []KVOutput `json:"kvs,omitempty"`
	Prev    *KVOutput  `json:"prev,omitempty"`
	Deleted int        `json:"deleted,omitempty"`
	More    bool       `json:"more,omitempty"`
}

// StatusOutput is `status`: one entry per endpoint, in --endpoints order.
type StatusOutput struct {
	Members []MemberStatusOutput `json:"members"`
	// Leader is the leader's name ("" if no answering node knows one),
	// Term the highest term an answering node reported.
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
}

// MemberStatusOutput is one endpoint's node as it reports itself. Error
// is set (and the rest zero) if it did not answer.
type MemberStatusOutput struct {
	Endpoint string `json:"endpoint"`
	Error    string `json:"error,omitempty"`
	ID       uint64 `json:"id"`
	Name     string `json:"name"`
	Role     string `json:"role"`
	Leader   bool   `json:"leader"`
	Term     uint64 `json:"term"`
	Commit   uint64 `json:"commit"`
	Applied  uint64 `json:"applied"`
	// Lag is how many committed entries the node has not applied yet,
	// counted against the leader's commit index when the leader answered.
	Lag uint64 `json:"lag"`
	// LastContactMS is the time since the node last heard from a leader
	// (0 on the leader); -1 if the node did not say.
	LastContactMS int64 `json:"last_contact_ms"`
}

// MemberListOutput is `member list`, as the answering node knows the
// members. Leader is the leader's id (0: none known).
type MemberListOutput struct {
	Node    string         `json:"node"`
	Leader  uint64         `json:"leader"`
	Term    uint64         `json:"term"`
	Members []MemberOutput `json:"members"`
}

// MemberOutput is one member.
type MemberOutput struct {
	ID       uint64 `json:"id"`
	Name     string `json:"name"`
	PeerAddr string `json:"peer_addr"`
	Leader   bool   `json:"leader"`
	// Learner: receives the log but does not vote (yet).
	Learner bool `json:"learner,omitempty"`
}

// SessionOutput is one session (`session create`, `session info`, the
// entries of `session list`). ExpiresAt is the last replicated
// checkpoint; the leader holds the live deadline.
type SessionOutput struct {
	ID          string   `json:"id"`
	Name        string   `json:"name,omitempty"`
	TTLMS       int64    `json:"ttl_ms"`
	LockDelayMS int64    `json:"lock_delay_ms"`
	ClientID    string   `json:"client_id,omitempty"`
	CreatedAt   string   `json:"created_at,omitempty"`
	ExpiresAt   string   `json:"expires_at,omitempty"`
	Locks       []string `json:"locks"`
	Keys        int      `json:"keys"`
}

// SessionListOutput is `session list`.
type SessionListOutput struct {
	Sessions []SessionOutput `json:"sessions"`
}

// SessionDestroyOutput is `session destroy`.
type SessionDestroyOutput struct {
	ID        string `json:"id"`
	Destroyed bool   `json:"destroyed"`
}

// KeepaliveEvent is one line of `session keepalive`: Event is "started"
// (the session is kept alive from now on), "stopped" (Ctrl-C: lockctl
// stops sending keepalives; the session expires after its TTL) or
// "lost" (Reason says why).
type KeepaliveEvent struct {
	Event   string `json:"event"`
	Session string `json:"session"`
	TTLMS   int64  `json:"ttl_ms"`
	Reason  string `json:"reason,omitempty"`
}

// LockListOutput is `lock list`.
type LockListOutput struct {
	Locks []LockOutput `json:"locks"`
}

// LockOutput is one lock: holders by token, waiters in queue order
// (Position 1 is next), and the end of a lock-delay if one runs.
type LockOutput struct {
	Name       string         `json:"name"`
	Holders    []HolderOutput `json:"holders"`
	Waiters    []WaiterOutput `json:"waiters"`
	DelayUntil string         `json:"delay_until,omitempty"`
}

// HolderOutput is one grant. Mode is "exclusive", "shared" or
// "semaphore" (then Limit is set).
type HolderOutput struct {
	Session string `json:"session"`
	Token   uint64 `json:"token"`
	Mode    string `json:"mode"`
	Limit   int    `json:"limit,omitempty"`
	Since   string `json:"since"`
}

// WaiterOutput is one queued acquire.
type WaiterOutput struct {
	Position int    `json:"position"`
	Session  string `json:"session"`
	Mode     string `json:"mode"`
	Limit    int    `json:"limit,omitempty"`
	Since    string `json:"since"`
}

// LockHeldOutput is printed by `lock NAME` without a command once the
// lock is held (the token is what to hand to the guarded resource).
type LockHeldOutput struct {
	Lock    string `json:"lock"`
	Session string `json:"session"`
	Token   uint64 `json:"token"`
	Mode    string `json:"mode"`
}

// LockCheckOutput is `lock check`. Holder is the grant of that token when
// it is current.
type LockCheckOutput struct {
	Lock    string        `json:"lock"`
	Token   uint64        `json:"token"`
	Current bool          `json:"current"`
	Holder  *HolderOutput `json:"holder,omitempty"`
}

// LeaderOutput is one line of `elect` (Event "leading", once leadership is
// won) and of `elect --observe` (Event "leader" for each new leader or
// value, "vacant" when there is none).
type LeaderOutput struct {
	Event       string  `json:"event"`
	Election    string  `json:"election"`
	Session     string  `json:"session,omitempty"`
	Token       uint64  `json:"token,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
	Revision    int64   `json:"revision,omitempty"`
}

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding the output as JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// valueFields splits a value into the "value" / "value_base64" pair.
func valueFields(v []byte) (text, b64 *string) {
	if utf8.Valid(v) {
		s := string(v)
		return &s, nil
	}
	s := base64.StdEncoding.EncodeToString(v)
	return nil, &s
}

func kvOutput(kv api.KeyValue) KVOutput {
	o := KVOutput{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version}
	o.Value, o.ValueBase64 = valueFields(kv.Value)
	if kv.Session != 0 {
		o.Session = kv.Session.String()
	}
	return o
}

func kvOutputPtr(kv *api.KeyValue) *KVOutput {
	if kv == nil {
		return nil
	}
	o := kvOutput(*kv)
	return &o
}

func kvOutputs(kvs []api.KeyValue) []KVOutput {
	out := make([]KVOutput, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, kvOutput(kv))
	}
	return out
}

func readOutput(ri api.ReadInfo) ReadOutput {
	return ReadOutput{Index: ri.Index, Revision: ri.Revision, Stale: ri.Stale,
		LeaderContactMS: time.Duration(ri.LeaderContactAge).Milliseconds(), Node: ri.Node}
}

// timeOutput renders Unix nanoseconds; 0 is "".
func timeOutput(ns int64) string {
	if ns == 0 {
		return ""
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

func sessionOutput(s api.SessionInfo) SessionOutput {
	o := SessionOutput{ID: s.ID.String(), Name: s.Name, TTLMS: time.Duration(s.TTL).Milliseconds(),
		LockDelayMS: time.Duration(s.LockDelay).Milliseconds(),
		CreatedAt:   timeOutput(s.CreatedAt), ExpiresAt: timeOutput(s.ExpiresAt),
		Locks: append([]string{}, s.Locks...), Keys: s.Keys}
	if s.ClientID != 0 {
		o.ClientID = fmt.Sprintf("%016x", s.ClientID)
	}
	return o
}

func holderOutput(g api.Grant) HolderOutput {
	return HolderOutput{Session: g.Session.String(), Token: g.Token, Mode: g.Mode.String(), Limit: g.Limit, Since: timeOutput(g.Since)}
}

func lockOutput(l api.LockInfo) LockOutput {
	o := LockOutput{Name: l.Name, Holders: []HolderOutput{}, Waiters: []WaiterOutput{}, DelayUntil: timeOutput(l.DelayUntil)}
	for _, g := range l.Holders {
		o.Holders = append(o.Holders, holderOutput(g))
	}
	for i, w := range l.Waiters {
		o.Waiters = append(o.Waiters, WaiterOutput{Position: i + 1, Session: w.Session.String(), Mode: w.Mode.String(),
			Limit: w.Limit, Since: timeOutput(w.Since)})
	}
	return o
}

func opName(t api.OpType) string {
	switch t {
	case api.OpPut:
		return "put"
	case api.OpDelete:
		return "delete"
	case api.OpGet:
		return "get"
	}
	return fmt.Sprintf("op %d", uint8(t))
}

func txnOutput(resp *api.KVTxnResponse) TxnOutput {
	o := TxnOutput{Succeeded: resp.Succeeded, Revision: resp.Revision, Results: []OpResultJSON{}}
	for _, r := range resp.Ops {
		res := OpResultJSON{Op: opName(r.Type), Prev: kvOutputPtr(r.PrevKV), Deleted: r.Deleted, More: r.More}
		if len(r.KVs) > 0 {
			res.KVs = kvOutputs(r.KVs)
		}
		o.Results = append(o.Results, res)
	}
	return o
}

func eventOutput(ev api.Event) EventOutput {
	return EventOutput{Type: ev.Type.String(), Revision: ev.Revision, KV: kvOutput(ev.KV), Prev: kvOutputPtr(ev.PrevKV)}
}

// eventText is the text line of a watch event: `PUT key rev=N value` or
// `DELETE key rev=N`. A value that is not valid UTF-8 is shown as base64
// with the prefix "base64:"; newlines in a value are escaped so that one
// event stays one line.
func eventText(ev api.Event) string {
	if ev.Type == api.EventDelete {
		return fmt.Sprintf("DELETE %s rev=%d", ev.KV.Key, ev.Revision)
	}
	return fmt.Sprintf("PUT %s rev=%d %s", ev.KV.Key, ev.Revision, valueLine(ev.KV.Value))
}

// valueLine renders a value on one line (see eventText).
func valueLine(v []byte) string {
	text, b64 := valueFields(v)
	if b64 != nil {
		return "base64:" + *b64
	}
	q := fmt.Sprintf("%q", *text)
	if q[1:len(q)-1] == *text {
		return *text // nothing to escape: as is
	}
	return q
}

// sessionText prints a session id as lockctl does everywhere.
func sessionText(id session.ID) string { return id.String() }
