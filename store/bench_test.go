package store

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lockd/lockd/consensus"
)

// Benchmarks. Run them with
//
//	go test -run '^$' -bench . -benchtime 2s ./store/
//
// Latencies are reported per call as p50-µs and p99-µs, throughput as
// entries/s over the time spent inside the store (building the batch is
// not counted). See the package report (docs) for figures on the
// reference machine.

// latencies collects one duration per call.
type latencies struct {
	d       []time.Duration
	entries int
}

func (l *latencies) time(entries int, fn func() error) error {
	start := time.Now()
	err := fn()
	l.d = append(l.d, time.Since(start))
	l.entries += entries
	return err
}

func (l *latencies) report(b *testing.B) {
	if len(l.d) == 0 {
		return
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	var total time.Duration
	for _, d := range s {
		total += d
	}
	pct := func(p float64) float64 { return float64(s[int(p*float64(len(s)-1))]) / float64(time.Microsecond) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	if l.entries > 0 {
		b.ReportMetric(float64(l.entries)/total.Seconds(), "entries/s")
	}
}

// BenchmarkFsyncFloor is what the disk under the benchmarks' temp dir
// costs for one durable write:
//   - overwrite: 4 KiB written over an allocated block, then fdatasync:
//     one device flush and nothing else, the cheapest durable write;
//   - append: 4 KiB appended, then fsync: the file's size changes, so the
//     filesystem journal commits too;
//   - two-syncs: a 4 KiB page and then a 4 KiB "meta page", each followed
//     by fdatasync: bbolt's commit protocol with nothing else to do, the
//     floor for any bbolt commit.
func BenchmarkFsyncFloor(b *testing.B) {
	page := make([]byte, 4096)
	open := func(b *testing.B) *os.File {
		f, err := os.OpenFile(filepath.Join(b.TempDir(), "floor"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		// Allocate the blocks the overwrite cases reuse.
		if _, err := f.WriteAt(make([]byte, 64<<10), 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		return f
	}
	cases := []struct {
		name string
		op   func(f *os.File, i int) error
	}{
		{"overwrite", func(f *os.File, i int) error {
			if _, err := f.WriteAt(page, 8192); err != nil {
				return err
			}
			return fdatasync(f)
		}},
		{"append", func(f *os.File, i int) error {
			if _, err := f.WriteAt(page, int64(64<<10+i*4096)); err != nil {
				return err
			}
			return f.Sync()
		}},
		{"two-syncs", func(f *os.File, i int) error {
			if _, err := f.WriteAt(page, 8192); err != nil {
				return err
			}
			if err := fdatasync(f); err != nil {
				return err
			}
			if _, err := f.WriteAt(page, 0); err != nil {
				return err
			}
			return fdatasync(f)
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			f := open(b)
			var l latencies
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := l.time(0, func() error { return c.op(f, i) }); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			l.report(b)
		})
	}
}

// payload is a 100-byte entry body.
var payload = []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzAB")

// benchBatch returns sealed 100-byte entries from index lo.
func benchBatch(lo consensus.Index, n int) []consensus.Entry {
	return benchBatchOf(lo, n, payload)
}

// benchBatchOf returns sealed entries from index lo with data as their data.
func benchBatchOf(lo consensus.Index, n int, data []byte) []consensus.Entry {
	ents := make([]consensus.Entry, n)
	for i := range ents {
		ents[i] = consensus.Entry{Index: lo + consensus.Index(i), Term: 1, Time: int64(lo), Data: data}
		ents[i].Seal()
	}
	return ents
}

// benchBackends are the raft log backends the benchmarks compare, with
// the default segment size for the WAL.
var benchBackends = []struct {
	name string
	opts Options
}{{RaftLogBolt, boltOptions0}, {RaftLogWAL, Options{RaftLog: RaftLogWAL}}}

func openBench(b *testing.B, o Options) *Store {
	b.Helper()
	s, err := open(b.TempDir(), o, boltOptions, true)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// appendRun appends b.N batches of size n of 100-byte entries with
// StoreEntries (or Save with a hard state whose commit index advances, as
// the driver does).
func appendRun(b *testing.B, s *Store, n int, save bool) {
	appendRunOf(b, s, n, save, payload)
}

func appendRunOf(b *testing.B, s *Store, n int, save bool, data []byte) {
	next, err := s.LastIndex()
	if err != nil {
		b.Fatal(err)
	}
	next++
	var l latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ents := benchBatchOf(next, n, data)
		err := l.time(n, func() error {
			if save {
				return s.Save(&consensus.HardState{Term: 1, Vote: 1, Commit: next - 1}, ents)
			}
			return s.StoreEntries(ents)
		})
		if err != nil {
			b.Fatal(err)
		}
		next += consensus.Index(n)
	}
	b.StopTimer()
	l.report(b)
}

// BenchmarkAppend: StoreEntries of n 100-byte entries per call.
func BenchmarkAppend(b *testing.B) {
	for _, be := range benchBackends {
		for _, n := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/batch=%d", be.name, n), func(b *testing.B) {
				appendRun(b, openBench(b, be.opts), n, false)
			})
		}
	}
}

// BenchmarkSave: Save of n entries and the hard state, the driver's call.
func BenchmarkSave(b *testing.B) {
	for _, be := range benchBackends {
		for _, n := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/batch=%d", be.name, n), func(b *testing.B) {
				appendRun(b, openBench(b, be.opts), n, true)
			})
		}
	}
}

// BenchmarkSave256: bolt against the WAL, Save of 1 and of 64 entries of
// 256 bytes with the hard state, each durable (real fdatasync). The WAL
// rolls over to a new segment every 64 MiB, which a long run includes.
func BenchmarkSave256(b *testing.B) {
	data := make([]byte, 256)
	for i := range data {
		data[i] = byte(i)
	}
	for _, n := range []int{1, 64} {
		for _, be := range benchBackends {
			b.Run(fmt.Sprintf("batch=%d/%s", n, be.name), func(b *testing.B) {
				appendRunOf(b, openBench(b, be.opts), n, true, data)
			})
		}
	}
}

// fill stores entries lo..hi in batches of 1,000.
func fill(b testing.TB, s *Store, lo, hi consensus.Index) {
	b.Helper()
	for i := lo; i <= hi; i += 1000 {
		if err := s.StoreEntries(benchBatch(i, int(min(1000, hi-i+1)))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEntries1000: reading a 1,000-entry range (decode + checksum).
func BenchmarkEntries1000(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) { benchEntries1000(b, openBench(b, be.opts)) })
	}
}

func benchEntries1000(b *testing.B, s *Store) {
	fill(b, s, 1, 20000)
	var l latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lo := consensus.Index(1 + (i*1000)%19000)
		err := l.time(1000, func() error {
			ents, err := s.Entries(lo, lo+1000)
			if err == nil && len(ents) != 1000 {
				err = fmt.Errorf("got %d entries", len(ents))
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	l.report(b)
}

// BenchmarkDeletePrefix100k: compacting 100,000 entries off the front of
// a 101,000-entry log in one call.
func BenchmarkDeletePrefix100k(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) { benchDeletePrefix100k(b, openBench(b, be.opts)) })
	}
}

func benchDeletePrefix100k(b *testing.B, s *Store) {
	var l latencies
	next := consensus.Index(1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fill(b, s, next, next+100_999)
		through := next + 99_999
		b.StartTimer()
		if err := l.time(100_000, func() error { return s.DeletePrefix(through) }); err != nil {
			b.Fatal(err)
		}
		next += 101_000
	}
	b.StopTimer()
	l.report(b)
}

// BenchmarkOpen100k: Open (with its full verification) and Close of a
// store holding 100,000 entries: the start-up cost.
func BenchmarkOpen100k(b *testing.B) {
	for _, be := range benchBackends {
		b.Run(be.name, func(b *testing.B) { benchOpen100k(b, be.opts) })
	}
}

func benchOpen100k(b *testing.B, o Options) {
	dir := b.TempDir()
	s, err := Open(dir, o)
	if err != nil {
		b.Fatal(err)
	}
	fill(b, s, 1, 100_000)
	s.Close()
	var l latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		err := l.time(0, func() error {
			s, err := Open(dir, o)
			if err != nil {
				return err
			}
			return s.Close()
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	l.report(b)
}

var (
	measureOptions = flag.Bool("store.measure-options", false, "run TestMeasureBoltOptions (slow; prints a table)")
	measureEntries = flag.Int("store.measure-entries", 100_000, "entries TestMeasureBoltOptions writes before compacting 90% of them")
)

// optionVariant is one bbolt configuration under measurement.
type optionVariant struct {
	name string
	mod  func(*bolt.Options)
	fill float64
}

var optionVariants = []optionVariant{
	{"chosen", func(*bolt.Options) {}, appendFillPercent},
	{"array-freelist", func(o *bolt.Options) { o.FreelistType = bolt.FreelistArrayType }, appendFillPercent},
	{"synced-freelist", func(o *bolt.Options) { o.NoFreelistSync = false }, appendFillPercent},
	{"no-initial-mmap", func(o *bolt.Options) { o.InitialMmapSize = 0 }, appendFillPercent},
	{"fill-0.5", func(*bolt.Options) {}, 0.5},
	{"bbolt-defaults", func(o *bolt.Options) {
		*o = bolt.Options{Timeout: o.Timeout, FreelistType: bolt.FreelistArrayType}
	}, 0.5},
}

// TestMeasureBoltOptions compares the choices in boltOptions and
// appendFillPercent with bbolt's defaults, one change at a time. Each
// variant gets a log that has been compacted (-store.measure-entries
// written, 90% of them deleted: thousands of free pages, as on a
// long-running member);
// then rounds of Save calls at batch 1 and 64 run interleaved across the
// variants, so that noise from other work on the machine hits all alike.
// It is a measurement, not a test: it runs only with
//
//	go test -run TestMeasureBoltOptions -v ./store/ -store.measure-options
func TestMeasureBoltOptions(t *testing.T) {
	if !*measureOptions {
		t.Skip("a measurement; run with -store.measure-options")
	}
	type state struct {
		s               *Store
		dir             string
		next            consensus.Index
		one, many       latencies
		compact, reopen time.Duration
		writes, commits int64
	}
	states := make([]*state, len(optionVariants))
	for i, v := range optionVariants {
		bo := func(o Options) *bolt.Options {
			b := boltOptions(o)
			v.mod(b)
			return b
		}
		dir := t.TempDir()
		s, err := open(dir, boltOptions0, bo, true)
		if err != nil {
			t.Fatal(err)
		}
		s.fill = v.fill
		total := consensus.Index(*measureEntries)
		fill(t, s, 1, total)
		start := time.Now()
		if err := s.DeletePrefix(total * 9 / 10); err != nil {
			t.Fatal(err)
		}
		states[i] = &state{s: s, dir: dir, next: total + 1, compact: time.Since(start)}
		defer s.Close()
	}
	save := func(st *state, n int, l *latencies) {
		ents := benchBatch(st.next, n)
		stats := st.s.db.Stats()
		before := stats.TxStats.GetWrite()
		err := l.time(n, func() error { return st.s.Save(&consensus.HardState{Term: 1, Vote: 1, Commit: st.next - 1}, ents) })
		if err != nil {
			t.Fatal(err)
		}
		stats = st.s.db.Stats()
		st.writes += stats.TxStats.GetWrite() - before
		st.commits++
		st.next += consensus.Index(n)
	}
	for round := 0; round < 20; round++ {
		for k := range states {
			st := states[(k+round)%len(states)]
			for i := 0; i < 50; i++ {
				save(st, 1, &st.one)
			}
			for i := 0; i < 10; i++ {
				save(st, 64, &st.many)
			}
		}
	}
	t.Logf("%-16s %9s %9s %9s %9s %10s %10s %9s %8s %9s", "variant", "b1 p50µs", "b1 p99µs", "b64 p50µs", "b64 p99µs",
		"pages/commit", "compact", "open", "file MiB", "free pgs")
	for i, st := range states {
		stats := st.s.db.Stats()
		fi, _ := os.Stat(st.s.Path())
		st.s.Close()
		bo := func(o Options) *bolt.Options {
			b := boltOptions(o)
			optionVariants[i].mod(b)
			return b
		}
		start := time.Now()
		s, err := open(st.dir, boltOptions0, bo, true)
		if err != nil {
			t.Fatal(err)
		}
		st.reopen = time.Since(start)
		s.Close()
		p := func(l latencies, q float64) float64 {
			d := slices.Clone(l.d)
			slices.Sort(d)
			return float64(d[int(q*float64(len(d)-1))]) / float64(time.Microsecond)
		}
		t.Logf("%-16s %9.0f %9.0f %9.0f %9.0f %10.1f %10v %9v %8.1f %9d", optionVariants[i].name,
			p(st.one, 0.5), p(st.one, 0.99), p(st.many, 0.5), p(st.many, 0.99),
			float64(st.writes)/float64(st.commits), st.compact.Round(time.Millisecond), st.reopen.Round(time.Millisecond),
			float64(fi.Size())/(1<<20), stats.FreePageN+stats.PendingPageN)
	}
}
