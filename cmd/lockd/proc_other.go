//go:build !unix

package main

import (
	"os"
	"syscall"
)

func childProcAttr() *syscall.SysProcAttr { return nil }

// terminate stops a process; without SIGTERM there is no clean stop.
func terminate(p *os.Process) error {
	return p.Kill()
}
