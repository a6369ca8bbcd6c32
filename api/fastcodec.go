package api

import (
	"github.com/lockd/lockd/internal/msgp"
	"github.com/lockd/lockd/session"
)

// Hand-written msgpack codecs for the put's request and answer, the
// messages a write-heavy client sends most (rpc.MsgpackAppender and
// rpc.MsgpackDecoder). They write the bytes go-msgpack writes for the
// struct tags above: a map with the fields sorted by key (go-msgpack
// sorts them when it writes a struct as a map), leaving out the
// omitempty fields that are zero; TestFastCodecsMatchGoMsgpack keeps
// the two in step. A decoder handles the canonical form (str keys it
// knows, each at most once, values in the forms the encoders write) and
// leaves anything else to go-msgpack.
//
// Each type has its own field loop on purpose: one loop shared through
// an interface makes the compiler move the reader to the heap, an
// allocation per message (TestFastCodecsAllocateOnlyTheirData).
//
// rpc finds these methods by interface assertion: a struct that embeds
// one of these types anonymously would inherit them and be encoded as the
// embedded value alone. Name such fields instead.

// AppendMsgpack implements rpc.MsgpackAppender.
func (h *WriteHeader) AppendMsgpack(b []byte) []byte {
	n := 0
	if h.ClientID != 0 {
		n++
	}
	if h.Seq != 0 {
		n++
	}
	b = msgp.AppendMapHeader(b, n)
	if h.ClientID != 0 {
		b = msgp.AppendUint(msgp.AppendString(b, "cid"), h.ClientID)
	}
	if h.Seq != 0 {
		b = msgp.AppendUint(msgp.AppendString(b, "seq"), h.Seq)
	}
	return b
}

func (h *WriteHeader) read(r *msgp.Reader) {
	var seen uint8
	for range r.MapHeader() {
		switch string(r.Key()) {
		case "cid":
			seen = once(r, seen, 1)
			h.ClientID = r.Uint64()
		case "seq":
			seen = once(r, seen, 2)
			h.Seq = r.Uint64()
		default:
			r.Fail()
		}
		if r.Failed() {
			return
		}
	}
}

// once fails r if the field with bit was seen already, and marks it.
func once(r *msgp.Reader, seen, bit uint8) uint8 {
	if seen&bit != 0 {
		r.Fail()
	}
	return seen | bit
}

// AppendMsgpack implements rpc.MsgpackAppender.
func (q *KVPutRequest) AppendMsgpack(b []byte) []byte {
	if q == nil {
		return msgp.AppendNil(b)
	}
	n := 3
	if q.Session != 0 {
		n++
	}
	b = msgp.AppendMapHeader(b, n)
	b = msgp.AppendString(msgp.AppendString(b, "k"), q.Key)
	if q.Session != 0 {
		b = msgp.AppendUint(msgp.AppendString(b, "s"), uint64(q.Session))
	}
	b = msgp.AppendBytes(msgp.AppendString(b, "v"), q.Value)
	return q.Write.AppendMsgpack(msgp.AppendString(b, "w"))
}

// DecodeMsgpack implements rpc.MsgpackDecoder.
func (q *KVPutRequest) DecodeMsgpack(body []byte) bool {
	r := msgp.NewReader(body)
	var seen uint8
	for range r.MapHeader() {
		switch string(r.Key()) {
		case "w":
			seen = once(&r, seen, 1)
			q.Write.read(&r)
		case "k":
			seen = once(&r, seen, 2)
			q.Key = r.Str()
		case "v":
			seen = once(&r, seen, 4)
			q.Value = r.Bytes()
		case "s":
			seen = once(&r, seen, 8)
			q.Session = session.ID(r.Uint64())
		default:
			r.Fail()
		}
		if r.Failed() {
			break
		}
	}
	if !r.Done() {
		*q = KVPutRequest{}
		return false
	}
	return true
}

// AppendMsgpack implements rpc.MsgpackAppender.
func (kv *KeyValue) AppendMsgpack(b []byte) []byte {
	if kv == nil {
		return msgp.AppendNil(b)
	}
	n := 5
	if kv.Session != 0 {
		n++
	}
	b = msgp.AppendMapHeader(b, n)
	b = msgp.AppendInt(msgp.AppendString(b, "cr"), kv.CreateRevision)
	b = msgp.AppendString(msgp.AppendString(b, "k"), kv.Key)
	b = msgp.AppendInt(msgp.AppendString(b, "mr"), kv.ModRevision)
	if kv.Session != 0 {
		b = msgp.AppendUint(msgp.AppendString(b, "s"), uint64(kv.Session))
	}
	b = msgp.AppendBytes(msgp.AppendString(b, "v"), kv.Value)
	return msgp.AppendInt(msgp.AppendString(b, "ver"), kv.Version)
}

func (kv *KeyValue) read(r *msgp.Reader) {
	var seen uint8
	for range r.MapHeader() {
		switch string(r.Key()) {
		case "k":
			seen = once(r, seen, 1)
			kv.Key = r.Str()
		case "v":
			seen = once(r, seen, 2)
			kv.Value = r.Bytes()
		case "cr":
			seen = once(r, seen, 4)
			kv.CreateRevision = r.Int64()
		case "mr":
			seen = once(r, seen, 8)
			kv.ModRevision = r.Int64()
		case "ver":
			seen = once(r, seen, 16)
			kv.Version = r.Int64()
		case "s":
			seen = once(r, seen, 32)
			kv.Session = session.ID(r.Uint64())
		default:
			r.Fail()
		}
		if r.Failed() {
			return
		}
	}
}

// AppendMsgpack implements rpc.MsgpackAppender.
func (p *KVPutResponse) AppendMsgpack(b []byte) []byte {
	if p == nil {
		return msgp.AppendNil(b)
	}
	n := 1
	if p.PrevKV != nil {
		n++
	}
	b = msgp.AppendMapHeader(b, n)
	if p.PrevKV != nil {
		b = p.PrevKV.AppendMsgpack(msgp.AppendString(b, "p"))
	}
	return msgp.AppendInt(msgp.AppendString(b, "rev"), p.Revision)
}

// DecodeMsgpack implements rpc.MsgpackDecoder.
func (p *KVPutResponse) DecodeMsgpack(body []byte) bool {
	r := msgp.NewReader(body)
	var seen uint8
	for range r.MapHeader() {
		switch string(r.Key()) {
		case "rev":
			seen = once(&r, seen, 1)
			p.Revision = r.Int64()
		case "p":
			seen = once(&r, seen, 2)
			if !r.IsNil() {
				p.PrevKV = new(KeyValue)
				p.PrevKV.read(&r)
			}
		default:
			r.Fail()
		}
		if r.Failed() {
			break
		}
	}
	if !r.Done() {
		*p = KVPutResponse{}
		return false
	}
	return true
}
