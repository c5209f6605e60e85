// Command ustack runs a userspace TCP/IP stack on a Linux TUN device, with the
// ACK server and client on top of it. See README.md, or ustack --help.
//
// main is thin: the command line lives in package cli, so that it can be run
// and tested without a process.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ustack/ustack/cmd/ustack/cli"
)

func main() {
	// The first SIGINT or SIGTERM cancels ctx: the running command closes
	// its server, stack and interface, and returns. After that the signals'
	// default action is back, so a second Ctrl-C ends the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := cli.Run(ctx, os.Args[1:], &cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
