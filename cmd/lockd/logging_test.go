package main

import (
	"strings"
	"sync"
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

func TestPrefixWriterWritesWholeLines(t *testing.T) {
	var out strings.Builder
	var mu sync.Mutex
	n1 := &prefixWriter{mu: &mu, w: &out, prefix: "[n1] "}
	n2 := &prefixWriter{mu: &mu, w: &out, prefix: "[n2] "}
	n1.Write([]byte("hel"))
	n2.Write([]byte("one\ntw"))
	n1.Write([]byte("lo\nworld\n"))
	n2.Write([]byte("o"))
	n2.flush()
	want := "[n2] one\n[n1] hello\n[n1] world\n[n2] two\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}
