package store

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/lockd/lockd/consensus"
)

var _ consensus.SnapshotStore = (*FileSnapshotStore)(nil)

// DefaultSnapshotRetain is how many snapshots a FileSnapshotStore keeps.
const DefaultSnapshotRetain = 2

// Snapshot file layout. A snapshot is one file:
//
//	data        Size bytes, as the state machine wrote them
//	meta        msgpack snapshotFooter (index, term, voters, size, data CRC)
//	metaLen     uint32 big-endian
//	metaCRC     uint32 big-endian, CRC-32C of meta
//	magic       8 bytes
//
// The metadata trails the data because neither the size nor the CRC is
// known before the last byte is written. A torn file has no valid
// trailer; a flipped byte fails the meta or the data CRC.
const (
	snapMagic      = "LKDSNAP1"
	snapTrailerLen = 4 + 4 + len(snapMagic)
	snapMaxMetaLen = 1 << 20
	snapSuffix     = ".snap"
	snapTmpSuffix  = ".tmp"
	snapHint       = "the snapshot is skipped; an older intact snapshot, or the log, is used instead"
)

// snapshotFooter is the stored metadata of a snapshot.
type snapshotFooter struct {
	_struct bool `codec:",toarray"` //nolint:unused // tells the codec to encode an array
	Version uint8
	Index   uint64
	Term    uint64
	Voters  []uint64
	Size    int64
	CRC     uint32
}

// SnapshotOptions configures a FileSnapshotStore. The zero value is ready
// to use.
type SnapshotOptions struct {
	// Retain is how many snapshots to keep, newest (by index, then term)
	// first. Default DefaultSnapshotRetain.
	Retain int
	// Logger receives saved, pruned and skipped snapshots. Default: discard.
	Logger hclog.Logger

	// openSynced, if set, is told what the constructor synced (tests).
	openSynced func(what string)
}

// FileSnapshotStore keeps snapshots as files in one directory. It is safe
// for concurrent use. It takes no lock of its own: keep its directory
// inside a data dir held by a Store.
type FileSnapshotStore struct {
	dir    string
	retain int
	logger hclog.Logger
	h      *codec.MsgpackHandle

	mu sync.Mutex // serializes pruning with Latest, so a snapshot being chosen is not deleted mid-check
}

// NewFileSnapshotStore opens (creating if needed) a snapshot directory.
// Temp files left by a process that died while writing a snapshot are
// removed.
func NewFileSnapshotStore(dir string, opts SnapshotOptions) (*FileSnapshotStore, error) {
	if opts.Retain == 0 {
		opts.Retain = DefaultSnapshotRetain
	}
	if opts.Retain < 0 {
		return nil, fmt.Errorf("snapshot retain count %d must be at least 1", opts.Retain)
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if err := mkdirDurable(dir); err != nil {
		return nil, fmt.Errorf("creating snapshot dir: %w", err)
	}
	s := &FileSnapshotStore{dir: dir, retain: opts.Retain, logger: opts.Logger, h: newHandle()}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading snapshot dir %s: %w", dir, err)
	}
	for _, de := range des {
		if strings.HasSuffix(de.Name(), snapTmpSuffix) {
			path := filepath.Join(dir, de.Name())
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("removing unfinished snapshot %s: %w", path, err)
			}
			s.logger.Warn("removed unfinished snapshot left by an earlier process", "path", path)
		}
	}
	// A process killed between a snapshot's rename and the dir fsync
	// leaves the new name only in the page cache: Latest would hand out a
	// snapshot (and the node compact its log behind it) that a power loss
	// could still take away. Synced here, before anything reads the dir.
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("syncing snapshot dir %s at open: %w", dir, err)
	}
	if opts.openSynced != nil {
		opts.openSynced(dir)
	}
	return s, nil
}

// Dir returns the snapshot directory.
func (s *FileSnapshotStore) Dir() string { return s.dir }

// snapName is the file name of a snapshot; names sort by index, then term.
func snapName(index consensus.Index, term consensus.Term) string {
	return fmt.Sprintf("snap-%016x-%016x%s", uint64(index), uint64(term), snapSuffix)
}

// parseSnapName is the inverse of snapName.
func parseSnapName(name string) (consensus.Index, consensus.Term, bool) {
	var index, term uint64
	if len(name) != len(snapName(0, 0)) || !strings.HasSuffix(name, snapSuffix) {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(name, "snap-%016x-%016x.snap", &index, &term); err != nil {
		return 0, 0, false
	}
	return consensus.Index(index), consensus.Term(term), true
}

func validMeta(m consensus.SnapshotMeta) error {
	if m.Index == 0 || m.Term == 0 {
		return fmt.Errorf("snapshot index %d and term %d must both be positive", m.Index, m.Term)
	}
	if len(m.Voters) == 0 {
		return fmt.Errorf("snapshot at index %d lists no voters", m.Index)
	}
	seen := map[consensus.NodeID]bool{}
	for _, v := range m.Voters {
		if v == consensus.None || seen[v] {
			return fmt.Errorf("snapshot voters %v: ids must be non-zero and distinct", m.Voters)
		}
		seen[v] = true
	}
	return nil
}

// Create implements consensus.SnapshotStore. The snapshot is written to a
// temp file in the directory; Close makes it durable and visible, Cancel
// throws it away. meta.Size is ignored: the size stored is what was
// written. The sink is not safe for concurrent use.
func (s *FileSnapshotStore) Create(meta consensus.SnapshotMeta) (consensus.SnapshotSink, error) {
	if err := validMeta(meta); err != nil {
		return nil, fmt.Errorf("creating snapshot: %w", err)
	}
	meta.Voters = slices.Clone(meta.Voters)
	f, err := os.CreateTemp(s.dir, strings.TrimSuffix(snapName(meta.Index, meta.Term), snapSuffix)+"-*"+snapTmpSuffix)
	if err != nil {
		return nil, fmt.Errorf("creating snapshot temp file in %s: %w", s.dir, err)
	}
	crc := crc32.New(castagnoli)
	return &fileSink{
		store: s, meta: meta, f: f, crc: crc,
		w: bufio.NewWriterSize(io.MultiWriter(f, crc), 256<<10), start: time.Now(),
	}, nil
}

// fileSink writes one snapshot.
type fileSink struct {
	store *FileSnapshotStore
	meta  consensus.SnapshotMeta
	f     *os.File
	crc   hash.Hash32
	w     *bufio.Writer // writes to f and crc alike
	n     int64
	start time.Time
	done  bool  // Close or Cancel was called
	err   error // first write error; the sink is then useless
}

func (k *fileSink) Write(p []byte) (int, error) {
	if k.done {
		return 0, fmt.Errorf("snapshot %d: write after Close or Cancel", k.meta.Index)
	}
	if k.err != nil {
		return 0, k.err
	}
	n, err := k.w.Write(p)
	k.n += int64(n)
	if err != nil {
		k.err = fmt.Errorf("writing snapshot %d to %s: %w", k.meta.Index, k.f.Name(), err)
		return n, k.err
	}
	return n, nil
}

// Close implements io.Closer: on success the snapshot is durable under its
// final name and older snapshots beyond the retain count are deleted.
func (k *fileSink) Close() error {
	if k.done {
		return fmt.Errorf("snapshot %d: Close after Close or Cancel", k.meta.Index)
	}
	k.done = true
	if err := k.commit(); err != nil {
		k.f.Close()
		os.Remove(k.f.Name())
		return err
	}
	s := k.store
	s.logger.Info("snapshot saved", "index", k.meta.Index, "term", k.meta.Term, "size", k.n,
		"path", filepath.Join(s.dir, snapName(k.meta.Index, k.meta.Term)), "took", time.Since(k.start))
	s.prune()
	return nil
}

func (k *fileSink) commit() error {
	if k.err != nil {
		return k.err
	}
	if err := k.w.Flush(); err != nil {
		return fmt.Errorf("writing snapshot %d to %s: %w", k.meta.Index, k.f.Name(), err)
	}
	voters := make([]uint64, len(k.meta.Voters))
	for i, v := range k.meta.Voters {
		voters[i] = uint64(v)
	}
	var meta []byte
	err := codec.NewEncoderBytes(&meta, k.store.h).Encode(&snapshotFooter{
		Version: recordVersion, Index: uint64(k.meta.Index), Term: uint64(k.meta.Term),
		Voters: voters, Size: k.n, CRC: k.crc.Sum32(),
	})
	if err != nil {
		return fmt.Errorf("encoding snapshot %d metadata: %w", k.meta.Index, err)
	}
	trailer := binary.BigEndian.AppendUint32(nil, uint32(len(meta)))
	trailer = binary.BigEndian.AppendUint32(trailer, crc32.Checksum(meta, castagnoli))
	trailer = append(trailer, snapMagic...)
	if _, err := k.f.Write(append(meta, trailer...)); err != nil {
		return fmt.Errorf("writing snapshot %d metadata to %s: %w", k.meta.Index, k.f.Name(), err)
	}
	if err := k.f.Sync(); err != nil {
		return fmt.Errorf("syncing snapshot %s: %w", k.f.Name(), err)
	}
	if err := k.f.Close(); err != nil {
		return fmt.Errorf("closing snapshot %s: %w", k.f.Name(), err)
	}
	final := filepath.Join(k.store.dir, snapName(k.meta.Index, k.meta.Term))
	if err := os.Rename(k.f.Name(), final); err != nil {
		return fmt.Errorf("renaming snapshot %s to %s: %w", k.f.Name(), final, err)
	}
	// The rename is durable only once the directory is.
	return syncDir(k.store.dir)
}

// Cancel implements consensus.SnapshotSink: the temp file is removed.
// After Close, or a second time, it does nothing.
func (k *fileSink) Cancel() error {
	if k.done {
		return nil
	}
	k.done = true
	k.f.Close()
	if err := os.Remove(k.f.Name()); err != nil {
		return fmt.Errorf("removing cancelled snapshot %s: %w", k.f.Name(), err)
	}
	return nil
}

// snapFile is a snapshot file found in the directory.
type snapFile struct {
	name  string
	index consensus.Index
	term  consensus.Term
}

// list returns the snapshot files, newest first.
func (s *FileSnapshotStore) list() ([]snapFile, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading snapshot dir %s: %w", s.dir, err)
	}
	var out []snapFile
	for _, de := range des {
		if index, term, ok := parseSnapName(de.Name()); ok && de.Type().IsRegular() {
			out = append(out, snapFile{name: de.Name(), index: index, term: term})
		}
	}
	slices.SortFunc(out, func(a, b snapFile) int {
		if a.index != b.index {
			return -cmpIndex(a.index, b.index)
		}
		return -cmpIndex(consensus.Index(a.term), consensus.Index(b.term))
	})
	return out, nil
}

func cmpIndex(a, b consensus.Index) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// prune deletes snapshots beyond the newest s.retain. A failure is logged:
// the snapshot just saved is durable whatever happens to older ones.
func (s *FileSnapshotStore) prune() {
	s.mu.Lock()
	defer s.mu.Unlock()
	files, err := s.list()
	if err != nil {
		s.logger.Warn("cannot prune old snapshots", "error", err)
		return
	}
	for _, sf := range files[min(s.retain, len(files)):] {
		path := filepath.Join(s.dir, sf.name)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.logger.Warn("cannot remove old snapshot", "path", path, "error", err)
			continue
		}
		s.logger.Info("old snapshot removed", "index", sf.index, "term", sf.term, "path", path)
	}
}

// Latest implements consensus.SnapshotStore: it opens the newest snapshot
// whose metadata and data CRC check out, reading it once in full to
// verify it. Snapshots that fail are skipped with a warning. ok is false
// if no intact snapshot exists; err is only for failing to read the
// directory. The reader checks the CRC again as it is read: a read that
// reaches the end of a snapshot that changed since returns a *CorruptError
// instead of io.EOF.
func (s *FileSnapshotStore) Latest() (consensus.SnapshotMeta, io.ReadCloser, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	files, err := s.list()
	if err != nil {
		return consensus.SnapshotMeta{}, nil, false, err
	}
	for _, sf := range files {
		path := filepath.Join(s.dir, sf.name)
		meta, rc, err := s.openChecked(path, sf)
		if err != nil {
			s.logger.Warn("skipping snapshot that failed verification; it will never be restored",
				"path", path, "index", sf.index, "term", sf.term, "error", err)
			continue
		}
		return meta, rc, true, nil
	}
	if len(files) > 0 {
		s.logger.Warn("no intact snapshot found", "dir", s.dir, "skipped", len(files))
	}
	return consensus.SnapshotMeta{}, nil, false, nil
}

// Open implements consensus.SnapshotStore: it opens the snapshot through
// index of term, verified in full as Latest does. It fails if there is no
// such snapshot or it does not verify.
func (s *FileSnapshotStore) Open(index consensus.Index, term consensus.Term) (consensus.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sf := snapFile{name: snapName(index, term), index: index, term: term}
	path := filepath.Join(s.dir, sf.name)
	meta, rc, err := s.openChecked(path, sf)
	if err != nil {
		return consensus.SnapshotMeta{}, nil, fmt.Errorf("snapshot %d (term %d) in %s: %w", index, term, s.dir, err)
	}
	return meta, rc, nil
}

// openChecked opens and fully verifies one snapshot file.
func (s *FileSnapshotStore) openChecked(path string, sf snapFile) (consensus.SnapshotMeta, io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return consensus.SnapshotMeta{}, nil, fmt.Errorf("opening snapshot: %w", err)
	}
	foot, err := s.readFooter(f, path, sf)
	if err == nil {
		err = checkData(f, path, foot)
	}
	if err != nil {
		f.Close()
		return consensus.SnapshotMeta{}, nil, err
	}
	voters := make([]consensus.NodeID, len(foot.Voters))
	for i, v := range foot.Voters {
		voters[i] = consensus.NodeID(v)
	}
	meta := consensus.SnapshotMeta{Index: consensus.Index(foot.Index), Term: consensus.Term(foot.Term), Voters: voters, Size: foot.Size}
	rc := &snapReader{f: f, path: path, r: io.NewSectionReader(f, 0, foot.Size), crc: crc32.New(castagnoli), want: foot.CRC}
	return meta, rc, nil
}

// readFooter reads and checks a snapshot's trailer and metadata.
func (s *FileSnapshotStore) readFooter(f *os.File, path string, sf snapFile) (snapshotFooter, error) {
	corrupt := func(what string, err error) (snapshotFooter, error) {
		return snapshotFooter{}, &CorruptError{Path: path, What: what, Err: err, Hint: snapHint}
	}
	fi, err := f.Stat()
	if err != nil {
		return snapshotFooter{}, fmt.Errorf("stat snapshot: %w", err)
	}
	size := fi.Size()
	if size < int64(snapTrailerLen) {
		return corrupt(fmt.Sprintf("file of %d bytes is shorter than the %d-byte trailer (torn write?)", size, snapTrailerLen), nil)
	}
	trailer := make([]byte, snapTrailerLen)
	if _, err := f.ReadAt(trailer, size-int64(snapTrailerLen)); err != nil {
		return snapshotFooter{}, fmt.Errorf("reading snapshot trailer: %w", err)
	}
	if string(trailer[8:]) != snapMagic {
		return corrupt("trailer magic missing (torn write or not a snapshot)", nil)
	}
	metaLen := int64(binary.BigEndian.Uint32(trailer[0:4]))
	if metaLen > snapMaxMetaLen || metaLen > size-int64(snapTrailerLen) {
		return corrupt(fmt.Sprintf("metadata length %d does not fit a %d-byte file", metaLen, size), nil)
	}
	meta := make([]byte, metaLen)
	if _, err := f.ReadAt(meta, size-int64(snapTrailerLen)-metaLen); err != nil {
		return snapshotFooter{}, fmt.Errorf("reading snapshot metadata: %w", err)
	}
	if want, got := binary.BigEndian.Uint32(trailer[4:8]), crc32.Checksum(meta, castagnoli); want != got {
		return corrupt(fmt.Sprintf("metadata checksum %08x, computed %08x", want, got), nil)
	}
	var foot snapshotFooter
	if err := decodeValue(codec.NewDecoderBytes(nil, s.h), meta, &foot); err != nil {
		return corrupt("metadata cannot be decoded", err)
	}
	if foot.Version != recordVersion {
		return corrupt(fmt.Sprintf("metadata version %d", foot.Version), errUnknownVersion)
	}
	if dataLen := size - int64(snapTrailerLen) - metaLen; foot.Size != dataLen {
		return corrupt(fmt.Sprintf("metadata says %d bytes of data, the file holds %d", foot.Size, dataLen), nil)
	}
	if consensus.Index(foot.Index) != sf.index || consensus.Term(foot.Term) != sf.term {
		return corrupt(fmt.Sprintf("metadata says index %d term %d, the file name index %d term %d", foot.Index, foot.Term, sf.index, sf.term), nil)
	}
	return foot, nil
}

// checkData reads the data once and compares its CRC with the metadata's.
func checkData(f *os.File, path string, foot snapshotFooter) error {
	crc := crc32.New(castagnoli)
	if _, err := io.Copy(crc, io.NewSectionReader(f, 0, foot.Size)); err != nil {
		return fmt.Errorf("reading snapshot data: %w", err)
	}
	if got := crc.Sum32(); got != foot.CRC {
		return &CorruptError{Path: path, What: fmt.Sprintf("data checksum %08x, computed %08x", foot.CRC, got), Hint: snapHint}
	}
	return nil
}

// snapReader streams a verified snapshot and checks its CRC again at the
// end.
type snapReader struct {
	f    *os.File
	path string
	r    io.Reader
	crc  hash.Hash32
	want uint32
}

func (r *snapReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.crc.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if got := r.crc.Sum32(); got != r.want {
			return n, &CorruptError{Path: r.path, What: fmt.Sprintf("data changed while being read: checksum %08x, computed %08x", r.want, got),
				Hint: "do not use the state restored from it; restart to pick another snapshot"}
		}
	}
	return n, err
}

func (r *snapReader) Close() error { return r.f.Close() }
