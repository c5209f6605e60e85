package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The forwarding tests join two stacks with the in-memory wire: A plays the
// kernel side, whose applications dial arbitrary addresses (its default route
// leads out of its NIC, into B); B is the forwarding stack. B's Dial maps each
// destination the test allows to a kernel listener on 127.0.0.1: no packet
// leaves the machine, and no test dials a destination for real.

var fwdAllow = []netip.Prefix{
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
}

// testDialer is ForwardConfig.Dial for the tests: it maps "network address" to
// a loopback address, or blocks until its context ends for "block".
type testDialer struct {
	mu      sync.Mutex
	targets map[string]string
	dials   atomic.Int32
	entered chan string // receives each address dialled, if not nil
}

func newTestDialer() *testDialer { return &testDialer{targets: make(map[string]string)} }

func (d *testDialer) mapTo(network, address, target string) {
	d.mu.Lock()
	d.targets[network+" "+address] = target
	d.mu.Unlock()
}

func (d *testDialer) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	d.dials.Add(1)
	d.mu.Lock()
	target, ok := d.targets[network+" "+address]
	entered := d.entered
	d.mu.Unlock()
	if entered != nil {
		select {
		case entered <- address:
		default:
		}
	}
	switch {
	case !ok:
		return nil, fmt.Errorf("test dialer: %s %s is not mapped", network, address)
	case target == "block":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if ap, err := netip.ParseAddrPort(target); err != nil || !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("test dialer: %s is not a loopback address", target)
	}
	return (&net.Dialer{}).DialContext(ctx, network, target)
}

// logLines collects what the forwarder logs.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// newForwardPair builds A and the forwarding stack B. fc's Allow, Dial and
// Logger are filled in when empty.
func newForwardPair(t *testing.T, fc ForwardConfig, d *testDialer) (a, b *Stack, w *wire, logs *logLines) {
	t.Helper()
	da, db := newPipe(16, 1500)
	w = &wire{}
	da.setOnSend(w.record(true))
	db.setOnSend(w.record(false))
	logs = &logLines{}
	if fc.Allow == nil {
		fc.Allow = fwdAllow
	}
	if fc.Dial == nil {
		fc.Dial = d.Dial
	}
	if fc.Logger == nil {
		fc.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	a, err := New(da, Config{Addrs: []netip.Prefix{v4A, v6A}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	b, err = New(db, Config{Addrs: []netip.Prefix{v4B, v6B}, MTU: 1500, Forward: &fc})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b, w, logs
}

// kernelTCPServer listens on 127.0.0.1 and runs serve on every connection.
// Its cleanup closes the listener and waits for the handlers: register it
// before the stacks, so that their Close (which resets the flows) runs first.
func kernelTCPServer(t *testing.T, serve func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo copies a connection back to itself, then passes the FIN on.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// kernelUDPEcho answers every datagram on 127.0.0.1 with "echo:" and the
// datagram.
func kernelUDPEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dialA(t *testing.T, a *Stack, addr string) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.DialContext(ctx, "tcp", addr)
}

func TestForwardTCP(t *testing.T) {
	for _, tc := range []struct{ name, dst string }{
		{"IPv4", "203.0.113.7:80"},
		{"IPv6", "[2001:db8::7]:80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := kernelTCPServer(t, echo)
			d := newTestDialer()
			d.mapTo("tcp", tc.dst, server)
			a, b, w, logs := newForwardPair(t, ForwardConfig{}, d)

			c, err := dialA(t, a, tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			const size = 1 << 20
			up := randomBytes(11, size)
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(up)
				werr <- err
			}()
			got := make([]byte, size)
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, up) {
				t.Fatal("the echo through the forwarder differs from what was sent")
			}
			// Our FIN reaches the kernel side, whose echo ends and
			// passes its FIN back.
			if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("after CloseWrite: read %d, %v; want EOF", n, err)
			}

			if n := d.dials.Load(); n != 1 {
				t.Errorf("%d dials, want 1", n)
			}
			eventually(t, "the flow is not closed", func() bool { return b.ForwardStats().TCP.Active == 0 })
			st := b.ForwardStats().TCP
			if st.Opened != 1 || st.Refused() != 0 || st.BytesOut != size || st.BytesIn != size {
				t.Errorf("stats %+v, want 1 opened, %d bytes each way", st, size)
			}
			if snap := b.Snapshot(); snap.Forward == nil || snap.Forward.TCP.Opened != 1 {
				t.Errorf("Snapshot.Forward = %+v", snap.Forward)
			}
			// The SYN-ACK came from the original destination, without
			// window scaling (see Stack.configure).
			var synAck header.TCP
			for _, p := range w.snapshot() {
				if segs := tcpSegments(t, []wirePacket{p}); !p.fromA && len(segs) == 1 && segs[0].Flags()&header.TCPFlagSyn != 0 {
					synAck = segs[0]
					if src := ipSource(p.data); src.String() != strings.Trim(tc.dst[:strings.LastIndex(tc.dst, ":")], "[]") {
						t.Errorf("SYN-ACK from %s, want the original destination %s", src, tc.dst)
					}
					break
				}
			}
			if synAck == nil {
				t.Fatal("no SYN-ACK from B on the wire")
			}
			if ws := header.ParseSynOptions(synAck.Options(), true).WS; ws > 0 {
				t.Errorf("forwarded SYN-ACK offers window scale %d", ws)
			}
			for _, want := range []string{"forward tcp", "→ " + tc.dst + " opened", "→ " + tc.dst + " closed"} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs)
				}
			}
		})
	}
}

func ipSource(pkt []byte) netip.Addr {
	if header.IPVersion(pkt) == header.IPv4Version {
		return addrFrom(header.IPv4(pkt).SourceAddress())
	}
	return addrFrom(header.IPv6(pkt).SourceAddress())
}

// TestForwardTCPHalfClose: the client uploads and closes its side; the kernel
// side reads to the end, then still answers, and the client reads it all.
func TestForwardTCPHalfClose(t *testing.T) {
	const size = 1 << 20
	reply := randomBytes(13, size)
	server := kernelTCPServer(t, func(c *net.TCPConn) {
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		c.Write(h.Sum(nil))
		c.Write(reply)
	})
	d := newTestDialer()
	d.mapTo("tcp", "203.0.113.7:443", server)
	a, b, _, _ := newForwardPair(t, ForwardConfig{}, d)
	c, err := dialA(t, a, "203.0.113.7:443")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	up := randomBytes(12, size)
	if _, err := c.Write(up); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(up)
	if len(got) != len(sum)+size || !bytes.Equal(got[:len(sum)], sum[:]) || !bytes.Equal(got[len(sum):], reply) {
		t.Fatalf("got %d bytes back; want the upload's SHA-256 and the %d-byte reply", len(got), size)
	}
	eventually(t, "the flow is not closed", func() bool { return b.ForwardStats().TCP.Active == 0 })
}

// TestForwardTCPHalfClosedIdle: once the client has closed its side, a
// destination that stays silent does not hold the flow forever: after
// halfClosedIdle without data both sides are reset.
func TestForwardTCPHalfClosedIdle(t *testing.T) {
	release := make(chan struct{})
	server := kernelTCPServer(t, func(c *net.TCPConn) {
		io.Copy(io.Discard, c)
		<-release // silent, with its side still open
	})
	defer close(release)
	d := newTestDialer()
	d.mapTo("tcp", "203.0.113.7:80", server)
	a, b, _, _ := newForwardPair(t, ForwardConfig{}, d)
	const idle = 200 * time.Millisecond
	b.fwd.halfClosedIdle = idle // before the first flow: its goroutines start later
	c, err := dialA(t, a, "203.0.113.7:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if _, err := c.Read(make([]byte, 1)); err == nil || err == io.EOF || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read on the half-closed flow: %v, want a reset", err)
	}
	if el := time.Since(start); el < idle || el > 5*time.Second {
		t.Errorf("reset after %v, want about %v", el, idle)
	}
	eventually(t, "the flow is not closed", func() bool { return b.ForwardStats().TCP.Active == 0 })
}

func TestForwardTCPRefused(t *testing.T) {
	server := kernelTCPServer(t, echo)
	d := newTestDialer()
	// Mapped, so that only the allow-list can stop them.
	d.mapTo("tcp", "192.0.2.1:80", server)
	d.mapTo("tcp", "198.18.0.77:80", server)
	d.mapTo("tcp", "203.0.113.8:80", closedPort(t))
	a, b, _, logs := newForwardPair(t, ForwardConfig{}, d)

	for _, tc := range []struct {
		name, dst string
		dials     int32
	}{
		{"not allowed", "192.0.2.1:80", 0},
		{"on the TUN's link", "198.18.0.77:80", 0},
		{"dial fails", "203.0.113.8:80", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := d.dials.Load()
			start := time.Now()
			c, err := dialA(t, a, tc.dst)
			if err == nil {
				c.Close()
				t.Fatalf("dial %s succeeded", tc.dst)
			}
			if !strings.Contains(err.Error(), "refused") {
				t.Errorf("dial %s: %v, want connection refused", tc.dst, err)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("refusal took %v", el)
			}
			if n := d.dials.Load() - before; n != tc.dials {
				t.Errorf("%d dials, want %d", n, tc.dials)
			}
		})
	}
	// The RST goes out before the flow gives its slot back.
	eventually(t, "the refused flow still holds a slot", func() bool { return b.ForwardStats().TCP.Active == 0 })
	st := b.ForwardStats().TCP
	if st.NotAllowed != 2 || st.DialFailed != 1 || st.Opened != 0 {
		t.Errorf("stats %+v, want 2 not allowed, 1 dial failed", st)
	}
	for _, want := range []string{
		"forward tcp 198.18.0.1:", "→ 192.0.2.1:80 refused: not in --allow",
		"→ 198.18.0.77:80 refused: on the TUN's own link",
		"→ 203.0.113.8:80 refused: dial failed",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestForwardUDP(t *testing.T) {
	for _, tc := range []struct{ name, local, dst string }{
		{"IPv4", "198.18.0.1:0", "198.51.100.9:53"},
		{"IPv6", "[fd75:7374:6163:6b::1]:0", "[2001:db8::53]:53"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server := kernelUDPEcho(t)
			d := newTestDialer()
			d.mapTo("udp", tc.dst, server)
			const idle = 300 * time.Millisecond
			a, b, _, _ := newForwardPair(t, ForwardConfig{UDPIdle: idle}, d)
			pc, err := a.ListenUDP(netip.MustParseAddrPort(tc.local))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.dst))
			exchange := func(msg string) {
				t.Helper()
				if _, err := pc.WriteTo([]byte(msg), dst); err != nil {
					t.Fatal(err)
				}
				pc.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 1500)
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatal(err)
				}
				if got := string(buf[:n]); got != "echo:"+msg {
					t.Errorf("answer %q, want %q", got, "echo:"+msg)
				}
				if from.String() != dst.String() {
					t.Errorf("answer from %s, want the original destination %s", from, dst)
				}
			}
			for i := range 3 {
				exchange(fmt.Sprint("query ", i))
			}
			last := time.Now()
			st := b.ForwardStats().UDP
			if st.Opened != 1 || st.Active != 1 || d.dials.Load() != 1 {
				t.Fatalf("stats %+v, %d dials; want one flow for three datagrams", st, d.dials.Load())
			}
			eventually(t, "the UDP flow did not expire", func() bool { return b.ForwardStats().UDP.Active == 0 })
			if el := time.Since(last); el < idle {
				t.Errorf("the flow expired after %v, before the idle timeout %v", el, idle)
			}
			// The next datagram opens a new flow.
			exchange("again")
			// Counted once written: the answer may overtake the count.
			wantOut := uint64(len("query 0")*3 + len("again"))
			eventually(t, "bytes not counted", func() bool { return b.ForwardStats().UDP.BytesOut == wantOut })
			if st = b.ForwardStats().UDP; st.Opened != 2 {
				t.Errorf("stats %+v, want 2 flows opened", st)
			}
		})
	}
}

func TestForwardUDPRefused(t *testing.T) {
	d := newTestDialer()
	d.mapTo("udp", "192.0.2.1:53", kernelUDPEcho(t))
	a, b, _, logs := newForwardPair(t, ForwardConfig{}, d)
	pc, err := a.ListenUDP(netip.MustParseAddrPort("198.18.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	icmpOut := b.Netstack().Stats().ICMP.V4.PacketsSent.DstUnreachable.Value
	before := icmpOut()
	if _, err := pc.WriteTo([]byte("q"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.1:53"))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the datagram was not refused", func() bool { return b.ForwardStats().UDP.NotAllowed == 1 })
	eventually(t, "no ICMP destination unreachable", func() bool { return icmpOut() > before })
	if n := d.dials.Load(); n != 0 {
		t.Errorf("%d dials for a destination outside the allow-list", n)
	}
	if !strings.Contains(logs.String(), "forward udp 198.18.0.1:") || !strings.Contains(logs.String(), "→ 192.0.2.1:53 refused: not in --allow") {
		t.Errorf("log:\n%s", logs)
	}
}

// TestForwardOwnAddressNotForwarded: the stack's own addresses reach its own
// listeners, or get the usual refusal, never the forwarder.
func TestForwardOwnAddressNotForwarded(t *testing.T) {
	d := newTestDialer()
	a, b, _, _ := newForwardPair(t, ForwardConfig{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}, d)
	ln, err := b.Listen(netip.AddrPortFrom(v4B.Addr(), 5000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, err = c.Write([]byte("ack"))
			c.Close()
		}
		accepted <- err
	}()
	c, err := dialA(t, a, "198.18.0.2:5000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "ack" {
		t.Fatalf("read %q, %v from the stack's own listener", got, err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	// No listener on the port: refused as without forwarding.
	if c, err := dialA(t, a, "[fd75:7374:6163:6b::2]:5001"); err == nil {
		c.Close()
		t.Fatal("dial to a closed port of the stack succeeded")
	}
	// UDP to the stack's own socket.
	upc, err := b.ListenUDP(netip.AddrPortFrom(v4B.Addr(), 5353))
	if err != nil {
		t.Fatal(err)
	}
	defer upc.Close()
	apc, err := a.ListenUDP(netip.MustParseAddrPort("198.18.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer apc.Close()
	if _, err := apc.WriteTo([]byte("mdns"), net.UDPAddrFromAddrPort(netip.AddrPortFrom(v4B.Addr(), 5353))); err != nil {
		t.Fatal(err)
	}
	upc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	if n, _, err := upc.ReadFrom(buf); err != nil || string(buf[:n]) != "mdns" {
		t.Fatalf("own UDP socket read %q, %v", buf[:n], err)
	}
	if n := d.dials.Load(); n != 0 {
		t.Errorf("%d dials for the stack's own addresses", n)
	}
	if st := b.ForwardStats(); st != (ForwardStats{}) {
		t.Errorf("forward stats %+v for traffic to the stack itself", st)
	}
}

func TestForwardMaxFlows(t *testing.T) {
	server := kernelTCPServer(t, echo)
	d := newTestDialer()
	d.mapTo("tcp", "203.0.113.7:80", server)
	d.mapTo("udp", "198.51.100.9:53", kernelUDPEcho(t))
	a, b, _, logs := newForwardPair(t, ForwardConfig{MaxFlows: 1}, d)

	first, err := dialA(t, a, "203.0.113.7:80")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := first.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if c, err := dialA(t, a, "203.0.113.7:80"); err == nil {
		c.Close()
		t.Fatal("a second flow got through with MaxFlows 1")
	}
	pc, err := a.ListenUDP(netip.MustParseAddrPort("198.18.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.WriteTo([]byte("q"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.9:53"))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the UDP flow over the limit was not refused", func() bool { return b.ForwardStats().UDP.OverLimit == 1 })
	st := b.ForwardStats()
	if st.TCP.OverLimit != 1 || st.TCP.Opened != 1 || st.TCP.Active != 1 || st.UDP.Opened != 0 {
		t.Errorf("stats %+v, want 1 TCP flow open, one TCP and one UDP refused", st)
	}
	if !strings.Contains(logs.String(), "refused: 1 flows open already") {
		t.Errorf("log:\n%s", logs)
	}
	// Once the first flow is gone, the slot is free again.
	first.Close()
	eventually(t, "the first flow did not end", func() bool { return b.ForwardStats().TCP.Active == 0 })
	c, err := dialA(t, a, "203.0.113.7:80")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestForwardICMPEcho: pings to forwarded destinations get no answer (netstack
// would otherwise answer IPv6 ones as the destination); pings to the stack's
// own addresses still do. Each forwarded ping is followed by one to the stack:
// packets are handled in order, so the first reply read tells whether the
// forwarded one was answered.
func TestForwardICMPEcho(t *testing.T) {
	dev, peer := newPipe(1, 1500)
	s, err := New(dev, Config{Addrs: []netip.Prefix{v4B, v6B}, MTU: 1500, Forward: &ForwardConfig{Allow: fwdAllow, Dial: newTestDialer().Dial}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		peer.Close()
	})
	payload := []byte("ping")
	peer.Write([][]byte{
		echoRequest4(v4A.Addr(), netip.MustParseAddr("203.0.113.7"), 1, 1, payload),
		echoRequest4(v4A.Addr(), v4B.Addr(), 1, 2, payload),
	}, 0)
	reply4 := header.IPv4(readPacket(t, peer))
	if got := addrFrom(reply4.SourceAddress()); got != v4B.Addr() || header.ICMPv4(reply4.Payload()).Sequence() != 2 {
		t.Errorf("IPv4: first reply from %s seq %d; want only the stack's own address answered", got, header.ICMPv4(reply4.Payload()).Sequence())
	}
	peer.Write([][]byte{
		echoRequest6(v6A.Addr(), netip.MustParseAddr("2001:db8::7"), 1, 1, payload),
		echoRequest6(v6A.Addr(), v6B.Addr(), 1, 2, payload),
	}, 0)
	reply6 := header.IPv6(readPacket(t, peer))
	if got := addrFrom(reply6.SourceAddress()); got != v6B.Addr() || header.ICMPv6(reply6.Payload()).Sequence() != 2 {
		t.Errorf("IPv6: first reply from %s seq %d; want only the stack's own address answered", got, header.ICMPv6(reply6.Payload()).Sequence())
	}
	select {
	case p := <-peer.in:
		t.Errorf("unexpected packet % x", p)
	case <-time.After(50 * time.Millisecond):
	}
}

// synPacket4 is a bare TCP SYN from src to dst.
func synPacket4(src, dst netip.AddrPort) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(b)
	srcA, dstA := tcpip.AddrFrom4(src.Addr().As4()), tcpip.AddrFrom4(dst.Addr().As4())
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: srcA, DstAddr: dstA,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	seg := header.TCP(ip.Payload())
	seg.Encode(&header.TCPFields{
		SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: 1000, DataOffset: header.TCPMinimumSize,
		Flags: header.TCPFlagSyn, WindowSize: 65535,
	})
	seg.SetChecksum(^seg.CalculateChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, srcA, dstA, uint16(len(seg)))))
	return b
}

// TestForwardCloseEndsFlows closes the forwarding stack with flows in every
// state: copying (TCP and UDP), dialling, and a handshake the client never
// completes. Close must return, reset the clients, close the kernel sockets,
// and leave no goroutine behind.
func TestForwardCloseEndsFlows(t *testing.T) {
	// Registered first, so it runs last: after the kernel servers' cleanup.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	kernelClosed := make(chan struct{}, 1)
	tcpServer := kernelTCPServer(t, func(c *net.TCPConn) {
		echo(c)
		kernelClosed <- struct{}{}
	})
	d := newTestDialer()
	d.entered = make(chan string, 8)
	d.mapTo("tcp", "203.0.113.7:80", tcpServer)
	d.mapTo("tcp", "203.0.113.9:80", "block")
	d.mapTo("udp", "198.51.100.9:53", kernelUDPEcho(t))
	da, db := newPipe(16, 1500)
	w := &wire{}
	db.setOnSend(w.record(false))
	a, err := New(da, Config{Addrs: []netip.Prefix{v4A, v6A}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(db, Config{Addrs: []netip.Prefix{v4B, v6B}, MTU: 1500, Forward: &ForwardConfig{Allow: fwdAllow, Dial: d.Dial}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// Copying: a TCP connection and a UDP flow.
	c, err := dialA(t, a, "203.0.113.7:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	pc, err := a.ListenUDP(netip.MustParseAddrPort("198.18.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.WriteTo([]byte("q"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.9:53")))
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := pc.ReadFrom(make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	// Dialling: the kernel-side connect never completes.
	blocked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := a.DialContext(ctx, "tcp", "203.0.113.9:80")
		if err == nil {
			c.Close()
		}
		blocked <- err
	}()
	for addr := range d.entered {
		if addr == "203.0.113.9:80" {
			break
		}
	}
	// A handshake in SYN-RCVD: the SYN comes from an address nobody
	// answers for, so B's SYN-ACK is never acknowledged.
	db.in <- synPacket4(netip.MustParseAddrPort("198.18.0.99:40000"), netip.MustParseAddrPort("203.0.113.7:80"))
	eventually(t, "no SYN-ACK to the half-open client", func() bool {
		for _, p := range w.snapshot() {
			if header.IPVersion(p.data) == header.IPv4Version && addrFrom(header.IPv4(p.data).DestinationAddress()) == netip.MustParseAddr("198.18.0.99") {
				return true
			}
		}
		return false
	})
	if st := b.ForwardStats(); st.TCP.Active != 3 || st.UDP.Active != 1 {
		t.Fatalf("stats %+v, want 3 TCP flows and 1 UDP flow active", st)
	}

	closed := make(chan struct{})
	go func() {
		b.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s")
	}
	if st := b.ForwardStats(); st.TCP.Active != 0 || st.UDP.Active != 0 {
		t.Errorf("after Close: %+v", st)
	}
	// The client's connection was reset, and the kernel side closed.
	var ne net.Error
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("client read after Close: %v, want a reset", err)
	}
	select {
	case <-kernelClosed:
	case <-time.After(5 * time.Second):
		t.Error("the kernel side of the flow was not closed")
	}
	a.Close()
	if err := <-blocked; err == nil {
		t.Error("the dial whose kernel connect blocked succeeded")
	}
}

func TestForwardConfigRejected(t *testing.T) {
	for _, fc := range []ForwardConfig{
		{Allow: []netip.Prefix{{}}},
		{Allow: []netip.Prefix{netip.MustParsePrefix("::ffff:203.0.113.0/120")}},
		{DialTimeout: -1},
		{UDPIdle: -1},
		{MaxFlows: -1},
	} {
		dev, peer := newPipe(1, 1500)
		s, err := New(dev, Config{Addrs: []netip.Prefix{v4B}, MTU: 1500, Forward: &fc})
		if err == nil {
			s.Close()
			t.Errorf("New with %+v succeeded", fc)
		}
		peer.Close()
	}
}
