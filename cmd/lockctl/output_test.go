package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockd/lockd/api"
	"github.com/lockd/lockd/client"
)

func TestValueFieldsRoundTrip(t *testing.T) {
	for _, v := range [][]byte{nil, []byte(""), []byte("blue"), []byte("é\n\"q\""), {0xff, 0x00, 0xfe}} {
		var buf bytes.Buffer
		if err := writeJSON(&buf, kvOutput(api.KeyValue{Key: "k", Value: v, ModRevision: 3})); err != nil {
			t.Fatal(err)
		}
		var back KVOutput
		if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
			t.Fatal(err)
		}
		var got []byte
		switch {
		case back.Value != nil && back.ValueBase64 == nil:
			got = []byte(*back.Value)
		case back.Value == nil && back.ValueBase64 != nil:
			var err error
			if got, err = base64.StdEncoding.DecodeString(*back.ValueBase64); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("value %q: JSON %s has not exactly one of value and value_base64", v, buf.String())
		}
		if !bytes.Equal(got, v) || back.ModRevision != 3 {
			t.Errorf("value %q came back as %q (JSON %s)", v, got, buf.String())
		}
	}
}

func TestEventText(t *testing.T) {
	cases := []struct {
		ev   api.Event
		want string
	}{
		{api.Event{Type: api.EventPut, Revision: 7, KV: api.KeyValue{Key: "cfg/a", Value: []byte("blue sky")}}, "PUT cfg/a rev=7 blue sky"},
		{api.Event{Type: api.EventPut, Revision: 8, KV: api.KeyValue{Key: "cfg/a", Value: []byte("x\ny")}}, `PUT cfg/a rev=8 "x\ny"`},
		{api.Event{Type: api.EventPut, Revision: 9, KV: api.KeyValue{Key: "cfg/a", Value: []byte{0xff}}}, "PUT cfg/a rev=9 base64:/w=="},
		{api.Event{Type: api.EventDelete, Revision: 10, KV: api.KeyValue{Key: "cfg/a"}}, "DELETE cfg/a rev=10"},
	}
	for _, tc := range cases {
		if got := eventText(tc.ev); got != tc.want {
			t.Errorf("eventText = %q, want %q", got, tc.want)
		}
	}
}

func TestDescribeHoldersAndProgress(t *testing.T) {
	now := time.Unix(1000, 0)
	l := api.LockInfo{Name: "db",
		Holders: []api.Grant{{Session: 0x7f3a, Token: 1042, Since: now.Add(-90 * time.Second).UnixNano()}},
		Waiters: []api.Waiter{{Session: 0x10}, {Session: 0x11}}}
	got := describeHolders(l, 0x11, now)
	want := "is held by session 0000000000007f3a (token 1042) for 1m30s, 1 other session(s) wait for it"
	if got != want {
		t.Errorf("describeHolders = %q, want %q", got, want)
	}
	delayed := api.LockInfo{Name: "db", DelayUntil: now.Add(2 * time.Second).UnixNano()}
	if got := describeHolders(delayed, 0, now); !strings.Contains(got, "lock-delay for another 2s") {
		t.Errorf("describeHolders in lock-delay = %q", got)
	}
	line := progressLine("db", &l, 0x11, 4*time.Second, now)
	want = `waiting for lock "db": held by session 0000000000007f3a (token 1042) for 1m30s, queue position 2 of 2, waited 4s`
	if line != want {
		t.Errorf("progressLine = %q, want %q", line, want)
	}
	if line := progressLine("db", nil, 0x11, 2*time.Second, now); line != `waiting for lock "db" (2s)` {
		t.Errorf("progressLine without an answer = %q", line)
	}
}

func TestStatusOutputMarksTheLeaderAndLag(t *testing.T) {
	st := func(id uint64, role string, commit, applied uint64) *api.ClusterStatusResponse {
		members := []api.MemberStatus{{ID: 1, Name: "n1"}, {ID: 2, Name: "n2"}, {ID: 3, Name: "n3"}}
		return &api.ClusterStatusResponse{Leader: 2, Term: 4, Members: members,
			Node: api.MemberStatus{ID: id, Name: members[id-1].Name, Role: role, Term: 4, Commit: commit, Applied: applied}}
	}
	out := statusOutput([]client.EndpointStatus{
		{Endpoint: "a:1", Status: st(1, "follower", 90, 80)},
		{Endpoint: "a:2", Status: st(2, "leader", 100, 100)},
		{Endpoint: "a:3", Err: errors.New("connection refused")},
	}, []client.LeaderContact{{Age: 30 * time.Millisecond}, {}, {Err: errors.New("refused")}})
	if out.Leader != "n2" || out.Term != 4 || len(out.Members) != 3 {
		t.Fatalf("status %+v", out)
	}
	if m := out.Members[0]; m.Leader || m.Lag != 20 || m.LastContactMS != 30 {
		t.Errorf("follower %+v: want lag 20 against the leader's commit, contact 30ms", m)
	}
	if m := out.Members[1]; !m.Leader || m.Lag != 0 || m.LastContactMS != 0 {
		t.Errorf("leader %+v", m)
	}
	if m := out.Members[2]; m.Error != "connection refused" || m.LastContactMS != -1 {
		t.Errorf("unreachable %+v", m)
	}
}
