package stack

// Forwarding mode: the transparent userspace proxy of tun2socks, slirp4netns
// and pasta. The kernel routes connections to any destination into the TUN;
// netstack, in promiscuous mode and spoofing, accepts them as if it were the
// destination, and for each one this file opens a connection from the ustack
// process to that original destination with an ordinary kernel socket, then
// copies bytes both ways.
//
// How netstack gets there (gVisor's pkg/tcpip):
//
//   - Promiscuous mode (Stack.SetPromiscuousMode) makes the IP layer accept a
//     packet to any address: it gives the NIC a temporary address for the
//     packet's destination (LocalAddressTemporary) instead of dropping it.
//   - Spoofing (Stack.SetSpoofing) lets an endpoint send from an address the
//     NIC does not own: the SYN-ACK, the data and the UDP answers leave from the
//     original destination.
//   - The transport demuxer first looks for a registered endpoint (the stack's
//     own listeners, connections already forwarded, UDP flows already open);
//     only a packet that matched none goes to the protocol's default handler
//     (SetTransportProtocolHandler), and when that returns false, to the
//     protocol's usual answer (RST for TCP, ICMP port unreachable for UDP). So
//     the stack's own addresses keep working as without forwarding, and a
//     refusal is simply "return false".
//
// What is never forwarded, whatever Allow says: the stack's own addresses (they
// reach the stack's listeners, or get the usual RST / port unreachable), the
// rest of the TUN link's prefixes (a kernel socket to them would be routed back
// into the TUN), loopback, link-local, multicast, broadcast and unspecified
// destinations.
//
// ICMP is not forwarded. An echo request to a forwarded destination gets no
// reply: netstack's IPv4 skips the reply for a temporary address by itself,
// and for IPv6 (where it would answer as the destination) a default ICMPv6
// handler consumes echo requests not addressed to the stack. A ping through
// the TUN therefore shows the destination as silent rather than falsely
// reachable. Pings to the stack's own addresses are answered as always. Nor
// are the ICMP errors the kernel gets for a flow relayed: a failed TCP dial
// becomes a RST to the client, and a UDP flow simply gets no answer.
//
// A deployment hazard this file cannot see: the kernel must not route the
// forwarder's own sockets back into the TUN, or every flow loops until
// MaxFlows. Run the clients in another network namespace, or give Dial a
// net.Dialer whose Control sets SO_MARK and route that mark around the TUN.
//
// Goroutines: a TCP flow runs on the handler goroutine netstack's forwarder
// starts for its SYN, plus one copy goroutine; a UDP flow runs on one
// goroutine plus one copy goroutine. All are tracked; Stack.Close ends them.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Defaults of ForwardConfig's zero fields.
const (
	DefaultForwardDialTimeout = 10 * time.Second
	DefaultForwardUDPIdle     = 60 * time.Second
	DefaultForwardMaxFlows    = 4096
)

// halfClosedIdle bounds how long a TCP flow may stay half-closed with nothing
// moving: once one direction has ended with a FIN, the other is reset after
// this long without data. Linux's tcp_fin_timeout, 60 s, bounds orphaned
// FIN-WAIT-2 sockets the same way.
const halfClosedIdle = 60 * time.Second

// tcpCopyBuffer is the size of one TCP copy buffer; maxDatagram is the
// largest UDP payload (65535 minus the IPv4 and UDP headers; netstack
// reassembles fragments, so a datagram can be that large).
const (
	tcpCopyBuffer = 32 << 10
	maxDatagram   = 1<<16 - 1 - header.IPv4MinimumSize - header.UDPMinimumSize
)

// ForwardConfig turns on forwarding mode: TCP connections and UDP flows to
// destinations that are not the stack's own are accepted by netstack and
// carried on to the original destination over kernel sockets.
type ForwardConfig struct {
	// Allow is the destinations that may be reached; empty allows nothing
	// (the CLI fills in its default). It is checked on the original
	// destination address of each flow.
	Allow []netip.Prefix
	// DialTimeout bounds the kernel-side connect; 0: 10 s.
	DialTimeout time.Duration
	// UDPIdle is how long a UDP flow lives without a datagram either way;
	// 0: 60 s.
	UDPIdle time.Duration
	// MaxFlows caps the concurrent TCP connections and UDP flows together,
	// those still dialling included; 0: 4096. A flow over the cap is
	// refused (RST, or ICMP port unreachable).
	MaxFlows int
	// Dial opens the kernel-side connection ("tcp" or "udp", "ip:port" of
	// the original destination); nil: a net.Dialer. It must honour ctx:
	// Stack.Close cancels it and waits. Tests inject one that maps the
	// destination to a listener on loopback.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Logger gets one Info line per flow opened, closed or refused, e.g.
	// "forward tcp 10.0.0.5:43512 → 93.184.216.34:80 refused: not in
	// --allow"; nil: none.
	Logger *slog.Logger
}

// withDefaults checks c and fills in its zero fields.
func (c ForwardConfig) withDefaults() (ForwardConfig, error) {
	allow := make([]netip.Prefix, 0, len(c.Allow))
	for _, p := range c.Allow {
		if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return c, fmt.Errorf("stack: forward: allow %v is not an IPv4 or IPv6 prefix", p)
		}
		allow = append(allow, p.Masked())
	}
	c.Allow = allow
	switch {
	case c.DialTimeout < 0:
		return c, fmt.Errorf("stack: forward: dial timeout %v is negative", c.DialTimeout)
	case c.UDPIdle < 0:
		return c, fmt.Errorf("stack: forward: UDP idle timeout %v is negative", c.UDPIdle)
	case c.MaxFlows < 0:
		return c, fmt.Errorf("stack: forward: max flows %d is negative", c.MaxFlows)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultForwardDialTimeout
	}
	if c.UDPIdle == 0 {
		c.UDPIdle = DefaultForwardUDPIdle
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = DefaultForwardMaxFlows
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{}).DialContext
	}
	return c, nil
}

// ForwardStats is what forwarding mode did, per transport protocol.
type ForwardStats struct {
	TCP FlowStats `json:"tcp"`
	UDP FlowStats `json:"udp"`
}

// FlowStats counts the forwarded flows of one transport protocol.
type FlowStats struct {
	Opened     uint64 `json:"opened"`              // the destination was reached and bytes may flow
	NotAllowed uint64 `json:"refused_not_allowed"` // destination outside Allow, or never forwarded
	DialFailed uint64 `json:"refused_dial_failed"` // the kernel-side connect failed or timed out
	OverLimit  uint64 `json:"refused_over_limit"`  // MaxFlows flows were open already
	Active     uint64 `json:"active"`              // now, those still dialling included
	BytesOut   uint64 `json:"bytes_out"`           // from the TUN to the destinations
	BytesIn    uint64 `json:"bytes_in"`            // from the destinations back into the TUN
}

// Refused is the flows refused for any reason.
func (c FlowStats) Refused() uint64 { return c.NotAllowed + c.DialFailed + c.OverLimit }

// ForwardStats returns the forwarding counters; zero when the stack was made
// without Config.Forward.
func (s *Stack) ForwardStats() ForwardStats {
	if s.fwd == nil {
		return ForwardStats{}
	}
	return ForwardStats{TCP: s.fwd.tcp.load(), UDP: s.fwd.udp.load()}
}

type flowCounters struct {
	opened, notAllowed, dialFailed, overLimit, bytesOut, bytesIn atomic.Uint64
	active                                                       atomic.Int64
}

func (c *flowCounters) load() FlowStats {
	return FlowStats{
		Opened: c.opened.Load(), NotAllowed: c.notAllowed.Load(), DialFailed: c.dialFailed.Load(),
		OverLimit: c.overLimit.Load(), Active: uint64(max(c.active.Load(), 0)),
		BytesOut: c.bytesOut.Load(), BytesIn: c.bytesIn.Load(),
	}
}

// forwarder is the forwarding mode of a Stack.
type forwarder struct {
	s      *Stack
	cfg    ForwardConfig // with the defaults filled in
	tcpFwd *tcp.Forwarder
	// halfClosedIdle is the constant, a field so that tests can shorten it.
	halfClosedIdle time.Duration

	// ctx is cancelled by stop: dials in progress give up.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	flows  map[*flow]struct{} // guarded by mu: every flow holding a slot
	closed bool               // guarded by mu: stop was called, no new flows
	wg     sync.WaitGroup     // one per flow holding a slot

	tcp, udp flowCounters
}

// startForwarding turns on forwarding mode on the stack's NIC; nil cfg leaves
// it off.
func (s *Stack) startForwarding(cfg *ForwardConfig) error {
	if cfg == nil {
		return nil
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	f := &forwarder{s: s, cfg: c, halfClosedIdle: halfClosedIdle, flows: make(map[*flow]struct{})}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	if tcpipErr := s.ns.SetPromiscuousMode(nicID, true); tcpipErr != nil {
		f.cancel()
		return fmt.Errorf("stack: forward: promiscuous mode: %s", tcpipErr)
	}
	if tcpipErr := s.ns.SetSpoofing(nicID, true); tcpipErr != nil {
		f.cancel()
		return fmt.Errorf("stack: forward: spoofing: %s", tcpipErr)
	}
	// The receive window of the forwarded connections is the stack's
	// default receive buffer, at most 64 KiB unless configured otherwise:
	// netstack's forwarder would take 1 MiB, and with it window scaling
	// (see configure for why the stack avoids it). maxInFlight bounds the
	// handshakes whose handler has not completed them yet (dialling); SYNs
	// beyond it are dropped, and the client retransmits.
	f.tcpFwd = tcp.NewForwarder(s.ns, s.tcp.RcvBuf.Default, c.MaxFlows, f.handleTCP)
	s.ns.SetTransportProtocolHandler(tcp.ProtocolNumber, f.tcpPacket)
	s.ns.SetTransportProtocolHandler(udp.ProtocolNumber, f.udpPacket)
	s.ns.SetTransportProtocolHandler(icmp.ProtocolNumber6, f.icmp6Packet)
	s.fwd = f
	return nil
}

// stop refuses new flows, cancels the dials in progress and resets the open
// flows (through the device, which must still be open). Handshakes netstack
// has in progress end when the stack is closed; wait then waits for every
// flow's goroutines. Both do nothing on a nil forwarder.
func (f *forwarder) stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.closed = true
	flows := make([]*flow, 0, len(f.flows))
	for fl := range f.flows {
		flows = append(flows, fl)
	}
	f.mu.Unlock()
	f.cancel()
	for _, fl := range flows {
		fl.abort()
	}
}

func (f *forwarder) wait() {
	if f != nil {
		f.wg.Wait()
	}
}

// flow is one forwarded TCP connection or UDP flow.
type flow struct {
	proto    string // "tcp" or "udp", also the network to dial
	src, dst netip.AddrPort
	start    time.Time
	up, down atomic.Uint64 // bytes to the destination, and back
	last     atomic.Int64  // UDP: Unix nanoseconds of the last datagram either way

	mu      sync.Mutex
	closer  func() // guarded by mu: resets both sides, once attached
	aborted bool   // guarded by mu
}

func newFlow(proto string, id stack.TransportEndpointID) *flow {
	return &flow{
		proto: proto,
		src:   netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort),
		dst:   netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort),
		start: time.Now(),
	}
}

// attach sets what abort does; false when the flow was aborted already (the
// caller then closes what it would have attached).
func (fl *flow) attach(closer func()) bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.aborted {
		return false
	}
	fl.closer = closer
	return true
}

// abort ends the flow: both sides are closed (TCP: reset), which ends its
// goroutines' reads and writes. Safe to call more than once and concurrently.
func (fl *flow) abort() {
	fl.mu.Lock()
	closer := fl.closer
	fl.closer, fl.aborted = nil, true
	fl.mu.Unlock()
	if closer != nil {
		closer()
	}
}

func (fl *flow) isAborted() bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.aborted
}

// refusal says why dst is not forwarded: own is true for the stack's own
// addresses (they are not forwarded and not counted: the stack answers them
// as it always did); reason is non-empty for a refused destination.
func (f *forwarder) refusal(dst netip.Addr) (own bool, reason string) {
	for _, p := range f.s.addrs {
		if p.Addr() == dst {
			return true, ""
		}
	}
	for _, p := range f.s.addrs {
		if p.Masked().Contains(dst) {
			return false, "on the TUN's own link (a kernel socket would loop back into the TUN)"
		}
	}
	if !dst.IsValid() || dst.IsUnspecified() || dst.IsLoopback() || dst.IsMulticast() ||
		dst.IsLinkLocalUnicast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false, "not a forwardable unicast address"
	}
	for _, p := range f.cfg.Allow {
		if p.Contains(dst) {
			return false, ""
		}
	}
	return false, "not in --allow"
}

// admit gives fl one of the MaxFlows slots; false when the stack is closing
// or the slots are taken (counted and logged).
func (f *forwarder) admit(fl *flow, c *flowCounters) bool {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return false
	}
	if len(f.flows) >= f.cfg.MaxFlows {
		f.mu.Unlock()
		c.overLimit.Add(1)
		f.logFlow(fl.proto, fl.src, fl.dst, fmt.Sprintf("refused: %d flows open already", f.cfg.MaxFlows))
		return false
	}
	f.flows[fl] = struct{}{}
	f.wg.Add(1)
	f.mu.Unlock()
	c.active.Add(1)
	return true
}

// release gives fl's slot back.
func (f *forwarder) release(fl *flow, c *flowCounters) {
	c.active.Add(-1)
	f.mu.Lock()
	delete(f.flows, fl)
	f.mu.Unlock()
	f.wg.Done()
}

// dial opens the kernel-side connection of fl; a failure is counted and
// logged, but not when the stack is closing.
func (f *forwarder) dial(fl *flow, c *flowCounters) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(f.ctx, f.cfg.DialTimeout)
	defer cancel()
	kc, err := f.cfg.Dial(ctx, fl.proto, fl.dst.String())
	if err != nil {
		if f.ctx.Err() == nil {
			c.dialFailed.Add(1)
			f.logFlow(fl.proto, fl.src, fl.dst, "refused: dial failed: "+err.Error())
		}
		return nil, err
	}
	return kc, nil
}

func (f *forwarder) logFlow(proto string, src, dst netip.AddrPort, what string, attrs ...any) {
	if f.cfg.Logger == nil {
		return
	}
	f.cfg.Logger.Info(fmt.Sprintf("forward %s %s → %s %s", proto, src, dst, what), attrs...)
}

func (f *forwarder) logClosed(fl *flow) {
	f.logFlow(fl.proto, fl.src, fl.dst, "closed",
		"bytes_out", fl.up.Load(), "bytes_in", fl.down.Load(), "duration", time.Since(fl.start).Round(time.Millisecond))
}

// tcpPacket is TCP's default handler: a segment that matched no endpoint.
// Returning false lets netstack answer as without forwarding (a RST).
func (f *forwarder) tcpPacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	own, reason := f.refusal(addrFrom(id.LocalAddress))
	if own {
		return false
	}
	if reason != "" {
		// Counted once per connection attempt, not per stray segment.
		if h := header.TCP(pkt.TransportHeader().Slice()); len(h) >= header.TCPMinimumSize &&
			h.Flags()&(header.TCPFlagSyn|header.TCPFlagAck) == header.TCPFlagSyn {
			f.tcp.notAllowed.Add(1)
			f.logFlow("tcp", netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort),
				netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort), "refused: "+reason)
		}
		return false
	}
	// A SYN starts f.handleTCP on a goroutine of its own; any other
	// segment is not the forwarder's, and gets the RST.
	return f.tcpFwd.HandlePacket(id, pkt)
}

// handleTCP runs one forwarded TCP connection, on the goroutine netstack's
// forwarder started for its SYN. The destination is dialled first and the
// handshake with the client completed only then, so a destination that
// refuses, or cannot be reached, is a refused connection to the client too
// (RST). The client's SYN retransmissions meanwhile are absorbed by the
// forwarder (one request per 4-tuple in flight).
func (f *forwarder) handleTCP(r *tcp.ForwarderRequest) {
	fl := newFlow("tcp", r.ID())
	if !f.admit(fl, &f.tcp) {
		r.Complete(true)
		return
	}
	defer f.release(fl, &f.tcp)
	kc, err := f.dial(fl, &f.tcp)
	if err != nil {
		r.Complete(true)
		return
	}
	if fl.isAborted() {
		r.Complete(true)
		kc.Close()
		return
	}
	var wq waiter.Queue
	ep, tcpipErr := r.CreateEndpoint(&wq) // blocks until the client's ACK, or the handshake failed
	r.Complete(false)
	if tcpipErr != nil {
		abortConn(kc)
		f.logFlow(fl.proto, fl.src, fl.dst, "handshake with the client failed: "+tcpipErr.String())
		return
	}
	// Keepalive applies; Config.TCP.MSS does not cap the MSS this
	// connection advertised: the SYN-ACK is gone already, and netstack's
	// forwarder has no listener to inherit the option from.
	f.s.applyToEndpoint(ep)
	tc := gonet.NewTCPConn(&wq, ep)
	if !fl.attach(func() { ep.Abort(); abortConn(kc) }) {
		ep.Abort()
		abortConn(kc)
		return
	}
	f.tcp.opened.Add(1)
	f.logFlow(fl.proto, fl.src, fl.dst, "opened")
	f.pipeTCP(fl, tc, kc)
	tc.Close()
	kc.Close()
	f.logClosed(fl)
}

// abortConn closes a kernel connection with a RST where it can (SO_LINGER 0):
// the destination must not take a cut-off stream for a complete one.
func abortConn(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	c.Close()
}

// halfPipe is one direction of a TCP flow.
type halfPipe struct {
	src, dst net.Conn
	n, total *atomic.Uint64
	// draining is set once the other direction ended with a FIN: this one
	// then lives only while data moves (halfClosedIdle).
	draining atomic.Bool
}

var tcpBufs = sync.Pool{New: func() any { b := make([]byte, tcpCopyBuffer); return &b }}

// pipeTCP copies both ways between the client's side tc and the destination's
// kc until both directions have ended. A FIN is passed on as a FIN
// (CloseWrite), so half-closed connections work; an error or a reset either
// way resets both sides.
func (f *forwarder) pipeTCP(fl *flow, tc, kc net.Conn) {
	up := &halfPipe{src: tc, dst: kc, n: &fl.up, total: &f.tcp.bytesOut}
	down := &halfPipe{src: kc, dst: tc, n: &fl.down, total: &f.tcp.bytesIn}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.copyHalf(fl, up, down)
	}()
	f.copyHalf(fl, down, up)
	<-done
}

// copyHalf copies p until its source's FIN, which it passes on, or an error,
// which aborts the flow.
func (f *forwarder) copyHalf(fl *flow, p, other *halfPipe) {
	bp := tcpBufs.Get().(*[]byte)
	defer tcpBufs.Put(bp)
	buf := *bp
	for {
		if p.draining.Load() {
			p.src.SetReadDeadline(time.Now().Add(f.halfClosedIdle))
		}
		n, rerr := p.src.Read(buf)
		if n > 0 {
			if _, werr := p.dst.Write(buf[:n]); werr != nil {
				fl.abort()
				return
			}
			p.n.Add(uint64(n))
			p.total.Add(uint64(n))
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			if cw, ok := p.dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			other.draining.Store(true)
			other.src.SetReadDeadline(time.Now().Add(f.halfClosedIdle))
			return
		default:
			// A reset, a failed read, or a half-closed flow silent for
			// halfClosedIdle.
			fl.abort()
			return
		}
	}
}

// udpPacket is UDP's default handler: a datagram that matched no endpoint,
// the first of a new flow. It runs on the goroutine that delivers packets, so
// it only opens the flow; runUDP dials. Returning false lets netstack answer
// as without forwarding (ICMP port unreachable).
//
// It builds the request with udp.NewForwarderRequest rather than going through
// udp.Forwarder.HandlePacket: that one clones every packet it is handed and
// never releases the clone; CreateEndpoint, called right here while the packet
// is still the caller's, clones what it keeps.
func (f *forwarder) udpPacket(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	own, reason := f.refusal(addrFrom(id.LocalAddress))
	if own {
		return false
	}
	fl := newFlow("udp", id)
	if reason != "" {
		f.udp.notAllowed.Add(1)
		f.logFlow(fl.proto, fl.src, fl.dst, "refused: "+reason)
		return false
	}
	if !f.admit(fl, &f.udp) {
		return false
	}
	var wq waiter.Queue
	// The endpoint is bound to the original destination (spoofing) and
	// connected to the client, and registered for the 4-tuple: the flow's
	// next datagrams reach it, not this handler. It queues this first one.
	ep, tcpipErr := udp.NewForwarderRequest(f.s.ns, id, pkt).CreateEndpoint(&wq)
	if tcpipErr != nil {
		f.release(fl, &f.udp)
		f.logFlow(fl.proto, fl.src, fl.dst, "refused: "+tcpipErr.String())
		return false
	}
	fl.last.Store(time.Now().UnixNano())
	go f.runUDP(fl, gonet.NewUDPConn(&wq, ep))
	return true
}

// runUDP dials the destination of a UDP flow and copies datagrams both ways
// until the flow is idle for UDPIdle.
func (f *forwarder) runUDP(fl *flow, uc *gonet.UDPConn) {
	defer f.release(fl, &f.udp)
	kc, err := f.dial(fl, &f.udp)
	if err != nil {
		uc.Close()
		return
	}
	if !fl.attach(func() { uc.Close(); kc.Close() }) {
		uc.Close()
		kc.Close()
		return
	}
	f.udp.opened.Add(1)
	f.logFlow(fl.proto, fl.src, fl.dst, "opened")
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.copyUDP(fl, uc, kc, &fl.up, &f.udp.bytesOut)
	}()
	f.copyUDP(fl, kc, uc, &fl.down, &f.udp.bytesIn)
	<-done
	fl.abort()
	f.logClosed(fl)
}

var udpBufs = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// copyUDP copies datagrams from src to dst until the flow has been idle for
// UDPIdle in both directions, or either side fails; then it aborts the flow,
// which ends the other direction too. Writes to the client through uc leave
// from the original destination.
func (f *forwarder) copyUDP(fl *flow, src, dst net.Conn, n, total *atomic.Uint64) {
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	buf := *bp
	for {
		src.SetReadDeadline(time.Unix(0, fl.last.Load()).Add(f.cfg.UDPIdle))
		m, err := src.Read(buf)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				// The destination's ICMP port unreachable for an
				// earlier datagram, reported once: the flow goes on.
				continue
			}
			if isTimeout(err) && time.Since(time.Unix(0, fl.last.Load())) < f.cfg.UDPIdle {
				continue // the other direction was busy meanwhile
			}
			fl.abort()
			return
		}
		fl.last.Store(time.Now().UnixNano())
		if _, err := dst.Write(buf[:m]); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			fl.abort()
			return
		}
		n.Add(uint64(m))
		total.Add(uint64(m))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// icmp6Packet is ICMPv6's default handler, which sees echo requests and
// replies that no ICMP endpoint took. It consumes those not addressed to the
// stack's own addresses, so that netstack does not answer a ping to a
// forwarded destination as if it were that destination (IPv4 already does not
// for temporary addresses). Own addresses are answered as always.
func (f *forwarder) icmp6Packet(id stack.TransportEndpointID, _ *stack.PacketBuffer) bool {
	own, _ := f.refusal(addrFrom(id.LocalAddress))
	return !own
}
