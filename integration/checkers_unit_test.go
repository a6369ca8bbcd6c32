package integration

import (
	"os"
	"strings"
	"testing"

	"github.com/lockd/lockd/api"
)

// The checkers must be able to fail: each is fed a history with a known
// anomaly (and its healthy twin).

func TestKVModelCatchesStaleRead(t *testing.T) {
	t.Setenv("LOCKD_ARTIFACTS", t.TempDir())
	h := NewHistory()
	// put(a) returns before put(b) starts; b returns before the read
	// starts; the read sees a: not linearizable.
	h.add(0, kvInput{Kind: kvPut, Key: "k", Value: "a"}, kvOutput{}, 0, 10)
	h.add(1, kvInput{Kind: kvPut, Key: "k", Value: "b"}, kvOutput{}, 20, 30)
	h.add(2, kvInput{Kind: kvGet, Key: "k"}, kvOutput{Value: "a"}, 40, 50)
	an, conclusive := h.CheckLinearizable("stale", 10e9)
	if !conclusive || len(an) != 1 || !strings.Contains(an[0], "not linearizable") {
		t.Fatalf("stale read not caught: %v (conclusive %v)", an, conclusive)
	}
	path := an[0][strings.LastIndex(an[0], " ")+1:]
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the failure names %s, which does not exist: %v", path, err)
	}
}

func TestKVModelUnknownWriteMayApplyLate(t *testing.T) {
	h := NewHistory()
	h.add(0, kvInput{Kind: kvPut, Key: "k", Value: "a"}, kvOutput{}, 0, 10)
	h.add(1, kvInput{Kind: kvPut, Key: "k", Value: "b"}, kvOutput{Unknown: true}, 20, 0)
	h.add(2, kvInput{Kind: kvGet, Key: "k"}, kvOutput{Value: "a"}, 40, 50)
	h.add(2, kvInput{Kind: kvGet, Key: "k"}, kvOutput{Value: "b"}, 60, 70)
	// A CAS that saw b succeed, and one that expects a fail.
	h.add(3, kvInput{Kind: kvCAS, Key: "k", Old: "b", Value: "c"}, kvOutput{OK: true}, 80, 90)
	h.add(3, kvInput{Kind: kvCAS, Key: "k", Old: "a", Value: "d"}, kvOutput{OK: false}, 100, 110)
	if an, conclusive := h.CheckLinearizable("ok", 10e9); !conclusive || len(an) != 0 {
		t.Fatalf("a linearizable history was refused: %v", an)
	}
	h.add(3, kvInput{Kind: kvCAS, Key: "k", Old: "a", Value: "e"}, kvOutput{OK: true}, 120, 130)
	t.Setenv("LOCKD_ARTIFACTS", t.TempDir())
	if an, _ := h.CheckLinearizable("cas", 10e9); len(an) != 1 {
		t.Fatalf("a CAS that succeeded against the wrong value was not caught: %v", an)
	}
}

func TestResourceCatchesLostUpdateAndFences(t *testing.T) {
	r := &Resource{}
	v1, _ := r.Read(5)
	v2, _ := r.Read(5) // a second holder with the same token
	if !r.Write(5, v1+1) || !r.Write(5, v2+1) {
		t.Fatal("equal tokens must pass the fence")
	}
	if _, _, lost := r.Stats(); len(lost) != 1 {
		t.Fatalf("lost update not caught: %v", lost)
	}
	if _, ok := r.Read(4); ok {
		t.Fatal("a stale token passed the fence")
	}
	if r.Write(4, 100) {
		t.Fatal("a stale write passed the fence")
	}
}

func TestLockCheckCatchesDoubleGrantAndOrder(t *testing.T) {
	w := NewLockWorkload("l", NewHistory())
	w.grants = []grantRecord{{worker: 0, session: 1, token: 7, call: 0, ret: 10}, {worker: 1, session: 2, token: 7, call: 20, ret: 30}, {worker: 2, session: 3, token: 3, call: 40, ret: 50}}
	an, _ := w.Check()
	if len(an) < 2 || !strings.Contains(strings.Join(an, "\n"), "granted twice") || !strings.Contains(strings.Join(an, "\n"), "token order") {
		t.Fatalf("double grant and reordering not both caught: %v", an)
	}
}

// Found by the soak (isolated leader): a worker whose Unlock failed kept
// the grant, and its session's next Lock got the same grant back, which
// the checker reported as "token granted twice". The same token again
// is a double grant only for another session, or after a release.
func TestLockCheckAcceptsTheSameGrantBackAfterAFailedUnlock(t *testing.T) {
	w := NewLockWorkload("l", NewHistory())
	w.grants = []grantRecord{{worker: 1, session: 6, token: 9, call: 0, ret: 10}, {worker: 1, session: 6, token: 9, call: 20, ret: 30}}
	if an, _ := w.Check(); len(an) != 0 {
		t.Fatalf("the same session's unreleased grant, returned again, was reported: %v", an)
	}
	w.grants[0].released = true
	if an, _ := w.Check(); len(an) != 1 || !strings.Contains(an[0], "granted twice") {
		t.Fatalf("a token granted again after its release was not caught: %v", an)
	}
	w.grants[0].released, w.grants[1].session = false, 7
	if an, _ := w.Check(); len(an) != 1 || !strings.Contains(an[0], "granted twice") {
		t.Fatalf("a token granted to two sessions was not caught: %v", an)
	}
}

func TestWatchCheckCatchesGapsAndRepeats(t *testing.T) {
	ev := func(rev int64, k string) api.Event {
		return api.Event{Type: api.EventPut, Revision: rev, KV: api.KeyValue{Key: k, Value: []byte("v")}}
	}
	acked := map[int64]string{2: "a=v", 3: "b=v"}
	good := &WatchRecorder{id: 0, events: []api.Event{ev(2, "a"), ev(3, "b")}}
	if an, _ := CheckWatchers([]*WatchRecorder{good}, acked, 3); len(an) != 0 {
		t.Fatalf("a complete watch was refused: %v", an)
	}
	gap := &WatchRecorder{id: 1, events: []api.Event{ev(2, "a")}}
	rep := &WatchRecorder{id: 2, events: []api.Event{ev(2, "a"), ev(2, "a"), ev(3, "b")}}
	an, _ := CheckWatchers([]*WatchRecorder{good, gap, rep}, acked, 3)
	all := strings.Join(an, "\n")
	if !strings.Contains(all, "watcher 1: acknowledged write b=v") || !strings.Contains(all, "watcher 2: revision 2") {
		t.Fatalf("gap and repeat not caught: %v", an)
	}
}
