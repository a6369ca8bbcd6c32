package session

import (
	"errors"
	"testing"
	"time"
)

func TestRulesResolve(t *testing.T) {
	r := NewRules(2 * time.Second) // min TTL 3 s
	cases := []struct {
		ttl, delay         time.Duration
		wantTTL, wantDelay time.Duration
		err                bool
	}{
		{0, -1, 10 * time.Second, 5 * time.Second, false},
		{3 * time.Second, 0, 3 * time.Second, 0, false},
		{2999 * time.Millisecond, 0, 0, 0, true},
		{24 * time.Hour, 60 * time.Second, 24 * time.Hour, 60 * time.Second, false},
		{24*time.Hour + 1, 0, 0, 0, true},
		{10 * time.Second, 61 * time.Second, 0, 0, true},
	}
	for _, c := range cases {
		ttl, d, err := r.Resolve(c.ttl, c.delay)
		if c.err {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Resolve(%v, %v) = %v, %v, %v; want ErrInvalid", c.ttl, c.delay, ttl, d, err)
			}
			continue
		}
		if err != nil || ttl != c.wantTTL || d != c.wantDelay {
			t.Errorf("Resolve(%v, %v) = %v, %v, %v; want %v, %v", c.ttl, c.delay, ttl, d, err, c.wantTTL, c.wantDelay)
		}
	}
	if got := NewRules(100 * time.Millisecond).MinTTL; got != MinTTLFloor {
		t.Errorf("min TTL with a short election timeout = %v, want the %v floor", got, MinTTLFloor)
	}
}

func TestIDRoundTrip(t *testing.T) {
	id := ID(0x7f3a)
	got, err := ParseID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseID(%q) = %v, %v", id.String(), got, err)
	}
	for _, bad := range []string{"", "0", "xyz", "12345678901234567"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}
