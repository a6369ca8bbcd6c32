package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// killWait bounds the wait for the command after SIGKILL (a process in
// uninterruptible sleep may take a while to go).
const killWait = 5 * time.Second

// runChild runs argv under a held lock until it exits, and returns
// childExit with its exit code. If lost closes first (the session ended),
// the command's process group gets SIGTERM, then SIGKILL after grace,
// and the error says why (why returns the session's error, which makes
// the exit code 4).
//
// The command runs in a process group of its own, so that signals reach
// everything it started (a shell's children too) and nothing of it is
// left running once the lock is gone; signals sent to lockctl are passed
// on to that group.
func (a *app) runChild(lock string, argv []string, env []string, lost <-chan struct{}, why func() error, grace time.Duration) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.io.in, a.io.out, a.io.err
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lock %q: starting the command %q: %w", lock, argv[0], err)
	}
	pgid := cmd.Process.Pid
	signalGroup := func(sig syscall.Signal) {
		// The group may be gone already (ESRCH): nothing left to stop.
		_ = syscall.Kill(-pgid, sig)
	}
	restore := a.forwardTo(func(s os.Signal) {
		if sig, ok := s.(syscall.Signal); ok {
			signalGroup(sig)
		}
	})
	defer restore()
	// A signal that came after the caller's last look but before the
	// route above ended the root context instead: pass it on now.
	var ie interruptedError
	if errors.As(context.Cause(a.ctx), &ie) {
		if sig, ok := ie.sig.(syscall.Signal); ok {
			signalGroup(sig)
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }() // child waiter: ends when the command exits

	select {
	case err := <-done:
		return exitOf(err)
	case <-lost:
	}
	cause := why()
	signalGroup(syscall.SIGTERM)
	how := "it exited after SIGTERM"
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		signalGroup(syscall.SIGKILL)
		how = fmt.Sprintf("it did not exit within --grace %v after SIGTERM and was killed", grace)
		select {
		case <-done:
		case <-time.After(killWait):
			how += fmt.Sprintf(" (and is still running %v after SIGKILL, pid %d)", killWait, pgid)
		}
	}
	return fmt.Errorf("lock %q was lost while %q ran, so the command was stopped (%s): %w", lock, argv[0], how, cause)
}

// exitOf turns the command's Wait result into childExit: its exit code,
// or 128+N if signal N killed it.
func exitOf(err error) error {
	if err == nil {
		return childExit{code: 0}
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("waiting for the command: %w", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return childExit{code: signalExitCode(ws.Signal())}
	}
	return childExit{code: ee.ExitCode()}
}
