package store

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-msgpack/v2/codec"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/lockd/lockd/consensus"
)

var (
	_ consensus.LogStore    = (*Store)(nil)
	_ consensus.StableStore = (*Store)(nil)
	_ consensus.BatchStore  = (*Store)(nil)
)

// DBFileName is the bbolt file inside a data dir.
const DBFileName = "raft.db"

// DefaultInitialMmapSize is Options.InitialMmapSize's default.
const DefaultInitialMmapSize = 256 << 20

// Store formats: the layout of the buckets, stored under meta/format. A
// lockd from before the WAL knows only formatBolt and refuses any higher
// number as newer than itself. A WAL dir's bbolt file holds neither the
// log nor the hard state, so it carries formatWAL: an older lockd must
// refuse it, not open it as an empty bbolt log and start with term 0, no
// vote and no entries. A bbolt dir keeps formatBolt, which older lockds
// open correctly.
const (
	formatBolt    = 1
	formatWAL     = 2
	formatVersion = formatWAL // the newest this lockd reads
)

// formatOf is the store format of a new dir with backend.
func formatOf(backend string) consensus.Index {
	if backend == RaftLogWAL {
		return formatWAL
	}
	return formatBolt
}

var (
	bucketLog    = []byte("log")
	bucketStable = []byte("stable")
	bucketMeta   = []byte("meta")

	keyHardState = []byte("hardstate")
	keyIdentity  = []byte("identity")
	keyFormat    = []byte("format")
	// keyRaftLog says where the Raft log and hard state are: RaftLogWAL or
	// RaftLogBolt. A data dir without it predates the WAL: bbolt.
	keyRaftLog = []byte("raftlog")
)

// Raft log backends, for Options.RaftLog.
const (
	// RaftLogWAL keeps the log and hard state in an append-only segmented
	// WAL in <dir>/wal: one fdatasync per write. The default for new data
	// dirs.
	RaftLogWAL = "wal"
	// RaftLogBolt keeps them in bbolt's "log" and "stable" buckets: two
	// fdatasyncs per write. Data dirs created before the WAL use it.
	RaftLogBolt = "bolt"
)

// Options configures a Store. The zero value is ready to use.
type Options struct {
	// Logger receives open, close, verification and compaction events.
	// Default: discard.
	Logger hclog.Logger
	// InitialMmapSize is how much of the file bbolt maps at open. While the
	// file fits, a write never has to remap, and a remap waits for every
	// read transaction (a follower being sent entries) to finish. It is
	// address space, not memory: pages are only resident once touched.
	// Default DefaultInitialMmapSize (256 MiB).
	InitialMmapSize int
	// RaftLog chooses where a NEW data dir keeps the Raft log and hard
	// state: RaftLogWAL or RaftLogBolt; "" is the default, RaftLogWAL. A
	// data dir keeps the backend it was created with; a different choice
	// given here is logged (Warn) and ignored.
	RaftLog string
	// WALSegmentSize is the size of each WAL segment file, preallocated
	// in full. Default DefaultWALSegmentSize (64 MiB); at least 4 KiB.
	WALSegmentSize int64

	// openSynced, if set, is told what open synced (tests).
	openSynced func(what string)
}

func (o *Options) validate() error {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.InitialMmapSize == 0 {
		o.InitialMmapSize = DefaultInitialMmapSize
	}
	if o.InitialMmapSize < 0 {
		return fmt.Errorf("initial mmap size %d must not be negative", o.InitialMmapSize)
	}
	switch o.RaftLog {
	case "", RaftLogWAL, RaftLogBolt:
	default:
		return fmt.Errorf("raft log backend %q is unknown: use %q or %q", o.RaftLog, RaftLogWAL, RaftLogBolt)
	}
	if o.WALSegmentSize == 0 {
		o.WALSegmentSize = DefaultWALSegmentSize
	}
	if o.WALSegmentSize < minWALSegmentSize {
		return fmt.Errorf("WAL segment size %d is below the minimum of %d bytes", o.WALSegmentSize, minWALSegmentSize)
	}
	return nil
}

// boltOptions are the bbolt settings for a Raft log: appends at the end,
// deletes at the front, small values, one writer. The figures quoted are
// in the table below.
//
//   - NoFreelistSync: without it every commit also writes the freelist,
//     whose size grows with the free pages, i.e. with compaction: 2.7x the
//     batch-1 latency (+10% on a 100,000-entry log). With it bbolt
//     rebuilds the freelist at open by walking the tree (about 20 ms for
//     the 145 MiB file below), and that walk doubles as a structural check
//     of every page. Durability is untouched: the freelist is derived data;
//     after a crash it is rebuilt from the tree the last meta page points
//     to, so it can never hand out a page that tree uses. etcd runs so.
//   - FreelistType hashmap: no measurable difference from the array form
//     here (compaction frees whole runs of pages, which the array handles
//     well). It is taken because its allocation does not scan every free
//     page, which matters once the free space fragments, and bbolt means
//     to make it the default.
//   - appendFillPercent (1.0, set per transaction): half the file and
//     half the free pages of bbolt's 0.5, at the same latency.
//   - InitialMmapSize: no measurable effect on a single writer. It is kept
//     because a remap waits for every open read transaction (a follower
//     being sent a long range) and blocks the writer meanwhile; it costs
//     address space only.
//   - NoGrowSync stays false: growing the file truncates it to the new size
//     and fsyncs, so the size is durable before pages past the old end
//     are written. It happens once per 16 MiB (bbolt's AllocSize) of growth.
//   - NoSync stays false, always.
//
// TestMeasureBoltOptions (bench_test.go; variants interleaved, 50 Saves of
// 1 entry and 10 of 64 per round, 20 rounds) on ext4 over a virtio disk
// with a volatile write cache, where 4 KiB + fdatasync costs ~110 µs
// (p50), on a log of 1,000,000 entries of which 900,000 were compacted
// (32k free pages):
//
//	variant            batch-1 p50   batch-64 p50   file
//	chosen                 453 µs         555 µs    145 MiB
//	synced freelist       1219 µs        1320 µs    145 MiB
//	array freelist         470 µs         601 µs    145 MiB
//	fill 0.5               437 µs         621 µs    290 MiB
//	bbolt defaults        1567 µs        1467 µs    290 MiB
//
// About the two fsyncs per commit: bbolt writes the dirty pages,
// fdatasyncs, then writes the meta page that points to them and
// fdatasyncs again (traced at batch 16: ~300 µs and ~200 µs). The first
// sync is what orders "pages before the meta page that references them":
// without it a power loss can leave a valid meta page (its checksum covers
// only itself) pointing at pages that never reached the disk, that is a
// corrupt tree or lost acknowledged entries. So both stay, and a commit
// costs at least two device flushes: BenchmarkFsyncFloor/two-syncs, which
// a batch-1 StoreEntries comes within about 20% of. What this store does
// instead is pay the pair once per batch, not per entry: StoreEntries and
// Save put a whole batch in one transaction, and Save the hard state with
// it (with separate calls a Ready would cost four flushes); the driver
// hands over everything that accumulated during the previous write, so
// under load the pair is shared by many entries (batch 256: ~4 µs each).
func boltOptions(o Options) *bolt.Options {
	return &bolt.Options{
		// Our LOCK file already excludes other processes; bbolt's own flock
		// on the file is a second line, and must never hang an Open.
		Timeout:         time.Second,
		FreelistType:    bolt.FreelistMapType,
		NoFreelistSync:  true,
		InitialMmapSize: o.InitialMmapSize,
	}
}

// Store is a data dir's Raft log, hard state and cluster identity. The
// identity and the format are in one bbolt file; the log and hard state
// are in the WAL (wal is not nil) or in the same bbolt file. It is safe
// for concurrent use: bbolt runs one write transaction at a time and any
// number of read transactions alongside it; the WAL has its own lock.
type Store struct {
	dir    string
	path   string
	logger hclog.Logger
	h      *codec.MsgpackHandle
	// enc is used only inside write transactions, which bbolt serializes.
	enc *codec.Encoder
	// fill is the log bucket's FillPercent: appendFillPercent, except in
	// the benchmark that measures it.
	fill float64

	db   *bolt.DB // closed by Close; bbolt reports later use
	lock *dirLock
	// wal holds the log and hard state; nil when they are in bbolt.
	wal *wal

	mu     sync.Mutex // protects closed
	closed bool
}

// Open opens (creating if needed) the store in dir, takes the data-dir
// lock, and verifies the whole log and the stable records. It fails
// without waiting if another process holds dir, and with a *CorruptError
// if any stored data fails its checks.
func Open(dir string, opts Options) (*Store, error) {
	return open(dir, opts, boltOptions, true)
}

// open is Open with the bbolt options and the start-up verification
// chosen by the caller (tests measure other options, and open a corrupt
// store without verifying to see what a reader gets).
func open(dir string, opts Options, bopts func(Options) *bolt.Options, verify bool) (*Store, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("store options: %w", err)
	}
	if err := mkdirDurable(dir); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, DBFileName)
	// An empty file is one whose creator died before bbolt initialized it:
	// nothing was ever stored, so it is treated as new.
	fi, statErr := os.Stat(path)
	exists := statErr == nil && fi.Size() > 0
	start := time.Now()
	var sum summary
	if verify && exists {
		err := checkMetaPages(path)
		if err == nil {
			sum, err = verifyFile(path, opts, bopts)
		}
		if err != nil {
			lock.unlock()
			return nil, err
		}
	}
	s, err := openLocked(dir, path, !exists, opts, bopts, lock)
	if err != nil {
		lock.unlock()
		return nil, err
	}
	backend := RaftLogBolt
	if s.wal != nil {
		backend = RaftLogWAL
		sum = summary{first: s.wal.idx.first, last: s.wal.idx.last, hs: s.wal.hs}
	}
	if verify {
		s.logger.Info("raft store opened", "path", s.path, "raft_log", backend, "first_index", sum.first, "last_index", sum.last,
			"term", sum.hs.Term, "vote", sum.hs.Vote, "commit", sum.hs.Commit, "took", time.Since(start))
	}
	return s, nil
}

// verifyFile verifies the file through a read-only handle, before bbolt
// opens it for writing. The read-write open walks every page in a
// goroutine of bbolt's own (to rebuild the freelist), where a wild offset
// in a corrupt page is a memory fault that nothing can recover; verify
// reads every key and value first, in this goroutine, where such a fault
// becomes a *CorruptError.
func verifyFile(path string, opts Options, bopts func(Options) *bolt.Options) (summary, error) {
	bo := bopts(opts)
	bo.ReadOnly = true
	db, err := openBolt(path, bo)
	if err != nil {
		return summary{}, err
	}
	defer db.Close()
	s := &Store{path: path, logger: opts.Logger, h: newHandle(), db: db}
	return s.verify()
}

func openLocked(dir, path string, create bool, opts Options, bopts func(Options) *bolt.Options, lock *dirLock) (*Store, error) {
	db, err := openBolt(path, bopts(opts))
	if err != nil {
		return nil, err
	}
	// bbolt syncs a new file's contents but not its directory entry; and
	// an existing file may hold a transaction whose writer was killed
	// before its fdatasync returned: readable here from the page cache,
	// yet not on disk. Acting on it (a vote, an identity) before it is
	// durable could be undone by a power loss, so both are synced first.
	if err := db.Sync(); err != nil {
		db.Close()
		return nil, fmt.Errorf("syncing %s at open: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		db.Close()
		return nil, err
	}
	if opts.openSynced != nil {
		opts.openSynced(path)
		opts.openSynced(dir)
	}
	h := newHandle()
	s := &Store{dir: dir, path: path, logger: opts.Logger, h: h, enc: codec.NewEncoderBytes(nil, h), fill: appendFillPercent, db: db, lock: lock}
	backend, isNew, err := s.readBackend()
	if err != nil {
		db.Close()
		return nil, err
	}
	if isNew {
		backend = cmp.Or(opts.RaftLog, RaftLogWAL)
	} else if opts.RaftLog != "" && backend != opts.RaftLog {
		s.logger.Warn("the data dir keeps the raft log backend it was created with, not the one asked for",
			"raft_log", backend, "asked", opts.RaftLog, "dir", dir)
	}
	if backend == RaftLogWAL {
		// The WAL exists before the format records name it (initBuckets,
		// below): a data dir that says "wal" always has segments.
		s.wal, err = openWAL(filepath.Join(dir, WALDirName), opts.WALSegmentSize, opts.Logger, isNew)
		if err == nil && isNew && (s.wal.idx.last != 0 || !s.wal.hs.IsEmpty()) {
			s.wal.close()
			err = lostBoltFileError(dir, path, s.wal.idx.last, s.wal.hs)
		}
		if err != nil {
			db.Close()
			return nil, err
		}
	} else if isNew {
		// A new bbolt log next to a WAL that holds a log: raft.db was
		// lost, and starting afresh would forget the term and vote.
		if err := checkNoWALState(dir, path, opts.Logger); err != nil {
			db.Close()
			return nil, err
		}
	} else {
		s.logger.Info("the data dir keeps its raft log in bbolt, as when it was created (new data dirs use a WAL)", "path", path)
	}
	if err := s.initBuckets(backend); err != nil {
		if s.wal != nil {
			s.wal.close()
		}
		db.Close()
		return nil, err
	}
	return s, nil
}

// readBackend returns the raft log backend the file names, and whether
// the file is new (no format record yet). An existing file without the
// record predates the WAL: bbolt.
func (s *Store) readBackend() (backend string, isNew bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil || meta.Get(keyFormat) == nil {
			isNew = true
			return nil
		}
		backend, _, err = s.dirBackend(meta)
		return err
	})
	return backend, isNew, err
}

// dirBackend checks the format and raft log backend records of an
// existing file and returns the backend and the format.
func (s *Store) dirBackend(meta *bolt.Bucket) (backend string, format consensus.Index, err error) {
	format, err = s.checkFormat(meta.Get(keyFormat))
	if err != nil {
		return "", 0, err
	}
	switch v := meta.Get(keyRaftLog); string(v) {
	case "", RaftLogBolt:
		if format == formatWAL {
			return "", 0, &CorruptError{Path: s.path, What: fmt.Sprintf(
				"store format %d is a WAL data dir's, but the raft log backend record says %q", format, v)}
		}
		return RaftLogBolt, format, nil
	case RaftLogWAL:
		// Format 1 here: written by a lockd from before WAL dirs had a
		// format of their own; initBuckets marks it.
		return RaftLogWAL, format, nil
	default:
		return "", 0, fmt.Errorf("%s keeps its raft log in %q, which this lockd does not know: run a newer lockd", s.path, shortHex(v))
	}
}

// openBolt opens the file. bbolt panics on some corrupt pages (it walks
// the whole tree at open to rebuild the freelist); a panic here is a
// corrupt file, reported like one. bbolt does not clean up after its own
// panic, so the file it opened is captured and released here. Its mapping
// of the file stays behind (address space only; the process is about to
// refuse to start).
func openBolt(path string, opts *bolt.Options) (db *bolt.DB, err error) {
	var file *os.File
	opts.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				releaseFile(file)
			}
			db, err = nil, &CorruptError{Path: path, What: "bbolt could not open the file", Err: panicError(r)}
		}
	}()
	db, err = bolt.Open(path, 0o600, opts)
	if err != nil {
		if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) || errors.Is(err, bolterrors.ErrVersionMismatch) {
			return nil, &CorruptError{Path: path, What: "not a valid bbolt file", Err: err}
		}
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("opening %s: another handle in this process holds bbolt's lock on it: %w", path, err)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return db, nil
}

// initBuckets creates the buckets of a new file, with its format and
// raft log backend, and checks the format of an existing one. It writes
// only when something is missing.
// A WAL dir whose format record predates formatWAL gets it here.
func (s *Store) initBuckets(backend string) error {
	ready, mark := false, false
	err := s.db.View(func(tx *bolt.Tx) error {
		ready = tx.Bucket(bucketLog) != nil && tx.Bucket(bucketStable) != nil && tx.Bucket(bucketMeta) != nil
		if !ready {
			return nil
		}
		b, f, err := s.dirBackend(tx.Bucket(bucketMeta))
		mark = b == RaftLogWAL && f != formatWAL
		return err
	})
	if err != nil || (ready && !mark) {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketLog, bucketStable, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("creating bucket %q in %s: %w", name, s.path, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyFormat) != nil {
			b, f, err := s.dirBackend(meta)
			if err != nil || b != RaftLogWAL || f == formatWAL {
				return err
			}
			s.logger.Info("marking the WAL data dir with store format 2, which lockd versions from before the WAL refuse to open", "path", s.path)
			return meta.Put(keyFormat, indexKey(formatWAL))
		}
		// One transaction with the format: a file with a format record
		// names its backend.
		if err := meta.Put(keyRaftLog, []byte(backend)); err != nil {
			return err
		}
		return meta.Put(keyFormat, indexKey(formatOf(backend)))
	})
}

// checkFormat checks a format record and returns the format.
func (s *Store) checkFormat(v []byte) (consensus.Index, error) {
	f, ok := keyIndex(v)
	switch {
	case !ok:
		return 0, &CorruptError{Path: s.path, What: fmt.Sprintf("format record %s is not 8 bytes", shortHex(v))}
	case f > formatVersion:
		return 0, fmt.Errorf("%s has store format %d, newer than this lockd's %d: run a newer lockd", s.path, f, formatVersion)
	case f != formatBolt && f != formatWAL:
		return 0, &CorruptError{Path: s.path, What: fmt.Sprintf("unknown store format %d", f)}
	}
	return f, nil
}

// Path returns the bbolt file's path.
func (s *Store) Path() string { return s.path }

// RaftLog returns where the log and hard state are: RaftLogWAL or
// RaftLogBolt.
func (s *Store) RaftLog() string {
	if s.wal != nil {
		return RaftLogWAL
	}
	return RaftLogBolt
}

// Close closes the file (waiting for transactions in progress) and
// releases the data-dir lock. Calling it again does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errWAL error
	if s.wal != nil {
		errWAL = s.wal.close()
	}
	errDB := s.db.Close()
	if errDB != nil {
		errDB = fmt.Errorf("closing %s: %w", s.path, errDB)
	}
	return errors.Join(errWAL, errDB, s.lock.unlock())
}

// view and update run a transaction, turning bbolt's "not open" into
// ErrClosed.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	return s.closedErr(s.db.View(fn))
}

func (s *Store) update(fn func(*bolt.Tx) error) error {
	return s.closedErr(s.db.Update(fn))
}

func (s *Store) closedErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%s: %w", s.path, ErrClosed)
	}
	return err
}

// mkdirDurable creates dir and any missing parents, and fsyncs the parent
// of each directory it created, so that the new directories survive a
// power loss along with what is later written in them.
func mkdirDurable(dir string) error {
	var created []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		_, err := os.Stat(d)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("checking %s: %w", d, err)
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(created) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for _, d := range created {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory so that entries created or renamed in it
// survive a power loss.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening dir %s to sync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing dir %s: %w", dir, err)
	}
	return nil
}
