package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func fuzzSeedFrames(t testing.TB) [][]byte {
	cds := newCodecs()
	enc := func(v any) []byte {
		es, err := cds.encode(v)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Clone(es.buf)
	}
	var credit [binary.MaxVarintLen32]byte
	n := binary.PutUvarint(credit[:], 16)
	return [][]byte{
		appendFrame(nil, Header{Type: FrameHello}, enc(hello{Magic: protocolMagic, MinVersion: 1, MaxVersion: 1, ClusterID: "c", MaxFrame: 1 << 20, Window: 8})),
		appendFrame(nil, Header{Type: FrameHelloAck}, enc(helloAck{Version: 1, ClusterID: "c", MaxFrame: 1 << 20, MaxConcurrent: 8, Window: 8})),
		appendFrame(nil, Header{Type: FrameRequest, Method: mEcho, ID: 1, Flags: FlagOneway}, append([]byte{0}, enc(&echoReq{Text: "x", Data: []byte("abc"), N: 3})...)),
		appendFrame(nil, Header{Type: FrameResponse, ID: 1}, enc(echoResp{Text: "x"})),
		appendFrame(nil, Header{Type: FrameError, ID: 0}, enc(wireError{Code: CodeIdle, Message: "idle"})),
		appendFrame(appendFrame(nil, Header{Type: FrameCancel, ID: 2}, nil), Header{Type: FrameCredit, ID: 2}, credit[:n]),
		appendFrame(nil, Header{Type: FrameStreamData, ID: 3}, enc(echoResp{Data: []byte("abc"), N: 3})),
		{0, 0, 0, 0, byte(FrameStreamEnd), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9},
		{0x40, 0, 0, 0, byte(FrameRequest), 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1},
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	}
}

// FuzzFrameDecoder feeds arbitrary bytes to the frame reader and every body
// decoder of this package: nothing may panic, a frame over the limit must
// never be returned, and every frame read re-encodes to the bytes it came
// from. The peer transport's bodies are fuzzed in rpc/peer
// (FuzzWireBodies).
func FuzzFrameDecoder(f *testing.F) {
	for _, s := range fuzzSeedFrames(f) {
		f.Add(s)
	}
	const max = 64 << 10
	h := NewHandle()
	dec := newDecoder(h)
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data), max)
		off := 0
		for range 64 {
			hdr, body, err := fr.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isFramingError(err) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if len(body) != int(hdr.Length) || len(body) > max {
				t.Fatalf("body of %d bytes for header length %d (max %d)", len(body), hdr.Length, max)
			}
			if got := appendFrame(nil, hdr, body); !bytes.Equal(got, data[off:off+len(got)]) {
				t.Fatalf("frame does not re-encode to its input")
			}
			off += HeaderSize + len(body)
			switch hdr.Type {
			case FrameHello:
				var v hello
				_ = dec.decode(body, &v)
			case FrameHelloAck:
				var v helloAck
				_ = dec.decode(body, &v)
			case FrameError:
				var v wireError
				_ = dec.decode(body, &v)
			case FrameCredit:
				st := &stream{creditc: make(chan struct{}, 1)}
				_ = st.addCredit(body)
			case FrameRequest:
				_, n := binary.Uvarint(body)
				if n <= 0 {
					continue
				}
				var er echoReq
				_ = dec.decode(body[n:], &er)
			case FrameStreamData, FrameResponse:
				var er echoResp
				_ = dec.decode(body, &er)
			}
		}
	})
}

// FuzzHandshake feeds arbitrary bytes to both sides of the handshake: no
// panic, and whatever is accepted satisfies the protocol's rules.
func FuzzHandshake(f *testing.F) {
	for _, s := range fuzzSeedFrames(f)[:3] {
		f.Add(s)
	}
	cds := newCodecs()
	es, _ := cds.encode(wireError{Code: CodeClusterMismatch, Message: "no"})
	f.Add(appendFrame(nil, Header{Type: FrameError}, es.buf))
	es, _ = cds.encode(hello{Magic: protocolMagic, MinVersion: 0, MaxVersion: 65535, ClusterID: "c", MaxFrame: 1 << 31, Window: 1 << 31})
	f.Add(appendFrame(nil, Header{Type: FrameHello}, es.buf))
	dec := newDecoder(NewHandle())
	table := defaultErrorTable()
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data), DefaultMaxFrameSize)
		hi, v, err := readHello(fr, dec, serverPolicy{clusterID: "c"})
		if err == nil {
			if hi.Magic != protocolMagic || hi.ClusterID != "c" || v < MinProtocolVersion || v > MaxProtocolVersion ||
				v < hi.MinVersion || v > hi.MaxVersion || hi.MaxFrame < minMaxFrameSize || hi.Window == 0 {
				t.Fatalf("accepted a bad hello %+v (version %d)", hi, v)
			}
		} else {
			var he *handshakeError
			if errors.As(err, &he) && table.CodeOf(err) == CodeUnknown {
				t.Fatalf("refusal without a code: %v", err)
			}
		}
		fr = newFrameReader(bytes.NewReader(data), DefaultMaxFrameSize)
		ack, err := readHelloAck(fr, dec, table, "127.0.0.1:1", "c")
		if err == nil && (ack.ClusterID != "c" || ack.Version < MinProtocolVersion || ack.Version > MaxProtocolVersion ||
			ack.MaxFrame < minMaxFrameSize || ack.MaxConcurrent == 0 || ack.Window == 0) {
			t.Fatalf("accepted a bad hello-ack %+v", ack)
		}
	})
}
