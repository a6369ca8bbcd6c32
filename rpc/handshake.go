package rpc

import (
	"errors"
	"fmt"
	"io"
)

// Protocol versions this build speaks. A client offers a range; the server
// picks the highest version both speak or refuses the connection.
const (
	MinProtocolVersion uint16 = 1
	MaxProtocolVersion uint16 = 1
)

// protocolMagic opens every Hello so that a stray client of another
// protocol is told apart from a lockd node of another version.
const protocolMagic = "lockd-rpc"

// maxHelloSize bounds the handshake frames whatever the configured limit.
const maxHelloSize = 4 << 10

// maxClusterID bounds a cluster id and a peer name.
const maxClusterID = 256

// hello is the body of FrameHello.
type hello struct {
	Magic      string `codec:"magic"`
	MinVersion uint16 `codec:"minv"`
	MaxVersion uint16 `codec:"maxv"`
	ClusterID  string `codec:"cluster"`
	// Name describes the client in the server's logs ("node 2", "lockctl").
	Name string `codec:"name"`
	// MaxFrame is the largest body the client accepts; Window is how many
	// stream messages it buffers per stream.
	MaxFrame uint32 `codec:"maxframe"`
	Window   uint32 `codec:"window"`
}

// helloAck is the body of FrameHelloAck.
type helloAck struct {
	Version       uint16 `codec:"v"`
	ClusterID     string `codec:"cluster"`
	Name          string `codec:"name"`
	MaxFrame      uint32 `codec:"maxframe"`
	MaxConcurrent uint32 `codec:"maxcalls"`
	Window        uint32 `codec:"window"`
}

// handshakeError is a refused handshake: what to tell the peer.
type handshakeError struct {
	code Code
	err  error
}

func (e *handshakeError) Error() string { return e.err.Error() }
func (e *handshakeError) Unwrap() error { return e.err }
func (e *handshakeError) RPCCode() Code { return e.code }

func refuse(code Code, sentinel error, format string, args ...any) *handshakeError {
	return &handshakeError{code: code, err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))}
}

// serverPolicy is what the server checks a Hello against.
type serverPolicy struct {
	clusterID string
	// anyCluster accepts a hello that names no cluster.
	anyCluster bool
}

// readHello reads and checks the first frame of a connection on the
// server side. It returns the hello and the version chosen, or a
// *handshakeError saying why the client is refused, or the read error.
func readHello(fr *frameReader, dec *decoder, p serverPolicy) (hello, uint16, error) {
	max := fr.max
	fr.max = maxHelloSize
	h, body, err := fr.next()
	fr.max = max
	if err != nil {
		if errors.Is(err, ErrProtocol) || errors.Is(err, ErrFrameTooLarge) {
			return hello{}, 0, refuse(CodeHandshake, ErrHandshake, "first frame: %v", err)
		}
		return hello{}, 0, err
	}
	if h.Type != FrameHello {
		return hello{}, 0, refuse(CodeHandshake, ErrHandshake, "first frame is %s, want hello", h.Type)
	}
	var hi hello
	if err := dec.decode(body, &hi); err != nil {
		return hello{}, 0, refuse(CodeHandshake, ErrHandshake, "undecodable hello: %v", err)
	}
	if hi.Magic != protocolMagic {
		return hello{}, 0, refuse(CodeHandshake, ErrHandshake, "not a lockd rpc client (magic %.32q)", hi.Magic)
	}
	if len(hi.ClusterID) > maxClusterID || len(hi.Name) > maxClusterID {
		return hello{}, 0, refuse(CodeHandshake, ErrHandshake, "cluster id or name longer than %d bytes", maxClusterID)
	}
	v := min(hi.MaxVersion, MaxProtocolVersion)
	if hi.MinVersion > hi.MaxVersion || v < hi.MinVersion || v < MinProtocolVersion {
		return hello{}, 0, refuse(CodeVersionMismatch, ErrVersionMismatch,
			"client speaks protocol versions %d..%d, this node speaks %d..%d",
			hi.MinVersion, hi.MaxVersion, MinProtocolVersion, MaxProtocolVersion)
	}
	if hi.ClusterID != p.clusterID && !(p.anyCluster && hi.ClusterID == "") {
		return hello{}, 0, refuse(CodeClusterMismatch, ErrClusterMismatch,
			"client belongs to cluster %q, this node to cluster %q", hi.ClusterID, p.clusterID)
	}
	if hi.MaxFrame < minMaxFrameSize || hi.Window == 0 {
		return hello{}, 0, refuse(CodeHandshake, ErrHandshake,
			"client limits out of range: max frame %d (min %d), stream window %d (min 1)", hi.MaxFrame, minMaxFrameSize, hi.Window)
	}
	return hi, v, nil
}

// readHelloAck reads the server's answer on the client side: an accepted
// handshake, or the server's refusal as a *RemoteError.
func readHelloAck(fr *frameReader, dec *decoder, table *ErrorTable, addr, clusterID string) (helloAck, error) {
	max := fr.max
	fr.max = maxHelloSize
	h, body, err := fr.next()
	fr.max = max
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("server closed the connection during the handshake: %w", err)
		}
		return helloAck{}, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	switch h.Type {
	case FrameError:
		var we wireError
		if err := dec.decode(body, &we); err != nil {
			return helloAck{}, fmt.Errorf("%w: undecodable refusal: %w", ErrHandshake, err)
		}
		return helloAck{}, table.fromWire(we, addr, 0)
	case FrameHelloAck:
	default:
		return helloAck{}, fmt.Errorf("%w: server answered hello with a %s frame", ErrHandshake, h.Type)
	}
	var ack helloAck
	if err := dec.decode(body, &ack); err != nil {
		return helloAck{}, fmt.Errorf("%w: undecodable hello-ack: %w", ErrHandshake, err)
	}
	if ack.Version < MinProtocolVersion || ack.Version > MaxProtocolVersion {
		return helloAck{}, fmt.Errorf("%w: server chose protocol version %d, this client speaks %d..%d",
			ErrVersionMismatch, ack.Version, MinProtocolVersion, MaxProtocolVersion)
	}
	// A client that names no cluster takes whichever the server is in
	// (if the server admits such clients at all).
	if ack.ClusterID != clusterID && clusterID != "" {
		return helloAck{}, fmt.Errorf("%w: server belongs to cluster %q, this client to %q", ErrClusterMismatch, ack.ClusterID, clusterID)
	}
	if ack.MaxFrame < minMaxFrameSize || ack.MaxConcurrent == 0 || ack.Window == 0 {
		return helloAck{}, fmt.Errorf("%w: server limits out of range: max frame %d, max calls %d, window %d",
			ErrHandshake, ack.MaxFrame, ack.MaxConcurrent, ack.Window)
	}
	return ack, nil
}
