// Package stack is the internet and transport layers of ustack: gVisor's
// netstack (IPv4, IPv6, ICMP, TCP, UDP) running in this process, fed by the
// link endpoint in this package (endpoint.go) that moves raw IP packets between
// netstack and a tun.Device.
//
// Its neighbours: below, the network-access layer (package tunif) creates the
// TUN interface and hands over a tun.Device — this package never configures
// interfaces; above, the application layer (package app) gets a net.Listener
// and net.Conn values from it (gVisor's gonet adapters) and never learns which
// stack it runs on.
//
// What netstack does for us here: checksums, addressing and routing (IP),
// echo replies (ICMP), and the whole of TCP — the 3-way handshake, sequence
// numbers, ACKs, retransmission, flow control (the receive window) and
// congestion control.
package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/ustack/ustack/stack/fault"
	"github.com/ustack/ustack/stack/tap"
)

// nicID is the one NIC of the stack: the TUN link.
const nicID tcpip.NICID = 1

// maxUnscaledWindow is the largest TCP window without window scaling.
const maxUnscaledWindow = 1<<16 - 1

// Config describes the userspace stack.
type Config struct {
	// Addrs are the stack's own addresses, each with the prefix of the link
	// it sits on, e.g. 198.18.0.2/24 and fd75:7374:6163:6b::2/64.
	Addrs []netip.Prefix
	// MTU of the link, the same as the TUN interface's.
	MTU int
	// TCPProbe turns on netstack's TCP probe: after every segment it
	// handles, the connection's state is published on Samples. Off, it
	// costs nothing.
	TCPProbe bool
	// TCP is the TCP knobs; the zero value is the defaults.
	TCP TCPConfig
	// Faults is the fault injection on the link at start; Link().SetFaults
	// changes it later.
	Faults fault.Config
	// Frames, when set, puts the link on the fast path (offload.go): it
	// reads and writes frames with the virtio-net header on it — TCP
	// superpackets both ways, the kernel's checksums trusted — and uses
	// the tun.Device only to close it. nil: the tun.Device carries
	// every packet, one MTU at a time.
	Frames FrameDevice
	// Forward, when set, turns on forwarding mode (forward.go): connections
	// to any other destination the kernel routes into the TUN are carried on
	// over kernel sockets.
	Forward *ForwardConfig
}

// Stack is a running netstack attached to a TUN device.
type Stack struct {
	ns      *stack.Stack
	ep      *Endpoint
	addrs   []netip.Prefix
	samples tap.Bus[TCPSample]
	probe   probeState
	tcp     TCPConfig // with the defaults filled in
	closing atomic.Bool
	once    sync.Once
	fwd     *forwarder // nil without Config.Forward
}

// New builds a netstack on dev with cfg's addresses and starts reading
// packets. The Stack owns dev: Close closes it, and so does New when it
// fails.
func New(dev tun.Device, cfg Config) (*Stack, error) {
	if err := cfg.validate(); err != nil {
		dev.Close()
		return nil, err
	}
	var ep *Endpoint
	var err error
	if cfg.Frames != nil {
		ep, err = NewOffloadEndpoint(dev, cfg.Frames, cfg.MTU)
	} else {
		ep, err = NewEndpoint(dev, cfg.MTU)
	}
	if err != nil {
		dev.Close()
		return nil, err
	}
	if err := ep.SetFaults(cfg.Faults); err != nil {
		dev.Close()
		return nil, fmt.Errorf("stack: faults: %w", err)
	}
	s := &Stack{ep: ep, addrs: append([]netip.Prefix(nil), cfg.Addrs...)}
	ep.holdReading() // until the stack is set up whole
	tcpProto := tcp.NewProtocol
	if cfg.TCPProbe {
		// The probe is chosen when the protocol is made, and costs a
		// copy of the endpoint state per segment, so it is there only
		// when asked for. (Both constructors start with Reno; configure
		// sets the congestion control asked for.)
		s.probe.acked = make(map[[2]netip.AddrPort][2]uint32)
		tcpProto = tcp.NewProtocolProbe(s.onProbe)
	}
	s.ns = stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{
			tcpProto, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6,
		},
	})
	if err := s.configure(cfg.TCP); err != nil {
		// The NIC may exist already, and with it the read loop: tear down
		// as Close does.
		s.Close()
		return nil, err
	}
	if err := s.startForwarding(cfg.Forward); err != nil {
		s.Close()
		return nil, err
	}
	ep.startReading()
	return s, nil
}

// validate rejects what netstack would refuse half-way through configure.
func (c Config) validate() error {
	if len(c.Addrs) == 0 {
		return errors.New("stack: no address for the userspace stack")
	}
	seen := make(map[netip.Addr]bool, len(c.Addrs))
	for _, p := range c.Addrs {
		if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return fmt.Errorf("stack: %v is not an IPv4 or IPv6 address with a prefix length", p)
		}
		if seen[p.Addr()] {
			return fmt.Errorf("stack: address %v given twice", p.Addr())
		}
		seen[p.Addr()] = true
	}
	return c.TCP.Validate(c.MTU)
}

func (s *Stack) configure(tcpCfg TCPConfig) error {
	// The TCP knobs, and two defaults worth knowing about:
	//
	// Selective acknowledgements (RFC 2018) are on: the receiver tells the
	// sender which blocks beyond a hole it already has, so a loss costs one
	// retransmission, not a window.
	//
	// Receive buffers are at most 64 KiB, so that TCP needs no window
	// scaling (RFC 7323). netstack rounds its advertised window down to the
	// scale, so the window's right edge can move back by up to 2^scale-1
	// bytes from one ACK to the next. A Linux peer that already sent up to
	// the old edge then has SND.NXT beyond netstack's RCV.NXT, and when
	// netstack's window is zero it discards the peer's every segment as
	// unacceptable, ACK field and all (RFC 9293 §3.10.7.4 asks to process
	// those ACKs): netstack never learns its own data was received, its
	// send buffer never drains, the application never reads, the window
	// never opens. Seen as a dead connection in the 16 MiB test on a busy
	// machine. Without scaling the window is exact and never shrinks.
	if err := tcpCfg.apply(s); err != nil {
		return err
	}
	if tcpipErr := s.ns.CreateNICWithOptions(nicID, s.ep, stack.NICOptions{Name: "tun"}); tcpipErr != nil {
		return fmt.Errorf("stack: create NIC: %s", tcpipErr)
	}
	var routes []tcpip.Route
	for _, p := range s.addrs {
		proto, sub := header.IPv4ProtocolNumber, header.IPv4EmptySubnet
		if p.Addr().Is6() {
			proto, sub = header.IPv6ProtocolNumber, header.IPv6EmptySubnet
		}
		pa := tcpip.ProtocolAddress{
			Protocol: proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(p.Addr().AsSlice()),
				PrefixLen: p.Bits(),
			},
		}
		if tcpipErr := s.ns.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); tcpipErr != nil {
			return fmt.Errorf("stack: add address %s: %s", p, tcpipErr)
		}
		// Everything leaves through the TUN: the kernel on the other side
		// routes it on. A point-to-point L3 link needs no gateway.
		if !hasRoute(routes, sub) {
			routes = append(routes, tcpip.Route{Destination: sub, NIC: nicID})
		}
	}
	s.ns.SetRouteTable(routes)
	return nil
}

func hasRoute(routes []tcpip.Route, sub tcpip.Subnet) bool {
	for _, r := range routes {
		if r.Destination == sub {
			return true
		}
	}
	return false
}

// Addrs returns the stack's own addresses.
func (s *Stack) Addrs() []netip.Prefix { return append([]netip.Prefix(nil), s.addrs...) }

// Netstack returns gVisor's stack, for counters and options.
func (s *Stack) Netstack() *stack.Stack { return s.ns }

// Samples returns the bus of TCP probe samples; nothing is published on it
// unless the stack was made with Config.TCPProbe.
func (s *Stack) Samples() *tap.Bus[TCPSample] { return &s.samples }

// Link returns the link endpoint between the device and netstack.
func (s *Stack) Link() *Endpoint { return s.ep }

// Done is closed when the stack stopped reading from its device: after Close,
// or on its own when the device went away; then Err says why.
func (s *Stack) Done() <-chan struct{} { return s.ep.Done() }

// Err returns why the stack stopped on its own, or nil.
func (s *Stack) Err() error { return s.ep.Err() }

// Close tears the stack down in this order: stop reading from the device; reset
// the forwarded flows and cancel their dials; close every TCP/UDP endpoint
// (open connections are reset, through the still-open device); wait for the
// forwarded flows' goroutines; destroy the stack and wait for its goroutines;
// close the device.
// Connections handed out before are unusable afterwards. Safe to call twice.
func (s *Stack) Close() error {
	s.once.Do(func() {
		s.closing.Store(true)
		s.ep.StopReading()
		// No more held-back packets: the injector's goroutine must not
		// deliver into a stack being torn down.
		s.ep.closeFaults()
		// Forwarded flows: no new ones, dials cancelled, open ones reset
		// through the still-open device. A handshake still in progress
		// ends with ns.Close, so the flows' goroutines are waited for
		// only after it.
		s.fwd.stop()
		s.ns.Close()
		s.fwd.wait()
		// Wait removes the NIC, which closes the link endpoint and the
		// device (Endpoint.Close), then waits for the read loop.
		s.ns.Wait()
		s.ep.Close()
	})
	return nil
}

// Listen returns a TCP listener of the userspace stack on addr. An unspecified
// address (0.0.0.0, ::) listens on all of the stack's addresses of that family.
func (s *Stack) Listen(addr netip.AddrPort) (net.Listener, error) {
	full, proto := fullAddress(addr)
	var wq waiter.Queue
	ep, tcpipErr := s.ns.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if tcpipErr != nil {
		return nil, fmt.Errorf("stack: listen on %s: %s", addr, tcpipErr)
	}
	// The MSS is inherited by the connections the listener accepts; the
	// keepalive is not, and is set on each in Accept.
	s.applyToEndpoint(ep)
	if tcpipErr := ep.Bind(full); tcpipErr != nil {
		ep.Close()
		return nil, fmt.Errorf("stack: listen on %s: %w", addr, &net.OpError{Op: "bind", Net: "tcp", Addr: net.TCPAddrFromAddrPort(addr), Err: errors.New(tcpipErr.String())})
	}
	if tcpipErr := ep.Listen(listenBacklog); tcpipErr != nil {
		ep.Close()
		return nil, fmt.Errorf("stack: listen on %s: %s", addr, tcpipErr)
	}
	return &listener{stack: s, ep: ep, wq: &wq, addr: net.TCPAddrFromAddrPort(addr), cancel: make(chan struct{})}, nil
}

// listenBacklog is the listen queue: connections the handshake completed and
// the application did not accept yet.
const listenBacklog = 1024

// DialContext connects to address ("host:port", host an IP address) over the
// userspace stack. network is "tcp", "tcp4" or "tcp6".
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	target, err := parseDialAddress("tcp", network, address)
	if err != nil {
		return nil, err
	}
	full, proto := fullAddress(target)
	var wq waiter.Queue
	ep, tcpipErr := s.ns.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if tcpipErr != nil {
		return nil, fmt.Errorf("stack: dial %s: %s", address, tcpipErr)
	}
	s.applyToEndpoint(ep)
	// Registered before Connect: the connection may complete at once.
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	tcpipErr = ep.Connect(full)
	if _, ok := tcpipErr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-notify:
		}
		tcpipErr = ep.LastError()
	}
	if tcpipErr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(target), Err: errors.New(tcpipErr.String())}
	}
	return gonet.NewTCPConn(&wq, ep), nil
}

// parseDialAddress checks "host:port" for a dial of network ("tcp", "tcp4",
// "tcp6", or the same with udp) over the userspace stack.
func parseDialAddress(kind, network, address string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("stack: dial %q: %w", address, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("stack: dial %q: the userspace stack has no resolver: give an IP address, not %q", address, host)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("stack: dial %q: port must be 1..65535", address)
	}
	ip = ip.Unmap()
	switch network {
	case kind:
	case kind + "4":
		if !ip.Is4() {
			return netip.AddrPort{}, fmt.Errorf("stack: dial %s %s: not an IPv4 address", network, address)
		}
	case kind + "6":
		if !ip.Is6() {
			return netip.AddrPort{}, fmt.Errorf("stack: dial %s %s: not an IPv6 address", network, address)
		}
	default:
		return netip.AddrPort{}, fmt.Errorf("stack: dial %s %s: network must be %s, %s4 or %s6", network, address, kind, kind, kind)
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

// ListenUDP returns a UDP socket of the userspace stack bound to addr, to
// receive datagrams from anyone and answer them.
func (s *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	full, proto := fullAddress(addr)
	pc, err := gonet.DialUDP(s.ns, &full, nil, proto)
	if err != nil {
		return nil, fmt.Errorf("stack: listen on udp %s: %w", addr, err)
	}
	return &packetConn{UDPConn: pc, stack: s}, nil
}

// DialUDP returns a UDP socket of the userspace stack connected to address
// ("ip:port"). network is "udp", "udp4" or "udp6".
func (s *Stack) DialUDP(network, address string) (net.Conn, error) {
	target, err := parseDialAddress("udp", network, address)
	if err != nil {
		return nil, err
	}
	full, proto := fullAddress(target)
	c, err := gonet.DialUDP(s.ns, nil, &full, proto)
	if err != nil {
		return nil, fmt.Errorf("stack: dial udp %s: %w", address, err)
	}
	return c, nil
}

func fullAddress(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	ip := ap.Addr().Unmap()
	proto := header.IPv4ProtocolNumber
	if ip.Is6() {
		proto = header.IPv6ProtocolNumber
	}
	full := tcpip.FullAddress{NIC: nicID, Port: ap.Port()}
	if !ip.IsUnspecified() {
		full.Addr = tcpip.AddrFromSlice(ip.AsSlice())
	}
	return full, proto
}

// listener is a net.Listener on a netstack TCP endpoint. It is gonet's
// TCPListener with two differences: once it (or its stack) is closed, Accept
// returns an error matching net.ErrClosed (gonet returns netstack's "endpoint
// is in invalid state"), and every accepted connection gets the knobs
// netstack does not pass on from the listener (keepalive).
type listener struct {
	stack     *Stack
	ep        tcpip.Endpoint
	wq        *waiter.Queue
	addr      net.Addr
	cancel    chan struct{}
	closeOnce sync.Once
}

// Accept implements net.Listener.Accept.
func (l *listener) Accept() (net.Conn, error) {
	n, wq, tcpipErr := l.ep.Accept(nil)
	if _, ok := tcpipErr.(*tcpip.ErrWouldBlock); ok {
		entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
		l.wq.EventRegister(&entry)
		defer l.wq.EventUnregister(&entry)
		for {
			n, wq, tcpipErr = l.ep.Accept(nil)
			if _, ok := tcpipErr.(*tcpip.ErrWouldBlock); !ok {
				break
			}
			select {
			case <-l.cancel:
				return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
			case <-notify:
			}
		}
	}
	if tcpipErr != nil {
		if l.closed() {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: net.ErrClosed}
		}
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.addr, Err: errors.New(tcpipErr.String())}
	}
	l.stack.applyToEndpoint(n)
	return gonet.NewTCPConn(wq, n), nil
}

func (l *listener) closed() bool {
	select {
	case <-l.cancel:
		return true
	default:
		return l.stack.closing.Load()
	}
}

// Close implements net.Listener.Close: any blocked Accept is unblocked and
// returns net.ErrClosed.
func (l *listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.cancel)
		l.ep.Close()
	})
	return nil
}

// Addr implements net.Listener.Addr.
func (l *listener) Addr() net.Addr { return l.addr }

// packetConn is gonet's UDPConn whose reads after Close match net.ErrClosed.
type packetConn struct {
	*gonet.UDPConn
	stack  *Stack
	closed atomic.Bool
}

// ReadFrom implements net.PacketConn.ReadFrom.
func (c *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.UDPConn.ReadFrom(b)
	if err != nil && (c.closed.Load() || c.stack.closing.Load()) {
		return n, addr, &net.OpError{Op: "read", Net: "udp", Addr: c.LocalAddr(), Err: net.ErrClosed}
	}
	return n, addr, err
}

// Close implements net.PacketConn.Close.
func (c *packetConn) Close() error {
	c.closed.Store(true)
	return c.UDPConn.Close()
}
