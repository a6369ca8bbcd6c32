package client

import (
	"context"
	"fmt"

	"github.com/lockd/lockd/api"
)

// KV reads and writes config keys. Writes are exactly-once (a retry after
// a failover never applies twice); reads are linearizable unless
// WithStale.
type KV struct {
	c *Client
}

// KV returns the client's key-value API.
func (c *Client) KV() *KV { return &KV{c: c} }

// Get reads one key; the answer's KV is nil if the key does not exist.
// Options: WithStale.
func (kv *KV) Get(ctx context.Context, key string, opts ...OpOption) (*api.KVGetResponse, error) {
	o, err := gatherOptions("Get", opts, "WithStale")
	if err != nil {
		return nil, err
	}
	if err := kv.c.cfg.Limits.CheckKey("key", key); err != nil {
		return nil, err
	}
	req := &api.KVGetRequest{Read: o.readHeader(), Key: key}
	return do[api.KVGetResponse](kv.c, ctx, spec{method: api.MethodKVGet, leader: !o.stale}, req)
}

// Put sets a key, returning the revision of the change and the previous
// value. Options: WithLease (the key then ends with that session).
func (kv *KV) Put(ctx context.Context, key string, value []byte, opts ...OpOption) (*api.KVPutResponse, error) {
	o, err := gatherOptions("Put", opts, "WithLease")
	if err != nil {
		return nil, err
	}
	if err := kv.checkPut(key, value); err != nil {
		return nil, err
	}
	req := &api.KVPutRequest{Key: key, Value: value, Session: o.lease}
	resp, err := do[api.KVPutResponse](kv.c, ctx, spec{method: api.MethodKVPut, write: &req.Write}, req)
	if o.leaseOf != nil {
		o.leaseOf.noteErr(err)
	}
	return resp, err
}

// Delete deletes a key (or, WithPrefix, every key with that prefix),
// returning how many were deleted. Options: WithPrefix.
func (kv *KV) Delete(ctx context.Context, key string, opts ...OpOption) (*api.KVDeleteResponse, error) {
	o, err := gatherOptions("Delete", opts, "WithPrefix")
	if err != nil {
		return nil, err
	}
	if err := kv.checkKey(key, o.prefix); err != nil {
		return nil, err
	}
	req := &api.KVDeleteRequest{Key: key, Prefix: o.prefix}
	return do[api.KVDeleteResponse](kv.c, ctx, spec{method: api.MethodKVDelete, write: &req.Write}, req)
}

// List reads the keys with a prefix ("" for all) in key order, one page:
// More says whether keys remain (continue WithStart at the key after the
// last one). Options: WithStale, WithLimit, WithStart.
func (kv *KV) List(ctx context.Context, prefix string, opts ...OpOption) (*api.KVListResponse, error) {
	o, err := gatherOptions("List", opts, "WithStale", "WithLimit", "WithStart")
	if err != nil {
		return nil, err
	}
	if err := kv.checkKey(prefix, true); err != nil {
		return nil, err
	}
	req := &api.KVListRequest{Read: o.readHeader(), Prefix: prefix, Start: o.start, Limit: o.limit}
	return do[api.KVListResponse](kv.c, ctx, spec{method: api.MethodKVList, leader: !o.stale}, req)
}

// Txn is a transaction: if every compare in If holds, the Then operations
// run, else the Else operations, all at one revision.
type Txn struct {
	If   []api.Compare
	Then []api.Op
	Else []api.Op
}

// Txn runs a transaction atomically (exactly-once, like every write).
func (kv *KV) Txn(ctx context.Context, t Txn) (*api.KVTxnResponse, error) {
	lim := kv.c.cfg.Limits
	if n := len(t.If) + len(t.Then) + len(t.Else); n > lim.MaxTxnOps {
		return nil, api.Errorf(api.CodeLimit, "transaction of %d compares and operations exceeds the limit of %d", n, lim.MaxTxnOps)
	}
	for i, cmp := range t.If {
		if err := lim.CheckKey(fmt.Sprintf("key of compare %d", i), cmp.Key); err != nil {
			return nil, err
		}
		if err := lim.CheckValue(cmp.Value); err != nil {
			return nil, err
		}
	}
	for _, ops := range [][]api.Op{t.Then, t.Else} {
		for i, op := range ops {
			if err := kv.checkKey(op.Key, op.Prefix); err != nil {
				return nil, fmt.Errorf("%s: %w", opName(i, op), err)
			}
			if err := lim.CheckValue(op.Value); err != nil {
				return nil, fmt.Errorf("%s: %w", opName(i, op), err)
			}
		}
	}
	req := &api.KVTxnRequest{Compares: t.If, Then: t.Then, Else: t.Else}
	return do[api.KVTxnResponse](kv.c, ctx, spec{method: api.MethodKVTxn, write: &req.Write}, req)
}

func (kv *KV) checkPut(key string, value []byte) error {
	if err := kv.c.cfg.Limits.CheckKey("key", key); err != nil {
		return err
	}
	return kv.c.cfg.Limits.CheckValue(value)
}

// checkKey checks a key, or a prefix (which may be empty).
func (kv *KV) checkKey(key string, prefix bool) error {
	if prefix && key == "" {
		return nil
	}
	return kv.c.cfg.Limits.CheckKey("key", key)
}

// Transaction building blocks.

// OpPut puts key = value in a Txn.
func OpPut(key string, value []byte) api.Op { return api.Op{Type: api.OpPut, Key: key, Value: value} }

// OpPutLease puts key = value in a Txn, bound to session s (ephemeral).
func OpPutLease(key string, value []byte, s *Session) api.Op {
	return api.Op{Type: api.OpPut, Key: key, Value: value, Session: s.ID()}
}

// OpGet reads key in a Txn.
func OpGet(key string) api.Op { return api.Op{Type: api.OpGet, Key: key} }

// OpGetPrefix reads up to limit keys with prefix in a Txn (0: the list
// limit).
func OpGetPrefix(prefix string, limit int) api.Op {
	return api.Op{Type: api.OpGet, Key: prefix, Prefix: true, Limit: limit}
}

// OpDelete deletes key in a Txn.
func OpDelete(key string) api.Op { return api.Op{Type: api.OpDelete, Key: key} }

// OpDeletePrefix deletes every key with prefix in a Txn.
func OpDeletePrefix(prefix string) api.Op {
	return api.Op{Type: api.OpDelete, Key: prefix, Prefix: true}
}

// CompareValue compares key's value with v (a missing key has no value:
// only NotEqual matches it).
func CompareValue(key string, op api.CompareOp, v []byte) api.Compare {
	return api.Compare{Key: key, Target: api.CompareValue, Op: op, Value: v}
}

// CompareVersion compares key's version (0 if missing) with n.
func CompareVersion(key string, op api.CompareOp, n int64) api.Compare {
	return api.Compare{Key: key, Target: api.CompareVersion, Op: op, Number: n}
}

// CompareCreateRevision compares key's create revision (0 if missing).
func CompareCreateRevision(key string, op api.CompareOp, n int64) api.Compare {
	return api.Compare{Key: key, Target: api.CompareCreateRevision, Op: op, Number: n}
}

// CompareModRevision compares key's last modification revision (0 if
// missing): the compare of a compare-and-set.
func CompareModRevision(key string, op api.CompareOp, n int64) api.Compare {
	return api.Compare{Key: key, Target: api.CompareModRevision, Op: op, Number: n}
}

// KeyExists holds if key exists.
func KeyExists(key string) api.Compare {
	return api.Compare{Key: key, Target: api.CompareExists, Op: api.Equal, Number: 1}
}

// KeyMissing holds if key does not exist.
func KeyMissing(key string) api.Compare {
	return api.Compare{Key: key, Target: api.CompareExists, Op: api.Equal, Number: 0}
}
