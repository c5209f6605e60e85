package trace

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ustack/ustack/stack/tap"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The addresses of the trace examples: the kernel's side of the TUN (the peer)
// and the userspace stack's.
var (
	peer4  = netip.MustParseAddr("198.18.0.1")
	stack4 = netip.MustParseAddr("198.18.0.2")
	peer6  = netip.MustParseAddr("fd75::1")
	stack6 = netip.MustParseAddr("fd75::2")
)

const (
	fin = header.TCPFlagFin
	syn = header.TCPFlagSyn
	rst = header.TCPFlagRst
	psh = header.TCPFlagPsh
	ack = header.TCPFlagAck
)

func addr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// ipPacket returns an IP packet from src to dst with room for a transport
// segment of l4len bytes, and that room. The IPv4 header has DF set, as
// Linux and netstack send it, and a valid checksum.
func ipPacket(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, l4len int) (pkt, l4 []byte) {
	if src.Is4() {
		b := make([]byte, header.IPv4MinimumSize+l4len)
		ip := header.IPv4(b)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)), ID: 0x1c46, Flags: header.IPv4FlagDontFragment, TTL: 64,
			Protocol: uint8(proto), SrcAddr: addr(src), DstAddr: addr(dst),
		})
		ip.SetChecksum(^ip.CalculateChecksum())
		return b, b[header.IPv4MinimumSize:]
	}
	b := make([]byte, header.IPv6MinimumSize+l4len)
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength: uint16(l4len), TransportProtocol: proto, HopLimit: 64,
		SrcAddr: addr(src), DstAddr: addr(dst),
	})
	return b, b[header.IPv6MinimumSize:]
}

// tcpPacket builds a TCP segment with a valid checksum. opts is padded to a
// multiple of 4 bytes with EOL.
func tcpPacket(src, dst netip.AddrPort, flags header.TCPFlags, seq, ackn uint32, win uint16, opts []byte, payload string) []byte {
	optLen := (len(opts) + 3) &^ 3
	tcpLen := header.TCPMinimumSize + optLen + len(payload)
	b, l4 := ipPacket(src.Addr(), dst.Addr(), header.TCPProtocolNumber, tcpLen)
	h := header.TCP(l4)
	h.Encode(&header.TCPFields{
		SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ackn,
		DataOffset: uint8(header.TCPMinimumSize + optLen), Flags: flags, WindowSize: win,
	})
	copy(h[header.TCPMinimumSize:], opts)
	copy(h[header.TCPMinimumSize+optLen:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, addr(src.Addr()), addr(dst.Addr()), uint16(tcpLen))
	xsum = checksum.Checksum([]byte(payload), xsum)
	h.SetChecksum(^h.CalculateChecksum(xsum))
	return b
}

// udpPacket builds a UDP datagram with a valid checksum.
func udpPacket(src, dst netip.AddrPort, payload string) []byte {
	l := header.UDPMinimumSize + len(payload)
	b, l4 := ipPacket(src.Addr(), dst.Addr(), header.UDPProtocolNumber, l)
	u := header.UDP(l4)
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(l)})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, addr(src.Addr()), addr(dst.Addr()), uint16(l))
	xsum = checksum.Checksum([]byte(payload), xsum)
	u.SetChecksum(^u.CalculateChecksum(xsum))
	return b
}

// echo builds an ICMP or ICMPv6 echo request or reply.
func echo(src, dst netip.Addr, reply bool, id, seq uint16, payload string) []byte {
	if src.Is4() {
		b, l4 := ipPacket(src, dst, header.ICMPv4ProtocolNumber, header.ICMPv4MinimumSize+len(payload))
		m := header.ICMPv4(l4)
		m.SetType(header.ICMPv4Echo)
		if reply {
			m.SetType(header.ICMPv4EchoReply)
		}
		m.SetIdent(id)
		m.SetSequence(seq)
		copy(m.Payload(), payload)
		m.SetChecksum(^checksum.Checksum(m, 0))
		return b
	}
	b, l4 := ipPacket(src, dst, header.ICMPv6ProtocolNumber, header.ICMPv6EchoMinimumSize+len(payload))
	m := header.ICMPv6(l4)
	m.SetType(header.ICMPv6EchoRequest)
	if reply {
		m.SetType(header.ICMPv6EchoReply)
	}
	m.SetIdent(id)
	m.SetSequence(seq)
	copy(m.Payload(), payload)
	m.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m, Src: addr(src), Dst: addr(dst)}))
	return b
}

// icmpv6Packet builds an ICMPv6 message of the given type and code whose body
// (after the 4-byte header) is body.
func icmpv6Packet(src, dst netip.Addr, typ header.ICMPv6Type, code header.ICMPv6Code, body []byte) []byte {
	b, l4 := ipPacket(src, dst, header.ICMPv6ProtocolNumber, header.ICMPv6HeaderSize+len(body))
	m := header.ICMPv6(l4)
	m.SetType(typ)
	m.SetCode(code)
	copy(m.MessageBody(), body)
	m.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: m, Src: addr(src), Dst: addr(dst)}))
	return b
}

// icmpv4Packet builds an ICMP message of the given type and code whose rest
// (after the 8-byte header) is rest, with the 4 bytes of the header's second
// word set to word.
func icmpv4Packet(src, dst netip.Addr, typ header.ICMPv4Type, code header.ICMPv4Code, word [4]byte, rest []byte) []byte {
	b, l4 := ipPacket(src, dst, header.ICMPv4ProtocolNumber, header.ICMPv4MinimumSize+len(rest))
	m := header.ICMPv4(l4)
	m.SetType(typ)
	m.SetCode(code)
	copy(m[4:8], word[:])
	copy(m.Payload(), rest)
	m.SetChecksum(^checksum.Checksum(m, 0))
	return b
}

// linuxSYNOptions are the options of a Linux SYN: MSS, SACK permitted,
// timestamps, NOP, window scale.
func linuxSYNOptions(tsval uint32) []byte {
	b := make([]byte, 20)
	n := header.EncodeMSSOption(1460, b)
	n += header.EncodeSACKPermittedOption(b[n:])
	n += header.EncodeTSOption(tsval, 0, b[n:])
	n += header.EncodeNOP(b[n:])
	header.EncodeWSOption(7, b[n:])
	return b
}

// mssOption is netstack's SYN-ACK option in ustack: MSS alone.
func mssOption(mss uint32) []byte {
	b := make([]byte, 4)
	header.EncodeMSSOption(mss, b)
	return b
}

// conv builds the packets of one TCP connection between the userspace stack
// and its peer, at a clock that advances a millisecond a packet.
type conv struct {
	stack, peer netip.AddrPort
	now         time.Time
}

func newConv(stack, peer netip.AddrPort) *conv {
	return &conv{stack: stack, peer: peer, now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *conv) packet(dir tap.Dir, data []byte) tap.Packet {
	c.now = c.now.Add(time.Millisecond)
	return tap.Packet{Time: c.now, Dir: dir, Data: data, Len: len(data)}
}

// in is a segment from the peer to the stack.
func (c *conv) in(flags header.TCPFlags, seq, ackn uint32, win uint16, opts []byte, payload string) tap.Packet {
	return c.packet(tap.In, tcpPacket(c.peer, c.stack, flags, seq, ackn, win, opts, payload))
}

// out is a segment from the stack to the peer.
func (c *conv) out(flags header.TCPFlags, seq, ackn uint32, win uint16, opts []byte, payload string) tap.Packet {
	return c.packet(tap.Out, tcpPacket(c.stack, c.peer, flags, seq, ackn, win, opts, payload))
}

// step is a packet and the line the tracer must print for it.
type step struct {
	p    tap.Packet
	want string
}

// runSteps feeds the steps to tr in order and compares every line.
func runSteps(t *testing.T, tr *Tracer, steps []step) {
	t.Helper()
	for i, s := range steps {
		got, ok := tr.Line(s.p)
		if !ok {
			t.Fatalf("step %d: filtered out", i)
		}
		if got != s.want {
			t.Errorf("step %d:\n got: %s\nwant: %s", i, got, s.want)
		}
	}
}

// to6 turns a golden line written for IPv4 into its IPv6 form: the addresses,
// hop limit for TTL, and a header 20 bytes longer.
func to6(line string) string {
	line = strings.NewReplacer(
		"IPv4 198.18.0.1 → 198.18.0.2 ttl", "IPv6 fd75::1 → fd75::2 hlim",
		"IPv4 198.18.0.2 → 198.18.0.1 ttl", "IPv6 fd75::2 → fd75::1 hlim",
	).Replace(line)
	return lenRE.ReplaceAllStringFunc(line, func(m string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(m, "hlim 64 len "))
		return "hlim 64 len " + strconv.Itoa(n+header.IPv6MinimumSize-header.IPv4MinimumSize)
	})
}

var lenRE = regexp.MustCompile(`hlim 64 len [0-9]+`)
