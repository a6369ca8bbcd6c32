package main

import (
	"bytes"
	"io"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// newLogger returns the node's logger, named after the node so that every
// line says which node wrote it ("n1.raft: ..."), and the gate its output
// passes through.
func newLogger(cfg nodeConfig, out io.Writer) (hclog.Logger, *startGate) {
	gate := &startGate{out: out}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:       cfg.Name,
		Level:      cfg.LogLevel,
		JSONFormat: cfg.LogJSON,
		Output:     gate,
		Color:      hclog.ColorOff,
	})
	return logger, gate
}

// maxHeldLog bounds what startGate holds back.
const maxHeldLog = 1 << 20

// startGate holds the log back while the node starts. If the start fails,
// lockd's output is one line saying why, not that line after a page of
// progress; if it succeeds, the held lines are written out, in order.
// A start that logs more than maxHeldLog opens the gate early.
type startGate struct {
	mu      sync.Mutex // protects everything below; held while writing to out
	out     io.Writer
	held    bytes.Buffer
	open    bool
	discard bool
}

func (g *startGate) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.discard:
		return len(p), nil
	case g.open:
		return g.out.Write(p)
	case g.held.Len()+len(p) > maxHeldLog:
		g.flushLocked()
		return g.out.Write(p)
	}
	return g.held.Write(p)
}

// release ends the holding: keep writes the held lines out and lets later
// lines through; !keep drops them and every later line.
func (g *startGate) release(keep bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open || g.discard {
		return
	}
	if keep {
		g.flushLocked()
		return
	}
	g.held.Reset()
	g.discard = true
}

func (g *startGate) flushLocked() {
	_, _ = g.out.Write(g.held.Bytes())
	g.held.Reset()
	g.open = true
}
