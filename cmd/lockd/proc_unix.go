//go:build unix

package main

import (
	"os"
	"syscall"
)

// childProcAttr puts a dev node in its own process group, so that Ctrl-C
// in the terminal reaches only lockd dev, which then stops the nodes in
// order (and a node never sees its siblings vanish before it is told to
// stop).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// terminate asks a process, by pid, to stop cleanly.
func terminate(p *os.Process) error {
	return p.Signal(syscall.SIGTERM)
}
