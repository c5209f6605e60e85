package trace

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/ustack/ustack/stack/tap"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// seedPackets are valid packets of every kind the tests build.
func seedPackets() [][]byte {
	var seeds [][]byte
	for _, steps := range [][]step{
		passiveOpen(newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512))),
		activeOpen(newConv(netip.AddrPortFrom(stack6, 5000), netip.AddrPortFrom(peer6, 43512))),
	} {
		for _, s := range steps {
			seeds = append(seeds, s.p.Data)
		}
	}
	sack := make([]byte, 12)
	header.EncodeNOP(sack)
	header.EncodeNOP(sack[1:])
	header.EncodeSACKBlocks([]header.SACKBlock{{Start: 21, End: 31}}, sack[2:])
	udp := udpPacket(netip.AddrPortFrom(peer4, 5353), netip.AddrPortFrom(stack4, 5000), "hello\n")
	udp6 := udpPacket(netip.AddrPortFrom(peer6, 5353), netip.AddrPortFrom(stack6, 5000), "hello\n")
	frag := make([]byte, header.IPv6MinimumSize+header.IPv6FragmentHeaderSize+16)
	header.IPv6(frag).Encode(&header.IPv6Fields{
		PayloadLength: uint16(len(frag) - header.IPv6MinimumSize), TransportProtocol: header.UDPProtocolNumber, HopLimit: 64,
		SrcAddr: addr(peer6), DstAddr: addr(stack6),
		ExtensionHeaders: header.IPv6ExtHdrSerializer{&header.IPv6SerializableFragmentExtHdr{M: true, Identification: 7}},
	})
	return append(seeds,
		tcpPacket(netip.AddrPortFrom(peer4, 1), netip.AddrPortFrom(stack4, 2), ack, 1, 11, 502, sack, ""),
		udp, udp6, frag,
		echo(peer4, stack4, false, 7, 1, "ping"),
		echo(peer6, stack6, true, 7, 1, "ping"),
		icmpv4Packet(stack4, peer4, header.ICMPv4DstUnreachable, header.ICMPv4PortUnreachable, [4]byte{}, udp[:28]),
		icmpv6Packet(stack6, peer6, header.ICMPv6PacketTooBig, 0, append([]byte{0, 0, 5, 0}, udp6[:48]...)),
		icmpv6Packet(stack6, peer6, header.ICMPv6NeighborAdvert, 0, append([]byte{0xe0, 0, 0, 0}, stack6.AsSlice()...)),
	)
}

// FuzzLine feeds arbitrary bytes to the tracer as a packet from each side,
// whole and cut by the capture, and checks that it never panics and that:
//   - a line starts with the direction's arrow (after the time, verbose) and,
//     not verbose, is one line;
//   - verbose, every further line is indented;
//   - Decode's String is Line's line: both update the same state the same way.
func FuzzLine(f *testing.F) {
	for _, s := range seedPackets() {
		f.Add(s, uint8(0))
	}
	f.Add([]byte{}, uint8(3))
	f.Add([]byte{0x45}, uint8(0))
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 0, 64}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, extra uint8) {
		packets := []tap.Packet{
			{Dir: tap.In, Data: data, Len: len(data)},
			{Dir: tap.Out, Data: data, Len: len(data) + int(extra)},
			{Dir: tap.Dir(extra), Data: data, Len: len(data) - int(extra)}, // a Len that lies
			{Dir: tap.In, Data: data, Len: len(data)},
		}
		plain, verbose, decoder, ladder := New(Options{}), New(Options{Verbose: true}), New(Options{}), New(Options{})
		for _, p := range packets {
			// The ladder draws one line whose arrow sits between the two
			// lifelines, whatever the packet.
			if _, l, _ := ladder.LadderLine(p); strings.Count(l, "│") != 2 || strings.Contains(l, "\n") {
				t.Fatalf("ladder line %q: not one arrow between two lifelines", l)
			}
			arrow := prefixIn
			if p.Dir == tap.Out {
				arrow = prefixOut
			}
			line, ok := plain.Line(p)
			if !ok {
				t.Fatal("filtered out without a filter")
			}
			if !strings.HasPrefix(line, arrow) || strings.Contains(line, "\n") {
				t.Fatalf("line %q: not one line starting with %q", line, arrow)
			}
			if s := decoder.Decode(p).String(); s != line {
				t.Fatalf("Decode.String differs from Line:\n%s\n%s", s, line)
			}
			long, _ := verbose.Line(p)
			first, rest, _ := strings.Cut(long, "\n")
			if !strings.HasPrefix(first, "+") || !strings.Contains(first, arrow) {
				t.Fatalf("verbose line %q", first)
			}
			for _, l := range strings.Split(rest, "\n") {
				if rest != "" && !strings.HasPrefix(l, "    ") {
					t.Fatalf("verbose detail %q is not indented", l)
				}
			}
		}
	})
}

// FuzzFilter parses arbitrary expressions and matches arbitrary packets:
// neither may panic, errors say whose they are, and "not (e)" parses whenever
// e does and matches exactly the packets e does not.
func FuzzFilter(f *testing.F) {
	for _, e := range []string{"tcp", "port 5000 and not host 198.18.0.1", "(udp || icmp) && ip6", "src net fd75::/64", "!", "(("} {
		f.Add(e, []byte{})
	}
	for _, s := range seedPackets()[:4] {
		f.Add("tcp port 5000", s)
	}
	f.Fuzz(func(t *testing.T, expr string, data []byte) {
		flt, err := ParseFilter(expr)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "trace filter ") {
				t.Fatalf("error %q does not say whose", err)
			}
			return
		}
		neg, err := ParseFilter("not (" + expr + ")")
		if err != nil {
			t.Fatalf("%q parses, but its negation does not: %v", expr, err)
		}
		if flt.Match(data) == neg.Match(data) {
			t.Fatalf("%q and its negation agree on % x", expr, data)
		}
	})
}

// FuzzConversation drives the connection tracker with valid segments whose
// fields the fuzzer picks, 6 bytes a segment: direction and flags, sequence
// and acknowledgment steps, window, payload length. Random bytes rarely carry
// a right checksum, so FuzzLine alone seldom reaches the tracker. It checks
// that the tracker never panics, that every state is one of RFC 9293's, and
// that the lines stay one line each.
func FuzzConversation(f *testing.F) {
	f.Add([]byte{0x02, 0, 0, 0, 200, 0, 0x92, 0, 1, 255, 0, 0x10, 1, 1, 2, 6})
	f.Add([]byte{0x82, 0, 0, 0, 200, 0, 0x12, 0, 1, 255, 0, 0x90, 1, 1, 2, 6, 0x11, 0, 0, 1, 0, 0x91, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, script []byte) {
		c := newConv(netip.AddrPortFrom(stack4, 5000), netip.AddrPortFrom(peer4, 43512))
		tr := New(Options{})
		valid := map[string]bool{}
		for _, n := range stateNames {
			valid[n] = true
		}
		// Long scripts add nothing but time, and make minimizing slow.
		script = script[:min(len(script), 6*64)]
		var seq, ackn [2]uint32 // per direction: 0 in, 1 out
		seq[1] = 1 << 31
		for ; len(script) >= 6; script = script[6:] {
			out := script[0]&0x80 != 0
			flags := header.TCPFlags(script[0] &^ 0x80)
			i := 0
			if out {
				i = 1
			}
			seq[i] += uint32(script[1]) - 8
			ackn[i] += uint32(script[2]) - 8
			payload := strings.Repeat("x", int(script[5]%64))
			var p tap.Packet
			if out {
				p = c.out(flags, seq[i], ackn[i], uint16(script[3])<<8|uint16(script[4]), nil, payload)
			} else {
				p = c.in(flags, seq[i], ackn[i], uint16(script[3])<<8|uint16(script[4]), nil, payload)
			}
			d := tr.Decode(p)
			if !valid[d.State] {
				t.Fatalf("state %q", d.State)
			}
			if s := d.String(); strings.Contains(s, "\n") || strings.Contains(s, "malformed") {
				t.Fatalf("line %q", s)
			}
		}
	})
}
