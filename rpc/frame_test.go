package rpc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestHeaderRoundTripsEveryFrameType(t *testing.T) {
	for typ := FrameHello; typ < frameTypeEnd; typ++ {
		h := Header{Length: 3, Type: typ, Method: 0, ID: 0}
		switch typ {
		case FrameRequest:
			h.Method, h.ID, h.Flags = 9, 1<<40, FlagStream
		case FrameCancel, FrameStreamEnd:
			h.ID, h.Length = 7, 0
		case FrameResponse, FrameStreamData, FrameCredit:
			h.ID = 7
		}
		if err := h.valid(1 << 20); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		var b [HeaderSize]byte
		h.put(b[:])
		if got := parseHeader(b[:]); got != h {
			t.Fatalf("%s: got %+v, want %+v", typ, got, h)
		}
		if strings.HasPrefix(typ.String(), "FrameType(") {
			t.Fatalf("%d has no name", typ)
		}
		// Through a reader, with the body.
		body := bytes.Repeat([]byte{byte(typ)}, int(h.Length))
		fr := newFrameReader(bytes.NewReader(appendFrame(nil, h, body)), 1<<20)
		gh, gb, err := fr.next()
		if err != nil || gh != h || !bytes.Equal(gb, body) {
			t.Fatalf("%s: read %+v %x %v", typ, gh, gb, err)
		}
	}
}

func TestHeaderValidation(t *testing.T) {
	bad := []Header{
		{Type: 0},
		{Type: frameTypeEnd},
		{Type: FrameResponse, ID: 1, Length: 101},
		{Type: FrameRequest, ID: 1, Method: 1, Flags: FlagStream | FlagOneway},
		{Type: FrameRequest, ID: 1, Method: 1, Flags: 0x40},
		{Type: FrameResponse, ID: 1, Flags: FlagStream},
		{Type: FrameRequest, ID: 0, Method: 1},
		{Type: FrameRequest, ID: 1, Method: 0},
		{Type: FrameHello, ID: 1},
		{Type: FrameHelloAck, Method: 1},
		{Type: FrameCancel, ID: 1, Length: 1},
		{Type: FrameCancel, ID: 0},
		{Type: FrameStreamEnd, ID: 0},
		{Type: FrameCredit, ID: 1, Length: 0},
		{Type: FrameCredit, ID: 1, Length: 6},
		{Type: FrameStreamData, ID: 0},
		{Type: FrameResponse, ID: 0},
	}
	for _, h := range bad {
		if err := h.valid(100); err == nil {
			t.Errorf("%+v accepted", h)
		}
	}
	if err := (Header{Type: FrameResponse, ID: 1, Length: 101}).valid(100); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if err := (Header{Type: FrameError, ID: 0, Length: 5}).valid(100); err != nil {
		t.Fatalf("connection-level error frame: %v", err)
	}
}

func TestFrameReaderLargeAndTruncatedBodies(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 50_000) // 500 kB, read in pieces
	h := Header{Type: FrameStreamData, ID: 1}
	data := appendFrame(nil, h, body)
	fr := newFrameReader(iotest.OneByteReader(bytes.NewReader(data)), 1<<20)
	_, got, err := fr.next()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("large body: %v (%d bytes)", err, len(got))
	}
	for _, cut := range []int{5, HeaderSize, HeaderSize + 10, len(data) - 1} {
		fr := newFrameReader(bytes.NewReader(data[:cut]), 1<<20)
		_, _, err := fr.next()
		if cut < HeaderSize {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("cut at %d: %v", cut, err)
			}
			continue
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) || !isFramingError(err) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	// A clean end between frames is io.EOF.
	fr = newFrameReader(bytes.NewReader(nil), 1<<20)
	if _, _, err := fr.next(); err != io.EOF {
		t.Fatalf("empty: %v", err)
	}
}

func TestDecodedBytesDoNotAliasTheReadBuffer(t *testing.T) {
	cds := newCodecs()
	es, err := cds.encode(&echoReq{Text: "t", Data: []byte("payload")})
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Clone(es.buf)
	var r echoReq
	if err := newDecoder(cds.h).decode(buf, &r); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 0
	}
	if string(r.Data) != "payload" || r.Text != "t" {
		t.Fatalf("decoded value changed with the buffer: %+v", r)
	}
}

func TestCodecErrorsNeverPanic(t *testing.T) {
	d := newDecoder(NewHandle())
	var r echoReq
	for _, in := range [][]byte{{0xc1}, {0x81}, {0xdf, 0xff, 0xff, 0xff, 0xff}, {0x91, 0x91}, {0x80, 0x80}} {
		if err := d.decode(in, &r); err == nil {
			t.Errorf("%x decoded", in)
		}
	}
}

// Writers waiting for room, or queueing behind a stuck flush, return once
// the connection closes: none spins or waits forever.
func TestWriterReleasesWritersWhenTheConnectionCloses(t *testing.T) {
	a, b := net.Pipe() // b is never read: writes block
	defer b.Close()
	var c conn
	c.init(a, newFrameReader(a, 1<<20), newCodecs(), defaultErrorTable(), hclog.NewNullLogger(), 64, 0)
	go c.w.run()
	errc := make(chan error, 3)
	for range 3 {
		go func() {
			errc <- c.w.write(context.Background(), Header{Type: FrameStreamData, ID: 1}, nil, make([]byte, 100))
		}()
	}
	// One write blocks in the pipe, the others queue or wait for room.
	time.Sleep(20 * time.Millisecond) // let them reach their blocking points
	c.close(errors.New("test close"))
	for range 3 {
		select {
		case <-errc:
		case <-time.After(5 * time.Second):
			t.Fatal("a writer is still blocked after close")
		}
	}
	if err := c.w.write(context.Background(), Header{Type: FrameCancel, ID: 1}, nil, nil); !errors.Is(err, ErrConnClosed) {
		t.Fatalf("write after close: %v", err)
	}
}
