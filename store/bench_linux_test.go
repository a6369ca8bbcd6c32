package store

import (
	"os"
	"syscall"
)

// fdatasync is what bbolt calls on Linux after writing pages.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
