package integration

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
)

// Histories and the linearizability checker of the KV workload.
//
// Every operation is recorded with the time it was invoked and the time
// its answer arrived. A write whose answer never came (its context ended,
// the connection died) has an unknown outcome: it may have been applied,
// at any time after its invocation, or never. Porcupine models that as an
// operation that returns at +∞ and may return anything (the Jepsen
// convention). A read without an answer is dropped: it changed nothing.

type kvKind uint8

const (
	kvGet kvKind = iota + 1
	kvPut
	kvCAS
)

// kvInput is an operation on one register (a key). Values are unique per
// write, so a read names the write it saw.
type kvInput struct {
	Kind  kvKind
	Key   string
	Value string // put/CAS: the new value
	Old   string // CAS: the expected value
}

// kvOutput is its answer. Value: what a get read ("" = missing). OK: CAS
// succeeded. Unknown: no answer.
type kvOutput struct {
	Value   string
	OK      bool
	Unknown bool
}

// History records operations from many goroutines.
type History struct {
	start time.Time
	mu    sync.Mutex // protects ops and unknown
	ops   []porcupine.Operation
	// unknown counts operations without an answer.
	unknown int
}

func NewHistory() *History { return &History{start: time.Now()} }

// Now is the history's clock (monotonic nanoseconds since its start).
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

func (h *History) add(clientID int, in kvInput, out kvOutput, call, ret int64) {
	if out.Unknown {
		ret = math.MaxInt64
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if out.Unknown {
		h.unknown++
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: clientID, Input: in, Output: out, Call: call, Return: ret})
}

// Len returns the number of operations recorded and how many of them have
// unknown outcomes.
func (h *History) Len() (ops, unknown int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops), h.unknown
}

// kvModel is a register per key with get, put and compare-and-set.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(kvInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(kvInput), output.(kvOutput)
		switch in.Kind {
		case kvGet:
			return out.Unknown || out.Value == st, st
		case kvPut:
			return true, in.Value
		case kvCAS:
			if st == in.Old {
				return out.Unknown || out.OK, in.Value
			}
			return out.Unknown || !out.OK, st
		}
		return false, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		res := ""
		switch {
		case out.Unknown:
			res = " → ?"
		case in.Kind == kvGet:
			res = fmt.Sprintf(" → %q", out.Value)
		case in.Kind == kvCAS:
			res = fmt.Sprintf(" → %v", out.OK)
		}
		switch in.Kind {
		case kvGet:
			return fmt.Sprintf("get(%s)%s", in.Key, res)
		case kvPut:
			return fmt.Sprintf("put(%s, %q)%s", in.Key, in.Value, res)
		default:
			return fmt.Sprintf("cas(%s, %q→%q)%s", in.Key, in.Old, in.Value, res)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// artifactDir is where failure artifacts (porcupine visualizations) are
// written: LOCKD_ARTIFACTS, else the system temp dir. Not the test's
// TempDir, which is deleted when the test ends.
func artifactDir() string {
	if d := os.Getenv("LOCKD_ARTIFACTS"); d != "" {
		return d
	}
	return os.TempDir()
}

// CheckLinearizable runs porcupine over the history. It returns an
// anomaly (naming the visualization file) if the history is not
// linearizable, and says whether the check was conclusive.
func (h *History) CheckLinearizable(name string, timeout time.Duration) (anomalies []string, conclusive bool) {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(kvModel, ops, timeout)
	switch res {
	case porcupine.Ok:
		return nil, true
	case porcupine.Unknown:
		return nil, false
	}
	path := filepath.Join(artifactDir(), fmt.Sprintf("lockd-porcupine-%s-%d.html", strings.ReplaceAll(name, "/", "_"), time.Now().UnixNano()))
	if err := porcupine.VisualizePath(kvModel, info, path); err != nil {
		path = fmt.Sprintf("(visualization not written: %v)", err)
	}
	return []string{fmt.Sprintf("KV history of %d operations is not linearizable; visualization: %s", len(ops), path)}, true
}

// KVWorkload runs workers doing gets, puts and CAS on a few registers,
// plus puts of unique keys (each written once) for the lost-write check.
type KVWorkload struct {
	Hist *History
	// Keys are the registers ("kv/r0", ...).
	Keys []string

	mu sync.Mutex // protects acked, attempted, revs
	// acked: unique key → value of every acknowledged lost-write put.
	acked map[string]string
	// attempted: every unique key a put was sent for (acknowledged or not).
	attempted map[string]string
	// revs: revision → "key=value" of every acknowledged write (registers
	// and unique keys), what every watcher must see.
	revs map[int64]string
}

// lostPrefix holds the unique keys written once each.
const lostPrefix = "kv/lw/"

func NewKVWorkload(nKeys int) *KVWorkload {
	w := &KVWorkload{Hist: NewHistory(), acked: map[string]string{}, attempted: map[string]string{}, revs: map[int64]string{}}
	for i := 0; i < nKeys; i++ {
		w.Keys = append(w.Keys, fmt.Sprintf("kv/r%d", i))
	}
	return w
}

func (w *KVWorkload) ackRev(rev int64, key, value string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.revs[rev] = key + "=" + value
}

// Run is one worker: at most maxOps operations, until ctx ends. Each
// operation has opTimeout; pace is the pause between operations.
func (w *KVWorkload) Run(ctx context.Context, id int, cl *client.Client, seed uint64, maxOps int, opTimeout, pace time.Duration) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)))
	last := map[string]string{}
	kv := cl.KV()
	for i := 0; i < maxOps && ctx.Err() == nil; i++ {
		key := w.Keys[rng.IntN(len(w.Keys))]
		val := fmt.Sprintf("w%d-%d", id, i)
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		call := w.Hist.Now()
		switch r := rng.IntN(10); {
		case r < 2: // a unique key, written once
			lk := fmt.Sprintf("%sw%d-%d", lostPrefix, id, i)
			w.mu.Lock()
			w.attempted[lk] = val
			w.mu.Unlock()
			if resp, err := kv.Put(octx, lk, []byte(val)); err == nil {
				w.mu.Lock()
				w.acked[lk] = val
				w.revs[resp.Revision] = lk + "=" + val
				w.mu.Unlock()
			}
		case r < 5:
			resp, err := kv.Get(octx, key)
			if err == nil {
				v := ""
				if resp.KV != nil {
					v = string(resp.KV.Value)
				}
				last[key] = v
				w.Hist.add(id, kvInput{Kind: kvGet, Key: key}, kvOutput{Value: v}, call, w.Hist.Now())
			}
		case r < 8 || last[key] == "":
			resp, err := kv.Put(octx, key, []byte(val))
			w.Hist.add(id, kvInput{Kind: kvPut, Key: key, Value: val}, kvOutput{Unknown: err != nil}, call, w.Hist.Now())
			if err == nil {
				last[key] = val
				w.ackRev(resp.Revision, key, val)
			}
		default:
			old := last[key]
			resp, err := kv.Txn(octx, client.Txn{If: []api.Compare{client.CompareValue(key, api.Equal, []byte(old))},
				Then: []api.Op{client.OpPut(key, []byte(val))}})
			out := kvOutput{Unknown: err != nil}
			if err == nil {
				out.OK = resp.Succeeded
				if resp.Succeeded {
					last[key] = val
					w.ackRev(resp.Revision, key, val)
				}
			}
			w.Hist.add(id, kvInput{Kind: kvCAS, Key: key, Old: old, Value: val}, out, call, w.Hist.Now())
		}
		cancel()
		sleepCtx(ctx, pace)
	}
}

// FinalReads reads every register once more through cl (after the
// cluster healed), so that lost writes show in the linearizability check
// too.
func (w *KVWorkload) FinalReads(ctx context.Context, cl *client.Client, clientID int) error {
	for _, key := range w.Keys {
		call := w.Hist.Now()
		resp, err := cl.KV().Get(ctx, key)
		if err != nil {
			return fmt.Errorf("final read of %s: %w", key, err)
		}
		v := ""
		if resp.KV != nil {
			v = string(resp.KV.Value)
		}
		w.Hist.add(clientID, kvInput{Kind: kvGet, Key: key}, kvOutput{Value: v}, call, w.Hist.Now())
	}
	return nil
}

// CheckLostWrites lists the unique keys after the heal: every
// acknowledged put must be there with its value, and nothing that was
// never sent.
func (w *KVWorkload) CheckLostWrites(ctx context.Context, cl *client.Client) (anomalies []string, acked int, err error) {
	present := map[string]string{}
	start := ""
	for {
		var opts []client.OpOption
		if start != "" {
			opts = append(opts, client.WithStart(start))
		}
		resp, err := cl.KV().List(ctx, lostPrefix, opts...)
		if err != nil {
			return nil, 0, fmt.Errorf("listing %s after the heal: %w", lostPrefix, err)
		}
		for _, kv := range resp.KVs {
			present[kv.Key] = string(kv.Value)
		}
		if !resp.More || len(resp.KVs) == 0 {
			break
		}
		start = resp.KVs[len(resp.KVs)-1].Key + "\x00"
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var keys []string
	for k := range w.acked {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if got, ok := present[k]; !ok || got != w.acked[k] {
			anomalies = append(anomalies, fmt.Sprintf("lost write: put %s=%q was acknowledged, after the heal the key holds %q (present %v)", k, w.acked[k], got, ok))
		}
	}
	for k, v := range present {
		if w.attempted[k] != v {
			anomalies = append(anomalies, fmt.Sprintf("phantom write: %s=%q was never sent", k, v))
		}
	}
	return anomalies, len(w.acked), nil
}

// Revisions returns every acknowledged write by revision.
func (w *KVWorkload) Revisions() map[int64]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[int64]string, len(w.revs))
	for r, s := range w.revs {
		out[r] = s
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// errString shortens an error for counters.
func errString(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return "api: " + ae.Code.String()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline"
	}
	return "other"
}
