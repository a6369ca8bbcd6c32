package fsm

// The model-based property test: seeded random command sequences, biased
// to collide (few sessions, lock names and keys; retries; expiries; time
// jumps past lock-delays and backwards), applied to the fsm and to the
// reference model (model_test.go). After every entry the results and the
// observable state must agree, and the lock invariants must hold. At
// random points the fsm under test is snapshotted and restored into a
// fresh one that carries on; a twin that is never restored and a third
// copy must stay byte-identical in their snapshots.
//
//	go test -run TestFSMAgainstModel ./fsm/                        # 50 seeds × 3,000 entries (10 seeds with -race or -short)
//	LOCKD_FSM_SEEDS=500 go test -run TestFSMAgainstModel ./fsm/    # seeds 1..500
//	LOCKD_FSM_SEED=17 LOCKD_FSM_STEPS=20000 go test -run TestFSMAgainstModel ./fsm/
//
// A failure prints the seed, the step and entry index, the last 20 entries
// with the model's results, and the command that replays it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/session"
)

const (
	modelDefaultSeeds = 50
	modelRaceSeeds    = 10 // the race detector makes a seed ~10× slower
	modelDefaultSteps = 3000
	modelLogTail      = 20
)

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func TestFSMAgainstModel(t *testing.T) {
	steps := envInt(t, "LOCKD_FSM_STEPS", modelDefaultSteps)
	nseeds := modelDefaultSeeds
	if raceEnabled() || testing.Short() {
		nseeds = modelRaceSeeds
	}
	var seeds []int64
	if s := os.Getenv("LOCKD_FSM_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("LOCKD_FSM_SEED=%q: %v", s, err)
		}
		seeds = append(seeds, n)
	} else {
		for i := 1; i <= envInt(t, "LOCKD_FSM_SEEDS", nseeds); i++ {
			seeds = append(seeds, int64(i))
		}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			newModelRun(t, seed).run(steps)
		})
	}
}

// modelConfig draws a small configuration, so that every limit is hit:
// few sessions per client, few waiters, short keys, short history. Every
// fifth seed is "wide": many keys written in bulk, to exercise the key
// index beyond one chunk.
func modelConfig(r *rand.Rand, wide bool) Config {
	cfg := Config{
		Limits: api.Limits{MaxKeyBytes: 16, MaxValueBytes: 24, MaxTxnOps: 8, MaxLabelBytes: 8,
			MaxSessionsPerClient: 3, MaxWaitersPerLock: 2 + r.Intn(3), MaxListLimit: 5},
		Rules:            session.NewRules(time.Second),
		HistoryMaxEvents: 4 + r.Intn(60),
		HistoryMaxBytes:  int64(200 + r.Intn(5000)),
		DedupIdle:        20 * time.Minute,
		DedupMaxClients:  4,
	}
	if wide {
		cfg.Limits.MaxTxnOps = 128
		cfg.HistoryMaxEvents = 150
		cfg.HistoryMaxBytes = 1 << 20
	}
	return cfg
}

// ---- the generator ----

var (
	modelLockNames = []string{"a", "b", "c"}
	modelKeys      = []string{"a", "a/1", "a/2", "ab", "b", "b/1"}
	modelPrefixes  = []string{"a", "a/", "b", "", "c", "ab"}
	modelValues    = [][]byte{nil, {}, []byte("v1"), []byte("v2"), []byte("xyz")}
	modelClients   = []uint64{1, 2, 3, 4, 5, 6}
	tooLongName    = strings.Repeat("x", 17) // over MaxKeyBytes
	modelStartTime = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).UnixNano()
)

type modelGen struct {
	r     *rand.Rand
	cfg   Config
	m     *refModel // read only: to aim commands at live state
	wide  bool
	cd    *Codec
	index uint64
	clock int64 // the leader's clock: it may run backwards
	seqs  map[uint64]uint64
	sent  []genEntry // client commands, for retries
	dead  []session.ID
	olds  []api.Grant  // grants seen, for stale releases
	waits []api.Waiter // waits seen, for stale cancels
}

type genEntry struct {
	index uint64
	time  int64
	data  []byte
	e     refEntry
	desc  string
}

func (g *modelGen) pick(n int) int { return g.r.Intn(n) }
func (g *modelGen) chance(pct int) bool {
	return g.r.Intn(100) < pct
}

func (g *modelGen) advance() {
	g.index++
	if g.chance(8) {
		g.index += uint64(1 + g.pick(4)) // entries that are not commands
	}
	ms := int64(time.Millisecond)
	switch x := g.pick(100); {
	case x < 55:
		g.clock += g.r.Int63n(300 * ms)
	case x < 72:
		g.clock += int64(time.Second) + g.r.Int63n(int64(10*time.Second))
	case x < 82:
		g.clock += int64(10*time.Second) + g.r.Int63n(int64(80*time.Second)) // past any lock-delay
	case x < 88:
		g.clock -= g.r.Int63n(int64(30 * time.Second)) // a new leader with a slower clock
	case x < 91:
		// land exactly on, or just before, the end of a lock-delay
		for _, l := range g.m.locks {
			if l.delayUntil > g.m.now {
				g.clock = l.delayUntil - int64(g.pick(2))
				break
			}
		}
	case x < 93:
		g.clock += int64(5*time.Minute) + g.r.Int63n(int64(30*time.Minute)) // idle exactly-once records
	}
}

func (g *modelGen) liveSessions() []session.ID {
	var ids []session.ID
	for _, s := range g.m.sessions {
		ids = append(ids, s.ID)
	}
	return ids
}

// session picks a session id: mostly live, sometimes ended, sometimes
// never created.
func (g *modelGen) session() session.ID {
	live := g.liveSessions()
	switch x := g.pick(100); {
	case x < 80 && len(live) > 0:
		return live[g.pick(len(live))]
	case x < 93 && len(g.dead) > 0:
		return g.dead[g.pick(len(g.dead))]
	case x < 97:
		return session.ID(g.index + 1000)
	}
	return 0
}

func (g *modelGen) lockName() string {
	if g.chance(2) {
		return []string{"", tooLongName}[g.pick(2)]
	}
	return modelLockNames[g.pick(len(modelLockNames))]
}

func (g *modelGen) key() string {
	switch {
	case g.chance(2):
		return []string{"", tooLongName}[g.pick(2)]
	case g.wide && g.chance(30):
		return fmt.Sprintf("w/%04d", g.pick(1500))
	}
	return modelKeys[g.pick(len(modelKeys))]
}

func (g *modelGen) prefix() string {
	if g.wide && g.chance(30) {
		return fmt.Sprintf("w/%d", g.pick(15))
	}
	return modelPrefixes[g.pick(len(modelPrefixes))]
}

func (g *modelGen) value() []byte {
	if g.chance(2) {
		return bytes.Repeat([]byte("v"), g.cfg.Limits.MaxValueBytes+1)
	}
	return modelValues[g.pick(len(modelValues))]
}

func (g *modelGen) boundSession() session.ID {
	if g.chance(35) {
		return g.session()
	}
	return 0
}

// mode draws a lock mode and limit; semaphores mostly agree on limit 2.
func (g *modelGen) mode() (api.Mode, int) {
	switch x := g.pick(100); {
	case x < 42:
		return api.Exclusive, 0
	case x < 70:
		return api.Shared, 0
	case x < 90:
		return api.Semaphore, 2
	case x < 97:
		return api.Semaphore, 1 + 2*g.pick(2)
	case x < 98:
		return api.Exclusive, 1
	case x < 99:
		return api.Semaphore, 0
	}
	return api.Mode(4 * g.pick(2)), 0
}

func (g *modelGen) holders() []api.Grant {
	var gs []api.Grant
	for _, l := range g.m.sortedLocks() {
		gs = append(gs, l.holders...)
	}
	return gs
}

func (g *modelGen) waiters() []api.Waiter {
	var ws []api.Waiter
	for _, l := range g.m.sortedLocks() {
		ws = append(ws, l.waiters...)
	}
	return ws
}

func (g *modelGen) compare() api.Compare {
	c := api.Compare{Key: g.key(), Target: api.CompareTarget(1 + g.pick(5)), Op: api.CompareOp(1 + g.pick(4))}
	if g.chance(2) {
		c.Target = api.CompareTarget(6 * g.pick(2))
	}
	if g.chance(1) {
		c.Op = api.CompareOp(5 * g.pick(2))
	}
	kv, _ := g.m.get(c.Key)
	c.Value = g.value()
	if g.chance(40) {
		c.Value = kv.Value
	}
	c.Number = []int64{kv.Version, kv.CreateRevision, kv.ModRevision, 0, 1, kv.Version + 1, kv.ModRevision - 1}[g.pick(7)]
	return c
}

func (g *modelGen) op() api.Op {
	o := api.Op{Type: api.OpType(1 + g.pick(3)), Key: g.key()}
	if g.chance(1) {
		o.Type = api.OpType(4 * g.pick(2))
	}
	switch o.Type {
	case api.OpPut:
		o.Value, o.Session = g.value(), 0
		if g.chance(20) {
			o.Session = g.session()
		}
	default:
		if g.chance(40) {
			o.Key, o.Prefix = g.prefix(), true
		}
		o.Limit = g.pick(4)
	}
	return o
}

func (g *modelGen) txn() *Txn {
	t := &Txn{}
	for i := g.pick(4); i > 0; i-- {
		t.Compares = append(t.Compares, g.compare())
	}
	for i := g.pick(4); i > 0; i-- {
		t.Then = append(t.Then, g.op())
	}
	for i := g.pick(3); i > 0; i-- {
		t.Else = append(t.Else, g.op())
	}
	if n := len(t.Compares) + len(t.Then) + len(t.Else); n > g.cfg.Limits.MaxTxnOps {
		t.Else = t.Else[:max(0, len(t.Else)-(n-g.cfg.Limits.MaxTxnOps))]
	}
	if g.chance(3) {
		for len(t.Compares)+len(t.Then)+len(t.Else) <= g.cfg.Limits.MaxTxnOps {
			t.Then = append(t.Then, api.Op{Type: api.OpGet, Key: "a"})
		}
	}
	return t
}

// bulk writes or deletes many keys at once (wide seeds only).
func (g *modelGen) bulk() *Txn {
	t := &Txn{}
	if g.chance(25) {
		t.Then = append(t.Then, api.Op{Type: api.OpDelete, Key: g.prefix(), Prefix: true})
		return t
	}
	for i := 60 + g.pick(60); i > 0; i-- {
		t.Then = append(t.Then, api.Op{Type: api.OpPut, Key: fmt.Sprintf("w/%04d", g.pick(1500)), Value: []byte{byte('a' + g.pick(26))}})
	}
	return t
}

// stamp makes c a client command: mostly with a fresh sequence of one of
// a few clients, sometimes without exactly-once.
func (g *modelGen) stamp(c *Command) {
	switch x := g.pick(100); {
	case x < 88:
		c.ClientID = modelClients[g.pick(len(modelClients))]
		g.seqs[c.ClientID]++
		c.Seq = g.seqs[c.ClientID]
	case x < 94:
		c.ClientID = modelClients[g.pick(len(modelClients))]
	}
}

func (g *modelGen) next() genEntry {
	g.advance()
	for {
		if e, ok := g.try(); ok {
			e.index, e.time = g.index, g.clock
			return e
		}
	}
}

func (g *modelGen) try() (genEntry, bool) {
	var c *Command
	client := true
	x := g.pick(110)
	if g.wide && x >= 105 {
		c = &Command{Kind: KindTxn, Txn: g.bulk()}
		x = -1
	}
	switch {
	case x < 0:
	case x < 7:
		if len(g.m.sessions) >= 7 && !g.chance(10) {
			return genEntry{}, false
		}
		ttls := []time.Duration{2 * time.Second, 10 * time.Second, time.Minute, time.Hour, 24 * time.Hour, time.Second, 25 * time.Hour, 0}
		delays := []time.Duration{0, 0, time.Second, 3 * time.Second, 10 * time.Second, 60 * time.Second, 61 * time.Second, -1}
		names := []string{"", "w1", "worker-1", "too-long-9"}
		ttl := ttls[g.pick(5)]
		if g.chance(5) {
			ttl = ttls[5+g.pick(3)]
		}
		delay := delays[g.pick(6)]
		if g.chance(4) {
			delay = delays[6+g.pick(2)]
		}
		name := names[g.pick(3)]
		if g.chance(3) {
			name = names[3]
		}
		c = &Command{Kind: KindSessionCreate, SessionCreate: &SessionCreate{TTL: int64(ttl), LockDelay: int64(delay), Name: name}}
	case x < 9:
		c = &Command{Kind: KindSessionDestroy, SessionDestroy: &SessionDestroy{ID: g.session()}}
	case x < 12:
		var ids []session.ID
		for i := 1 + g.pick(3); i > 0; i-- {
			ids = append(ids, g.session())
		}
		c, client = &Command{Kind: KindSessionExpire, SessionExpire: &SessionExpire{IDs: ids}}, false
	case x < 14:
		var ds []SessionDeadline
		for i := 1 + g.pick(3); i > 0; i-- {
			ds = append(ds, SessionDeadline{ID: g.session(), ExpiresAt: g.clock + g.r.Int63n(int64(time.Minute))})
		}
		c, client = &Command{Kind: KindSessionCheckpoint, SessionCheckpoint: &SessionCheckpoint{Deadlines: ds}}, false
	case x < 40:
		mode, limit := g.mode()
		c = &Command{Kind: KindLockAcquire, LockAcquire: &LockAcquire{Name: g.lockName(), Session: g.session(), Mode: mode, Limit: limit, Wait: g.chance(55)}}
	case x < 50:
		r := &LockRelease{Name: g.lockName(), Session: g.session(), Token: uint64(g.pick(int(g.index) + 2))}
		hs := g.holders()
		switch y := g.pick(100); {
		case y < 65 && len(hs) > 0:
			h := hs[g.pick(len(hs))]
			r.Name, r.Session, r.Token = h.Lock, h.Session, h.Token
			if g.chance(10) {
				r.Token += uint64(g.pick(3)) - 1
			}
		case y < 85 && len(g.olds) > 0:
			h := g.olds[g.pick(len(g.olds))]
			r.Name, r.Session, r.Token = h.Lock, h.Session, h.Token
		}
		c = &Command{Kind: KindLockRelease, LockRelease: r}
	case x < 55:
		cn := &LockCancel{Name: g.lockName(), Session: g.session(), WaitID: uint64(g.pick(int(g.index) + 2))}
		ws, hs := g.waiters(), g.holders()
		var fromWait []api.Grant
		for _, h := range hs {
			if h.WaitID != 0 {
				fromWait = append(fromWait, h)
			}
		}
		switch y := g.pick(100); {
		case y < 45 && len(ws) > 0:
			w := ws[g.pick(len(ws))]
			cn.Name, cn.Session, cn.WaitID = w.Lock, w.Session, w.WaitID
		case y < 70 && len(fromWait) > 0:
			h := fromWait[g.pick(len(fromWait))]
			cn.Name, cn.Session, cn.WaitID = h.Lock, h.Session, h.WaitID
		case y < 90 && len(g.waits) > 0:
			w := g.waits[g.pick(len(g.waits))]
			cn.Name, cn.Session, cn.WaitID = w.Lock, w.Session, w.WaitID
		}
		c = &Command{Kind: KindLockCancel, LockCancel: cn}
	case x < 66:
		c = &Command{Kind: KindPut, Put: &Put{Key: g.key(), Value: g.value(), Session: g.boundSession()}}
	case x < 70:
		d := &Delete{Key: g.key()}
		if g.chance(40) {
			d.Key, d.Prefix = g.prefix(), true
		}
		c = &Command{Kind: KindDelete, Delete: d}
	case x < 79:
		c = &Command{Kind: KindTxn, Txn: g.txn()}
	case x < 85:
		c, client = &Command{Kind: KindTick}, false
	case x < 87:
		return genEntry{e: refEntry{noop: true}, desc: "noop"}, true
	case x < 88:
		return g.garbage(), true
	case x < 105:
		if len(g.sent) == 0 {
			return genEntry{}, false
		}
		old := g.sent[max(0, len(g.sent)-1-g.pick(min(len(g.sent), 30)))]
		old.desc = "retry " + old.desc
		return old, true
	default:
		return genEntry{}, false
	}
	if client {
		g.stamp(c)
	}
	data, err := g.cd.Encode(c)
	if err != nil {
		panic(err)
	}
	e := genEntry{data: data, e: refEntry{cmd: c}, desc: describeCommand(c)}
	if client && c.Seq != 0 {
		g.sent = append(g.sent, e)
		if len(g.sent) > 200 {
			g.sent = g.sent[100:]
		}
	}
	return e, true
}

// garbage is an entry the fsm must refuse with a clear error.
func (g *modelGen) garbage() genEntry {
	raw := func(c *Command) []byte {
		var b []byte
		if err := codec.NewEncoderBytes(&b, g.cd.h).Encode(c); err != nil {
			panic(err)
		}
		return b
	}
	switch g.pick(5) {
	case 0:
		return genEntry{data: []byte{0xc1}, e: refEntry{bad: api.CodeInvalid}, desc: "garbage 0xc1"}
	case 1:
		return genEntry{data: nil, e: refEntry{bad: api.CodeInvalid}, desc: "garbage empty"}
	case 2:
		return genEntry{data: raw(&Command{Version: CommandVersion + 1, Kind: KindTick}), e: refEntry{bad: api.CodeUnsupported}, desc: "garbage version 2"}
	case 3:
		return genEntry{data: raw(&Command{Version: CommandVersion, Kind: 99}), e: refEntry{bad: api.CodeUnsupported}, desc: "garbage kind 99"}
	}
	return genEntry{data: raw(&Command{Version: CommandVersion, Kind: KindPut, LockAcquire: &LockAcquire{Name: "a"}}),
		e: refEntry{bad: api.CodeInvalid}, desc: "garbage put with an acquire body"}
}

// observe remembers grants, waits and ended sessions for later commands.
func (g *modelGen) observe(res *Result) {
	if res == nil {
		return
	}
	add := func(gr api.Grant) {
		g.olds = append(g.olds, gr)
		if len(g.olds) > 60 {
			g.olds = g.olds[20:]
		}
	}
	if res.Grant != nil {
		add(*res.Grant)
	}
	for _, gr := range res.Granted {
		add(gr)
	}
	if res.Wait != nil {
		g.waits = append(g.waits, *res.Wait)
		if len(g.waits) > 60 {
			g.waits = g.waits[20:]
		}
	}
	g.dead = append(g.dead, res.Ended...)
	if len(g.dead) > 30 {
		g.dead = g.dead[10:]
	}
}

func describeCommand(c *Command) string {
	var b strings.Builder
	b.WriteString(c.Kind.String())
	switch c.Kind {
	case KindSessionCreate:
		x := c.SessionCreate
		fmt.Fprintf(&b, " ttl=%v delay=%v name=%q", time.Duration(x.TTL), time.Duration(x.LockDelay), x.Name)
	case KindSessionDestroy:
		fmt.Fprintf(&b, " %d", c.SessionDestroy.ID)
	case KindSessionExpire:
		fmt.Fprintf(&b, " %v", c.SessionExpire.IDs)
	case KindSessionCheckpoint:
		fmt.Fprintf(&b, " %v", c.SessionCheckpoint.Deadlines)
	case KindLockAcquire:
		x := c.LockAcquire
		fmt.Fprintf(&b, " %q s=%d %v/%d wait=%v", x.Name, x.Session, x.Mode, x.Limit, x.Wait)
	case KindLockRelease:
		x := c.LockRelease
		fmt.Fprintf(&b, " %q s=%d token=%d", x.Name, x.Session, x.Token)
	case KindLockCancel:
		x := c.LockCancel
		fmt.Fprintf(&b, " %q s=%d wait=%d", x.Name, x.Session, x.WaitID)
	case KindPut:
		x := c.Put
		fmt.Fprintf(&b, " %q=%q s=%d", x.Key, x.Value, x.Session)
	case KindDelete:
		fmt.Fprintf(&b, " %q prefix=%v", c.Delete.Key, c.Delete.Prefix)
	case KindTxn:
		x := c.Txn
		if len(x.Then) > 12 {
			fmt.Fprintf(&b, " bulk of %d ops", len(x.Then))
		} else {
			fmt.Fprintf(&b, " if %+v then %+v else %+v", x.Compares, x.Then, x.Else)
		}
	}
	if c.ClientID != 0 {
		fmt.Fprintf(&b, " [client %d seq %d]", c.ClientID, c.Seq)
	}
	return b.String()
}

// ---- the run ----

type modelRun struct {
	t        *testing.T
	seed     int64
	cfg      Config
	g        *modelGen
	q        *rand.Rand // picks queries and restore points; apart from g's, so the entries depend on the seed alone
	m        *refModel
	a        *FSM // under test; replaced by a restored copy at random points
	b, c     *FSM // never restored
	step     int
	tail     []string
	maxToken map[string]uint64 // highest token ever seen per lock
	seen     map[api.Grant]bool
	restores int
}

func newModelRun(t *testing.T, seed int64) *modelRun {
	r := rand.New(rand.NewSource(seed))
	wide := seed%5 == 0
	cfg := modelConfig(r, wide)
	mk := func() *FSM {
		f, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	m := newRefModel(cfg)
	g := &modelGen{r: r, cfg: cfg, m: m, wide: wide, cd: NewCodec(), clock: modelStartTime, seqs: map[uint64]uint64{}}
	return &modelRun{t: t, seed: seed, cfg: cfg, g: g, q: rand.New(rand.NewSource(^seed)), m: m, a: mk(), b: mk(), c: mk(),
		maxToken: map[string]uint64{}, seen: map[api.Grant]bool{}}
}

func (r *modelRun) fail(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("seed %d, step %d (entry %d, restores so far %d): %s\nlast %d entries (oldest first):\n  %s\nreproduce: LOCKD_FSM_SEED=%d LOCKD_FSM_STEPS=%d go test -run TestFSMAgainstModel ./fsm/",
		r.seed, r.step, r.m.index, r.restores, fmt.Sprintf(format, args...), len(r.tail), strings.Join(r.tail, "\n  "), r.seed, r.step+1)
}

func (r *modelRun) run(steps int) {
	for r.step = 0; r.step < steps; r.step++ {
		e := r.g.next()
		var got, twin, third *Result
		if e.e.noop {
			for _, f := range []*FSM{r.a, r.b, r.c} {
				f.ApplyNoop(e.index, e.time)
			}
		} else {
			got, twin, third = r.a.Apply(e.index, e.time, e.data), r.b.Apply(e.index, e.time, e.data), r.c.Apply(e.index, e.time, e.data)
		}
		want := r.m.apply(e.index, e.time, e.e)
		r.tail = append(r.tail, fmt.Sprintf("#%d t=%+.3fs %s → %s", e.index, float64(e.time-modelStartTime)/1e9, e.desc, summarize(want)))
		if len(r.tail) > modelLogTail {
			r.tail = r.tail[1:]
		}
		if !e.e.noop {
			if d := diffResults(want, got); d != "" {
				r.fail("result differs from the model:\n%s", d)
			}
			if d := diffResults(got, twin); d != "" {
				r.fail("the restored fsm and its never-restored twin answered differently:\n%s", d)
			}
			if d := diffResults(twin, third); d != "" {
				r.fail("two fsm copies fed the same entries answered differently:\n%s", d)
			}
		}
		r.g.observe(want)
		r.checkState()
		r.checkInvariants(got)
		if r.q.Intn(120) == 0 {
			r.restore()
		}
		if r.step%250 == 249 || r.step == steps-1 {
			r.checkSnapshots()
		}
	}
}

func snapshotBytes(t *testing.T, f *FSM) []byte {
	var buf bytes.Buffer
	if err := f.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (r *modelRun) checkSnapshots() {
	sa, sb, sc := snapshotBytes(r.t, r.a), snapshotBytes(r.t, r.b), snapshotBytes(r.t, r.c)
	if !bytes.Equal(sb, sc) {
		r.fail("two fsm copies fed the same entries wrote different snapshots (%d and %d bytes): not deterministic", len(sb), len(sc))
	}
	if !bytes.Equal(sa, sb) {
		r.fail("restore-then-apply differs from apply: snapshots of %d and %d bytes", len(sa), len(sb))
	}
}

// restore moves the fsm under test into a fresh one through a snapshot.
func (r *modelRun) restore() {
	r.checkSnapshots()
	snap := snapshotBytes(r.t, r.a)
	n, err := New(r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := n.Restore(bytes.NewReader(snap)); err != nil {
		r.fail("restore: %v", err)
	}
	if again := snapshotBytes(r.t, n); !bytes.Equal(snap, again) {
		r.fail("the snapshot of a restored fsm differs from the snapshot it was restored from")
	}
	r.a = n
	r.restores++
	r.checkState()
}

// checkState compares everything the fsm shows with the model. The
// comparisons are typed and the messages built only on a difference: this
// runs after every entry.
func (r *modelRun) checkState() {
	f, m := r.a, r.m
	differ := func(what string, want, got any) {
		r.fail("%s differs from the model:\n  model: %s\n  fsm:   %s", what, show(want), show(got))
	}
	rs := ReadState{Index: m.index, Revision: m.revision, Now: m.now}
	if got := f.Applied(); got != m.index {
		differ("Applied()", m.index, got)
	}

	keys := modelKeys
	if r.g.wide {
		keys = append(keys[:len(keys):len(keys)], fmt.Sprintf("w/%04d", r.q.Intn(1500)), fmt.Sprintf("w/%04d", r.q.Intn(1500)))
	}
	for _, k := range keys {
		wkv, wok := m.get(k)
		gkv, gok, grs := f.Get(k)
		if wok != gok || !sameKV(&wkv, &gkv) || rs != grs {
			differ(fmt.Sprintf("Get(%q)", k), []any{wok, wkv, rs}, []any{gok, gkv, grs})
		}
	}
	type listQ struct {
		prefix, start string
		limit         int
	}
	for _, q := range []listQ{{"", "", 0}, {"a", "", 0}, {"a/", "", 2},
		{modelPrefixes[r.q.Intn(len(modelPrefixes))], modelKeys[r.q.Intn(len(modelKeys))], r.q.Intn(7)}} {
		wkvs, wmore := m.list(q.prefix, q.start, q.limit)
		gkvs, gmore, grs := f.List(q.prefix, q.start, q.limit)
		if wmore != gmore || rs != grs || !sameKVs(wkvs, gkvs) {
			differ(fmt.Sprintf("List(%q, %q, %d)", q.prefix, q.start, q.limit), []any{wkvs, wmore, rs}, []any{gkvs, gmore, grs})
		}
	}
	if r.g.wide && r.step%200 == 0 {
		r.checkAllKeys()
	}

	gss := f.Sessions()
	if len(gss) != len(m.sessions) {
		differ("Sessions()", m.sessions, gss)
	}
	for i, s := range m.sessions {
		if wi, _ := m.sessionInfo(s.ID); !sameSession(wi, gss[i]) {
			differ(fmt.Sprintf("Sessions()[%d]", i), wi, gss[i])
		}
	}
	probe := append(r.g.liveSessions(), r.g.dead...)
	for _, id := range probe[max(0, len(probe)-8):] {
		wi, wok := m.sessionInfo(id)
		gi, gok := f.Session(id)
		if wok != gok || !sameSession(wi, gi) {
			differ(fmt.Sprintf("Session(%d)", id), []any{wok, wi}, []any{gok, gi})
		}
	}

	for _, prefix := range []string{"", "b"} {
		wl, gl := m.lockInfos(prefix), f.Locks(prefix)
		same := len(wl) == len(gl)
		for i := 0; same && i < len(wl); i++ {
			same = sameLock(wl[i], gl[i])
		}
		if !same {
			differ(fmt.Sprintf("Locks(%q)", prefix), wl, gl)
		}
	}
	for _, name := range modelLockNames {
		if wl, gl := m.lockInfo(name), f.Lock(name); !sameLock(wl, gl) {
			differ(fmt.Sprintf("Lock(%q)", name), wl, gl)
		}
	}
	tokens := []uint64{uint64(r.q.Intn(int(m.index) + 2))}
	for _, l := range m.locks {
		for _, h := range l.holders {
			tokens = append(tokens, h.Token)
		}
	}
	if n := len(r.g.olds); n > 0 {
		tokens = append(tokens, r.g.olds[r.q.Intn(n)].Token)
	}
	for _, tok := range tokens {
		for _, name := range modelLockNames {
			wg, wok := m.checkToken(name, tok)
			gg, gok := f.CheckToken(name, tok)
			if wok != gok || wg != gg {
				differ(fmt.Sprintf("CheckToken(%q, %d)", name, tok), []any{wok, wg}, []any{gok, gg})
			}
		}
	}
	wat, wok := m.nextWakeup()
	if gat, gok := f.NextWakeup(); wat != gat || wok != gok {
		differ("NextWakeup()", []any{wat, wok}, []any{gat, gok})
	}

	if len(m.events) <= 60 || r.step%16 == 0 {
		r.checkEvents(m.compacted+1, "", true, 0)
	}
	for i := 0; i < 2; i++ {
		from := max(1, m.compacted-1+int64(r.q.Intn(int(m.revision-m.compacted)+3)))
		key, prefix := modelKeys[r.q.Intn(len(modelKeys))], r.q.Intn(2) == 0
		if prefix {
			key = modelPrefixes[r.q.Intn(len(modelPrefixes))]
		}
		r.checkEvents(from, key, prefix, r.q.Intn(5))
	}

	waiters := 0
	for _, l := range m.locks {
		waiters += len(l.waiters)
	}
	want := Stats{Keys: len(m.kvs), Sessions: len(m.sessions), Locks: len(m.locks), Waiters: waiters, HistoryEvents: len(m.events),
		DedupClients: len(m.dedup), Revision: m.revision, Index: m.index}
	if got := f.Stats(); got != want {
		differ("Stats()", want, got)
	}
}

func (r *modelRun) checkEvents(from int64, key string, prefix bool, limit int) {
	r.t.Helper()
	wevs, wnext, werr := r.m.eventsSince(from, key, prefix, limit)
	gevs, gnext, gerr := r.a.Events(from, key, prefix, limit)
	var gcode api.Code
	if gerr != nil {
		ae, ok := gerr.(*api.Error)
		if !ok {
			r.fail("Events(%d, %q, %v, %d): error %v is not an *api.Error", from, key, prefix, limit, gerr)
		}
		gcode = ae.Code
		if gcode == api.CodeCompacted && !strings.Contains(ae.Message, fmt.Sprintf("oldest available is %d", r.m.compacted+1)) {
			r.fail("Events(%d): the compacted error %q does not name the oldest available revision %d", from, ae.Message, r.m.compacted+1)
		}
	}
	var wcode api.Code
	if werr != nil {
		wcode = werr.Code
	}
	if wcode != gcode || wnext != gnext || !sameEvents(wevs, gevs) {
		r.fail("Events(%d, %q, prefix=%v, limit=%d) differ from the model:\n  model: %v next %d %s\n  fsm:   %v next %d %s",
			from, key, prefix, limit, wcode, wnext, show(normEvents(wevs)), gcode, gnext, show(normEvents(gevs)))
	}
}

// checkAllKeys pages through the whole keyspace.
func (r *modelRun) checkAllKeys() {
	start := ""
	var got []api.KeyValue
	for {
		kvs, more, _ := r.a.List("", start, 0)
		got = append(got, kvs...)
		if !more {
			break
		}
		start = kvs[len(kvs)-1].Key + "\x00"
	}
	if want := r.m.sortedKVs(); !reflect.DeepEqual(normKVs(want), normKVs(got)) {
		r.fail("paging through all %d keys differs from the model (%d keys)", len(got), len(want))
	}
}

// checkInvariants checks mutual exclusion and fencing directly on the fsm,
// independently of the model.
func (r *modelRun) checkInvariants(res *Result) {
	live := map[session.ID]api.SessionInfo{}
	for _, s := range r.a.Sessions() {
		live[s.ID] = s
	}
	var fresh []api.Grant
	note := func(g api.Grant) {
		k := api.Grant{Lock: g.Lock, Token: g.Token}
		if !r.seen[k] {
			r.seen[k] = true
			fresh = append(fresh, g)
		}
	}
	if res != nil {
		grants := res.Granted
		if res.Grant != nil {
			grants = append(grants[:len(grants):len(grants)], *res.Grant)
		}
		for _, g := range grants {
			// A new grant goes to a live session: one still alive, or one
			// this very entry ended after granting (an expiry batch). A
			// remembered result may name a grant of a session gone since.
			if !r.seen[api.Grant{Lock: g.Lock, Token: g.Token}] {
				if _, ok := live[g.Session]; !ok && !slices.Contains(res.Ended, g.Session) {
					r.fail("lock %q was granted (token %d) to session %d, which is not alive", g.Lock, g.Token, g.Session)
				}
			}
			note(g)
		}
	}
	_, _, rs := r.a.Get("")
	for _, li := range r.a.Locks("") {
		var ex, sh, sem int
		holders := map[session.ID]bool{}
		for _, g := range li.Holders {
			switch g.Mode {
			case api.Exclusive:
				ex++
			case api.Shared:
				sh++
			case api.Semaphore:
				sem++
				if g.Limit != li.Holders[0].Limit {
					r.fail("lock %q: semaphore holders with limits %d and %d", li.Name, g.Limit, li.Holders[0].Limit)
				}
			default:
				r.fail("lock %q: holder with mode %v", li.Name, g.Mode)
			}
			s, ok := live[g.Session]
			if !ok {
				r.fail("lock %q is held by session %d, which is not alive (token %d)", li.Name, g.Session, g.Token)
			}
			if !slices.Contains(s.Locks, li.Name) {
				r.fail("lock %q is held by session %d, whose lock list %v misses it", li.Name, g.Session, s.Locks)
			}
			if holders[g.Session] {
				r.fail("lock %q is held twice by session %d", li.Name, g.Session)
			}
			holders[g.Session] = true
			note(g)
		}
		switch {
		case ex > 1:
			r.fail("lock %q has %d exclusive holders", li.Name, ex)
		case ex == 1 && len(li.Holders) > 1:
			r.fail("lock %q has an exclusive holder next to %d others", li.Name, len(li.Holders)-1)
		case sh > 0 && sem > 0:
			r.fail("lock %q is held shared and as a semaphore at once", li.Name)
		case sem > 0 && sem > li.Holders[0].Limit:
			r.fail("lock %q has %d semaphore holders, over its limit %d", li.Name, sem, li.Holders[0].Limit)
		}
		waiting := map[session.ID]bool{}
		for _, w := range li.Waiters {
			if _, ok := live[w.Session]; !ok {
				r.fail("lock %q is awaited by session %d, which is not alive", li.Name, w.Session)
			}
			if holders[w.Session] || waiting[w.Session] {
				r.fail("session %d waits for lock %q that it holds or already awaits", w.Session, li.Name)
			}
			waiting[w.Session] = true
		}
		// Strict head-of-line: a lock not in lock-delay never has a head
		// waiter that would fit next to its holders.
		if len(li.Waiters) > 0 && (li.DelayUntil == 0 || li.DelayUntil <= rs.Now && !knownFSMBugs.NoWakeOnUnappliedEntry) {
			w := li.Waiters[0]
			l := refLock{holders: li.Holders}
			if l.fits(w.Mode, w.Limit) {
				r.fail("lock %q: head waiter %d (%v) fits next to the holders but was not granted", li.Name, w.Session, w.Mode)
			}
		}
		if len(li.Holders) == 0 && len(li.Waiters) == 0 && li.DelayUntil == 0 {
			r.fail("lock %q is listed with nothing holding, awaiting or delaying it", li.Name)
		}
	}
	// Fencing: every new grant's token is above every earlier token of its
	// lock.
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].Token < fresh[j].Token })
	for _, g := range fresh {
		if g.Token <= r.maxToken[g.Lock] {
			r.fail("lock %q: new grant to session %d has token %d, not above the earlier token %d", g.Lock, g.Session, g.Token, r.maxToken[g.Lock])
		}
		r.maxToken[g.Lock] = g.Token
	}
}

// ---- normal forms, for comparing ----

// An empty slice and nil are the same answer (msgpack does not keep the
// difference across a snapshot); error messages are for people and only
// the code is compared.

func normBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func normKV(kv api.KeyValue) api.KeyValue {
	kv.Value = normBytes(kv.Value)
	return kv
}

func normKVp(kv *api.KeyValue) *api.KeyValue {
	if kv == nil {
		return nil
	}
	c := normKV(*kv)
	return &c
}

func normKVs(kvs []api.KeyValue) []api.KeyValue {
	var out []api.KeyValue
	for _, kv := range kvs {
		out = append(out, normKV(kv))
	}
	return out
}

func normEvents(evs []api.Event) []api.Event {
	var out []api.Event
	for _, e := range evs {
		e.KV = normKV(e.KV)
		e.PrevKV = normKVp(e.PrevKV)
		out = append(out, e)
	}
	return out
}

// sameEvents is reflect.DeepEqual of the normal forms, without building
// them (this runs on the whole history after every entry).
func sameEvents(a, b []api.Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Type != y.Type || x.Revision != y.Revision || !sameKV(&x.KV, &y.KV) ||
			(x.PrevKV == nil) != (y.PrevKV == nil) || x.PrevKV != nil && !sameKV(x.PrevKV, y.PrevKV) {
			return false
		}
	}
	return true
}

func sameKV(a, b *api.KeyValue) bool {
	return a.Key == b.Key && bytes.Equal(a.Value, b.Value) && a.CreateRevision == b.CreateRevision &&
		a.ModRevision == b.ModRevision && a.Version == b.Version && a.Session == b.Session
}

func sameKVs(a, b []api.KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameKV(&a[i], &b[i]) {
			return false
		}
	}
	return true
}

func sameSession(a, b api.SessionInfo) bool {
	if len(a.Locks) != len(b.Locks) {
		return false
	}
	for i := range a.Locks {
		if a.Locks[i] != b.Locks[i] {
			return false
		}
	}
	return a.ID == b.ID && a.TTL == b.TTL && a.LockDelay == b.LockDelay && a.Name == b.Name && a.ClientID == b.ClientID &&
		a.CreatedAt == b.CreatedAt && a.ExpiresAt == b.ExpiresAt && a.Keys == b.Keys
}

func sameLock(a, b api.LockInfo) bool {
	if a.Name != b.Name || a.DelayUntil != b.DelayUntil || len(a.Holders) != len(b.Holders) || len(a.Waiters) != len(b.Waiters) {
		return false
	}
	for i := range a.Holders {
		if a.Holders[i] != b.Holders[i] {
			return false
		}
	}
	for i := range a.Waiters {
		if a.Waiters[i] != b.Waiters[i] {
			return false
		}
	}
	return true
}

func normSession(s api.SessionInfo) api.SessionInfo {
	if len(s.Locks) == 0 {
		s.Locks = nil
	}
	return s
}

func normLock(li api.LockInfo) api.LockInfo {
	if len(li.Holders) == 0 {
		li.Holders = nil
	}
	if len(li.Waiters) == 0 {
		li.Waiters = nil
	}
	return li
}

func normResult(r *Result) *Result {
	if r == nil {
		return nil
	}
	n := *r
	if r.Err != nil {
		n.Err = &api.Error{Code: r.Err.Code}
	}
	if r.Session != nil {
		s := normSession(*r.Session)
		n.Session = &s
	}
	if r.Lock != nil {
		li := normLock(*r.Lock)
		n.Lock = &li
	}
	n.PrevKV = normKVp(r.PrevKV)
	n.Ops = nil
	for _, o := range r.Ops {
		o.KVs = normKVs(o.KVs)
		o.PrevKV = normKVp(o.PrevKV)
		n.Ops = append(n.Ops, o)
	}
	if len(r.Ended) == 0 {
		n.Ended = nil
	}
	if len(r.Granted) == 0 {
		n.Granted = nil
	}
	if len(r.Checkpointed) == 0 {
		n.Checkpointed = nil
	}
	return &n
}

// diffResults returns "" if the results agree, else both, readable.
func diffResults(want, got *Result) string {
	if got == nil {
		return "the fsm returned nil"
	}
	if got.Err != nil && got.Err.Message == "" {
		return fmt.Sprintf("error code %v without a message", got.Err.Code)
	}
	w, g := normResult(want), normResult(got)
	if reflect.DeepEqual(w, g) {
		return ""
	}
	return fmt.Sprintf("  want: %s\n  got:  %s", show(w), show(g))
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

// summarize is a one-line account of a result, for the failure log.
func summarize(r *Result) string {
	if r == nil {
		return "-"
	}
	var parts []string
	if r.Err != nil {
		parts = append(parts, "err="+r.Err.Code.String())
	}
	if r.Duplicate {
		parts = append(parts, "dup")
	}
	if r.Session != nil {
		parts = append(parts, fmt.Sprintf("session=%d", r.Session.ID))
	}
	if r.Grant != nil {
		parts = append(parts, fmt.Sprintf("grant{%s s=%d tok=%d w=%d}", r.Grant.Lock, r.Grant.Session, r.Grant.Token, r.Grant.WaitID))
	}
	if r.Wait != nil {
		parts = append(parts, fmt.Sprintf("wait{%s s=%d id=%d}", r.Wait.Lock, r.Wait.Session, r.Wait.WaitID))
	}
	if r.Revision != 0 {
		parts = append(parts, fmt.Sprintf("rev=%d", r.Revision))
	}
	if r.Deleted != 0 {
		parts = append(parts, fmt.Sprintf("deleted=%d", r.Deleted))
	}
	if r.Ops != nil || r.Succeeded {
		parts = append(parts, fmt.Sprintf("succeeded=%v ops=%d", r.Succeeded, len(r.Ops)))
	}
	if len(r.Ended) > 0 {
		parts = append(parts, fmt.Sprintf("ended=%v", r.Ended))
	}
	for _, g := range r.Granted {
		parts = append(parts, fmt.Sprintf("granted{%s s=%d tok=%d w=%d}", g.Lock, g.Session, g.Token, g.WaitID))
	}
	if len(parts) == 0 {
		return "ok"
	}
	return strings.Join(parts, " ")
}

// ---- the key index against a sorted slice ----

func TestKeyIndexAgainstSortedSlice(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	var x keyIndex
	set := map[string]bool{}
	for i := 0; i < 20000; i++ {
		k := fmt.Sprintf("%c/%d", 'a'+r.Intn(4), r.Intn(1200))
		if r.Intn(3) == 0 {
			x.remove(k)
			delete(set, k)
		} else {
			x.insert(k)
			set[k] = true
		}
		if i%97 != 0 {
			continue
		}
		var want []string
		for k := range set {
			want = append(want, k)
		}
		sort.Strings(want)
		var got []string
		x.ascend("", func(k string) bool { got = append(got, k); return true })
		if !reflect.DeepEqual(want, got) || x.n != len(want) {
			t.Fatalf("step %d: index holds %d keys (n=%d), want %d", i, len(got), x.n, len(want))
		}
		prefix := fmt.Sprintf("%c/%d", 'a'+r.Intn(4), r.Intn(12))
		start := fmt.Sprintf("%c/%d", 'a'+r.Intn(4), r.Intn(1200))
		var wp, gp []string
		for _, k := range want {
			if strings.HasPrefix(k, prefix) && k >= start {
				wp = append(wp, k)
			}
		}
		x.withPrefix(prefix, start, func(k string) bool { gp = append(gp, k); return true })
		if !reflect.DeepEqual(wp, gp) {
			t.Fatalf("step %d: withPrefix(%q, %q) = %v, want %v", i, prefix, start, gp, wp)
		}
	}
}

// TestFSMQueriesDuringApply runs the queries and Snapshot while entries
// are applied, as the server does (stale reads, snapshots while applying);
// with -race it checks the fsm's locking. The entries come from the
// property test's generator.
func TestFSMQueriesDuringApply(t *testing.T) {
	r := newModelRun(t, 42)
	f := r.a
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				f.Get("a")
				f.List("", "", 0)
				f.Session(1)
				f.Sessions()
				f.Locks("")
				f.Lock("b")
				f.CheckToken("a", f.Applied())
				_, _, _ = f.Events(1, "", true, 0)
				f.NextWakeup()
				f.Stats()
				if err := f.Snapshot(io.Discard); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < 1500; i++ {
		e := r.g.next()
		if e.e.noop {
			f.ApplyNoop(e.index, e.time)
		} else {
			f.Apply(e.index, e.time, e.data)
		}
		r.m.apply(e.index, e.time, e.e) // the generator aims at the model's state
	}
	close(stop)
	wg.Wait()
}
