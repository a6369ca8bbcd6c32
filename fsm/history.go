package fsm

import (
	"sort"
	"strings"

	"github.com/lockd/lockd/api"
)

// history is the bounded watch history: events in revision order. It
// discards whole revisions from the front, so a watch never sees half a
// transaction; compacted is the highest revision discarded.
type history struct {
	events    []api.Event
	start     int // events[start:] are live
	bytes     int64
	compacted int64
	maxEvents int
	maxBytes  int64
}

func eventSize(e *api.Event) int64 {
	n := int64(len(e.KV.Key)+len(e.KV.Value)) + 64
	if e.PrevKV != nil {
		n += int64(len(e.PrevKV.Value))
	}
	return n
}

func (h *history) live() []api.Event { return h.events[h.start:] }

func (h *history) add(evs []api.Event) {
	for i := range evs {
		h.bytes += eventSize(&evs[i])
	}
	h.events = append(h.events, evs...)
	for len(h.live()) > 0 && (len(h.live()) > h.maxEvents || h.bytes > h.maxBytes) {
		rev := h.events[h.start].Revision
		for h.start < len(h.events) && h.events[h.start].Revision == rev {
			h.bytes -= eventSize(&h.events[h.start])
			h.events[h.start] = api.Event{}
			h.start++
		}
		h.compacted = rev
	}
	// Reclaim the discarded front once it is most of the slice, in place:
	// a new slice each time (and the growth after it) was the largest
	// source of garbage under a write load. Nothing holds live() across
	// calls (readers copy what they return), so moving events is safe.
	if h.start > 1024 && h.start > len(h.events)/2 {
		n := copy(h.events, h.events[h.start:])
		clear(h.events[n:])
		h.events = h.events[:n]
		h.start = 0
	}
}

// since returns up to limit events of revision ≥ from for key (or keys
// with the prefix), whole revisions only, and the revision to ask from
// next.
func (h *history) since(from int64, key string, prefix bool, limit int) ([]api.Event, int64, *api.Error) {
	if from <= h.compacted {
		return nil, 0, api.Errorf(api.CodeCompacted, "revision %d was compacted from the watch history; the oldest available is %d", from, h.compacted+1)
	}
	live := h.live()
	i := sort.Search(len(live), func(i int) bool { return live[i].Revision >= from })
	var out []api.Event
	next := from
	for ; i < len(live); i++ {
		e := live[i]
		if limit > 0 && len(out) >= limit && e.Revision != out[len(out)-1].Revision {
			break
		}
		next = e.Revision + 1
		if e.KV.Key == key || (prefix && strings.HasPrefix(e.KV.Key, key)) {
			out = append(out, e)
		}
	}
	return out, next, nil
}
