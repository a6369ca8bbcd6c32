package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/lockd/lockd/consensus"
)

// Encodings on disk. Every value starts with a format version, so a later
// lockd can tell old records from new ones and an older lockd refuses
// records it does not know.
const (
	entryVersion  = 1
	recordVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// newHandle returns the msgpack handle for one store. A handle is safe for
// concurrent use once configured; encoders and decoders are not.
func newHandle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	// Use the msgpack bin type for []byte, strings as str.
	h.WriteExt = true
	// A corrupt length must not make the decoder allocate gigabytes.
	h.MaxInitLen = 4096
	return h
}

// entryRecord is an entry as stored: a msgpack array in this field order.
type entryRecord struct {
	_struct  bool `codec:",toarray"` //nolint:unused // tells the codec to encode an array
	Version  uint8
	Index    uint64
	Term     uint64
	Type     uint8
	Time     int64
	Data     []byte
	Checksum uint32
}

// indexKey is the bbolt key of a log index: big-endian, so that bbolt's
// byte order is index order.
func indexKey(i consensus.Index) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(i))
	return k[:]
}

// keyIndex decodes a log key; ok is false if it is not 8 bytes.
func keyIndex(k []byte) (consensus.Index, bool) {
	if len(k) != 8 {
		return 0, false
	}
	return consensus.Index(binary.BigEndian.Uint64(k)), true
}

// badKeyError reports a log key that is not an index.
func badKeyError(path string, k []byte) *CorruptError {
	return &CorruptError{Path: path, What: fmt.Sprintf("log key %s is %d bytes, want 8", shortHex(k), len(k))}
}

// shortHex prints at most 16 bytes of b: a corrupt length can make a key
// or value megabytes long, and an error message must stay one line.
func shortHex(b []byte) string {
	if len(b) <= 16 {
		return fmt.Sprintf("%x", b)
	}
	return fmt.Sprintf("%x...", b[:16])
}

// panicError turns a recovered panic into an error of bounded length.
func panicError(r any) error {
	msg := fmt.Sprint(r)
	if len(msg) > 512 {
		msg = msg[:512] + "..."
	}
	return errors.New(msg)
}

// encodeEntry encodes e into a new slice (bbolt keeps the value slice until
// the transaction ends, so values are not reused).
func encodeEntry(enc *codec.Encoder, e *consensus.Entry) ([]byte, error) {
	rec := entryRecord{
		Version: entryVersion, Index: uint64(e.Index), Term: uint64(e.Term), Type: uint8(e.Type),
		Time: e.Time, Data: e.Data, Checksum: e.Checksum,
	}
	out := make([]byte, 0, len(e.Data)+48)
	enc.ResetBytes(&out)
	if err := enc.Encode(&rec); err != nil {
		return nil, fmt.Errorf("encoding entry %d: %w", e.Index, err)
	}
	return out, nil
}

// decodeEntry decodes and checks the value stored under key. The entry's
// Data is a copy, never a view of val. A failure is a *CorruptError
// without Path (the caller knows it).
func decodeEntry(dec *codec.Decoder, key, val []byte) (consensus.Entry, error) {
	idx, ok := keyIndex(key)
	if !ok {
		return consensus.Entry{}, badKeyError("", key)
	}
	var rec entryRecord // zero: the decoder would otherwise fill an old Data in place
	if err := decodeValue(dec, val, &rec); err != nil {
		return consensus.Entry{}, &CorruptError{Index: idx, What: "entry cannot be decoded", Err: err}
	}
	if rec.Version != entryVersion {
		return consensus.Entry{}, &CorruptError{Index: idx,
			What: fmt.Sprintf("entry has format version %d, this lockd reads version %d", rec.Version, entryVersion)}
	}
	if consensus.Index(rec.Index) != idx {
		return consensus.Entry{}, &CorruptError{Index: idx, What: fmt.Sprintf("entry stored under index %d says it is entry %d", idx, rec.Index)}
	}
	e := consensus.Entry{
		Index: idx, Term: consensus.Term(rec.Term), Type: consensus.EntryType(rec.Type),
		Time: rec.Time, Data: rec.Data, Checksum: rec.Checksum,
	}
	if err := e.Verify(); err != nil {
		return consensus.Entry{}, &CorruptError{Index: idx, What: "entry checksum mismatch", Err: err}
	}
	return e, nil
}

// decodeValue decodes one msgpack value that must fill val exactly. The
// codec reports malformed input as an error; the recover is a second line
// of defence so that no byte pattern on disk can crash the process.
func decodeValue(dec *codec.Decoder, val []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoder panicked: %w", panicError(r))
		}
	}()
	dec.ResetBytes(val)
	if err := dec.Decode(v); err != nil {
		return err
	}
	if n := dec.NumBytesRead(); n != len(val) {
		return fmt.Errorf("%d trailing bytes after a %d-byte record", len(val)-n, n)
	}
	return nil
}

// sealRecord encodes v as msgpack followed by the CRC-32C of those bytes.
// The stable records are small and rarely written; the CRC makes bit rot
// in a term or vote detectable, which would otherwise silently break
// election safety.
func sealRecord(h *codec.MsgpackHandle, v any) ([]byte, error) {
	var out []byte
	if err := codec.NewEncoderBytes(&out, h).Encode(v); err != nil {
		return nil, err
	}
	return binary.BigEndian.AppendUint32(out, crc32.Checksum(out, castagnoli)), nil
}

// openRecord checks and decodes a value written by sealRecord.
func openRecord(h *codec.MsgpackHandle, b []byte, v any) error {
	if len(b) < 5 {
		return fmt.Errorf("record of %d bytes is too short", len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return fmt.Errorf("record checksum %08x, computed %08x", sum, got)
	}
	return decodeValue(codec.NewDecoderBytes(nil, h), body, v)
}

// hardStateRecord is the stored consensus.HardState.
type hardStateRecord struct {
	_struct bool `codec:",toarray"` //nolint:unused // tells the codec to encode an array
	Version uint8
	Term    uint64
	Vote    uint64
	Commit  uint64
}

// identityRecord is the stored Identity.
type identityRecord struct {
	_struct   bool `codec:",toarray"` //nolint:unused // tells the codec to encode an array
	Version   uint8
	ClusterID string
	NodeID    uint64
}

var errUnknownVersion = errors.New("unknown record format version")
