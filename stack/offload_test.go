package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ustack/ustack/stack/fault"
)

// framePipe is a FrameDevice on an in-memory wire of frames (virtio header
// and packet): its writes are read by its peer. Between two stacks on the
// fast path, a superpacket one writes reaches the other whole, with its
// partial checksum, as the kernel hands over its own.
type framePipe struct{ *wireEnd }

var _ FrameDevice = (*framePipe)(nil)

func newFramePipe() (a, b *framePipe) {
	wa, wb := newWire()
	return &framePipe{wa}, &framePipe{wb}
}

func (p *framePipe) ReadFrame(hdr, pkt []byte) (int, error) {
	f, err := p.receive()
	if err != nil {
		return 0, err
	}
	copy(hdr, f[:VirtioNetHdrLen])
	return copy(pkt, f[VirtioNetHdrLen:]), nil
}

func (p *framePipe) WriteFrame(bufs [][]byte) (int, error) {
	var f []byte
	for _, b := range bufs {
		f = append(f, b...)
	}
	if err := p.send(f); err != nil {
		return 0, err
	}
	return len(f), nil
}

// closer is the tun.Device a fast-path stack owns in these tests: a pipe
// nobody writes to, closed with the stack, which also closes the frames.
func closer(t *testing.T, f *framePipe) *pipeDevice {
	d, _ := newPipe(1, 1500)
	t.Cleanup(func() { f.Close() })
	return d
}

// offloadPair builds two stacks on the fast path joined by a frame wire: A
// (the host side's addresses) and B, with the given MTU; bCfg's faults, if
// any, apply to B.
func offloadPair(t *testing.T, mtu int, faults fault.Config) (a, b *Stack, fa, fb *framePipe) {
	t.Helper()
	fa, fb = newFramePipe()
	a, err := New(closer(t, fa), Config{Addrs: []netip.Prefix{v4A, v6A}, MTU: mtu, Frames: fa})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err = New(closer(t, fb), Config{Addrs: []netip.Prefix{v4B, v6B}, MTU: mtu, Frames: fb, Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b, fa, fb
}

// echoThrough sends size random bytes from a to an echo server on b and
// checks that the same bytes come back, by SHA-256.
func echoThrough(t *testing.T, a, b *Stack, server netip.Addr, size int, limit time.Duration) {
	t.Helper()
	serveEcho(t, b, netip.AddrPortFrom(server, 7))
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", netip.AddrPortFrom(server, 7).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	in := make([]byte, size)
	rand.NewChaCha8([32]byte{byte(size), byte(size >> 8), byte(size >> 16)}).Read(in)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(in)
		errc <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(in) {
		t.Fatal("the echoed bytes differ from those sent")
	}
}

// TestOffloadTransfer moves data both ways between two fast-path stacks:
// netstack's TCP sends superpackets (host GSO) that the other side takes
// whole, with partial checksums it trusts, and everything arrives intact.
func TestOffloadTransfer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server netip.Addr
		mtu    int
	}{
		{"IPv4 MTU 1500", v4B.Addr(), 1500},
		{"IPv6 MTU 1500", v6B.Addr(), 1500},
		{"IPv4 MTU 65535", v4B.Addr(), 65535},
		{"IPv6 MTU 9000", v6B.Addr(), 9000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, fa, _ := offloadPair(t, tc.mtu, fault.Config{})
			var mu sync.Mutex
			var bad []string
			fa.setOnSend(func(f []byte) {
				why := sentFrameProblem(f)
				if why != "" {
					mu.Lock()
					bad = append(bad, why)
					mu.Unlock()
				}
			})
			echoThrough(t, a, b, tc.server, 4<<20, 30*time.Second)
			mu.Lock()
			if len(bad) > 0 {
				t.Errorf("A wrote %d frames its peer cannot parse, the first: %s", len(bad), bad[0])
			}
			mu.Unlock()
			for name, st := range map[string]*EndpointStats{"A": a.Link().Stats(), "B": b.Link().Stats()} {
				// At MTU 65535 a segment of one MSS is as large
				// as a superpacket may be: nothing to cut.
				if tc.mtu < maxFramePacket/2 {
					if st.TxSuperpackets.Load() == 0 || st.RxSuperpackets.Load() == 0 {
						t.Errorf("%s: %d superpackets out, %d in: host GSO is not in use", name, st.TxSuperpackets.Load(), st.RxSuperpackets.Load())
					}
					if st.RxSegments.Load() <= st.RxPackets.Load() {
						t.Errorf("%s: %d segments in %d packets", name, st.RxSegments.Load(), st.RxPackets.Load())
					}
				}
				if n := st.RxBadFrames.Load(); n != 0 {
					t.Errorf("%s dropped %d frames as malformed", name, n)
				}
			}
			for name, s := range map[string]*Stack{"A": a, "B": b} {
				if n := s.Netstack().Stats().TCP.ChecksumErrors.Value(); n != 0 {
					t.Errorf("%s: %d TCP checksum errors: a partial checksum was verified", name, n)
				}
			}
		})
	}
}

// sentFrameProblem checks a frame the endpoint wrote as the kernel would read
// it: parseable, a GSO header only on a packet longer than one segment, and
// hdr_len the IP and TCP headers' length (the kernel copies that much into
// every segment it cuts).
func sentFrameProblem(f []byte) string {
	fr, why := parseFrame(f[:VirtioNetHdrLen], f[VirtioNetHdrLen:])
	if why != "" {
		return why
	}
	var h virtioNetHdr
	h.decode(f[:VirtioNetHdrLen])
	if h.gsoType == virtioGSONone {
		return ""
	}
	switch {
	case len(fr.pkt)-fr.hdrLen <= fr.mss:
		return fmt.Sprintf("a GSO header on %d bytes of payload, MSS %d", len(fr.pkt)-fr.hdrLen, fr.mss)
	case int(h.hdrLen) != fr.hdrLen:
		return fmt.Sprintf("hdr_len %d, headers %d bytes", h.hdrLen, fr.hdrLen)
	}
	return ""
}

// TestOffloadFaultsPerSegment: with faults on B both ways, superpackets are
// cut into wire-sized segments with full checksums before the injector sees
// them; B's corrupted inbound segments are caught by netstack's checksum
// check (no trust for them), and the data still arrives intact.
func TestOffloadFaultsPerSegment(t *testing.T) {
	cfg := fault.Config{Corrupt: 0.02, Loss: 0.01, Dir: fault.Both, Seed: 7}
	a, b, _, fb := offloadPair(t, 1500, cfg)
	var mu sync.Mutex
	var big, gso, badSum int
	fb.setOnSend(func(f []byte) {
		var h virtioNetHdr
		h.decode(f)
		pkt := f[VirtioNetHdrLen:]
		mu.Lock()
		defer mu.Unlock()
		if h.gsoType != virtioGSONone || h.flags != 0 {
			gso++
		}
		if len(pkt) > 1500 {
			big++
		}
		if !fullChecksumsValid(pkt) {
			badSum++
		}
	})
	echoThrough(t, a, b, v4B.Addr(), 2<<20, 60*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if gso != 0 || big != 0 {
		t.Errorf("with outbound faults, B wrote %d frames with a GSO or checksum header and %d larger than the MTU", gso, big)
	}
	st := b.Link().Faults().Stats()
	if st.Out.Corrupted == 0 || st.In.Corrupted == 0 {
		t.Fatalf("nothing corrupted: %+v", st)
	}
	if badSum == 0 || uint64(badSum) > st.Out.Corrupted {
		t.Errorf("%d frames from B with a bad checksum; the injector corrupted %d: the others must be whole", badSum, st.Out.Corrupted)
	}
	if n := b.Netstack().Stats().TCP.ChecksumErrors.Value() + b.Netstack().Stats().IP.MalformedPacketsReceived.Value(); n == 0 {
		t.Errorf("B's netstack caught none of the %d segments corrupted on their way in", st.In.Corrupted)
	}
	if n := b.Link().Stats().RxSuperpackets.Load(); n != 0 {
		t.Errorf("B delivered %d superpackets while inbound faults applied", n)
	}
}

// TestOffloadHeldPackets: faults that hold packets back (delay with jitter,
// reordering, duplication), switched on and off while a transfer runs, so
// that held segments released by the injector are delivered between the
// reader's trusted superpackets; a tap subscribed all along. The data must
// arrive intact, and nothing may be counted a checksum error or a bad frame.
func TestOffloadHeldPackets(t *testing.T) {
	held := fault.Config{Delay: 2 * time.Millisecond, Jitter: time.Millisecond, Reorder: 0.02, Duplicate: 0.01, Dir: fault.Both, Seed: 11}
	a, b, _, _ := offloadPair(t, 1500, fault.Config{})
	sub := b.Link().Packets().Subscribe(1<<16, 64)
	defer sub.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		on := false
		for {
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
			on = !on
			cfg := fault.Config{}
			if on {
				cfg = held
			}
			if err := b.Link().SetFaults(cfg); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	echoThrough(t, a, b, v4B.Addr(), 4<<20, 60*time.Second)
	close(stop)
	<-done
	if b.Link().Stats().RxSuperpackets.Load() == 0 {
		t.Error("no superpacket came in between the faults: the test did not mix the two paths")
	}
	for name, s := range map[string]*Stack{"A": a, "B": b} {
		if n := s.Netstack().Stats().TCP.ChecksumErrors.Value(); n != 0 {
			t.Errorf("%s: %d TCP checksum errors", name, n)
		}
		if n := s.Link().Stats().RxBadFrames.Load(); n != 0 {
			t.Errorf("%s: %d bad frames", name, n)
		}
	}
	delayed := 0
	for len(sub.C()) > 0 {
		if p := <-sub.C(); strings.HasPrefix(p.Note, "delayed") {
			delayed++
		}
	}
	if delayed == 0 {
		t.Error("the tap saw no packet held back: the faults never applied")
	}
}

// fullChecksumsValid tells whether an IPv4/TCP packet's IP and TCP checksums
// are whole and right.
func fullChecksumsValid(pkt []byte) bool {
	ip := header.IPv4(pkt)
	if header.IPVersion(pkt) != header.IPv4Version || !ip.IsValid(len(pkt)) || !ip.IsChecksumValid() {
		return false
	}
	if ip.TransportProtocol() != header.TCPProtocolNumber {
		return true
	}
	tcp := header.TCP(ip.Payload())
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	return checksum.Checksum(tcp, xsum) == 0xffff
}

// synFrame is a frame carrying a TCP SYN from 198.18.0.1:srcPort to
// 198.18.0.2:80 with a wrong checksum, and the given virtio flags.
func synFrame(srcPort uint16, flags uint8) []byte {
	f := make([]byte, VirtioNetHdrLen+header.IPv4MinimumSize+header.TCPMinimumSize)
	(&virtioNetHdr{flags: flags}).encode(f)
	pkt := f[VirtioNetHdrLen:]
	src, dst := v4A.Addr().As4(), v4B.Addr().As4()
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src), DstAddr: tcpip.AddrFrom4(dst)})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(pkt[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: srcPort, DstPort: 80, SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	tcp.SetChecksum(0x1234) // wrong
	return f
}

// TestRXChecksumTrustPerPacket pins how the fast path tells netstack which
// checksums to skip (Capabilities, read by netstack's NIC for each packet it
// is handed): a SYN with a wrong checksum is dropped and counted when the
// frame makes no claim, and answered when the kernel marked it DATA_VALID.
// A gVisor that cached the capabilities would fail here.
func TestRXChecksumTrustPerPacket(t *testing.T) {
	a, b := newFramePipe()
	s, err := New(closer(t, b), Config{Addrs: []netip.Prefix{v4B}, MTU: 1500, Frames: b})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ln, err := s.Listen(netip.AddrPortFrom(v4B.Addr(), 80))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	synAck := func() bool {
		select {
		case f := <-a.in:
			tcp := header.TCP(f[VirtioNetHdrLen+header.IPv4MinimumSize:])
			return tcp.Flags() == header.TCPFlagSyn|header.TCPFlagAck
		case <-time.After(500 * time.Millisecond):
			return false
		}
	}
	// checksumErrors waits until netstack counted want checksum errors.
	checksumErrors := func(want uint64, why string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := s.Netstack().Stats().TCP.ChecksumErrors.Value()
			if n == want {
				return
			}
			if n > want || time.Now().After(deadline) {
				t.Fatalf("%d TCP checksum errors, want %d: %s", n, want, why)
			}
			time.Sleep(time.Millisecond)
		}
	}
	a.WriteFrame([][]byte{synFrame(40000, 0)})
	checksumErrors(1, "a wrong checksum with no word from the kernel went unnoticed")
	if synAck() {
		t.Fatal("a SYN with a wrong checksum, and no word from the kernel, was answered")
	}
	a.WriteFrame([][]byte{synFrame(40001, virtioFlagDataValid)})
	if !synAck() {
		t.Fatal("a SYN the kernel marked DATA_VALID was not answered: its checksum was verified")
	}
	a.WriteFrame([][]byte{synFrame(40002, 0)})
	checksumErrors(2, "the trust given to one packet leaked to the next")
}

// tcpSuperpacket returns an IPv4 or IPv6 TCP packet with payload bytes of
// payload and a partial checksum, as the kernel's TSO hands it over.
func tcpSuperpacket(v6 bool, payload int, flags header.TCPFlags) []byte {
	ipLen := header.IPv4MinimumSize
	if v6 {
		ipLen = header.IPv6MinimumSize
	}
	tcpLen := header.TCPMinimumSize + 12 // timestamps
	pkt := make([]byte, ipLen+tcpLen+payload)
	var src, dst tcpip.Address
	if v6 {
		src, dst = tcpip.AddrFrom16(v6A.Addr().As16()), tcpip.AddrFrom16(v6B.Addr().As16())
		header.IPv6(pkt).Encode(&header.IPv6Fields{PayloadLength: uint16(tcpLen + payload), TransportProtocol: header.TCPProtocolNumber, HopLimit: 64, SrcAddr: src, DstAddr: dst})
	} else {
		src, dst = tcpip.AddrFrom4(v4A.Addr().As4()), tcpip.AddrFrom4(v4B.Addr().As4())
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(pkt)), ID: 100, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	tcp := header.TCP(pkt[ipLen:])
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 9, SeqNum: 1000, AckNum: 1, DataOffset: uint8(tcpLen), Flags: flags, WindowSize: 1000})
	for i := range payload {
		pkt[ipLen+tcpLen+i] = byte(i * 7)
	}
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen+payload)))
	return pkt
}

// TestFillTCPChecksum: a superpacket's checksum computed whole is the one
// netstack would verify, for IPv4 and IPv6.
func TestFillTCPChecksum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		pkt := tcpSuperpacket(v6, 5000, header.TCPFlagAck)
		ipLen := header.IPv4MinimumSize
		if v6 {
			ipLen = header.IPv6MinimumSize
		}
		tcp := header.TCP(pkt[ipLen:])
		tcp.SetChecksum(0x1234) // the first segment's, say
		fillTCPChecksum(pkt, ipLen)
		var src, dst tcpip.Address
		if v6 {
			src, dst = header.IPv6(pkt).SourceAddress(), header.IPv6(pkt).DestinationAddress()
		} else {
			src, dst = header.IPv4(pkt).SourceAddress(), header.IPv4(pkt).DestinationAddress()
		}
		payload := tcp.Payload()
		if !tcp.IsChecksumValid(src, dst, checksum.Checksum(payload, 0), uint16(len(payload))) {
			t.Errorf("IPv6 %t: the filled checksum does not verify", v6)
		}
	}
}

func gsoHdr(v6 bool, mss int) []byte {
	h := virtioNetHdr{flags: virtioFlagNeedsCsum, gsoType: virtioGSOTCPv4, gsoSize: uint16(mss), csumStart: header.IPv4MinimumSize, csumOffset: tcpCsumOffset}
	if v6 {
		h.gsoType, h.csumStart = virtioGSOTCPv6, header.IPv6MinimumSize
	}
	b := make([]byte, VirtioNetHdrLen)
	h.encode(b)
	return b
}

// TestSegmenterSplitsAsTSO: a superpacket cut into segments of MSS bytes,
// each with its own sequence number, lengths and full checksums, PSH and FIN
// on the last only, whose payloads put together are the superpacket's.
func TestSegmenterSplitsAsTSO(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		pkt := tcpSuperpacket(v6, 10000, header.TCPFlagAck|header.TCPFlagPsh|header.TCPFlagFin)
		f, why := parseFrame(gsoHdr(v6, 1448), pkt)
		if why != "" {
			t.Fatalf("v6=%v: %s", v6, why)
		}
		if !f.gso || f.segments != 7 || !f.trusted {
			t.Fatalf("v6=%v: parsed %+v", v6, f)
		}
		want := append([]byte(nil), pkt[f.hdrLen:]...)
		var s segmenter
		segs := s.wirePackets(&f)
		if len(segs) != 7 {
			t.Fatalf("v6=%v: %d segments, want 7", v6, len(segs))
		}
		var got []byte
		for i, seg := range segs {
			ipLen := f.hdrLen - 32
			tcp := header.TCP(seg[ipLen:])
			var src, dst tcpip.Address
			if v6 {
				ip := header.IPv6(seg)
				if int(ip.PayloadLength())+header.IPv6MinimumSize != len(seg) {
					t.Fatalf("segment %d: IPv6 payload length %d of %d bytes", i, ip.PayloadLength(), len(seg))
				}
				src, dst = ip.SourceAddress(), ip.DestinationAddress()
			} else {
				ip := header.IPv4(seg)
				if !ip.IsValid(len(seg)) || !ip.IsChecksumValid() || ip.ID() != uint16(100+i) {
					t.Fatalf("segment %d: bad IPv4 header % x", i, seg[:20])
				}
				src, dst = ip.SourceAddress(), ip.DestinationAddress()
			}
			xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
			if checksum.Checksum(tcp, xsum) != 0xffff {
				t.Errorf("segment %d: TCP checksum wrong", i)
			}
			if tcp.SequenceNumber() != uint32(1000+i*1448) {
				t.Errorf("segment %d: seq %d", i, tcp.SequenceNumber())
			}
			last := i == len(segs)-1
			if fin := tcp.Flags()&header.TCPFlagFin != 0; fin != last {
				t.Errorf("segment %d: FIN %v", i, fin)
			}
			if len(tcp.Payload()) > 1448 {
				t.Errorf("segment %d: %d bytes of payload", i, len(tcp.Payload()))
			}
			got = append(got, tcp.Payload()...)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("v6=%v: the segments' payloads differ from the superpacket's", v6)
		}
	}
}

// TestParseFrameRejects: malformed frames are refused with a reason, never
// delivered.
func TestParseFrameRejects(t *testing.T) {
	good := tcpSuperpacket(false, 3000, header.TCPFlagAck)
	with := func(mod func(h *virtioNetHdr, p []byte) []byte) ([]byte, []byte) {
		var h virtioNetHdr
		h.decode(gsoHdr(false, 1448))
		p := mod(&h, append([]byte(nil), good...))
		b := make([]byte, VirtioNetHdrLen)
		h.encode(b)
		return b, p
	}
	fragment := func(p []byte) []byte {
		ip := header.IPv4(p)
		ip.SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		return p
	}
	for _, c := range []struct {
		name, why string
		mod       func(h *virtioNetHdr, p []byte) []byte
	}{
		{"gso_size 0", "GSO size 0", func(h *virtioNetHdr, p []byte) []byte { h.gsoSize = 0; return p }},
		{"gso_size 47", "GSO size 47", func(h *virtioNetHdr, p []byte) []byte { h.gsoSize = 47; return p }},
		{"csum beyond the packet", "checksum place outside the packet", func(h *virtioNetHdr, p []byte) []byte { h.csumOffset = 60000; return p }},
		{"csum inside IP header", "checksum place outside the packet", func(h *virtioNetHdr, p []byte) []byte { h.csumStart = 4; return p }},
		{"GSO TCPv6 on IPv4", "GSO type 4 for an IPv4 packet", func(h *virtioNetHdr, p []byte) []byte { h.gsoType = virtioGSOTCPv6; return p }},
		{"UDP GSO", "GSO type 5 for an IPv4 packet", func(h *virtioNetHdr, p []byte) []byte { h.gsoType = 5; return p }},
		{"GSO without NEEDS_CSUM", "TCP GSO with neither NEEDS_CSUM nor DATA_VALID", func(h *virtioNetHdr, p []byte) []byte { h.flags = 0; return p }},
		{"GSO csum at UDP's", "TCP GSO with a partial checksum elsewhere than TCP's", func(h *virtioNetHdr, p []byte) []byte { h.csumOffset = udpCsumOffset; return p }},
		{"cut short", "IPv4 lengths do not match the frame", func(h *virtioNetHdr, p []byte) []byte { return p[:1000] }},
		{"TCP data offset 60", "TCP header length outside the packet", func(h *virtioNetHdr, p []byte) []byte {
			p = p[:60]
			p[20+12] = 0xf0 // 60 bytes of TCP header in a 40-byte segment
			header.IPv4(p).SetTotalLength(60)
			return p
		}},
		{"not IP", "not IPv4 or IPv6", func(h *virtioNetHdr, p []byte) []byte { p[0] = 0x25; return p }},
		{"empty", "empty packet", func(h *virtioNetHdr, p []byte) []byte { return p[:0] }},
		{"GSO on a fragment", "checksum offload or GSO on an IPv4 fragment", func(h *virtioNetHdr, p []byte) []byte { return fragment(p) }},
		{"NEEDS_CSUM on a fragment", "checksum offload or GSO on an IPv4 fragment", func(h *virtioNetHdr, p []byte) []byte { h.gsoType = virtioGSONone; return fragment(p) }},
	} {
		hdr, pkt := with(c.mod)
		if _, why := parseFrame(hdr, pkt); why != c.why {
			t.Errorf("%s: %q, want %q", c.name, why, c.why)
		}
	}
	// DATA_VALID vouches for one packet, never for a fragment: netstack
	// would carry the trust over to the datagram it reassembles.
	whole := synFrame(1, virtioFlagDataValid)
	if f, why := parseFrame(whole[:VirtioNetHdrLen], whole[VirtioNetHdrLen:]); why != "" || !f.trusted {
		t.Errorf("DATA_VALID on a whole segment: trusted %t, %q", f.trusted, why)
	}
	frag := synFrame(1, virtioFlagDataValid)
	fragment(frag[VirtioNetHdrLen:])
	if f, why := parseFrame(frag[:VirtioNetHdrLen], frag[VirtioNetHdrLen:]); why != "" || f.trusted {
		t.Errorf("DATA_VALID on a fragment: trusted %t, %q", f.trusted, why)
	}
}
