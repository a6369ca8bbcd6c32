package main

import (
	"strings"
	"testing"
)

func TestStartGateHoldsTheLogUntilTheStartIsDecided(t *testing.T) {
	var out strings.Builder
	g := &startGate{out: &out}
	g.Write([]byte("a\n"))
	g.Write([]byte("b\n"))
	if out.Len() != 0 {
		t.Fatalf("written before the start was decided: %q", out.String())
	}
	g.release(true)
	g.Write([]byte("c\n"))
	if out.String() != "a\nb\nc\n" {
		t.Fatalf("after a good start: %q", out.String())
	}

	out.Reset()
	g = &startGate{out: &out}
	g.Write([]byte("a\n"))
	g.release(false)
	g.Write([]byte("closing\n"))
	if out.Len() != 0 {
		t.Fatalf("after a failed start: %q", out.String())
	}

	out.Reset()
	g = &startGate{out: &out}
	big := strings.Repeat("x", maxHeldLog) + "\n"
	g.Write([]byte("a\n"))
	g.Write([]byte(big))
	if out.String() != "a\n"+big {
		t.Fatal("a start that logs more than maxHeldLog is not written out")
	}
}
