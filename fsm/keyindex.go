package fsm

import (
	"sort"
	"strings"
)

// keyIndex is an ordered set of keys kept as sorted chunks, so an insert
// costs a binary search plus a copy within one chunk instead of shifting
// every key (100,000 keys would make a flat sorted slice cost ~100 µs per
// new key).
type keyIndex struct {
	chunks [][]string
	n      int
}

const keyChunkMax = 512

// chunkFor returns the index of the chunk that holds k or would hold it.
func (x *keyIndex) chunkFor(k string) int {
	i := sort.Search(len(x.chunks), func(i int) bool {
		c := x.chunks[i]
		return c[len(c)-1] >= k
	})
	if i == len(x.chunks) && i > 0 {
		i--
	}
	return i
}

func (x *keyIndex) insert(k string) {
	if len(x.chunks) == 0 {
		x.chunks = [][]string{{k}}
		x.n = 1
		return
	}
	ci := x.chunkFor(k)
	c := x.chunks[ci]
	j := sort.SearchStrings(c, k)
	if j < len(c) && c[j] == k {
		return
	}
	c = append(c, "")
	copy(c[j+1:], c[j:])
	c[j] = k
	x.n++
	if len(c) <= keyChunkMax {
		x.chunks[ci] = c
		return
	}
	half := len(c) / 2
	left := append([]string(nil), c[:half]...)
	right := append([]string(nil), c[half:]...)
	x.chunks = append(x.chunks, nil)
	copy(x.chunks[ci+2:], x.chunks[ci+1:])
	x.chunks[ci], x.chunks[ci+1] = left, right
}

func (x *keyIndex) remove(k string) {
	if len(x.chunks) == 0 {
		return
	}
	ci := x.chunkFor(k)
	c := x.chunks[ci]
	j := sort.SearchStrings(c, k)
	if j >= len(c) || c[j] != k {
		return
	}
	c = append(c[:j], c[j+1:]...)
	x.n--
	if len(c) == 0 {
		x.chunks = append(x.chunks[:ci], x.chunks[ci+1:]...)
		return
	}
	x.chunks[ci] = c
}

// ascend calls fn for each key ≥ from in order until fn returns false.
func (x *keyIndex) ascend(from string, fn func(string) bool) {
	if len(x.chunks) == 0 {
		return
	}
	ci := x.chunkFor(from)
	j := sort.SearchStrings(x.chunks[ci], from)
	for ; ci < len(x.chunks); ci, j = ci+1, 0 {
		for _, k := range x.chunks[ci][j:] {
			if !fn(k) {
				return
			}
		}
	}
}

// withPrefix calls fn for each key with the prefix, starting at start
// (if later than the prefix), until fn returns false.
func (x *keyIndex) withPrefix(prefix, start string, fn func(string) bool) {
	from := max(prefix, start)
	x.ascend(from, func(k string) bool {
		if !strings.HasPrefix(k, prefix) {
			return false
		}
		return fn(k)
	})
}
