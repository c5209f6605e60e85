package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"

	"github.com/ustack/ustack/app"
	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/tunif"
)

const upAbout = `
Creates the TUN interface (default ustack0, host side 198.18.0.1/24 and
fd75:7374:6163:6b::1/64), runs gVisor's TCP/IP stack in this process at the
far end of it (198.18.0.2, fd75:7374:6163:6b::2), and the ACK server on that
stack: every line a client sends is logged and answered with "ACK: <line>".
The kernel only routes IP packets into the interface; the handshake, sequence
numbers, ACKs and retransmissions of the stack's side happen here.

When both ready lines are printed on stdout, the stack answers: try
  nc 198.18.0.2 5000        ping 198.18.0.2        ping -6 fd75:7374:6163:6b::2
Ctrl-C (SIGINT) or SIGTERM closes the server and removes the interface.
Needs CAP_NET_ADMIN (sudo).`

func runUp(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("up", "sudo ustack up [flags]", upAbout)
	var (
		link linkFlags
		logs logFlags
		srvf serverFlags
		obsf observeFlags
		tcpf tcpFlags
		ff   faultFlags
		fwd  forwardFlags
		prof profileFlags
		port int
		serv string
		usr  string
	)
	link.register(fs, tunif.DefaultName, tunif.DefaultAddrs)
	logs.register(fs)
	srvf.register(fs)
	obsf.register(fs)
	tcpf.register(fs)
	ff.register(fs)
	fwd.register(fs)
	prof.register(fs)
	fs.IntVar(&port, "port", 5000, "port of the ACK server (TCP and UDP) on the userspace stack; --serve ack:PORT says the same")
	fs.StringVar(&usr, "user", "", "after creating the interface and the control socket as root, run as `USER` (name or uid), without any capability, before the first packet (default: the user who ran sudo, if any; root: stay root)")
	fs.StringVar(&serv, "serve", "", "the apps to run on the userspace stack, `KIND:PORT,...`: ack (TCP and UDP), echo, discard, chargen, http; like ack:5000,echo:7,discard:9,chargen:19,http:80 (default ack:--port)")
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	if port < 1 || port > 65535 {
		return usageErrorf("--port %d is out of range: it must be 1..65535", port)
	}
	specs := []serviceSpec{{"ack", uint16(port)}}
	var err error
	if serv != "" {
		if fs.isSet("port") {
			return usageErrorf("--port and --serve both say where the ACK server runs: give one (--serve ack:%d,...)", port)
		}
		if specs, err = parseServe(serv); err != nil {
			return usageErrorf("--serve %v", err)
		}
	}
	plan, err := link.plan()
	if err != nil {
		return err
	}
	if plan.stack.TCP, err = tcpf.config(plan.stack.MTU); err != nil {
		return err
	}
	if plan.stack.Faults, err = ff.config(); err != nil {
		return err
	}
	if plan.stack.Forward, err = fwd.config(plan.iface.Addrs); err != nil {
		return err
	}
	opts, err := srvf.options(logs, env)
	if err != nil {
		return err
	}
	if plan.stack.Forward != nil {
		plan.stack.Forward.Logger = opts.Logger
	}
	if err := obsf.check(plan.iface.Name, plan.iface.Netns); err != nil {
		return err
	}
	out := obsf.textOut(env)
	as, err := lookupRunAs(usr)
	if err != nil {
		return err
	}

	if err := prof.start(); err != nil {
		return err
	}
	defer func() {
		if err := prof.close(); err != nil {
			opts.Logger.Error(err.Error())
		}
	}()
	ul, err := bringUp("up", plan, &obsf, env, opts.Logger, as)
	if err != nil {
		return err
	}
	name, st := ul.iface.Name(), ul.stack
	srv, err := startApps(specs, netstackApps(st, plan.stack.Addrs), opts)
	if err != nil {
		ul.tearDown(nil)
		return err
	}

	fmt.Fprintf(out, "%s  ·  MTU %d\n", ul.summary(), ul.iface.MTU())
	if j := st.Link().Faults(); j != nil {
		fmt.Fprintf(out, "faults: %s\n", j.Config())
	}
	if f := plan.stack.Forward; f != nil {
		fmt.Fprintf(out, "forwarding to %s\n", joinWithSpace(f.Allow))
	}
	for _, line := range readyLines(specs, "userspace stack", plan.stack.Addrs[0].Addr()) {
		fmt.Fprintln(out, line)
	}
	if ui := ul.obs.ui; ui != nil {
		fmt.Fprintf(out, "web view: http://%s/\n", ui.Addr())
	}

	var failure error
	select {
	case <-ctx.Done():
	case <-st.Done():
		if errors.Is(st.Err(), stack.ErrDeviceGone) {
			failure = fmt.Errorf("the interface %s went away under the running stack (deleted with ip link del?): %v", name, st.Err())
		} else {
			failure = fmt.Errorf("the userspace stack stopped: %v", st.Err())
		}
	case err := <-srv.errc:
		srv.n--
		failure = fmt.Errorf("the ACK server stopped: %v", err)
	}
	if err := prof.writeHeap(); err != nil {
		opts.Logger.Error(err.Error())
	}
	if err := srv.stop(); err != nil && failure == nil {
		failure = fmt.Errorf("the ACK server: %v", err)
	}
	summary := out
	if logs.quiet {
		summary = nil
	}
	if err := ul.tearDown(summary); err != nil {
		if failure == nil {
			failure = err
		}
	} else {
		fmt.Fprintf(out, "%s removed\n", name)
	}
	return failure
}

// netstackApps runs the apps on the userspace stack, on each of its
// addresses.
func netstackApps(st *stack.Stack, addrs []netip.Prefix) appStack {
	return appStack{
		name: "gVisor netstack, in user space (ustack)",
		listen: func(port uint16) ([]net.Listener, error) {
			return listenOnEach(addrs, port, st.Listen)
		},
		listenUDP: func(port uint16) ([]net.PacketConn, error) {
			return listenOnEach(addrs, port, st.ListenUDP)
		},
		connInfo: func(local, remote net.Addr) []app.KV {
			l, r := addrPortOf(local), addrPortOf(remote)
			c, ok := st.Conn(l, r)
			if !ok {
				return nil
			}
			return connKVs(c)
		},
	}
}

// listenOnEach listens on port at each of addrs; when one fails, it closes
// the others.
func listenOnEach[L io.Closer](addrs []netip.Prefix, port uint16, listen func(netip.AddrPort) (L, error)) ([]L, error) {
	var out []L
	for _, a := range addrs {
		l, err := listen(netip.AddrPortFrom(a.Addr(), port))
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// addrPortOf returns a TCP address as a netip.AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// connKVs is what the HTTP page shows about the stack's side of a connection.
func connKVs(c stack.ConnInfo) []app.KV {
	kv := []app.KV{
		{Key: "TCP state", Value: c.State},
		{Key: "congestion window", Value: fmt.Sprintf("%d segments", c.Cwnd)},
		{Key: "slow-start threshold", Value: ssthreshString(c.Ssthresh)},
		{Key: "smoothed RTT", Value: durString(c.SRTT)},
		{Key: "RTT variation", Value: durString(c.RTTVar)},
		{Key: "retransmission timeout", Value: durString(c.RTO)},
		{Key: "segments in / out", Value: fmt.Sprintf("%d / %d", c.SegmentsIn, c.SegmentsOut)},
		{Key: "retransmitted segments", Value: strconv.FormatUint(c.Retransmits, 10)},
		{Key: "receive queue / buffer", Value: fmt.Sprintf("%d / %d bytes", c.RecvQueued, c.RecvBuf)},
		{Key: "send queue / buffer", Value: fmt.Sprintf("%d / %d bytes", max(c.SendQueued, 0), c.SendBuf)},
	}
	if c.BytesAcked != nil {
		kv = append(kv, app.KV{Key: "bytes acknowledged", Value: strconv.FormatUint(*c.BytesAcked, 10)})
	}
	return kv
}
