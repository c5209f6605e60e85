// Package reference is the yardstick ustack bench holds ustack against:
// gVisor's netstack on gVisor's own link endpoint for file descriptors
// (link/fdbased), over a TUN opened with gVisor's tun.Open — netstack on a
// TUN the way gVisor's tun_tcp_echo sample and tun2socks run it. It shares
// the protocols with package stack and nothing else: not ustack's link
// endpoint (batches through wireguard's tun.Device, offloads, taps), and not
// its TCP settings.
//
// Like package stack it sits between the TUN interface, which the caller
// configures (tunif.Configure: package stack and this one never call
// netlink), and the apps, which get net.Listener values.
package reference

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// nicID is the stack's one NIC: the TUN.
const nicID tcpip.NICID = 1

// Stack is gVisor's netstack on a TUN of its own, through fdbased.
type Stack struct {
	ns      *stack.Stack
	fd      int // the TUN; the kernel removes the interface when it is closed
	closing atomic.Bool
	once    sync.Once

	gone    chan struct{} // closed when the endpoint lost the TUN
	goneErr error         // why; set before gone is closed
}

// New creates the TUN interface name (down, without addresses: configure it
// with tunif.Configure), and runs netstack on it with the addresses addrs
// (each with the link's prefix, like 198.18.1.2/24) and the link MTU mtu.
//
// The choices are those of gVisor's tun_tcp_echo sample and of tun2socks's
// fd device, nothing tuned:
//   - tun.Open: IFF_TUN|IFF_NO_PI, no IFF_VNET_HDR. Without the virtio-net
//     header the kernel hands over and takes only whole packets of at most
//     the MTU, with their checksums, so there is no GSO (fdbased enables it
//     only on sockets anyway: Options.GSOMaxSize stays 0) and no checksum
//     offload (TX/RXChecksumOffload false: netstack computes and verifies
//     every checksum).
//   - fdbased.Options: FDs, MTU and nothing else: the readv dispatcher, one
//     packet per read(2) (recvmmsg and GRO apply to sockets only); one
//     packet-processing goroutine per CPU.
//   - netstack's defaults: tcp.NewProtocol (Reno, SACK and RACK on, receive
//     buffer 1 MiB growing to 4 MiB with moderation, send buffer 1 MiB).
//     Package stack picks CUBIC and 64 KiB receive buffers; this one does
//     not, so that it shows netstack as others run it.
//
// The Stack owns the TUN: Close closes it.
func New(name string, addrs []netip.Prefix, mtu int) (*Stack, error) {
	if len(addrs) == 0 {
		return nil, errors.New("reference: no address for the stack")
	}
	if mtu < header.IPv4MinimumProcessableDatagramSize || mtu > header.IPv4MaximumPayloadSize {
		return nil, fmt.Errorf("reference: MTU %d is out of range", mtu)
	}
	// tun.Open attaches to a persistent TUN of that name if there is one:
	// refuse instead.
	if _, err := net.InterfaceByName(name); err == nil {
		return nil, fmt.Errorf("reference: an interface named %q exists already", name)
	}
	fd, err := tun.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reference: open TUN %q: %w", name, err)
	}
	// tun.Open leaves the fd inheritable: no process started from this one
	// may hold the interface alive after Close.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("reference: TUN %q: set close-on-exec: %w", name, err)
	}
	s := &Stack{fd: fd, gone: make(chan struct{})}
	var goneOnce sync.Once
	ep, err := fdbased.New(&fdbased.Options{
		FDs: []int{fd},
		MTU: uint32(mtu),
		// Not a tuning: how the stack learns that the TUN is gone (a
		// read error), so that Done can say so. fdbased calls it too
		// when Close stops the reads.
		ClosedFunc: func(tcpipErr tcpip.Error) {
			if s.closing.Load() {
				return
			}
			goneOnce.Do(func() {
				s.goneErr = fmt.Errorf("reference: TUN %q: the endpoint stopped reading", name)
				if tcpipErr != nil {
					s.goneErr = fmt.Errorf("reference: TUN %q: %s", name, tcpipErr)
				}
				close(s.gone)
			})
		},
	})
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("reference: fdbased endpoint on TUN %q: %w", name, err)
	}
	s.ns = stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{
			tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
	})
	if err := s.configure(ep, addrs); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// configure attaches the endpoint as the NIC, adds the addresses and routes
// each address's family into the TUN.
func (s *Stack) configure(ep stack.LinkEndpoint, addrs []netip.Prefix) error {
	if tcpipErr := s.ns.CreateNIC(nicID, ep); tcpipErr != nil {
		return fmt.Errorf("reference: create NIC: %s", tcpipErr)
	}
	var routes []tcpip.Route
	seen := map[tcpip.NetworkProtocolNumber]bool{}
	for _, p := range addrs {
		proto, sub := header.IPv4ProtocolNumber, header.IPv4EmptySubnet
		if p.Addr().Is6() {
			proto, sub = header.IPv6ProtocolNumber, header.IPv6EmptySubnet
		}
		pa := tcpip.ProtocolAddress{
			Protocol: proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(p.Addr().Unmap().AsSlice()),
				PrefixLen: p.Bits(),
			},
		}
		if tcpipErr := s.ns.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); tcpipErr != nil {
			return fmt.Errorf("reference: add address %s: %s", p, tcpipErr)
		}
		if !seen[proto] {
			seen[proto] = true
			routes = append(routes, tcpip.Route{Destination: sub, NIC: nicID})
		}
	}
	s.ns.SetRouteTable(routes)
	return nil
}

// Done is closed when the endpoint lost the TUN (the interface was deleted
// under it); Err then says why. Close does not close it.
func (s *Stack) Done() <-chan struct{} { return s.gone }

// Err returns why the TUN was lost, once Done is closed.
func (s *Stack) Err() error {
	select {
	case <-s.gone:
		return s.goneErr
	default:
		return nil
	}
}

// Close closes every endpoint (open connections are reset), stops the
// endpoint's reads (removing the NIC waits for its goroutines), and closes
// the TUN, which the kernel then removes. Safe to call twice.
func (s *Stack) Close() {
	s.once.Do(func() {
		s.closing.Store(true)
		s.ns.Close()
		s.ns.Wait()
		unix.Close(s.fd)
	})
}

// Listen returns a TCP listener on addr, one of the stack's addresses.
func (s *Stack) Listen(addr netip.AddrPort) (net.Listener, error) {
	proto := header.IPv4ProtocolNumber
	if addr.Addr().Unmap().Is6() {
		proto = header.IPv6ProtocolNumber
	}
	full := tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(addr.Addr().Unmap().AsSlice()), Port: addr.Port()}
	ln, err := gonet.ListenTCP(s.ns, full, proto)
	if err != nil {
		return nil, fmt.Errorf("reference: listen on %s: %w", addr, err)
	}
	return &listener{TCPListener: ln, stack: s, addr: net.TCPAddrFromAddrPort(addr)}, nil
}

// listener is gonet's TCPListener whose Accept, once it or its stack is
// closed, returns an error matching net.ErrClosed (gonet returns netstack's
// "endpoint is in invalid state"), so that accept loops end cleanly.
type listener struct {
	*gonet.TCPListener
	stack  *Stack
	addr   net.Addr // gonet's Addr has none once the endpoint is closed
	closed atomic.Bool
}

// Accept implements net.Listener.Accept.
func (l *listener) Accept() (net.Conn, error) {
	c, err := l.TCPListener.Accept()
	if err != nil && (l.closed.Load() || l.stack.closing.Load()) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
	}
	return c, err
}

// Close implements net.Listener.Close: a blocked Accept returns net.ErrClosed.
func (l *listener) Close() error {
	if !l.closed.Swap(true) {
		l.TCPListener.Close()
	}
	return nil
}

// Addr implements net.Listener.Addr.
func (l *listener) Addr() net.Addr { return l.addr }
