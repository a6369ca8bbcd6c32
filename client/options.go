package client

import (
	"fmt"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

// OpOption adjusts a KV call, a read or a watch. Each call accepts the
// options that make sense for it and refuses the others with an
// api.ErrInvalid naming them, rather than ignoring them.
type OpOption func(*opOptions)

type opOptions struct {
	set      map[string]bool // names of the options given
	stale    bool
	prefix   bool
	lease    session.ID
	leaseOf  *Session // the session behind lease, if known
	limit    int
	start    string
	revision int64
}

func (o *opOptions) mark(name string) {
	if o.set == nil {
		o.set = map[string]bool{}
	}
	o.set[name] = true
}

// WithStale serves a read from the answering node's local state at once,
// without confirming with the leader: it may lag (the answer's ReadInfo
// says by how much). Reads are linearizable without it.
func WithStale() OpOption {
	return func(o *opOptions) { o.mark("WithStale"); o.stale = true }
}

// WithPrefix makes Delete, Watch and Txn deletes/gets act on every key
// with the given key as a prefix.
func WithPrefix() OpOption {
	return func(o *opOptions) { o.mark("WithPrefix"); o.prefix = true }
}

// WithLease binds a Put key to a session: the key is ephemeral, deleted
// when the session ends.
func WithLease(s *Session) OpOption {
	return func(o *opOptions) { o.mark("WithLease"); o.lease, o.leaseOf = s.ID(), s }
}

// WithLeaseID is WithLease for a session known by id only.
func WithLeaseID(id session.ID) OpOption {
	return func(o *opOptions) { o.mark("WithLease"); o.lease = id }
}

// WithLimit bounds the entries a List (or Txn get with prefix) returns;
// the answer says whether more remain. 0 is the cluster's list limit.
func WithLimit(n int) OpOption {
	return func(o *opOptions) { o.mark("WithLimit"); o.limit = n }
}

// WithStart makes a List begin at this key (inclusive): pass the key after
// the last one of the previous page to page through a prefix.
func WithStart(key string) OpOption {
	return func(o *opOptions) { o.mark("WithStart"); o.start = key }
}

// WithRevision starts a Watch at this revision (inclusive). Without it a
// watch starts after the revision current when it is opened.
func WithRevision(rev int64) OpOption {
	return func(o *opOptions) { o.mark("WithRevision"); o.revision = rev }
}

// gatherOptions applies opts and refuses any not in allowed.
func gatherOptions(call string, opts []OpOption, allowed ...string) (opOptions, error) {
	var o opOptions
	for _, opt := range opts {
		opt(&o)
	}
	for name := range o.set {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return o, api.Errorf(api.CodeInvalid, "%s does not take the %s option (it takes %v)", call, name, allowed)
		}
	}
	if o.limit < 0 {
		return o, api.Errorf(api.CodeInvalid, "%s: limit %d must not be negative", call, o.limit)
	}
	if o.revision < 0 {
		return o, api.Errorf(api.CodeInvalid, "%s: revision %d must not be negative", call, o.revision)
	}
	return o, nil
}

func (o opOptions) readHeader() api.ReadHeader { return api.ReadHeader{Stale: o.stale} }

// opName names a Txn operation in errors.
func opName(i int, op api.Op) string {
	kind := fmt.Sprintf("type %d", uint8(op.Type))
	switch op.Type {
	case api.OpPut:
		kind = "put"
	case api.OpDelete:
		kind = "delete"
	case api.OpGet:
		kind = "get"
	}
	return fmt.Sprintf("operation %d (%s %q)", i, kind, op.Key)
}
