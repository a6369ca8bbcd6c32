//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package store

import (
	"fmt"
	"os"
	"runtime"
)

type dirLock struct{}

// lockDir refuses: without a lock two processes could share a data dir,
// which breaks every durability promise of this package.
func lockDir(dir string) (*dirLock, error) {
	return nil, fmt.Errorf("locking data dir %s: not implemented on %s; run lockd on Linux or a BSD", dir, runtime.GOOS)
}

func (l *dirLock) unlock() error { return nil }

func releaseFile(f *os.File) { f.Close() }
