package fsm

import (
	"testing"
	"time"

	"github.com/lockd/lockd/session"
)

// FuzzDecode: whatever bytes reach the decoder (a corrupt entry, a peer on
// another version), the answer is an error result, never a panic, and a
// decoded command applies without panicking.
func FuzzDecode(f *testing.F) {
	cd := NewCodec()
	for _, c := range []Command{
		{Kind: KindPut, Put: &Put{Key: "k", Value: []byte("v")}},
		{Kind: KindTick},
		{Kind: KindLockAcquire, LockAcquire: &LockAcquire{Name: "l", Session: 1, Mode: 1, Wait: true}},
		{Kind: KindSessionExpire, SessionExpire: &SessionExpire{IDs: []session.ID{1, 2}}},
	} {
		b, err := cd.Encode(&c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xc1})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := New(DefaultConfig(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		m.Apply(1, 0, data)
		m.Apply(2, 0, data)
	})
}
