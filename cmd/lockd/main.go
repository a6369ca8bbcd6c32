package main

import "os"

func main() {
	ctx, stop := signalContext(os.Stderr)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
