package store

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the metadata needed to read it back (its
// size), not its timestamps: what bbolt calls on Linux after writing
// pages, and what the WAL calls once per write. On a segment whose blocks
// are already written it is one device flush, no journal commit.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
