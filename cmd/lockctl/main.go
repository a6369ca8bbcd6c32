package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := run(os.Args, stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr}, sigs)
	signal.Stop(sigs)
	os.Exit(code)
}
