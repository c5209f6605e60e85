package cli

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/ustack/ustack/app"
)

const serveAbout = `
Runs the same ACK server as ustack up, with the same logs, on the kernel's own
TCP/IP stack: the one thing that differs is the stack underneath. Compare the
two with the same client, or with tcpdump. Needs no privileges for ports above
1023.`

func runServe(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("serve", "ustack serve --kernel [flags]", serveAbout)
	var (
		logs   logFlags
		srvf   serverFlags
		kernel bool
		listen string
	)
	fs.BoolVar(&kernel, "kernel", false, "serve on kernel sockets (required: the userspace-stack server is ustack up)")
	fs.StringVar(&listen, "listen", ":5000", "`address:port` to listen on; an empty address means all of them, IPv4 and IPv6; port 0 picks a free one (the ready line says which)")
	logs.register(fs)
	srvf.register(fs)
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	if !kernel {
		return usageErrorf("ustack serve runs the ACK server on kernel sockets and needs --kernel; for the userspace stack, run: sudo ustack up")
	}
	_, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return usageErrorf("--listen %q: want address:port, like :5000 or 127.0.0.1:5000", listen)
	}
	if p, err := strconv.Atoi(portStr); err != nil || p < 0 || p > 65535 {
		return usageErrorf("--listen %q: the port must be 0..65535", listen)
	}
	opts, err := srvf.options(logs, env)
	if err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", listen)
	if err != nil {
		return usageErrorf("listen on %s: %v", listen, err)
	}
	srv := startServer(app.NewServer(opts), []net.Listener{ln})
	addr := ln.Addr().(*net.TCPAddr)
	try := addr.IP.String()
	if addr.IP.IsUnspecified() {
		try = "127.0.0.1"
	}
	fmt.Fprintf(env.Stdout, "TCP Server running on port %d (kernel stack, %s)   try: nc %s %d\n", addr.Port, addr, try, addr.Port)

	var failure error
	select {
	case <-ctx.Done():
	case err := <-srv.errc:
		srv.n--
		failure = fmt.Errorf("the ACK server stopped: %v", err)
	}
	if err := srv.stop(); err != nil && failure == nil {
		failure = err
	}
	return failure
}
