package e2ekit

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// DownOnSignal stops a test package's stack (down) when the test binary
// gets Ctrl-C or CI's SIGTERM, then exits 130; who prefixes what it
// prints. A SIGTERM to `go test`'s process group ends the go command at
// once, and with it the pipe this binary writes its output to: the next
// write would kill the process by SIGPIPE before the stack is down, so
// SIGPIPE is ignored. A stack left anyway (SIGKILL) is stopped by the
// next devstack.Up, from the registry.
func DownOnSignal(who string, down func() error) {
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "%s: %v: stopping the stack\n", who, sig)
		_ = down()
		os.Exit(130)
	}()
}
