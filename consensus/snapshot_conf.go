package consensus

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// A snapshot's bytes, as the Node writes them to its SnapshotStore and
// streams them to followers, start with the configuration as of the
// snapshot's index:
//
//	"LKDCONF\x01" | uint32 big-endian length | JSON Configuration | state machine bytes
//
// Keeping it inside the stream (rather than in SnapshotMeta) means every
// store and transport carries it without knowing about it, and the
// stream's checksum covers it. A snapshot without the header (written
// before membership changes existed) holds the voters in its meta.

var confMagic = []byte("LKDCONF\x01")

// maxConfHeader bounds the header's JSON: a configuration of thousands of
// members is far below it; more means the bytes are not a header.
const maxConfHeader = 1 << 20

func writeConfHeader(w io.Writer, c Configuration) error {
	body, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encoding the snapshot's configuration: %w", err)
	}
	hdr := make([]byte, 0, len(confMagic)+4+len(body))
	hdr = append(hdr, confMagic...)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(body)))
	hdr = append(hdr, body...)
	_, err = w.Write(hdr)
	return err
}

// readConfHeader reads the configuration header of a snapshot stream. It
// returns the configuration (nil for a snapshot without one) and the
// reader positioned at the state machine's bytes.
func readConfHeader(r io.Reader) (*Configuration, io.Reader, error) {
	br := bufio.NewReader(r)
	peek, err := br.Peek(len(confMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("reading the snapshot's header: %w", err)
	}
	if !bytes.Equal(peek, confMagic) {
		return nil, br, nil
	}
	var fixed [12]byte
	if _, err := io.ReadFull(br, fixed[:]); err != nil {
		return nil, nil, fmt.Errorf("reading the snapshot's configuration header: %w", err)
	}
	n := binary.BigEndian.Uint32(fixed[8:])
	if n > maxConfHeader {
		return nil, nil, fmt.Errorf("snapshot's configuration header claims %d bytes (limit %d): the snapshot is damaged", n, maxConfHeader)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, nil, fmt.Errorf("reading the snapshot's configuration: %w", err)
	}
	c, err := parseConf(body)
	if err != nil {
		return nil, nil, err
	}
	return &c, br, nil
}

func parseConf(body []byte) (Configuration, error) {
	var c Configuration
	if err := json.Unmarshal(body, &c); err != nil {
		return Configuration{}, fmt.Errorf("snapshot's configuration does not decode: %w", err)
	}
	if err := c.Validate(); err != nil {
		return Configuration{}, fmt.Errorf("snapshot's configuration: %w", err)
	}
	return c, nil
}

// confSniffer watches the first bytes written to a snapshot sink and
// parses the configuration header out of them, so that a received
// snapshot's configuration is known when it is offered to the core
// without reading the stored snapshot again.
type confSniffer struct {
	buf  []byte
	done bool
	conf *Configuration
	err  error
}

func (s *confSniffer) observe(p []byte) {
	if s.done {
		return
	}
	need := len(confMagic) + 4
	if len(s.buf) >= need {
		need += int(binary.BigEndian.Uint32(s.buf[len(confMagic):need]))
	}
	take := min(len(p), max(0, need-len(s.buf)))
	s.buf = append(s.buf, p[:take]...)
	if len(s.buf) >= len(confMagic) && !bytes.Equal(s.buf[:len(confMagic)], confMagic) {
		s.done = true // no header
		return
	}
	if len(s.buf) == len(confMagic)+4 {
		if n := binary.BigEndian.Uint32(s.buf[len(confMagic):]); n == 0 || n > maxConfHeader {
			// n == 0 would also leave nothing to take and recurse forever.
			s.done, s.err = true, fmt.Errorf("snapshot's configuration header claims %d bytes (want 1 to %d)", n, maxConfHeader)
			return
		}
		if take < len(p) {
			s.observe(p[take:])
		}
		return
	}
	if len(s.buf) > len(confMagic)+4 && len(s.buf) == need {
		c, err := parseConf(s.buf[len(confMagic)+4:])
		s.done, s.conf, s.err = true, &c, err
		s.buf = nil
	}
}

// result returns the configuration found: nil, nil if the stream had none.
func (s *confSniffer) result() (*Configuration, error) {
	if !s.done && len(s.buf) > 0 {
		return nil, errors.New("snapshot ended inside its configuration header")
	}
	if s.err != nil {
		return nil, s.err
	}
	return s.conf, nil
}
