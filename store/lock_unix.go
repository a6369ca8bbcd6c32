//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// lockFileName is the data dir's lock file.
const lockFileName = "LOCK"

// dirLock is an exclusive flock on a data dir's LOCK file. flock locks
// belong to the open file description, so a second Open in the same
// process is refused too, and the kernel drops the lock when the process
// dies, however it dies: there is no stale lock to clean up.
type dirLock struct {
	f *os.File
}

// lockDir takes the lock without waiting and writes our pid into the file.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Dir: dir, PID: readPID(path)}
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	// The pid is for the error message of whoever comes next; it is not
	// needed for the lock itself, so it is not fsynced.
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing pid to lock file %s: %w", path, err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing pid to lock file %s: %w", path, err)
	}
	return &dirLock{f: f}, nil
}

// readPID returns the pid written in a lock file, 0 if it cannot tell
// (the holder may not have written it yet).
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// unlock releases the lock. The file stays: removing it would let two
// processes lock two different inodes under the same name.
func (l *dirLock) unlock() error {
	// Closing the descriptor releases the flock.
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("releasing lock file %s: %w", l.f.Name(), err)
	}
	return nil
}

// releaseFile drops any flock on f and closes it. Closing alone is not
// enough when the file is also mapped: the mapping keeps the open file
// description, and with it the lock, alive.
func releaseFile(f *os.File) {
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	f.Close()
}
