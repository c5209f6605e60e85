package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/ustack/ustack/app"
	"github.com/ustack/ustack/tunif"
)

const clientAbout = `
The article's client: connects to HOST:PORT, prints "Connected to server",
sends each MESSAGE (or, without any, each line of stdin as it is typed),
prints "Server says: ..." for every reply, and "Disconnected from server" when
the server has answered everything and closed.

By default it runs on its own userspace stack: it brings up a short-lived TUN
interface (ustack1, host side 198.18.1.1/24, stack 198.18.1.2) and dials
through gVisor's TCP; the interface is gone when it exits. So from the kernel's
point of view the client is at 198.18.1.2: it reaches a kernel server on the
host side (ustack serve --kernel, then dial 198.18.1.1:5000), or another
ustack up's stack when the kernel forwards between the two interfaces
(sysctl net.ipv4.ip_forward=1). That needs CAP_NET_ADMIN (sudo).
--kernel uses the kernel's sockets instead, and needs no privileges.

HOST is an IP address: the userspace stack has no resolver.`

// userspaceOnly are the client's flags that mean nothing with --kernel.
var userspaceOnly = []string{
	"trace", "trace-filter", "pcap", "pcap-max-bytes", "tcp-probe", "metrics", "control", "ui",
	"cc", "sack", "rack", "nagle", "mss", "tcp-rcvbuf", "tcp-sndbuf", "moderate-rcvbuf", "keepalive",
	"loss", "corrupt", "delay", "jitter", "reorder", "duplicate", "rate", "queue-limit", "fault-dir", "seed",
	"via-name", "via-addr", "via-stack-addr", "via-mtu", "via-no-ipv6",
}

// clientViaAddrs are the host-side addresses of the client's own TUN: the next
// /24 of the benchmarking range after ustack up's, and the next /64.
var clientViaAddrs = []netip.Prefix{
	netip.MustParsePrefix("198.18.1.1/24"),
	netip.MustParsePrefix("fd75:7374:6163:6c::1/64"),
}

func runClient(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("client", "ustack client [flags] HOST:PORT [MESSAGE...]", clientAbout)
	fs.positional = true
	var (
		via     = linkFlags{prefix: "via-"}
		logs    logFlags
		obsf    observeFlags
		tcpf    tcpFlags
		ff      faultFlags
		kernel  bool
		udp     bool
		timeout time.Duration
	)
	fs.BoolVar(&kernel, "kernel", false, "use the kernel's TCP/IP stack instead of a userspace one (no TUN, no sudo)")
	fs.BoolVar(&udp, "udp", false, "send each message as a UDP datagram (to the UDP ACK server) instead of over a TCP connection; a lost datagram or reply is not resent")
	fs.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the connection, and for the server's replies after the last message")
	via.register(fs, "ustack1", clientViaAddrs)
	logs.register(fs)
	obsf.register(fs)
	tcpf.register(fs)
	ff.register(fs)
	rest, err := parse(fs, env, args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usageErrorf("missing HOST:PORT, like: ustack client 198.18.0.2:5000 hello (run ustack client --help)")
	}
	target, err := parseTarget(rest[0])
	if err != nil {
		return err
	}
	if timeout <= 0 {
		return usageErrorf("--timeout %v: give a positive duration, like 10s", timeout)
	}
	var msgs io.Reader = env.Stdin
	if len(rest) > 1 {
		msgs = app.Messages(rest[1:])
	}
	if msgs == nil {
		msgs = app.Messages(nil)
	}
	log, err := logs.logger(env.Stderr)
	if err != nil {
		return err
	}
	opts := app.ClientOptions{Out: env.Stdout, ReplyTimeout: timeout}

	if kernel {
		for _, name := range userspaceOnly {
			if fs.isSet(name) {
				return usageErrorf("--%s is about the userspace stack: it does not work with --kernel", name)
			}
		}
		d := net.Dialer{Timeout: timeout}
		network := "tcp"
		if udp {
			network = "udp"
		}
		// With --netns, the socket is made in that namespace.
		var conn net.Conn
		err := tunif.InNetns(via.netns, func() (err error) {
			conn, err = d.DialContext(ctx, network, target.String())
			return err
		})
		if err != nil {
			if errors.Is(err, tunif.ErrNoNetns) || errors.Is(err, tunif.ErrPermission) {
				return netnsError(err)
			}
			return fmt.Errorf("connect to %s: %v", target, cause(err))
		}
		if udp {
			return interrupted(ctx, app.RunUDPClient(ctx, conn, msgs, opts))
		}
		return interrupted(ctx, app.RunClient(ctx, conn, msgs, opts))
	}

	if target.Addr().IsLoopback() {
		return usageErrorf("%s is a loopback address, which the userspace stack cannot reach: dial the host side of its link (%s) or pass --kernel",
			target.Addr(), joinStrings(stackAddrs(via.hostAddrs.vals)))
	}
	plan, err := via.plan()
	if err != nil {
		return err
	}
	if !hasFamily(plan.stack.Addrs, target.Addr()) {
		return usageErrorf("%s is an IPv%d address but the client's stack has none of that family: give a --via-addr of it", target.Addr(), family(target.Addr()))
	}
	if err := obsf.check(plan.iface.Name, plan.iface.Netns); err != nil {
		return err
	}
	if plan.stack.TCP, err = tcpf.config(plan.stack.MTU); err != nil {
		return err
	}
	if plan.stack.Faults, err = ff.config(); err != nil {
		return err
	}
	opts.Out = obsf.textOut(env)
	ul, err := bringUp("client", plan, &obsf, env, log, nil)
	if err != nil {
		return err
	}
	log.Info(fmt.Sprintf("%s  ·  dialing %s over the userspace stack", ul.summary(), target))
	if ui := ul.obs.ui; ui != nil {
		log.Info(fmt.Sprintf("web view: http://%s/", ui.Addr()))
	}

	err = func() error {
		if udp {
			conn, err := ul.stack.DialUDP("udp", target.String())
			if err != nil {
				return fmt.Errorf("udp to %s over the userspace stack: %v", target, cause(err))
			}
			return app.RunUDPClient(ctx, conn, msgs, opts)
		}
		dctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		conn, err := ul.stack.DialContext(dctx, "tcp", target.String())
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("connect to %s over the userspace stack: no answer within %v (is a server listening there, and does the kernel route and forward %s?)",
					target, timeout, target.Addr())
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("connect to %s over the userspace stack: %v", target, cause(err))
		}
		return app.RunClient(ctx, conn, msgs, opts)
	}()
	err = interrupted(ctx, err)
	var summary io.Writer
	if obsf.trace != traceOff || obsf.pcap != "" || obsf.probe != "" || plan.stack.Faults.Active() {
		// Someone is watching the layers: show what they added up to.
		summary = env.Stderr
	}
	if cerr := ul.tearDown(summary); cerr != nil && err == nil {
		err = cerr
	} else if cerr == nil {
		log.Info(ul.iface.Name() + " removed")
	}
	return err
}

func parseTarget(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, usageErrorf("%q is not HOST:PORT, like 198.18.0.2:5000 or [fd75:7374:6163:6b::2]:5000", s)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, usageErrorf("%q: HOST must be an IP address, like 198.18.0.2", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return netip.AddrPort{}, usageErrorf("%q: the port must be 1..65535", s)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

func hasFamily(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Addr().Is4() == a.Is4() {
			return true
		}
	}
	return false
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// interrupted turns the error of a conversation that SIGINT or SIGTERM cut
// short into a normal end: the person asked for it.
func interrupted(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// cause strips a net.OpError's "dial tcp 1.2.3.4:5:" prefix, which the message
// around it already says.
func cause(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}
