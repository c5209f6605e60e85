package trace

import (
	"fmt"
	"net/netip"
	"strconv"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// icmpv4 decodes an ICMP message, RFC 792.
func icmpv4(d *Decoded, seg []byte, segLen int, complete bool) {
	if len(seg) < header.ICMPv4MinimumSize {
		d.short(layerTransport, "ICMP", len(seg), segLen, header.ICMPv4MinimumSize)
		return
	}
	m := header.ICMPv4(seg)
	d.hdr = true
	d.ICMPType, d.ICMPCode = uint8(m.Type()), uint8(m.Code())
	d.Checksum = m.Checksum()
	d.keepPayload(seg, header.ICMPv4PayloadOffset, segLen)
	if complete {
		// The checksum covers the whole message (RFC 792, "Checksum").
		if checksum.Checksum(seg[:segLen], 0) == 0xffff {
			d.ChecksumVerdict = ChecksumGood
		} else {
			d.ChecksumVerdict = ChecksumBad
			d.note("bad ICMP checksum")
		}
	}
	rest := seg[header.ICMPv4PayloadOffset:] // the original datagram, in an error
	switch typ := m.Type(); typ {
	case header.ICMPv4Echo, header.ICMPv4EchoReply:
		name := "echo request"
		if typ == header.ICMPv4EchoReply {
			name = "echo reply"
		}
		d.ICMP = fmt.Sprintf("%s id %d seq %d (%d bytes)", name, m.Ident(), m.Sequence(), d.PayloadLen)
	case header.ICMPv4DstUnreachable:
		why := codeName(icmpv4Unreachable[:], uint8(m.Code()))
		if m.Code() == header.ICMPv4FragmentationNeeded {
			why += " mtu " + strconv.Itoa(int(m.MTU())) // RFC 1191 section 4
		}
		d.ICMP = "destination unreachable (" + why + ")" + original(rest)
	case header.ICMPv4TimeExceeded:
		d.ICMP = "time exceeded (" + codeName([]string{"ttl exceeded in transit", "fragment reassembly time exceeded"}, uint8(m.Code())) + ")" + original(rest)
	case header.ICMPv4ParamProblem:
		d.ICMP = "parameter problem (pointer " + strconv.Itoa(int(m.Pointer())) + ")" + original(rest)
	case header.ICMPv4Redirect:
		d.ICMP = "redirect (" + codeName([]string{"network", "host", "tos and network", "tos and host"}, uint8(m.Code())) + ")" + original(rest)
	case header.ICMPv4SrcQuench:
		d.ICMP = "source quench" + original(rest)
	default:
		d.ICMP = typeName(icmpv4Types[:], uint8(typ), uint8(m.Code()))
	}
}

// icmpv4Types names ICMP message types without a decoder of their own.
var icmpv4Types = [...]string{
	header.ICMPv4Timestamp:      "timestamp request",
	header.ICMPv4TimestampReply: "timestamp reply",
	header.ICMPv4InfoRequest:    "information request",
	header.ICMPv4InfoReply:      "information reply",
	9:                           "router advertisement", // RFC 1256
	10:                          "router solicitation",
}

// icmpv4Unreachable names the codes of Destination Unreachable: RFC 792, RFC
// 1122 section 3.2.2.1, RFC 1812 section 5.2.7.1.
var icmpv4Unreachable = [...]string{
	header.ICMPv4NetUnreachable:            "net unreachable",
	header.ICMPv4HostUnreachable:           "host unreachable",
	header.ICMPv4ProtoUnreachable:          "protocol unreachable",
	header.ICMPv4PortUnreachable:           "port unreachable",
	header.ICMPv4FragmentationNeeded:       "fragmentation needed",
	header.ICMPv4SourceRouteFailed:         "source route failed",
	header.ICMPv4DestinationNetworkUnknown: "destination network unknown",
	header.ICMPv4DestinationHostUnknown:    "destination host unknown",
	header.ICMPv4SourceHostIsolated:        "source host isolated",
	header.ICMPv4NetProhibited:             "network administratively prohibited",
	header.ICMPv4HostProhibited:            "host administratively prohibited",
	header.ICMPv4NetUnreachableForTos:      "network unreachable for tos",
	header.ICMPv4HostUnreachableForTos:     "host unreachable for tos",
	header.ICMPv4AdminProhibited:           "communication administratively prohibited",
	header.ICMPv4HostPrecedenceViolation:   "host precedence violation",
	header.ICMPv4PrecedenceCutInEffect:     "precedence cutoff in effect",
}

// icmpv6 decodes an ICMPv6 message, RFC 4443, and the neighbor discovery
// (RFC 4861) and multicast listener (RFC 2710, RFC 3810) ones.
func icmpv6(d *Decoded, seg []byte, segLen int, complete bool) {
	if len(seg) < header.ICMPv6MinimumSize {
		d.short(layerTransport, "ICMPv6", len(seg), segLen, header.ICMPv6MinimumSize)
		return
	}
	m := header.ICMPv6(seg)
	d.hdr = true
	d.ICMPType, d.ICMPCode = uint8(m.Type()), uint8(m.Code())
	d.Checksum = m.Checksum()
	d.keepPayload(seg, header.ICMPv6PayloadOffset, segLen)
	if complete {
		// Unlike ICMP's, the checksum covers a pseudo-header too (RFC 4443
		// section 2.3).
		xsum := header.PseudoHeaderChecksum(header.ICMPv6ProtocolNumber, tcpipAddr(d.Src), tcpipAddr(d.Dst), uint16(segLen))
		if checksum.Checksum(seg[:segLen], xsum) == 0xffff {
			d.ChecksumVerdict = ChecksumGood
		} else {
			d.ChecksumVerdict = ChecksumBad
			d.note("bad ICMPv6 checksum")
		}
	}
	rest := seg[header.ICMPv6PayloadOffset:]
	code := uint8(m.Code())
	switch typ := m.Type(); typ {
	case header.ICMPv6EchoRequest, header.ICMPv6EchoReply:
		name := "echo request"
		if typ == header.ICMPv6EchoReply {
			name = "echo reply"
		}
		d.ICMP = fmt.Sprintf("%s id %d seq %d (%d bytes)", name, m.Ident(), m.Sequence(), d.PayloadLen)
	case header.ICMPv6DstUnreachable:
		d.ICMP = "destination unreachable (" + codeName(icmpv6Unreachable[:], code) + ")" + original(rest)
	case header.ICMPv6PacketTooBig:
		d.ICMP = "packet too big mtu " + strconv.FormatUint(uint64(m.MTU()), 10) + original(rest)
	case header.ICMPv6TimeExceeded:
		d.ICMP = "time exceeded (" + codeName([]string{"hop limit exceeded in transit", "fragment reassembly time exceeded"}, code) + ")" + original(rest)
	case header.ICMPv6ParamProblem:
		d.ICMP = "parameter problem (" + codeName([]string{"erroneous header field", "unrecognized next header", "unrecognized option"}, code) +
			", pointer " + strconv.FormatUint(uint64(m.TypeSpecific()), 10) + ")" + original(rest)
	case header.ICMPv6NeighborSolicit:
		d.ICMP = "neighbor solicitation"
		if body := m.MessageBody(); len(body) >= header.NDPNSMinimumSize {
			d.ICMP += " who has " + netAddr(header.NDPNeighborSolicit(body).TargetAddress()).String()
		}
	case header.ICMPv6NeighborAdvert:
		d.ICMP = "neighbor advertisement"
		if body := m.MessageBody(); len(body) >= header.NDPNAMinimumSize {
			na := header.NDPNeighborAdvert(body)
			d.ICMP += " " + netAddr(na.TargetAddress()).String()
			sep := " ("
			for _, f := range [...]struct {
				set  bool
				name string
			}{{na.RouterFlag(), "router"}, {na.SolicitedFlag(), "solicited"}, {na.OverrideFlag(), "override"}} {
				if f.set {
					d.ICMP += sep + f.name
					sep = ", "
				}
			}
			if sep == ", " {
				d.ICMP += ")"
			}
		}
	default:
		d.ICMP = typeName(icmpv6Types[:], uint8(typ), code)
	}
}

// icmpv6Types names ICMPv6 message types without a decoder of their own.
var icmpv6Types = [...]string{
	header.ICMPv6RouterSolicit:             "router solicitation",
	header.ICMPv6RouterAdvert:              "router advertisement",
	header.ICMPv6RedirectMsg:               "redirect",
	header.ICMPv6MulticastListenerQuery:    "multicast listener query",
	header.ICMPv6MulticastListenerReport:   "multicast listener report",
	header.ICMPv6MulticastListenerDone:     "multicast listener done",
	header.ICMPv6MulticastListenerV2Report: "multicast listener report v2",
}

// icmpv6Unreachable names the codes of Destination Unreachable, RFC 4443
// section 3.1.
var icmpv6Unreachable = [...]string{
	header.ICMPv6NetworkUnreachable: "no route to destination",
	header.ICMPv6Prohibited:         "administratively prohibited",
	header.ICMPv6BeyondScope:        "beyond scope of source address",
	header.ICMPv6AddressUnreachable: "address unreachable",
	header.ICMPv6PortUnreachable:    "port unreachable",
	header.ICMPv6Policy:             "source address failed policy",
	header.ICMPv6RejectRoute:        "reject route to destination",
}

// codeName names code from names, or says its number.
func codeName(names []string, code uint8) string {
	if int(code) < len(names) && names[code] != "" {
		return names[code]
	}
	return "code " + strconv.Itoa(int(code))
}

// typeName names an ICMP type from names, or gives type and code.
func typeName(names []string, typ, code uint8) string {
	if int(typ) < len(names) && names[typ] != "" {
		if code == 0 {
			return names[typ]
		}
		return names[typ] + " code " + strconv.Itoa(int(code))
	}
	return "type " + strconv.Itoa(int(typ)) + " code " + strconv.Itoa(int(code))
}

// netAddr converts a gVisor address.
func netAddr(a tcpip.Address) netip.Addr {
	if a.Len() == header.IPv4AddressSize {
		return netip.AddrFrom4(a.As4())
	}
	return netip.AddrFrom16(a.As16())
}

// original describes the packet an ICMP error quotes (RFC 792: its IP header
// and at least 8 bytes of its data; RFC 4443 section 2.4: as much as fits),
// " for UDP 198.18.0.2:5000 → 198.18.0.1:53", or "" when too little of it is
// there.
func original(b []byte) string {
	var src, dst netip.Addr
	var proto uint8
	var rest []byte
	switch header.IPVersion(b) {
	case header.IPv4Version:
		if len(b) < header.IPv4MinimumSize {
			return ""
		}
		ip := header.IPv4(b)
		ihl := int(ip.HeaderLength())
		if ihl < header.IPv4MinimumSize || ihl > len(b) {
			return ""
		}
		src = netip.AddrFrom4([4]byte(ip.SourceAddressSlice()))
		dst = netip.AddrFrom4([4]byte(ip.DestinationAddressSlice()))
		proto = ip.Protocol()
		if ip.FragmentOffset() == 0 {
			rest = b[ihl:]
		}
	case header.IPv6Version:
		if len(b) < header.IPv6MinimumSize {
			return ""
		}
		ip := header.IPv6(b)
		src = netip.AddrFrom16([16]byte(ip.SourceAddressSlice()))
		dst = netip.AddrFrom16([16]byte(ip.DestinationAddressSlice()))
		// The quote is cut short by design: walk what is there.
		w := walkIPv6(b, ip.NextHeader(), len(b))
		proto = w.proto
		if w.problem == "" && w.fragOff == 0 {
			rest = b[w.off:]
		}
	default:
		return ""
	}
	switch tcpip.TransportProtocolNumber(proto) {
	case header.TCPProtocolNumber, header.UDPProtocolNumber:
		if len(rest) >= 4 {
			// Both headers start with the ports: read them as UDP's.
			u := header.UDP(rest)
			sp, dp := u.SourcePort(), u.DestinationPort()
			return " for " + protoName(proto) + " " + netip.AddrPortFrom(src, sp).String() + " → " + netip.AddrPortFrom(dst, dp).String()
		}
	}
	return " for " + protoName(proto) + " " + src.String() + " → " + dst.String()
}
