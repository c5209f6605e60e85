package cli

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/ustack/ustack/tunif"
)

const serveAbout = `
Runs the same ACK server as ustack up (TCP and UDP), with the same logs, and
the other apps of --serve, on the kernel's own TCP/IP stack: the one thing
that differs is the stack underneath. Compare the two with the same client, or
with tcpdump. Needs no privileges for ports above 1023.`

func runServe(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("serve", "ustack serve --kernel [flags]", serveAbout)
	var (
		logs   logFlags
		srvf   serverFlags
		kernel bool
		listen string
		serv   string
		nsName string
	)
	fs.BoolVar(&kernel, "kernel", false, "serve on kernel sockets (required: the userspace-stack server is ustack up)")
	fs.StringVar(&listen, "listen", ":5000", "`address:port` of the ACK server (TCP and UDP); an empty address means all of them, IPv4 and IPv6; port 0 picks a free one (the ready line says which); with --serve, only the address counts")
	fs.StringVar(&serv, "serve", "", "the apps to run, `KIND:PORT,...`: ack (TCP and UDP), echo, discard, chargen, http; like ack:5000,echo:7,http:8080 (default ack on --listen's port)")
	fs.StringVar(&nsName, "netns", "", "listen in this network `NAMESPACE` (a name made with ip netns add, or a path like /proc/PID/ns/net); ustack itself stays where it is")
	logs.register(fs)
	srvf.register(fs)
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	if nsName != "" {
		if err := tunif.CheckNetns(nsName); err != nil {
			return netnsError(err)
		}
	}
	if !kernel {
		return usageErrorf("ustack serve runs the apps on kernel sockets and needs --kernel; for the userspace stack, run: sudo ustack up")
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return usageErrorf("--listen %q: want address:port, like :5000 or 127.0.0.1:5000", listen)
	}
	p, err := strconv.Atoi(portStr)
	if err != nil || p < 0 || p > 65535 {
		return usageErrorf("--listen %q: the port must be 0..65535", listen)
	}
	specs := []serviceSpec{{"ack", uint16(p)}}
	if serv != "" {
		if specs, err = parseServe(serv); err != nil {
			return usageErrorf("--serve %v", err)
		}
	}
	opts, err := srvf.options(logs, env)
	if err != nil {
		return err
	}
	// Port 0 picks a free port, for TCP; UDP gets the same number.
	var picked []serviceSpec
	kernelApps := appStack{
		name: "the kernel's TCP/IP stack",
		listen: func(port uint16) ([]net.Listener, error) {
			var ln net.Listener
			err := tunif.InNetns(nsName, func() (err error) {
				ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(int(port))))
				return err
			})
			if err != nil {
				return nil, err
			}
			picked = append(picked, serviceSpec{port: uint16(ln.Addr().(*net.TCPAddr).Port)})
			return []net.Listener{ln}, nil
		},
		listenUDP: func(port uint16) ([]net.PacketConn, error) {
			if port == 0 && len(picked) > 0 {
				port = picked[len(picked)-1].port
			}
			var pc net.PacketConn
			err := tunif.InNetns(nsName, func() (err error) {
				pc, err = (&net.ListenConfig{}).ListenPacket(ctx, "udp", net.JoinHostPort(host, strconv.Itoa(int(port))))
				return err
			})
			if err != nil {
				return nil, err
			}
			return []net.PacketConn{pc}, nil
		},
	}
	srv, err := startApps(specs, kernelApps, opts)
	if err != nil {
		return err
	}
	for i := range specs {
		specs[i].port = picked[i].port
	}
	try := netip.MustParseAddr("127.0.0.1")
	if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
		try = a
	}
	for _, line := range readyLines(specs, "kernel stack", try) {
		fmt.Fprintln(env.Stdout, line)
	}

	var failure error
	select {
	case <-ctx.Done():
	case err := <-srv.errc:
		srv.n--
		failure = fmt.Errorf("an app stopped: %v", err)
	}
	if err := srv.stop(); err != nil && failure == nil {
		failure = err
	}
	return failure
}
