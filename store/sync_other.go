//go:build !linux

package store

import "os"

// fdatasync falls back to fsync where bbolt does too.
func fdatasync(f *os.File) error { return f.Sync() }
