//go:build unix

package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// name makes a key or lock name of this test's own.
func name(t *testing.T, s string) string { return "t/" + t.Name() + "/" + s }

func TestE2EStatusAndMembers(t *testing.T) {
	tc := cluster(t)
	r := tc.expect(t, 0, "status")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ENDPOINT") || strings.Count(r.stdout, "leader *") != 1 {
		t.Fatalf("status table: want a header, 3 members, one leader marked: %v", r)
	}
	// Right after the start a follower may not have applied the leader's
	// first entry yet.
	var st StatusOutput
	waitUntil(t, 20*time.Second, "every node to apply an entry", func() (bool, string) {
		st = StatusOutput{}
		tc.expectJSON(t, &st, "status")
		for _, m := range st.Members {
			if m.Applied == 0 {
				return false, fmt.Sprintf("%+v", st)
			}
		}
		return true, ""
	})
	leaders := 0
	for i, m := range st.Members {
		if m.Error != "" || m.Endpoint != strings.Split(tc.endpoints, ",")[i] || m.Term == 0 || m.Applied == 0 || m.LastContactMS < 0 {
			t.Errorf("member %d: %+v", i, m)
		}
		if m.Leader {
			leaders++
			if m.Name != st.Leader || m.Role != "leader" {
				t.Errorf("leader %+v but status names %q", m, st.Leader)
			}
		}
	}
	if len(st.Members) != 3 || leaders != 1 {
		t.Fatalf("status %+v: want 3 members, one leader", st)
	}

	var ml MemberListOutput
	tc.expectJSON(t, &ml, "member", "list")
	if len(ml.Members) != 3 || ml.Leader == 0 {
		t.Fatalf("member list %+v", ml)
	}
	for i, m := range ml.Members {
		if m.ID != uint64(i+1) || m.Name != fmt.Sprintf("n%d", i+1) || m.Leader != (m.ID == ml.Leader) {
			t.Errorf("member %d: %+v (leader %d)", i, m, ml.Leader)
		}
		if _, _, err := net.SplitHostPort(m.PeerAddr); err != nil {
			t.Errorf("member %d peer address: %v", i, err)
		}
	}
	if r := tc.expect(t, 0, "member", "list"); strings.Count(r.stdout, "\n") != 4 {
		t.Errorf("member list table: %v", r)
	}

	// With no node at the endpoint: exit 3, one line, saying where it looked.
	dead := deadAddr(t)
	tc.expectFailure(t, exitUnavailable, []string{"--endpoints", dead, "--timeout", "1s", "status"}, "no node answered", dead)
	tc.expectFailure(t, exitUnavailable, []string{"--endpoints", dead, "--timeout", "1s", "get", "k"},
		"no lockd node answered within --timeout 1s", "check that lockd runs at "+dead)
}

func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestE2EKeys(t *testing.T) {
	tc := cluster(t)
	k, prefix := name(t, "mode"), name(t, "")
	var put PutOutput
	tc.expectJSON(t, &put, "put", k, "blue")
	if put.Key != k || put.Revision <= 0 || put.Prev != nil {
		t.Fatalf("put %+v", put)
	}
	if r := tc.expect(t, 0, "get", k); r.stdout != "blue\n" {
		t.Fatalf("get: %v", r)
	}
	if r := tc.expect(t, 0, "get", "--raw", k); r.stdout != "blue" {
		t.Fatalf("get --raw: %v", r)
	}
	if r := tc.expect(t, 0, "get", "--meta", k); !strings.Contains(r.stdout, fmt.Sprintf("mod_revision=%d\n", put.Revision)) ||
		!strings.Contains(r.stdout, "version=1\n") || !strings.Contains(r.stdout, "value=blue\n") {
		t.Fatalf("get --meta: %v", r)
	}
	var got GetOutput
	tc.expectJSON(t, &got, "get", "--stale", k)
	if got.Key != k || got.Value == nil || *got.Value != "blue" || got.ModRevision != put.Revision || got.Version != 1 ||
		!got.Read.Stale || got.Read.Revision < put.Revision || got.Read.Node == "" {
		t.Fatalf("get --stale: %+v", got)
	}

	// Compare-and-set: the right revision writes, a stale one does not.
	var cas PutOutput
	tc.expectJSON(t, &cas, "put", "--if-rev", strconv.FormatInt(put.Revision, 10), k, "green")
	if cas.Revision <= put.Revision || cas.Prev == nil || *cas.Prev.Value != "blue" {
		t.Fatalf("put --if-rev: %+v", cas)
	}
	tc.expectFailure(t, exitFalse, []string{"put", "--if-rev", strconv.FormatInt(put.Revision, 10), k, "red"},
		fmt.Sprintf("exists with mod revision %d", cas.Revision), fmt.Sprintf("wanted mod revision %d", put.Revision))
	tc.expectFailure(t, exitFalse, []string{"put", "--if-absent", k, "red"}, "not written", "wanted not to exist")
	tc.expect(t, 0, "put", "--if-absent", name(t, "new"), "first")

	// A value from stdin, not UTF-8: JSON carries it as base64.
	bin := []byte{0xff, 0x00, 'x', '\n'}
	if r := tc.ctlIn(t, string(bin), "put", name(t, "bin"), "-"); r.code != 0 {
		t.Fatalf("put -: %v", r)
	}
	got = GetOutput{}
	tc.expectJSON(t, &got, "get", name(t, "bin"))
	if got.Value != nil || got.ValueBase64 == nil {
		t.Fatalf("binary value: %+v", got)
	}
	if b, err := base64.StdEncoding.DecodeString(*got.ValueBase64); err != nil || !bytes.Equal(b, bin) {
		t.Fatalf("binary value came back as %q (%v)", b, err)
	}
	if r := tc.expect(t, 0, "get", "--raw", name(t, "bin")); r.stdout != string(bin) {
		t.Fatalf("get --raw of a binary value: %v", r)
	}
	huge := tc.ctlIn(t, strings.Repeat("x", 1<<20+1), "put", name(t, "huge"), "-")
	if huge.code != exitError || huge.stdout != "" {
		t.Fatalf("an oversized value on stdin: %v", huge)
	}
	checkOneLine(t, huge, "over the 1048576-byte limit")
	tc.expectFailure(t, exitFalse, []string{"get", name(t, "missing")}, "not found")

	// ls: keys in order, --limit with "more", --after to continue.
	var ls ListOutput
	tc.expectJSON(t, &ls, "ls", prefix)
	var keys []string
	for _, kv := range ls.KVs {
		keys = append(keys, kv.Key)
	}
	want := []string{name(t, "bin"), name(t, "mode"), name(t, "new")}
	if strings.Join(keys, " ") != strings.Join(want, " ") || ls.More {
		t.Fatalf("ls: keys %q more %v; want %q", keys, ls.More, want)
	}
	if r := tc.expect(t, 0, "ls", prefix); r.stdout != strings.Join(want, "\n")+"\n" {
		t.Fatalf("ls text: %v", r)
	}
	r := tc.expect(t, 0, "ls", "--limit", "2", prefix)
	if r.stdout != want[0]+"\n"+want[1]+"\n" || !strings.Contains(r.stderr, "continue with --after") {
		t.Fatalf("ls --limit 2: %v", r)
	}
	tc.expectJSON(t, &ls, "ls", "--limit", "2", prefix)
	if len(ls.KVs) != 2 || !ls.More {
		t.Fatalf("ls --limit 2: %+v", ls)
	}
	if r := tc.expect(t, 0, "ls", "--values", "--after", want[1], prefix); r.stdout != want[2]+"=first\n" {
		t.Fatalf("ls --values --after: %v", r)
	}

	var del DeleteOutput
	tc.expectJSON(t, &del, "del", k)
	if del.Deleted != 1 || del.Prefix {
		t.Fatalf("del: %+v", del)
	}
	if r := tc.expect(t, 0, "del", k); r.stdout != "deleted 0\n" {
		t.Fatalf("del of a missing key: %v", r)
	}
	tc.expectJSON(t, &del, "del", "--prefix", prefix)
	if del.Deleted != 2 || !del.Prefix {
		t.Fatalf("del --prefix: %+v", del)
	}
	tc.expectJSON(t, &ls, "ls", prefix)
	if len(ls.KVs) != 0 {
		t.Fatalf("after del --prefix: %+v", ls)
	}
}

func TestE2ETxn(t *testing.T) {
	tc := cluster(t)
	k := name(t, "owner")
	script := fmt.Sprintf("# claim %[1]s if free\nif missing %[1]s\nthen put %[1]s \"alice smith\"\nthen get %[1]s\nelse get %[1]s\n", k)
	r := tc.ctlIn(t, script, "-o", "json", "txn")
	var out TxnOutput
	if r.code != 0 {
		t.Fatalf("txn: %v", r)
	}
	decodeOne(t, r.stdout, &out)
	if !out.Succeeded || len(out.Results) != 2 || out.Results[0].Op != "put" || out.Results[1].Op != "get" ||
		len(out.Results[1].KVs) != 1 || *out.Results[1].KVs[0].Value != "alice smith" {
		t.Fatalf("txn: %+v", out)
	}
	// The same again: the compare fails, the else branch runs, exit 1
	// with the answer on stdout and nothing on stderr.
	r = tc.ctlIn(t, script, "-o", "json", "txn")
	if r.code != exitFalse || r.stderr != "" {
		t.Fatalf("txn whose compare fails: %v", r)
	}
	decodeOne(t, r.stdout, &out)
	if out.Succeeded || len(out.Results) != 1 || *out.Results[0].KVs[0].Value != "alice smith" {
		t.Fatalf("txn else: %+v", out)
	}
	// The flag form, in text.
	r = tc.expect(t, 0, "txn", "--if", fmt.Sprintf(`value %s = "alice smith"`, k), "--then", fmt.Sprintf("put %s bob,carol", k),
		"--then", "get "+k)
	if !strings.HasPrefix(r.stdout, "succeeded rev=") || !strings.HasSuffix(r.stdout, "OK\n"+k+"=bob,carol\n") {
		t.Fatalf("txn with flags: %v", r)
	}
	r = tc.expect(t, exitFalse, "txn", "--if", "version "+k+" = 1", "--else", "del "+k)
	if !strings.HasPrefix(r.stdout, "failed rev=") || !strings.HasSuffix(r.stdout, "deleted 1\n") {
		t.Fatalf("txn else with flags: %v", r)
	}
	tc.expectFailure(t, exitUsage, []string{"txn", "--if", "mod " + k + " ~ 1"}, `compare operator "~"`, "see lockctl txn --help")
}

func TestE2EWatch(t *testing.T) {
	tc := cluster(t)
	prefix := name(t, "")
	var start PutOutput
	tc.expectJSON(t, &start, "put", prefix+"start", "0")
	// From the revision after that put: every later change arrives, however
	// long the watch takes to connect.
	from := strconv.FormatInt(start.Revision+1, 10)
	text := tc.startCtl(t, "", "watch", "--prefix", "--rev", from, prefix)
	js := tc.startCtl(t, "", "-o", "json", "watch", "--prefix", "--rev", from, prefix)
	tc.expect(t, 0, "put", prefix+"a", "one two")
	tc.expect(t, 0, "put", prefix+"a", "x\ny")
	tc.expect(t, 0, "del", prefix+"a")
	lines := text.lines(t, 3)
	wantText := []string{
		fmt.Sprintf("PUT %sa rev=%d one two", prefix, start.Revision+1),
		fmt.Sprintf(`PUT %sa rev=%d "x\ny"`, prefix, start.Revision+2),
		fmt.Sprintf("DELETE %sa rev=%d", prefix, start.Revision+3),
	}
	if strings.Join(lines, "\n") != strings.Join(wantText, "\n") {
		// Other tests write other keys meanwhile: revisions need not be
		// consecutive, so compare the shapes without them.
		for i, l := range lines {
			f, w := strings.Fields(l), strings.Fields(wantText[i])
			if len(f) < 3 || f[0] != w[0] || f[1] != w[1] || strings.Join(f[3:], " ") != strings.Join(w[3:], " ") {
				t.Fatalf("watch line %d %q, want like %q", i, l, wantText[i])
			}
		}
	}
	var evs []EventOutput
	for _, l := range js.lines(t, 3) {
		var ev EventOutput
		decodeOne(t, l+"\n", &ev)
		evs = append(evs, ev)
	}
	if evs[0].Type != "put" || *evs[0].KV.Value != "one two" || evs[1].Type != "put" || *evs[1].KV.Value != "x\ny" ||
		evs[2].Type != "delete" || evs[2].KV.Key != prefix+"a" || evs[0].Revision >= evs[1].Revision || evs[1].Revision >= evs[2].Revision {
		t.Fatalf("watch events %+v", evs)
	}
	// Ctrl-C is the normal end of a watch.
	for _, p := range []*ctlProc{text, js} {
		p.signal(t, syscall.SIGINT)
		if r := p.wait(t, 10*time.Second); r.code != 0 || r.stderr != "" {
			t.Fatalf("watch after SIGINT: %v", r)
		}
	}
}

func TestE2ESessions(t *testing.T) {
	tc := cluster(t)
	var s SessionOutput
	tc.expectJSON(t, &s, "session", "create", "--ttl", "5s", "--lock-delay", "1s", "--name", t.Name())
	if len(s.ID) != 16 || s.TTLMS != 5000 || s.LockDelayMS != 1000 || s.Name != t.Name() {
		t.Fatalf("session create: %+v", s)
	}
	// Text output is the id alone, for SID=$(lockctl session create).
	r := tc.expect(t, 0, "session", "create", "--ttl", "3s")
	if other := strings.TrimSpace(r.stdout); len(other) != 16 || r.stdout != other+"\n" {
		t.Fatalf("session create text: %v", r)
	}

	// Kept alive by a keepalive process well past its TTL.
	ka := tc.startCtl(t, "", "-o", "json", "session", "keepalive", s.ID)
	var ev KeepaliveEvent
	decodeOne(t, ka.lines(t, 1)[0]+"\n", &ev)
	if ev.Event != "started" || ev.Session != s.ID || ev.TTLMS != 5000 {
		t.Fatalf("keepalive: %+v", ev)
	}
	var info SessionOutput
	tc.expectJSON(t, &info, "session", "info", s.ID)
	if info.ID != s.ID || info.Name != t.Name() || info.TTLMS != 5000 || info.CreatedAt == "" || info.ClientID == "" {
		t.Fatalf("session info: %+v", info)
	}
	if _, err := time.Parse(time.RFC3339Nano, info.CreatedAt); err != nil {
		t.Errorf("created_at: %v", err)
	}
	var list SessionListOutput
	tc.expectJSON(t, &list, "session", "list")
	found := false
	for _, x := range list.Sessions {
		found = found || x.ID == s.ID
	}
	if !found {
		t.Fatalf("session list lacks %s: %+v", s.ID, list)
	}
	if r := tc.expect(t, 0, "session", "list"); !strings.Contains(r.stdout, s.ID+"  "+t.Name()) {
		t.Errorf("session list text: %v", r)
	}

	// Destroyed under it: the keepalive says lost (exit 4).
	var d SessionDestroyOutput
	tc.expectJSON(t, &d, "session", "destroy", s.ID)
	if d.ID != s.ID || !d.Destroyed {
		t.Fatalf("session destroy: %+v", d)
	}
	r = ka.wait(t, 20*time.Second)
	if r.code != exitSessionLost {
		t.Fatalf("keepalive of a destroyed session: %v", r)
	}
	checkOneLine(t, r, "session "+s.ID)
	decodeOne(t, strings.SplitAfterN(r.stdout, "\n", 2)[1], &ev)
	if ev.Event != "lost" || ev.Reason == "" {
		t.Fatalf("keepalive's last event: %+v", ev)
	}
	tc.expectFailure(t, exitSessionLost, []string{"session", "info", s.ID}, "does not exist")
	tc.expectFailure(t, exitSessionLost, []string{"session", "destroy", s.ID}, "does not exist")
	tc.expectFailure(t, exitSessionLost, []string{"session", "keepalive", s.ID}, "resuming session "+s.ID)

	// Ctrl-C stops a keepalive cleanly (exit 0): the session then expires.
	r = tc.expect(t, 0, "session", "create", "--ttl", "3s")
	id := strings.TrimSpace(r.stdout)
	ka = tc.startCtl(t, "", "session", "keepalive", id)
	ka.lines(t, 1)
	ka.signal(t, syscall.SIGINT)
	if r := ka.wait(t, 10*time.Second); r.code != 0 || !strings.Contains(r.stdout, "stopped keeping session "+id+" alive") {
		t.Fatalf("keepalive after SIGINT: %v", r)
	}
	// A TTL the cluster refuses is the server's error: exit 5.
	tc.expectFailure(t, exitError, []string{"session", "create", "--ttl", "100h"}, "TTL")
	tc.expectFailure(t, exitUsage, []string{"session", "info", "xyz"}, `session id "xyz"`)
}

// lockHolders reads the holders of one lock through lock list.
func lockState(t *testing.T, tc *testCluster, lock string) LockOutput {
	t.Helper()
	var out LockListOutput
	tc.expectJSON(t, &out, "lock", "list", lock)
	for _, l := range out.Locks {
		if l.Name == lock {
			return l
		}
	}
	return LockOutput{Name: lock}
}

func TestE2ELockRunsCommand(t *testing.T) {
	tc := cluster(t)
	lock := name(t, "job")
	r := tc.expect(t, 0, "lock", lock, "--", "sh", "-c", `echo "$LOCKD_FENCING_TOKEN $LOCKD_LOCK_NAME $LOCKD_SESSION_ID"; echo to-stderr >&2`)
	f := strings.Fields(r.stdout)
	if len(f) != 3 || f[1] != lock || len(f[2]) != 16 || r.stderr != "to-stderr\n" {
		t.Fatalf("the command's environment and streams: %v", r)
	}
	token, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil || token == 0 {
		t.Fatalf("LOCKD_FENCING_TOKEN %q", f[0])
	}
	// Released after the command: the token is no longer current.
	var chk LockCheckOutput
	r = tc.expect(t, exitFalse, "-o", "json", "lock", "check", lock, f[0])
	decodeOne(t, r.stdout, &chk)
	if chk.Current || chk.Token != token || r.stderr != "" {
		t.Fatalf("lock check after release: %+v %v", chk, r)
	}
	if l := lockState(t, tc, lock); len(l.Holders) != 0 {
		t.Fatalf("held after the command exited: %+v", l)
	}
	// lockctl exits with the command's code: 7, and 128+15 for SIGTERM.
	tc.expect(t, 7, "lock", lock, "--", "sh", "-c", "exit 7")
	tc.expect(t, 128+int(syscall.SIGTERM), "lock", lock, "--", "sh", "-c", "kill -TERM $$")
	// Without "--" the command is taken as is; a later grant has a higher
	// token.
	r = tc.expect(t, 0, "lock", "--ttl", "5s", lock, "sh", "-c", "echo $LOCKD_FENCING_TOKEN")
	if next, _ := strconv.ParseUint(strings.TrimSpace(r.stdout), 10, 64); next <= token {
		t.Fatalf("second grant's token %q is not above %d", r.stdout, token)
	}
	tc.expectFailure(t, exitError, []string{"lock", lock, "--", filepath.Join(t.TempDir(), "no-such-command")}, "starting the command")
}

func TestE2ELockHoldWaitAndCheck(t *testing.T) {
	tc := cluster(t)
	lock := name(t, "db")
	holder := tc.startCtl(t, "", "-o", "json", "lock", lock)
	var held LockHeldOutput
	decodeOne(t, holder.lines(t, 1)[0]+"\n", &held)
	if held.Lock != lock || held.Token == 0 || held.Mode != "exclusive" || len(held.Session) != 16 {
		t.Fatalf("lock held: %+v", held)
	}
	tok := strconv.FormatUint(held.Token, 10)
	var chk LockCheckOutput
	tc.expectJSON(t, &chk, "lock", "check", lock, tok)
	if !chk.Current || chk.Holder == nil || chk.Holder.Session != held.Session || chk.Holder.Token != held.Token {
		t.Fatalf("lock check of the holder's token: %+v", chk)
	}
	if r := tc.expect(t, 0, "lock", "check", lock, tok); r.stdout != "current: held by session "+held.Session+"\n" {
		t.Fatalf("lock check text: %v", r)
	}

	// Not free: --wait 0 fails at once, --wait 1s after a second; both
	// name the holder, and say nothing else (stderr is not a terminal,
	// so no progress).
	who := fmt.Sprintf("held by session %s (token %d)", held.Session, held.Token)
	tc.expectFailure(t, exitFalse, []string{"lock", "--wait", "0", lock, "--", "true"}, who, "retry with --wait")
	tc.expectFailure(t, exitFalse, []string{"lock", "--wait", "1500ms", lock, "--", "true"}, "not acquired within --wait 1.5s", who)

	// A waiter queues (FIFO) and runs once the holder lets go on Ctrl-C.
	waiter := tc.startCtl(t, "", "lock", lock, "--", "sh", "-c", "echo ran with $LOCKD_FENCING_TOKEN")
	waitUntil(t, 20*time.Second, "the waiter in the queue", func() (bool, string) {
		l := lockState(t, tc, lock)
		return len(l.Waiters) == 1 && l.Waiters[0].Position == 1, fmt.Sprintf("%+v", l)
	})
	var list LockListOutput
	tc.expectJSON(t, &list, "lock", "list", name(t, ""))
	if len(list.Locks) != 1 || len(list.Locks[0].Holders) != 1 || list.Locks[0].Holders[0].Session != held.Session ||
		list.Locks[0].Holders[0].Since == "" || len(list.Locks[0].Waiters) != 1 {
		t.Fatalf("lock list: %+v", list)
	}
	if r := tc.expect(t, 0, "lock", "list", lock); !strings.Contains(r.stdout, "holder") || !strings.Contains(r.stdout, "waiter 1") {
		t.Fatalf("lock list text: %v", r)
	}
	holder.signal(t, syscall.SIGINT)
	if r := holder.wait(t, 10*time.Second); r.code != 0 {
		t.Fatalf("holder after SIGINT: %v", r)
	}
	r := waiter.wait(t, 20*time.Second)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "ran with ") {
		t.Fatalf("waiter: %v", r)
	}
	if next, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(r.stdout, "ran with ")), 10, 64); next <= held.Token {
		t.Fatalf("the waiter's token %q is not above %d", r.stdout, held.Token)
	}
	tc.expect(t, exitFalse, "lock", "check", lock, tok)

	// Shared holders together; a semaphore of 2 admits two, not three.
	shared := tc.startCtl(t, "", "lock", "--shared", name(t, "rw"))
	shared.lines(t, 1)
	tc.expect(t, 0, "lock", "--shared", "--wait", "0", name(t, "rw"), "--", "true")
	tc.expectFailure(t, exitFalse, []string{"lock", "--wait", "0", name(t, "rw"), "--", "true"}, "is held by session")
	sem := tc.startCtl(t, "", "lock", "--limit", "2", name(t, "sem"))
	sem.lines(t, 1)
	tc.expect(t, 0, "lock", "--limit", "2", "--wait", "0", name(t, "sem"), "--", "true")
	sem2 := tc.startCtl(t, "", "lock", "--limit", "2", name(t, "sem"))
	sem2.lines(t, 1)
	tc.expectFailure(t, exitFalse, []string{"lock", "--limit", "2", "--wait", "0", name(t, "sem"), "--", "true"}, "held by 2 sessions")
	// Asking with another limit is refused by the server: exit 5.
	tc.expectFailure(t, exitError, []string{"lock", "--limit", "3", "--wait", "0", name(t, "sem"), "--", "true"}, "limit")

	tc.expectFailure(t, exitUsage, []string{"lock", "--wait", "30s", name(t, "sem"), "--limit", "2"}, "flag --limit after the lock name")

	// A signal while waiting: exit 130.
	w := tc.startCtl(t, "", "lock", "--limit", "2", "--wait", "30s", name(t, "sem"), "--", "true")
	waitUntil(t, 20*time.Second, "the waiter in the semaphore's queue", func() (bool, string) {
		l := lockState(t, tc, name(t, "sem"))
		return len(l.Waiters) == 1, fmt.Sprintf("%+v", l)
	})
	w.signal(t, syscall.SIGINT)
	r = w.wait(t, 10*time.Second)
	if r.code != exitInterrupted {
		t.Fatalf("SIGINT while waiting: %v", r)
	}
	checkOneLine(t, r, "interrupted")
	waitUntil(t, 20*time.Second, "the interrupted wait withdrawn", func() (bool, string) {
		l := lockState(t, tc, name(t, "sem"))
		return len(l.Waiters) == 0, fmt.Sprintf("%+v", l)
	})
}

// The command run under a lock is stopped when the lock's session is
// lost, and lockctl exits 4 saying why.
func TestE2ELockLostStopsTheCommand(t *testing.T) {
	tc := cluster(t)
	lock := name(t, "job")
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell records its pid, then becomes sleep (same pid).
	p := tc.startCtl(t, "", "lock", "--ttl", "3s", lock, "--", "sh", "-c", "echo $$ > "+pidFile+"; exec sleep 60")
	var pid int
	waitUntil(t, 20*time.Second, "the command's pid file", func() (bool, string) {
		b, err := os.ReadFile(pidFile)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false, fmt.Sprint(err)
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil, string(b)
	})
	t.Cleanup(func() {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	l := lockState(t, tc, lock)
	if len(l.Holders) != 1 {
		t.Fatalf("lock list: %+v", l)
	}
	tc.expect(t, 0, "session", "destroy", l.Holders[0].Session)
	r := p.wait(t, 20*time.Second)
	if r.code != exitSessionLost {
		t.Fatalf("lockctl after its session was destroyed: %v", r)
	}
	checkOneLine(t, r, fmt.Sprintf("lock %q was lost while \"sh\" ran", lock), "it exited after SIGTERM", "session "+l.Holders[0].Session)
	if alive(pid) {
		t.Fatalf("the command (pid %d) still runs after lockctl exited", pid)
	}

	// A command that ignores SIGTERM is killed after --grace.
	pidFile2 := filepath.Join(t.TempDir(), "pid")
	p = tc.startCtl(t, "", "lock", "--ttl", "3s", "--grace", "1s", lock, "--",
		"sh", "-c", "trap '' TERM; echo $$ > "+pidFile2+"; while :; do sleep 1; done")
	waitUntil(t, 20*time.Second, "the second command's pid file", func() (bool, string) {
		b, err := os.ReadFile(pidFile2)
		if err != nil || !strings.HasSuffix(string(b), "\n") {
			return false, fmt.Sprint(err)
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil, string(b)
	})
	l = lockState(t, tc, lock)
	if len(l.Holders) != 1 {
		t.Fatalf("lock list: %+v", l)
	}
	tc.expect(t, 0, "session", "destroy", l.Holders[0].Session)
	r = p.wait(t, 20*time.Second)
	if r.code != exitSessionLost {
		t.Fatalf("lockctl after its session was destroyed: %v", r)
	}
	checkOneLine(t, r, "did not exit within --grace 1s after SIGTERM and was killed")
	if alive(pid) {
		t.Fatalf("the command (pid %d) still runs after SIGKILL", pid)
	}
}

func TestE2EElect(t *testing.T) {
	tc := cluster(t)
	election := name(t, "primary")
	obs := tc.startCtl(t, "", "-o", "json", "elect", "--observe", election)
	var ev LeaderOutput
	decodeOne(t, obs.lines(t, 1)[0]+"\n", &ev)
	if ev.Event != "vacant" || ev.Election != election {
		t.Fatalf("first observation: %+v", ev)
	}
	cand := tc.startCtl(t, "", "-o", "json", "elect", election, "host-a")
	var lead LeaderOutput
	decodeOne(t, cand.lines(t, 1)[0]+"\n", &lead)
	if lead.Event != "leading" || lead.Token == 0 || *lead.Value != "host-a" {
		t.Fatalf("campaign: %+v", lead)
	}
	decodeOne(t, obs.lines(t, 2)[1]+"\n", &ev)
	if ev.Event != "leader" || ev.Session != lead.Session || ev.Token != lead.Token || *ev.Value != "host-a" {
		t.Fatalf("observed %+v; want %+v", ev, lead)
	}
	// A second candidate waits; when the first resigns (Ctrl-C), it leads.
	cand2 := tc.startCtl(t, "", "elect", election, "host-b")
	cand.signal(t, syscall.SIGINT)
	if r := cand.wait(t, 10*time.Second); r.code != 0 {
		t.Fatalf("candidate after SIGINT: %v", r)
	}
	if l := cand2.lines(t, 1)[0]; !strings.HasPrefix(l, "leading "+election+" token=") {
		t.Fatalf("second candidate: %q", l)
	}
	// The observer saw the second leader (maybe a vacancy between).
	waitUntil(t, 20*time.Second, "the observer to see host-b", func() (bool, string) {
		return strings.Contains(obs.stdout.String(), `"value":"host-b"`), obs.stdout.String()
	})
	cand2.signal(t, syscall.SIGINT)
	cand2.wait(t, 10*time.Second)
	text := tc.startCtl(t, "", "elect", "--observe", election)
	if l := text.lines(t, 1)[0]; l != "vacant" {
		t.Fatalf("text observation after both resigned: %q", l)
	}
	for _, p := range []*ctlProc{obs, text} {
		p.signal(t, syscall.SIGINT)
		if r := p.wait(t, 10*time.Second); r.code != 0 {
			t.Fatalf("observer after SIGINT: %v", r)
		}
	}
}

func TestE2EUsageErrors(t *testing.T) {
	tc := cluster(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus" (see lockctl --help)`},
		{[]string{"session", "bogus"}, `unknown command "bogus" (see lockctl session --help)`},
		{[]string{"get", "--nope", "k"}, "flag provided but not defined: --nope"},
		{[]string{"get"}, "missing arguments: lockctl get [flags] KEY"},
		{[]string{"get", "k", "--stale"}, "flag --stale after the arguments"},
		{[]string{"--output", "xml", "status"}, `--output "xml" must be text or json`},
		{[]string{"put", "--if-rev", "3", "--if-absent", "k", "v"}, "exclude each other"},
		{[]string{"lock", "--shared", "--limit", "2", "x"}, "--shared and --limit exclude each other"},
		{[]string{"lock", "x", "--"}, "no command after --"},
		{[]string{"lock", "check", "x", "zero"}, `token "zero" is not a fencing token`},
		{[]string{"completion", "fish"}, `shell "fish"`},
		{[]string{"--endpoints", "nohost", "status"}, "is not host:port"},
	}
	for _, c := range cases {
		tc.expectFailure(t, exitUsage, c.args, c.want)
	}
}

func TestE2ECompletion(t *testing.T) {
	tc := cluster(t)
	if r := tc.expect(t, 0, "completion", "bash"); !strings.Contains(r.stdout, "complete -o default -F _lockctl_complete lockctl") {
		t.Fatalf("bash completion: %v", r)
	}
	if r := tc.expect(t, 0, "completion", "zsh"); !strings.HasPrefix(r.stdout, "#compdef lockctl") {
		t.Fatalf("zsh completion: %v", r)
	}
	// What the scripts ask: the commands, then a group's subcommands.
	r := tc.expect(t, 0, "--generate-bash-completion")
	for _, c := range []string{"status", "put", "watch", "txn", "session", "lock", "elect"} {
		if !strings.Contains("\n"+r.stdout, "\n"+c+"\n") {
			t.Errorf("completion candidates lack %q: %q", c, r.stdout)
		}
	}
	if r := tc.expect(t, 0, "session", "--generate-bash-completion"); !strings.Contains(r.stdout, "keepalive\n") {
		t.Errorf("session completion: %q", r.stdout)
	}
}

// The README's "lockctl in 5 minutes" runs exactly these commands, in
// this order, against a fresh cluster (this test checks that the README
// block holds these lines and nothing else, then runs them through sh).
// Each line's exit code is its "# exit N" comment, 0 without one.
var readmeTour = []string{
	"lockctl status",
	"lockctl put cfg/mode blue",
	"lockctl get cfg/mode",
	"lockctl put --if-absent cfg/owner alice",
	"lockctl put --if-absent cfg/owner bob              # exit 1: cfg/owner exists",
	"lockctl txn --if 'value cfg/mode = blue' --then 'put cfg/mode green'",
	"lockctl ls cfg/",
	"lockctl -o json get cfg/mode",
	`lockctl lock jobs/nightly -- sh -c 'echo "token $LOCKD_FENCING_TOKEN"'`,
	"lockctl lock --wait 10s jobs/nightly -- sh -c 'exit 7'   # exit 7",
	"lockctl lock check jobs/nightly 1                  # exit 1: not a current token",
	"lockctl session create --ttl 30s --name demo",
	"lockctl session list",
	"lockctl del --prefix cfg/",
}

func TestE2EReadmeTour(t *testing.T) {
	tc := cluster(t)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## lockctl in 5 minutes\n")
	if !ok {
		t.Fatal(`README.md has no "## lockctl in 5 minutes" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var inREADME []string
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "lockctl ") {
			inREADME = append(inREADME, line)
		}
	}
	if strings.Join(inREADME, "\n") != strings.Join(readmeTour, "\n") {
		t.Fatalf("the README's lockctl lines differ from the tested ones:\nREADME:\n%s\ntested:\n%s",
			strings.Join(inREADME, "\n"), strings.Join(readmeTour, "\n"))
	}
	path := filepath.Dir(tc.lockctl) + string(os.PathListSeparator) + os.Getenv("PATH")
	for _, line := range readmeTour {
		cmd, comment, _ := strings.Cut(line, "  #")
		want := 0
		if c, ok := strings.CutPrefix(strings.TrimSpace(comment), "exit "); ok {
			if want, err = strconv.Atoi(strings.TrimRight(strings.Fields(c)[0], ":")); err != nil {
				t.Fatalf("README line %q: exit code: %v", line, err)
			}
		}
		sh := exec.Command("sh", "-c", strings.TrimSpace(cmd))
		sh.Env = append(cleanEnv(), "PATH="+path, "LOCKD_ENDPOINTS="+tc.endpoints)
		var stdout, stderr bytes.Buffer
		sh.Stdout, sh.Stderr = &stdout, &stderr
		_ = sh.Run()
		if code := sh.ProcessState.ExitCode(); code != want {
			t.Fatalf("README line %q: exit %d, want %d\nstdout: %s\nstderr: %s", line, code, want, stdout.String(), stderr.String())
		}
	}
}

// A watch goes on across the failure of the node it streams from, and
// status shows the dead node while the others keep a leader. This test
// runs a cluster of its own (lockd dev stops every node when one dies).
func TestE2EWatchSurvivesANodeFailure(t *testing.T) {
	shared := cluster(t)  // the built binaries
	var addrs [][3]string // client, peer, http of each node
	var hold []net.Listener
	for range 3 {
		var a [3]string
		for j := range a {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			hold = append(hold, l)
			a[j] = l.Addr().String()
		}
		addrs = append(addrs, a)
	}
	for _, l := range hold {
		l.Close()
	}
	var initial, endpoints []string
	for i, a := range addrs {
		initial = append(initial, fmt.Sprintf("n%d=%s", i+1, a[1]))
		endpoints = append(endpoints, a[0])
	}
	nodes := make([]*exec.Cmd, 3)
	dir := t.TempDir()
	for i, a := range addrs {
		cmd := exec.Command(shared.lockd, "--name", fmt.Sprintf("n%d", i+1), "--data-dir", filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			"--client-addr", a[0], "--peer-addr", a[1], "--http-addr", a[2], "--initial-cluster", strings.Join(initial, ","),
			"--log-level", "warn")
		cmd.Env = append(cleanEnv(), "LOCKD_TICK=50ms")
		cmd.Stderr = &lockedBuffer{}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		nodes[i] = cmd
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
		})
	}
	tc := &testCluster{lockctl: shared.lockctl, endpoints: strings.Join(endpoints, ",")}
	waitUntil(t, 30*time.Second, "a leader", func() (bool, string) {
		r := tc.ctl(t, "--timeout", "1s", "status")
		return r.code == 0, r.String()
	})
	var start PutOutput
	tc.expectJSON(t, &start, "put", "w/start", "0")
	// The client streams from the first endpoint, n1, until it fails.
	w := tc.startCtl(t, "", "watch", "--prefix", "--rev", strconv.FormatInt(start.Revision+1, 10), "w/")
	tc.expect(t, 0, "put", "w/a", "before")
	if l := w.lines(t, 1)[0]; !strings.HasSuffix(l, " before") {
		t.Fatalf("watch: %q", l)
	}
	if err := nodes[0].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Writes go on through the others (the client skips the dead node).
	waitUntil(t, 30*time.Second, "a write after n1 died", func() (bool, string) {
		r := tc.ctl(t, "--timeout", "2s", "put", "w/a", "after")
		return r.code == 0, r.String()
	})
	if l := w.lines(t, 2)[1]; !strings.HasPrefix(l, "PUT w/a rev=") || !strings.HasSuffix(l, " after") {
		t.Fatalf("watch after n1 died: %q", l)
	}
	var st StatusOutput
	waitUntil(t, 30*time.Second, "status with a leader among n2, n3", func() (bool, string) {
		st = StatusOutput{}
		r := tc.ctl(t, "-o", "json", "--timeout", "2s", "status")
		if r.code != 0 {
			return false, r.String()
		}
		decodeOne(t, r.stdout, &st)
		return true, ""
	})
	if st.Members[0].Error == "" || st.Members[0].Endpoint != endpoints[0] || st.Leader == "n1" || st.Leader == "" {
		t.Fatalf("status with n1 dead: %+v", st)
	}
	w.signal(t, syscall.SIGINT)
	if r := w.wait(t, 10*time.Second); r.code != 0 || strings.Count(r.stdout, "\n") != 2 {
		t.Fatalf("watch: %v", r)
	}
}

// On a terminal, a wait longer than a second shows who holds the lock and
// how long lockctl has waited (without one, TestE2ELockHoldWaitAndCheck
// checks that stderr holds the one error line only). script(1) gives
// lockctl a pseudo-terminal.
func TestE2ELockProgressOnATerminal(t *testing.T) {
	tc := cluster(t)
	scriptBin, err := exec.LookPath("script")
	if err != nil {
		t.Skip("no script(1) to run lockctl on a pseudo-terminal")
	}
	lock := name(t, "db")
	holder := tc.startCtl(t, "", "-o", "json", "lock", lock)
	var held LockHeldOutput
	decodeOne(t, holder.lines(t, 1)[0]+"\n", &held)
	cmd := exec.Command(scriptBin, "-qec", tc.lockctl+" lock --wait 2500ms "+lock+" -- true", "/dev/null")
	cmd.Env = append(cleanEnv(), "LOCKD_ENDPOINTS="+tc.endpoints)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != exitFalse {
		t.Fatalf("exit %d, want 1; terminal output %q", code, out.String())
	}
	want := fmt.Sprintf("waiting for lock %q: held by session %s (token %d) for ", lock, held.Session, held.Token)
	if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "queue position 1 of 1, waited ") {
		t.Fatalf("terminal output %q lacks the progress line %q", out.String(), want)
	}
}
