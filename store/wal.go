package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/lockd/lockd/consensus"
)

// WALDirName is the WAL's directory inside a data dir.
const WALDirName = "wal"

// DefaultWALSegmentSize is Options.WALSegmentSize's default: etcd's.
const DefaultWALSegmentSize = 64 << 20

// minWALSegmentSize keeps a segment big enough for its header and then
// some; tests use it to roll over often.
const minWALSegmentSize = 4096

const (
	segSuffix = ".wal"
	tmpSuffix = ".tmp"
)

// wal is the Raft log and hard state as an append-only, segmented write-
// ahead log (see the package doc and docs/store.md "WAL"). It is safe for
// concurrent use: one mutex serializes everything, and a write holds it
// through its fdatasync.
type wal struct {
	dir     string
	segSize int64
	logger  hclog.Logger
	// syncDir makes the WAL dir's entries durable, and syncFile a file's
	// data: the package's syncDir and fdatasync (a test wraps them to see
	// what is synced when).
	syncDir  func(dir string) error
	syncFile func(f *os.File) error

	mu     sync.Mutex // protects everything below
	closed bool
	// failed is set when a write or a sync failed: what is on disk is then
	// unknown (a failed fdatasync may have dropped the pages), so nothing
	// more is written until a restart replays the files.
	failed  error
	idx     logIndex
	hs      consensus.HardState
	segs    []uint64 // the segments on disk, oldest first; the last is cur
	cur     *os.File // the last segment, open for writing
	curSize int64
	off     int64 // where the next record goes in cur
	// chain is the chain value (chainRecord) after the last record
	// written; the next segment's header carries it.
	chain uint32
	buf   []byte
	offs  []int
	locs  []entryLoc

	// The next segment is prepared (zero-filled and synced) in the
	// background once the current one is half full, so that a roll-over
	// does not pay for it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	prep   *preparedSeg    // ready for the next roll; nil if none
	prepc  chan prepResult // capacity 1: the preparation in flight; nil if none
	tmpSeq uint64
}

// preparedSeg is a zero-filled, synced file under a temporary name.
type preparedSeg struct {
	f    *os.File
	path string
	size int64
}

type prepResult struct {
	p   *preparedSeg
	err error
}

func segPath(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%016x%s", seq, segSuffix))
}

// listSegments removes leftover temporary files (a segment being prepared,
// or a roll-over that never got its final name: its write was never
// acknowledged) and returns the segments' sequence numbers in order.
func listSegments(dir string, logger hclog.Logger) ([]uint64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("listing WAL dir %s: %w", dir, err)
	}
	var seqs []uint64
	for _, de := range des {
		name := de.Name()
		switch {
		case strings.HasSuffix(name, tmpSuffix):
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("removing leftover WAL temp file: %w", err)
			}
			logger.Debug("leftover WAL temp file removed", "file", name)
		case strings.HasSuffix(name, segSuffix):
			seq, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 16, 64)
			if err != nil || len(name) != 16+len(segSuffix) || seq == 0 {
				return nil, &CorruptError{Path: filepath.Join(dir, name), What: "WAL segment file with a malformed name"}
			}
			seqs = append(seqs, seq)
		default:
			logger.Warn("unknown file in the WAL dir, ignored", "file", name)
		}
	}
	slices.Sort(seqs)
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			return nil, &CorruptError{Path: dir, What: fmt.Sprintf("WAL segments %d to %d are missing (found %s, then %s)",
				seqs[i-1]+1, seqs[i]-1, filepath.Base(segPath(dir, seqs[i-1])), filepath.Base(segPath(dir, seqs[i])))}
		}
	}
	return seqs, nil
}

// openWAL opens the WAL in dir, replaying every segment. With create, a
// dir with no segment gets its first; without, that is a lost WAL.
func openWAL(dir string, segSize int64, logger hclog.Logger, create bool) (*wal, error) {
	w := newWAL(dir, segSize, logger)
	if err := w.open(create); err != nil {
		return nil, err
	}
	return w, nil
}

func newWAL(dir string, segSize int64, logger hclog.Logger) *wal {
	return &wal{dir: dir, segSize: segSize, logger: logger, syncDir: syncDir, syncFile: fdatasync}
}

// open is openWAL's work, on a wal from newWAL.
func (w *wal) open(create bool) error {
	dir, logger := w.dir, w.logger
	if err := mkdirDurable(dir); err != nil {
		return fmt.Errorf("creating WAL dir: %w", err)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			w.cancel()
		}
	}()
	seqs, err := listSegments(dir, logger)
	if err != nil {
		return err
	}
	if len(seqs) == 0 {
		if !create {
			return &CorruptError{Path: dir, What: "the data dir's raft log is a WAL, but the WAL dir holds no segment"}
		}
		w.segs = nil
		if _, err := w.roll(nil); err != nil {
			return fmt.Errorf("creating the first WAL segment: %w", err)
		}
		ok = true
		return nil
	}
	r, err := replayWAL(dir, seqs, false)
	if err != nil {
		return err
	}
	path := segPath(dir, seqs[len(seqs)-1])
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("opening WAL segment %s for writing: %w", path, err)
	}
	// Replay read the page cache, not the disk. A process that died after
	// a write but before its fdatasync returned (or after a roll-over's
	// rename but before its dir sync) leaves a record that replay finds
	// but no disk holds yet. This process would act on it (answer a leader
	// that the entries are stored, keep the vote) and a power loss could
	// still take it away: an acknowledged entry or a vote lost. So what
	// replay found is made durable before anything is built on it. Older
	// segments need nothing: every write to them was synced before the
	// next segment was started.
	if err := w.syncFile(f); err != nil {
		f.Close()
		return fmt.Errorf("syncing WAL segment %s, whose records were just replayed: %w", path, err)
	}
	if err := w.syncDir(dir); err != nil {
		f.Close()
		return fmt.Errorf("syncing the WAL dir, whose segments were just replayed: %w", err)
	}
	if r.tornEnd > r.end {
		// What follows the last whole record was never acknowledged. It is
		// zeroed, not left for the next records to land on: a shorter
		// record written over a torn one could leave a stale, valid-looking
		// record behind it for a later replay to find.
		if err := zeroRange(f, r.end, r.tornEnd); err != nil {
			f.Close()
			return fmt.Errorf("zeroing the torn end of WAL segment %s: %w", path, err)
		}
		logger.Warn("WAL ended in a torn write (the process or machine stopped during a write that was never acknowledged): cleared it",
			"segment", path, "offset", r.end, "bytes", r.tornEnd-r.end, "why", r.tornWhy)
	}
	w.idx, w.hs, w.segs, w.cur, w.curSize, w.off, w.chain = r.idx, r.hs, seqs, f, r.size, r.end, r.chain
	w.maybePrepare()
	ok = true
	return nil
}

// lostBoltFileError is the refusal of a WAL that holds a raft log next to
// a new bbolt file.
func lostBoltFileError(dir, path string, last consensus.Index, hs consensus.HardState) error {
	return &CorruptError{Path: filepath.Join(dir, WALDirName), What: fmt.Sprintf(
		"the WAL holds a raft log (last index %d, term %d) but %s, which names the cluster and the log's format, is new or empty",
		last, hs.Term, path)}
}

// checkNoWALState is for a data dir whose new bbolt file is to hold the
// raft log: it fails if the dir's wal/ holds a log or a hard state (or
// cannot be read), which would mean that the bbolt file of a WAL dir was
// lost. It writes nothing but the removal of leftover temp files.
func checkNoWALState(dir, path string, logger hclog.Logger) error {
	wdir := filepath.Join(dir, WALDirName)
	if _, err := os.Stat(wdir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	seqs, err := listSegments(wdir, logger)
	if err != nil || len(seqs) == 0 {
		return err
	}
	r, err := replayWAL(wdir, seqs, false)
	if err != nil {
		return err
	}
	if r.idx.last != 0 || !r.hs.IsEmpty() {
		return lostBoltFileError(dir, path, r.idx.last, r.hs)
	}
	return nil
}

// zeroRange writes zeros over [from, to) of f and syncs.
func zeroRange(f *os.File, from, to int64) error {
	for off := from; off < to; {
		n := min(int64(len(zeroChunk)), to-off)
		if _, err := f.WriteAt(zeroChunk[:n], off); err != nil {
			return err
		}
		off += n
	}
	return fdatasync(f)
}

// replayed is what replayWAL found.
type replayed struct {
	idx     logIndex
	hs      consensus.HardState
	end     int64  // offset after the last record of the last segment
	chain   uint32 // chain value after that record
	size    int64  // the last segment's file size
	tornEnd int64  // > end: bytes [end, tornEnd) of the last segment are a torn write
	tornWhy string
}

// replayWAL reads the segments in order and rebuilds the log's index and
// hard state. In the last segment, a torn write (see tornAt) ends the log
// and is reported in the result, unless verifying, when it is corruption:
// open has cleared it. Everything else that fails a check is a
// *CorruptError.
func replayWAL(dir string, seqs []uint64, verifying bool) (replayed, error) {
	return replaySegments(dir, seqs, os.ReadFile, verifying)
}

// replaySegments is replayWAL reading each segment with readFile (the
// fuzz test replays bytes held in memory).
func replaySegments(dir string, seqs []uint64, readFile func(string) ([]byte, error), verifying bool) (replayed, error) {
	var r replayed
	var wents []walEntry
	var locs []entryLoc
	for i, seq := range seqs {
		path := segPath(dir, seq)
		corrupt := func(what string, args ...any) error {
			return &CorruptError{Path: path, What: fmt.Sprintf(what, args...)}
		}
		buf, err := readFile(path)
		if err != nil {
			return replayed{}, fmt.Errorf("reading WAL segment: %w", err)
		}
		lastSeg := i == len(seqs)-1
		typ, p, off, st := readRecord(buf, 0)
		if st != recOK || typ != recSegment {
			return replayed{}, corrupt("the segment does not start with an intact segment header")
		}
		h, err := decodeSegHeader(p)
		if err != nil {
			return replayed{}, &CorruptError{Path: path, What: "segment header", Err: err}
		}
		if h.seq != seq {
			return replayed{}, corrupt("segment header says it is segment %d", h.seq)
		}
		if i == 0 {
			// The entries the log held when this segment began are in
			// segments deleted since; later records must compact or
			// replace them. The chain starts from the value those
			// segments' records left.
			r.idx = logIndex{first: h.first, last: h.last, missingThrough: h.last, lastTerm: h.lastTerm}
			r.hs = h.hs
			r.chain = h.prevChain
		} else {
			if err := r.checkSegHeader(h, dir, seqs[i-1], seq); err != nil {
				return replayed{}, err
			}
			if h.first != r.idx.first || h.last != r.idx.last || h.hs != r.hs {
				return replayed{}, corrupt("segment header says the log was [%d, %d] with hard state %+v when it began, "+
					"but the segments before it end with [%d, %d] and %+v", h.first, h.last, h.hs, r.idx.first, r.idx.last, r.hs)
			}
		}
		r.chain = chainRecord(r.chain, buf)
		for {
			at := off
			typ, p, next, st := readRecord(buf, at)
			if st == recOK {
				r.chain = chainRecord(r.chain, buf[at:])
				if err := r.apply(typ, p, seq, int64(at), &wents, &locs); err != nil {
					var ce *CorruptError
					if errors.As(err, &ce) {
						ce.Path = path
						ce.What = fmt.Sprintf("record at offset %d: %s", at, ce.What)
						return replayed{}, err
					}
					return replayed{}, &CorruptError{Path: path, What: fmt.Sprintf("record at offset %d", at), Err: err}
				}
				off = next
				continue
			}
			r.end, r.size = int64(at), int64(len(buf))
			if st == recZero && allZero(buf[at:]) {
				break // the unwritten rest of the segment
			}
			why, torn := tornAt(buf, at, next, st)
			if !lastSeg || !torn || verifying {
				return replayed{}, corrupt("%s at offset %d", why, at)
			}
			r.tornEnd, r.tornWhy = int64(lastNonZero(buf[at:])+at+1), why
			break
		}
	}
	if r.idx.last != 0 && r.idx.missingThrough >= r.idx.first {
		return replayed{}, &CorruptError{Path: dir, Index: r.idx.first, What: fmt.Sprintf(
			"entries %d to %d of the log are in WAL segments that are gone (the oldest left is %s)",
			r.idx.first, min(r.idx.missingThrough, r.idx.last), filepath.Base(segPath(dir, seqs[0])))}
	}
	return r, nil
}

// checkSegHeader checks what the header h of segment seq says about the
// end of segment prev against what replay found there (r, after replaying
// prev). Zeros end a segment's records; in the last segment that is the
// torn-tail rule's business, but an older segment was complete before the
// next one began, so its end must be where the next header says. A record
// lost from there (a write the disk acknowledged but did not keep) would
// otherwise go unnoticed whenever the header's bounds and hard state do
// not show it, e.g. a rewrite of entries at a higher term.
func (r *replayed) checkSegHeader(h segHeader, dir string, prev, seq uint64) error {
	prevPath, hdrName := segPath(dir, prev), filepath.Base(segPath(dir, seq))
	corrupt := func(what string, args ...any) error {
		return &CorruptError{Path: prevPath, What: fmt.Sprintf(what, args...)}
	}
	switch {
	case r.end < h.prevEnd:
		return corrupt("the records end at offset %d, but the header of the next segment %s says they end at offset %d: "+
			"the records in between were lost (zeroed, or acknowledged by a disk that never wrote them)", r.end, hdrName, h.prevEnd)
	case r.end > h.prevEnd:
		return corrupt("records go on to offset %d, past offset %d where the header of the next segment %s says they end: "+
			"data was written after the segment was closed", r.end, h.prevEnd, hdrName)
	case r.idx.lastTerm != h.lastTerm:
		return corrupt("the log's last entry %d has term %d after this segment, but the header of the next segment %s says term %d: "+
			"a record was lost or altered", r.idx.last, r.idx.lastTerm, hdrName, h.lastTerm)
	case r.chain != h.prevChain:
		return corrupt("the records up to the end of this segment have chain CRC %08x, but the header of the next segment %s says %08x: "+
			"a record was lost, replaced or reordered", r.chain, hdrName, h.prevChain)
	}
	return nil
}

// tornAt says what is wrong at offset at of a segment where no intact
// record is, and whether it can be a torn write: the end of a write that
// was in progress when the process or machine stopped. The WAL writes
// each record once, into zeros, with one write call, and syncs it before
// writing anything after it. So a torn write is the last record: only
// zeros follow the place where its header says it ends, and no intact
// record header follows it anywhere. Anything else is damage to data
// that was acknowledged, which must not be dropped without a word. A
// damaged LAST record cannot be told from a torn write (as in etcd) and
// is dropped.
func tornAt(buf []byte, at, next int, st recordStatus) (why string, torn bool) {
	const followed = ", and an intact record follows it (damage, not a torn write)"
	switch st {
	case recZero:
		// The header never reached the disk but later bytes did.
		if headerAfter(buf, at+1) {
			return "no record header" + followed, false
		}
		return "no record header, yet non-zero bytes follow", true
	case recBadCRC:
		if allZero(buf[next:]) {
			return "a record fails its checksum", true
		}
		return "a record fails its checksum, and data follows it (damage, not a torn write)", false
	case recPastEOF:
		// No write extends a segment: each is zero-filled to its full size
		// and synced before it gets its name. A crash cannot cut one short,
		// so records lost at its end were acknowledged.
		return "a record runs past the end of the file, and segments are never cut short by a crash (the file was truncated)", false
	case recBadLen:
		return "a record header with an impossible length", false
	default:
		if headerAfter(buf, at+1) {
			return "a damaged record header" + followed, false
		}
		return "a damaged record header", true
	}
}

// headerAfter reports whether an intact record header, of a known type
// and with a length that fits, starts anywhere in buf from offset from
// on. It looks only as far as the last non-zero byte.
func headerAfter(buf []byte, from int) bool {
	end := lastNonZero(buf) + 1
	for p := from; p+recHeaderLen <= end; p++ {
		h := buf[p : p+recHeaderLen]
		if h[8] < recSegment || h[8] > recCompact {
			continue
		}
		if crc32.Checksum(h[:9], castagnoli) != binary.LittleEndian.Uint32(h[9:]) {
			continue
		}
		if n := binary.LittleEndian.Uint32(h); n > 0 && int64(n) <= int64(len(buf)-p-recHeaderLen) {
			return true
		}
	}
	return false
}

// apply applies one intact record found at offset at of segment seq.
func (r *replayed) apply(typ byte, p []byte, seq uint64, at int64, wents *[]walEntry, locs *[]entryLoc) error {
	switch typ {
	case recEntries:
		hs, ents, err := decodeEntriesRecord(p, (*wents)[:0])
		*wents = ents
		if err != nil {
			return err
		}
		if len(ents) > 0 {
			if err := r.applyEntries(p, seq, at, ents, locs); err != nil {
				return err
			}
		}
		if hs != nil {
			r.hs = *hs
		}
	case recHardState:
		if len(p) != hardStateLen {
			return fmt.Errorf("hard state record of %d bytes, want %d", len(p), hardStateLen)
		}
		r.hs = readHardState(p)
	case recCompact:
		if len(p) != 8 {
			return fmt.Errorf("compaction record of %d bytes, want 8", len(p))
		}
		r.idx.compact(consensus.Index(binary.LittleEndian.Uint64(p)))
	case recSegment:
		return errors.New("a segment header in the middle of a segment")
	default:
		return fmt.Errorf("record type %d is unknown (written by a newer lockd?)", typ)
	}
	return nil
}

func (r *replayed) applyEntries(p []byte, seq uint64, at int64, ents []walEntry, locs *[]entryLoc) error {
	s := ents[0].index
	if s == 0 {
		return errors.New("a batch starts at index 0")
	}
	err := checkPlacement(s, ents[0].term, r.idx.first, r.idx.last, func() (consensus.Term, error) {
		if l, ok := r.idx.loc(s - 1); ok {
			return l.term, nil
		}
		return 0, nil // compacted or replaced later, or the log is lost: checked at the end
	})
	if err != nil {
		return &CorruptError{Index: s, What: "batch does not fit the log before it", Err: err}
	}
	ls := (*locs)[:0]
	for k, e := range ents {
		if k > 0 && e.term < ents[k-1].term {
			return &CorruptError{Index: e.index, What: fmt.Sprintf("entry %d has term %d, below the term %d of entry %d before it",
				e.index, e.term, ents[k-1].term, ents[k-1].index)}
		}
		// The record's CRC held; the entry's own checksum is verified too,
		// as it is when the entry is read.
		if err := verifyWALEntry(p[e.off:e.off+e.n], e.index); err != nil {
			return err
		}
		ls = append(ls, entryLoc{seq: seq, off: at + recHeaderLen + int64(e.off), n: uint32(e.n), term: e.term})
	}
	*locs = ls
	r.idx.appendBatch(s, ls)
	return nil
}

// verifyWALEntry checks an encoded entry without copying its data.
func verifyWALEntry(b []byte, want consensus.Index) error {
	_, err := decodeWALEntryData(b, want, false)
	return err
}

// usable returns why the WAL cannot be used, nil if it can.
func (w *wal) usable() error {
	if w.closed {
		return fmt.Errorf("%s: %w", w.dir, ErrClosed)
	}
	if w.failed != nil {
		return fmt.Errorf("%s: an earlier write failed (%v), so what is on disk is not known; restart lockd to replay and check the WAL", w.dir, w.failed)
	}
	return nil
}

// close stops the background preparation, removes a prepared segment, and
// closes the files. Calling it again does nothing.
func (w *wal) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	w.cancel()
	w.wg.Wait()
	if w.prepc != nil {
		r := <-w.prepc // buffered: the goroutine has sent before it ended
		w.prepc = nil
		if r.p != nil {
			r.p.discard()
		}
	}
	if w.prep != nil {
		w.prep.discard()
		w.prep = nil
	}
	if w.cur == nil {
		return nil
	}
	if err := w.cur.Close(); err != nil {
		return fmt.Errorf("closing WAL segment %s: %w", w.cur.Name(), err)
	}
	return nil
}

func (p *preparedSeg) discard() {
	p.f.Close()
	os.Remove(p.path)
}

// prepareSegment creates a temporary file of size bytes, writes zeros over
// all of it and syncs it: its blocks are then allocated and written, so
// that appending records later changes neither the file's size nor its
// extents, and an fdatasync flushes only data (no journal commit).
// (fallocate would allocate "unwritten" extents, whose conversion on first
// write is a metadata change again.)
func prepareSegment(ctx context.Context, dir string, tmpSeq uint64, size int64) (_ *preparedSeg, err error) {
	path := filepath.Join(dir, fmt.Sprintf("prepare-%d%s", tmpSeq, tmpSuffix))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating WAL segment: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("preparing WAL segment %s: %w", path, err)
		}
		n := min(int64(len(zeroChunk)), size-off)
		if _, err := f.WriteAt(zeroChunk[:n], off); err != nil {
			return nil, fmt.Errorf("preparing WAL segment %s: %w", path, err)
		}
		off += n
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("syncing new WAL segment %s: %w", path, err)
	}
	return &preparedSeg{f: f, path: path, size: size}, nil
}

// maybePrepare starts preparing the next segment in the background once
// the current one is half full, if none is ready or on its way.
func (w *wal) maybePrepare() {
	if w.prep != nil || w.prepc != nil || w.closed || w.off < w.curSize/2 {
		return
	}
	c := make(chan prepResult, 1)
	w.prepc = c
	w.tmpSeq++
	seq := w.tmpSeq
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		start := time.Now()
		p, err := prepareSegment(w.ctx, w.dir, seq, w.segSize)
		if err == nil {
			w.logger.Debug("next WAL segment prepared", "bytes", w.segSize, "took", time.Since(start))
		}
		c <- prepResult{p, err}
	}()
}

// takePrepared returns a prepared file of size bytes: the one prepared in
// the background if it has that size (waiting for it if it is on its way:
// that is the work a synchronous preparation would do again), else one
// prepared now.
func (w *wal) takePrepared(size int64) (*preparedSeg, error) {
	if size == w.segSize {
		if w.prep == nil && w.prepc != nil {
			r := <-w.prepc
			w.prepc = nil
			if r.err != nil {
				w.logger.Warn("preparing the next WAL segment in the background failed; preparing it now", "error", r.err)
			}
			w.prep = r.p
		}
		if p := w.prep; p != nil {
			w.prep = nil
			return p, nil
		}
	}
	w.tmpSeq++
	return prepareSegment(w.ctx, w.dir, w.tmpSeq, size)
}

// roll starts the next segment with its header and rec (which may be
// empty) and returns rec's offset in it. The header carries the state
// before rec. The file gets its final name only once header and record
// are synced, so a crash leaves either no new segment or a whole one.
func (w *wal) roll(rec []byte) (int64, error) {
	hdr := appendSegHeader(nil, segHeader{
		seq: w.nextSeq(), first: w.idx.first, last: w.idx.last, hs: w.hs,
		lastTerm: w.idx.lastTerm, prevEnd: w.off, prevChain: w.chain,
	})
	need := int64(len(hdr) + len(rec))
	size := w.segSize
	if need > size {
		// A batch bigger than a segment gets a segment of its own size.
		size = (need + 4095) &^ 4095
	}
	p, err := w.takePrepared(size)
	if err != nil {
		return 0, err
	}
	buf := append(hdr, rec...)
	seq := w.nextSeq()
	path := segPath(w.dir, seq)
	if _, err := p.f.WriteAt(buf, 0); err != nil {
		p.discard()
		return 0, fmt.Errorf("writing WAL segment %s: %w", path, err)
	}
	if err := fdatasync(p.f); err != nil {
		p.discard()
		return 0, fmt.Errorf("syncing WAL segment %s: %w", path, err)
	}
	if err := os.Rename(p.path, path); err != nil {
		p.discard()
		return 0, fmt.Errorf("naming WAL segment %s: %w", path, err)
	}
	if err := w.syncDir(w.dir); err != nil {
		p.f.Close()
		return 0, err
	}
	if w.cur != nil {
		if err := w.cur.Close(); err != nil {
			w.logger.Warn("closing a full WAL segment failed", "segment", w.cur.Name(), "error", err)
		}
	}
	w.cur, w.curSize, w.off = p.f, p.size, need
	w.chain = chainRecord(w.chain, hdr)
	if len(rec) > 0 {
		w.chain = chainRecord(w.chain, rec)
	}
	w.segs = append(w.segs, seq)
	w.logger.Debug("WAL segment started", "segment", path, "bytes", size, "first_index", w.idx.first, "last_index", w.idx.last)
	return int64(len(hdr)), nil
}

func (w *wal) nextSeq() uint64 {
	if len(w.segs) == 0 {
		return 1
	}
	return w.segs[len(w.segs)-1] + 1
}
