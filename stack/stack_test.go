package stack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	v4A = netip.MustParsePrefix("198.18.0.1/24")
	v4B = netip.MustParsePrefix("198.18.0.2/24")
	v6A = netip.MustParsePrefix("fd75:7374:6163:6b::1/64")
	v6B = netip.MustParsePrefix("fd75:7374:6163:6b::2/64")
)

// wirePacket is what the test saw cross the in-memory wire.
type wirePacket struct {
	fromA bool
	data  []byte
}

type wire struct {
	mu   sync.Mutex
	pkts []wirePacket
}

func (w *wire) record(fromA bool) func([]byte) {
	return func(p []byte) {
		w.mu.Lock()
		w.pkts = append(w.pkts, wirePacket{fromA, p})
		w.mu.Unlock()
	}
}

func (w *wire) snapshot() []wirePacket {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]wirePacket(nil), w.pkts...)
}

// newStackPair builds two userspace stacks joined by an in-memory wire: A has
// the host-side addresses, B the stack-side ones.
func newStackPair(t *testing.T, batch, mtu int) (a, b *Stack, w *wire) {
	t.Helper()
	da, db := newPipe(batch, mtu)
	w = &wire{}
	da.setOnSend(w.record(true))
	db.setOnSend(w.record(false))
	a, err := New(da, Config{Addrs: []netip.Prefix{v4A, v6A}, MTU: mtu})
	if err != nil {
		t.Fatal(err)
	}
	b, err = New(db, Config{Addrs: []netip.Prefix{v4B, v6B}, MTU: mtu})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b, w
}

// tcpSegments decodes the TCP segments among pkts (IPv4 or IPv6).
func tcpSegments(t *testing.T, pkts []wirePacket) []header.TCP {
	t.Helper()
	var segs []header.TCP
	for _, p := range pkts {
		switch header.IPVersion(p.data) {
		case header.IPv4Version:
			ip := header.IPv4(p.data)
			if !ip.IsValid(len(p.data)) {
				t.Fatalf("invalid IPv4 packet on the wire: % x", p.data)
			}
			if ip.TransportProtocol() == header.TCPProtocolNumber {
				segs = append(segs, header.TCP(ip.Payload()))
			}
		case header.IPv6Version:
			ip := header.IPv6(p.data)
			if !ip.IsValid(len(p.data)) {
				t.Fatalf("invalid IPv6 packet on the wire: % x", p.data)
			}
			if tcpip.TransportProtocolNumber(ip.NextHeader()) == header.TCPProtocolNumber { // no extension headers here
				segs = append(segs, header.TCP(ip.Payload()))
			}
		default:
			t.Fatalf("packet of IP version %d on the wire", header.IPVersion(p.data))
		}
	}
	return segs
}

func TestTCPHandshakeAndDataBothWays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server netip.Addr
		batch  int
		mtu    int
	}{
		{"IPv4", v4B.Addr(), 1, 1500},
		{"IPv6", v6B.Addr(), 1, 1500},
		{"IPv4 batched small MTU", v4B.Addr(), 64, 576},
		{"IPv6 batched MTU 1280", v6B.Addr(), 64, 1280},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, w := newStackPair(t, tc.batch, tc.mtu)
			ln, err := b.Listen(netip.AddrPortFrom(tc.server, 5000))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()

			const size = 1 << 20
			up := randomBytes(1, size)
			down := randomBytes(2, size)
			errc := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					errc <- err
					return
				}
				defer c.Close()
				got := make([]byte, size)
				if _, err := io.ReadFull(c, got); err != nil {
					errc <- err
					return
				}
				if !bytes.Equal(got, up) {
					errc <- errors.New("server received corrupted data")
					return
				}
				_, err = c.Write(down)
				errc <- err
			}()

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(tc.server, 5000).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write(up); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, size)
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, down) {
				t.Fatal("client received corrupted data")
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}

			pkts := w.snapshot()
			segs := tcpSegments(t, pkts)
			if len(segs) < 3 {
				t.Fatalf("only %d TCP segments on the wire", len(segs))
			}
			// The 3-way handshake (RFC 9293 §3.5): SYN, SYN-ACK, ACK.
			want := []header.TCPFlags{header.TCPFlagSyn, header.TCPFlagSyn | header.TCPFlagAck, header.TCPFlagAck}
			for i, f := range want {
				if got := segs[i].Flags(); got&^header.TCPFlagPsh != f {
					t.Errorf("segment %d has flags %s, want %s", i, got, f)
				}
			}
			if segs[2].AckNumber() != segs[1].SequenceNumber()+1 || segs[1].AckNumber() != segs[0].SequenceNumber()+1 {
				t.Errorf("handshake does not acknowledge the SYNs: %d/%d, %d/%d",
					segs[1].AckNumber(), segs[0].SequenceNumber(), segs[2].AckNumber(), segs[1].SequenceNumber())
			}
			var sack bool
			opts := header.ParseSynOptions(segs[0].Options(), false)
			sack = opts.SACKPermitted
			if !sack {
				t.Error("SYN does not offer SACK")
			}
			// No window scaling, or a shift of 0 (see Stack.configure: a scaled netstack
			// window can shrink, and then deadlock against Linux).
			for i, seg := range segs[:2] {
				if ws := header.ParseSynOptions(seg.Options(), i == 1).WS; ws > 0 {
					t.Errorf("segment %d offers window scale %d", i, ws)
				}
			}
			// The MTU is respected, and used: bulk data fills it.
			largest := 0
			for _, p := range pkts {
				if len(p.data) > tc.mtu {
					t.Fatalf("a %d-byte packet crossed a link of MTU %d", len(p.data), tc.mtu)
				}
				largest = max(largest, len(p.data))
			}
			if largest < tc.mtu-64 {
				t.Errorf("largest packet is %d bytes on a link of MTU %d", largest, tc.mtu)
			}
		})
	}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// oneStack is a stack whose wire the test drives by hand through peer.
func oneStack(t *testing.T, batch int) (*Stack, *pipeDevice) {
	t.Helper()
	dev, peer := newPipe(batch, 1500)
	s, err := New(dev, Config{Addrs: []netip.Prefix{v4B, v6B}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		peer.Close()
	})
	return s, peer
}

func readPacket(t *testing.T, peer *pipeDevice) []byte {
	t.Helper()
	select {
	case p := <-peer.in:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no packet from the stack within 5s")
		return nil
	}
}

func echoRequest4(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.ICMPv4MinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	icmp := header.ICMPv4(ip.Payload())
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	copy(icmp.Payload(), payload)
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return b
}

func echoRequest6(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	b := make([]byte, header.IPv6MinimumSize+header.ICMPv6EchoMinimumSize+len(payload))
	ip := header.IPv6(b)
	ip.Encode(&header.IPv6Fields{
		PayloadLength: uint16(len(b) - header.IPv6MinimumSize), TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit: 64, SrcAddr: tcpip.AddrFrom16(src.As16()), DstAddr: tcpip.AddrFrom16(dst.As16()),
	})
	icmp := header.ICMPv6(ip.Payload())
	icmp.SetType(header.ICMPv6EchoRequest)
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	copy(icmp.MessageBody()[4:], payload)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header: icmp, Src: ip.SourceAddress(), Dst: ip.DestinationAddress(),
	}))
	return b
}

func TestICMPEcho(t *testing.T) {
	payload := []byte("ustack ping payload")
	t.Run("IPv4", func(t *testing.T) {
		_, peer := oneStack(t, 1)
		peer.Write([][]byte{echoRequest4(v4A.Addr(), v4B.Addr(), 7, 3, payload)}, 0)
		reply := header.IPv4(readPacket(t, peer))
		if !reply.IsValid(len(reply)) || reply.TransportProtocol() != header.ICMPv4ProtocolNumber {
			t.Fatalf("not an ICMPv4 packet: % x", []byte(reply))
		}
		if reply.SourceAddress() != tcpip.AddrFrom4(v4B.Addr().As4()) || reply.DestinationAddress() != tcpip.AddrFrom4(v4A.Addr().As4()) {
			t.Errorf("reply %s -> %s, want %s -> %s", reply.SourceAddress(), reply.DestinationAddress(), v4B.Addr(), v4A.Addr())
		}
		if !reply.IsChecksumValid() {
			t.Error("bad IPv4 header checksum")
		}
		icmp := header.ICMPv4(reply.Payload())
		if icmp.Type() != header.ICMPv4EchoReply || icmp.Ident() != 7 || icmp.Sequence() != 3 || !bytes.Equal(icmp.Payload(), payload) {
			t.Errorf("reply type %d id %d seq %d payload %q", icmp.Type(), icmp.Ident(), icmp.Sequence(), icmp.Payload())
		}
		if checksum.Checksum(icmp, 0) != 0xffff {
			t.Error("bad ICMPv4 checksum")
		}
	})
	t.Run("IPv6", func(t *testing.T) {
		_, peer := oneStack(t, 1)
		peer.Write([][]byte{echoRequest6(v6A.Addr(), v6B.Addr(), 9, 4, payload)}, 0)
		reply := header.IPv6(readPacket(t, peer))
		if !reply.IsValid(len(reply)) || tcpip.TransportProtocolNumber(reply.NextHeader()) != header.ICMPv6ProtocolNumber {
			t.Fatalf("not an ICMPv6 packet: % x", []byte(reply))
		}
		if reply.SourceAddress() != tcpip.AddrFrom16(v6B.Addr().As16()) {
			t.Errorf("reply from %s, want %s", reply.SourceAddress(), v6B.Addr())
		}
		icmp := header.ICMPv6(reply.Payload())
		if icmp.Type() != header.ICMPv6EchoReply || icmp.Ident() != 9 || icmp.Sequence() != 4 || !bytes.Equal(icmp.MessageBody()[4:], payload) {
			t.Errorf("reply type %d id %d seq %d", icmp.Type(), icmp.Ident(), icmp.Sequence())
		}
		want := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: reply.SourceAddress(), Dst: reply.DestinationAddress()})
		if icmp.Checksum() != want {
			t.Errorf("ICMPv6 checksum %#x, want %#x", icmp.Checksum(), want)
		}
	})
}

// TestGarbageIsDroppedAndCounted feeds the endpoint what a hostile or broken
// peer could send: it must neither crash nor stop answering.
func TestGarbageIsDroppedAndCounted(t *testing.T) {
	s, peer := oneStack(t, 8)
	good := echoRequest4(v4A.Addr(), v4B.Addr(), 1, 1, []byte("x"))
	truncated := good[:10]
	badSum := append([]byte(nil), good...)
	badSum[10] ^= 0xff
	garbage := [][]byte{
		{},                 // empty
		{0x50, 0, 0, 0},    // IP version 5
		{0xf0},             // version 15, one byte
		truncated,          // IPv4 header cut short
		badSum,             // IPv4 header checksum wrong
		{0x60, 0, 0, 0, 0}, // IPv6 header cut short
		bytes.Repeat([]byte{0x45}, 1500),
	}
	peer.Write(garbage, 0)
	peer.Write([][]byte{good}, 0)
	reply := header.IPv4(readPacket(t, peer))
	if header.ICMPv4(reply.Payload()).Type() != header.ICMPv4EchoReply {
		t.Fatalf("after garbage, the stack answered % x", []byte(reply))
	}
	// The link adds its counters once a batch, after delivering it: the
	// reply can come first.
	dropped := s.Link().Stats().RxDropped.Load
	for deadline := time.Now().Add(2 * time.Second); dropped() < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if got := dropped(); got != 3 {
		t.Errorf("link dropped %d packets as not IP, want 3 (empty, version 5, version 15)", got)
	}
	if got := s.Netstack().Stats().IP.MalformedPacketsReceived.Value(); got < 3 {
		t.Errorf("netstack counted %d malformed packets, want at least 3", got)
	}
	select {
	case <-peer.in:
		t.Error("the stack answered garbage")
	default:
	}
}

func TestListenerCloseUnblocksAcceptWithErrClosed(t *testing.T) {
	s, _ := oneStack(t, 1)
	ln, err := s.Listen(netip.AddrPortFrom(v4B.Addr(), 5000))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	// Give Accept time to block, so that Close has a blocked Accept to wake
	// (if it has not blocked yet, Accept must still see ErrClosed).
	time.Sleep(20 * time.Millisecond)
	ln.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
	if err := ln.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener: %v, want net.ErrClosed", err)
	}
}

// TestCloseWithOpenConnections tears a stack down under active connections:
// Close returns, the peer sees its connections end, and no goroutine is left
// (goleak checks at the end of the package).
func TestCloseWithOpenConnections(t *testing.T) {
	a, b, _ := newStackPair(t, 16, 1500)
	ln, err := b.Listen(netip.AddrPortFrom(v4B.Addr(), 5000))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 4 {
		c, err := a.DialContext(context.Background(), "tcp4", "198.18.0.2:5000")
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for range 4 {
		<-accepted
	}
	done := make(chan struct{})
	go func() {
		b.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s")
	}
	if _, ok := <-accepted; ok {
		t.Error("Accept returned a connection after Close")
	}
	// The stack reset its connections on the way down: each client sees its
	// connection end instead of waiting forever.
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var ne net.Error
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("client read after server stack closed: %v, want a reset or EOF", err)
		}
		c.Close()
	}
	if err := b.Err(); err != nil {
		t.Errorf("Err after a requested Close: %v", err)
	}
}

func TestDeviceGoneStopsTheStack(t *testing.T) {
	dev, _ := newPipe(1, 1500)
	s, err := New(dev, Config{Addrs: []netip.Prefix{v4B}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dev.Close() // as when the interface is deleted under us
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the stack did not notice its device went away")
	}
	if !errors.Is(s.Err(), ErrDeviceGone) {
		t.Errorf("Err = %v, want ErrDeviceGone", s.Err())
	}
}

func TestDialRejectsBadAddresses(t *testing.T) {
	s, _ := oneStack(t, 1)
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "example.com:80"},
		{"tcp", "198.18.0.1"},
		{"tcp", "198.18.0.1:0"},
		{"tcp", "198.18.0.1:70000"},
		{"tcp6", "198.18.0.1:80"},
		{"tcp4", "[fd75:7374:6163:6b::1]:80"},
		{"udp", "198.18.0.1:80"},
	} {
		if _, err := s.DialContext(context.Background(), tc.network, tc.addr); err == nil {
			t.Errorf("Dial(%q, %q) succeeded", tc.network, tc.addr)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{MTU: 1500},
		{Addrs: []netip.Prefix{v4B}, MTU: 10},
		{Addrs: []netip.Prefix{v4B}, MTU: 70000},
		{Addrs: []netip.Prefix{v4B, v4B}, MTU: 1500},
		{Addrs: []netip.Prefix{{}}, MTU: 1500},
		{Addrs: []netip.Prefix{netip.MustParsePrefix("::ffff:198.18.0.2/120")}, MTU: 1500},
	} {
		dev, peer := newPipe(1, 1500)
		done := make(chan error, 1)
		go func() {
			s, err := New(dev, cfg)
			if err == nil {
				s.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("New(%+v) succeeded", cfg)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("New(%+v) hung", cfg)
		}
		select {
		case <-dev.closed:
		default:
			t.Errorf("New(%+v) failed without closing its device", cfg)
		}
		peer.Close()
	}
}
