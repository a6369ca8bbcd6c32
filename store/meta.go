package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt keeps two meta pages, 0 and 1, and writes transaction t's meta to
// page t%2. At open it uses the intact one with the higher transaction id:
// if the newer is damaged it falls back to the older without a word, and
// the last committed transaction is gone. For bbolt that is recovery from
// a torn meta write; for Raft it can be a vote or an acknowledged entry
// silently lost. So Open reads both pages first and refuses a file whose
// meta pages are not both intact and one transaction apart.
//
// The layout is bbolt's file format version 2 (internal/common/meta.go):
// a 16-byte page header, then magic, version, page size, flags (uint32
// each), root bucket (16 bytes), freelist, high-water page and txid
// (uint64 each) and an FNV-64a checksum of the 56 bytes before it, in the
// machine's byte order.
const (
	boltPageHeaderLen = 16
	boltMetaSumLen    = 56
	boltMetaLen       = boltMetaSumLen + 8
	boltMagic         = 0xED0CDAED
	boltVersion       = 2
)

// boltMeta is what checkMetaPages reads from one meta page.
type boltMeta struct {
	pageSize uint32
	txid     uint64
	err      error // why the page is not intact; nil if it is
}

func parseBoltMeta(page []byte) boltMeta {
	if len(page) < boltPageHeaderLen+boltMetaLen {
		return boltMeta{err: errors.New("file too short")}
	}
	m := page[boltPageHeaderLen : boltPageHeaderLen+boltMetaLen]
	ne := binary.NativeEndian
	switch {
	case ne.Uint32(m[0:]) != boltMagic:
		return boltMeta{err: errors.New("bad magic")}
	case ne.Uint32(m[4:]) != boltVersion:
		return boltMeta{err: fmt.Errorf("format version %d", ne.Uint32(m[4:]))}
	}
	h := fnv.New64a()
	h.Write(m[:boltMetaSumLen])
	if want, got := ne.Uint64(m[boltMetaSumLen:]), h.Sum64(); want != got {
		return boltMeta{err: fmt.Errorf("checksum %016x, computed %016x", want, got)}
	}
	return boltMeta{pageSize: ne.Uint32(m[8:]), txid: ne.Uint64(m[48:])}
}

// checkMetaPages returns a *CorruptError unless both meta pages of the
// bbolt file at path are intact and hold consecutive transactions, each
// on its own page. A file with no intact meta page at all is left for
// bbolt to reject.
func checkMetaPages(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s to check its meta pages: %w", path, err)
	}
	defer f.Close()
	read := func(off int64) []byte {
		b := make([]byte, boltPageHeaderLen+boltMetaLen)
		n, err := f.ReadAt(b, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil
		}
		return b[:n]
	}
	m0 := parseBoltMeta(read(0))
	var m1 boltMeta
	pageSize := m0.pageSize
	if m0.err != nil {
		// Page 1's offset is the page size, which page 0 would have told.
		for ps := uint32(1024); ps <= 64<<10; ps *= 2 {
			if m := parseBoltMeta(read(int64(ps))); m.err == nil && m.pageSize == ps {
				pageSize = ps
				break
			}
		}
		if pageSize == 0 {
			return nil
		}
	}
	m1 = parseBoltMeta(read(int64(pageSize)))
	metas := [2]boltMeta{m0, m1}
	for i, m := range metas {
		if m.err != nil {
			other := metas[1-i]
			return &CorruptError{Path: path, What: fmt.Sprintf(
				"bbolt meta page %d is damaged (%v) while page %d (transaction %d) is intact: bbolt would fall back to "+
					"the older of the two without a word, and the last committed write may be lost",
				i, m.err, 1-i, other.txid)}
		}
		if m.txid%2 != uint64(i) {
			return &CorruptError{Path: path, What: fmt.Sprintf("bbolt meta page %d holds transaction %d, which belongs on page %d", i, m.txid, m.txid%2)}
		}
	}
	if d := int64(m0.txid) - int64(m1.txid); d != 1 && d != -1 {
		return &CorruptError{Path: path, What: fmt.Sprintf(
			"bbolt meta pages hold transactions %d and %d, which are not consecutive: part of the file is older than the rest", m0.txid, m1.txid)}
	}
	return nil
}
