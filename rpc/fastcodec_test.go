package rpc

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// selfCoded is a message with a hand-written codec for one form only: a
// msgpack array of one small positive integer. Its counters show which
// codec ran.
type selfCoded struct {
	_struct bool `codec:",toarray"`
	N       int64
}

var selfAppends, selfDecodes, selfRefusals atomic.Int64

func (s *selfCoded) AppendMsgpack(b []byte) []byte {
	selfAppends.Add(1)
	return append(b, 0x91, byte(s.N)) // small N only; the test keeps to them
}

func (s *selfCoded) DecodeMsgpack(body []byte) bool {
	if len(body) != 2 || body[0] != 0x91 || body[1] > 0x7f {
		selfRefusals.Add(1)
		return false
	}
	selfDecodes.Add(1)
	s.N = int64(body[1])
	return true
}

// TestMessagesWithTheirOwnCodecUseIt: a type that encodes and decodes
// itself does so on both ends of a call, and a body its decoder refuses
// is decoded by go-msgpack instead.
func TestMessagesWithTheirOwnCodecUseIt(t *testing.T) {
	const m Method = 900
	srv := newTestServer(t, nil)
	if err := Handle(srv, m, "self", func(ctx context.Context, req *selfCoded) (*selfCoded, error) {
		return &selfCoded{N: (req.N + 1) % 128}, nil // small, for its encoder
	}); err != nil {
		t.Fatal(err)
	}
	c := newTestClient(t, startServer(t, srv), nil)
	ctx := ctxTimeout(t, 10*time.Second)
	var resp selfCoded
	if err := c.Call(ctx, m, &selfCoded{N: 41}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.N != 42 {
		t.Fatalf("answer %d, want 42", resp.N)
	}
	if a, d := selfAppends.Load(), selfDecodes.Load(); a != 2 || d != 2 {
		t.Fatalf("hand-written codec: %d encodes and %d decodes, want 2 and 2", a, d)
	}
	// A body in another form (an int16, which the hand-written decoder
	// does not read) still decodes, through go-msgpack.
	var resp2 selfCoded
	if err := c.Call(ctx, m, &struct {
		_struct bool `codec:",toarray"`
		N       int64
	}{N: 1000}, &resp2); err != nil {
		t.Fatal(err)
	}
	if resp2.N != 1001%128 || selfRefusals.Load() != 1 {
		t.Fatalf("answer %d with %d refusals, want %d and 1", resp2.N, selfRefusals.Load(), 1001%128)
	}
}
