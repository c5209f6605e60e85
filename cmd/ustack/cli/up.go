package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

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
		port int
	)
	link.register(fs, tunif.DefaultName, tunif.DefaultAddrs)
	logs.register(fs)
	srvf.register(fs)
	obsf.register(fs)
	tcpf.register(fs)
	ff.register(fs)
	fs.IntVar(&port, "port", 5000, "TCP port of the ACK server on the userspace stack")
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	if port < 1 || port > 65535 {
		return usageErrorf("--port %d is out of range: it must be 1..65535", port)
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
	opts, err := srvf.options(logs, env)
	if err != nil {
		return err
	}
	if err := obsf.check(plan.iface.Name); err != nil {
		return err
	}
	out := obsf.textOut(env)

	ul, err := bringUp("up", plan, &obsf, env, opts.Logger)
	if err != nil {
		return err
	}
	name, st := ul.iface.Name(), ul.stack
	var lns []net.Listener
	for _, a := range plan.stack.Addrs {
		ln, err := st.Listen(netip.AddrPortFrom(a.Addr(), uint16(port)))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			ul.tearDown(nil)
			return err
		}
		lns = append(lns, ln)
	}
	srv := startServer(app.NewServer(opts), lns)

	fmt.Fprintf(out, "%s  ·  MTU %d\n", ul.summary(), ul.iface.MTU())
	first := plan.stack.Addrs[0].Addr()
	if j := st.Link().Faults(); j != nil {
		fmt.Fprintf(out, "faults: %s\n", j.Config())
	}
	fmt.Fprintf(out, "TCP Server running on port %d (userspace stack)   try: nc %s %d   ping %s\n",
		port, first, port, first)

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
