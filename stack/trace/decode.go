package trace

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/ustack/ustack/stack/tap"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// payloadKept is how many payload bytes a Decoded keeps: the verbose hex
// dump's; the one-line preview shows the first previewLen of them.
const (
	payloadKept = 64
	previewLen  = 32
)

// decode fills d from p, and for a TCP segment updates the connection state.
func (t *Tracer) decode(p tap.Packet, d *Decoded) {
	d.Dir, d.Time = p.Dir, p.Time
	d.FaultDrop, d.FaultNote = p.Drop, p.Note
	d.Segments, d.SegmentSize = p.Segments, p.SegmentSize
	// A packet fault injection dropped on the way in was sent by the
	// kernel (its resend is a retransmission) but never received by the
	// stack: it changes the stack's state in nothing. One dropped on the
	// way out was sent by the stack, whose state it changed.
	d.lostIn = p.Drop != "" && p.Dir == tap.In
	if !p.Time.IsZero() {
		if t.first.IsZero() {
			t.first = p.Time
		}
		d.Elapsed = p.Time.Sub(t.first)
		t.sweep(p.Time)
	}
	data := p.Data
	// Len is the length on the wire; a packet is never shorter than what was
	// captured of it, whatever a publisher claims.
	wire := max(p.Len, len(data))
	d.Len = wire

	if len(data) == 0 {
		if wire == 0 {
			d.malformed(layerIP, "IP: empty packet")
		} else {
			d.cut(layerIP, fmt.Sprintf("nothing captured of a %d-byte packet", wire))
		}
		return
	}
	// The version is the first nibble of both headers (RFC 791 section 3.1,
	// RFC 8200 section 3): never assume IPv4.
	switch v := header.IPVersion(data); v {
	case header.IPv4Version:
		t.ipv4(d, data, wire)
	case header.IPv6Version:
		t.ipv6(d, data, wire)
	default:
		d.malformed(layerIP, fmt.Sprintf("IP: unknown version %d", v))
	}
}

// malformed records that decoding stopped at l because the packet is wrong.
func (d *Decoded) malformed(l layer, why string) {
	d.Malformed, d.stopped = why, l
}

// cut records that decoding stopped at l because the capture ended early.
func (d *Decoded) cut(l layer, why string) {
	d.Cut, d.stopped = why, l
}

// short records a header of need bytes that does not fit: malformed when the
// packet itself is shorter (onWire bytes), cut when only the capture is.
func (d *Decoded) short(l layer, name string, captured, onWire, need int) {
	if onWire < need {
		d.malformed(l, fmt.Sprintf("%s: truncated (%d of %d header bytes)", name, onWire, need))
		return
	}
	d.cut(l, fmt.Sprintf("%s header not captured (%d of %d bytes)", name, captured, need))
}

// note adds an annotation about the packet itself (a bad checksum).
func (d *Decoded) note(s string) {
	d.Annotations = append(d.Annotations, s)
}

// ipv4 decodes an IPv4 header, RFC 791 section 3.1.
func (t *Tracer) ipv4(d *Decoded, data []byte, wire int) {
	d.Network = "IPv4"
	if len(data) < header.IPv4MinimumSize {
		d.short(layerIP, "IPv4", len(data), wire, header.IPv4MinimumSize)
		return
	}
	ip := header.IPv4(data)
	// IHL counts 32-bit words; fewer than 5 cannot hold the fixed header.
	ihl := int(ip.HeaderLength())
	d.IHL = ihl
	if ihl < header.IPv4MinimumSize {
		d.malformed(layerIP, fmt.Sprintf("IPv4: bad header length %d bytes (IHL %d, at least 5)", ihl, ihl/header.IPv4IHLStride))
		return
	}
	if len(data) < ihl {
		d.short(layerIP, "IPv4", len(data), wire, ihl)
		return
	}
	d.Src = netip.AddrFrom4([4]byte(ip.SourceAddressSlice()))
	d.Dst = netip.AddrFrom4([4]byte(ip.DestinationAddressSlice()))
	d.TTL = ip.TTL()
	d.TOS, _ = ip.TOS()
	d.ID = uint32(ip.ID())
	d.DontFragment = ip.Flags()&header.IPv4FlagDontFragment != 0
	d.MoreFragments = ip.More()
	d.FragOffset = int(ip.FragmentOffset())
	d.Fragment = d.MoreFragments || d.FragOffset > 0
	d.NextHeader = ip.Protocol()
	d.Protocol = d.NextHeader
	d.IPChecksum = ip.Checksum()
	if ip.IsChecksumValid() {
		d.IPChecksumVerdict = ChecksumGood
	} else {
		d.IPChecksumVerdict = ChecksumBad
		d.drop = true
		d.note("bad IPv4 header checksum")
	}
	tlen := int(ip.TotalLength())
	d.IPLen = tlen
	switch {
	case tlen < ihl:
		d.malformed(layerNetwork, fmt.Sprintf("IPv4: total length %d is less than the header length %d", tlen, ihl))
		return
	case tlen != wire:
		// A TUN carries the IP packet alone: no link-layer padding, so
		// any difference is an error.
		d.malformed(layerNetwork, fmt.Sprintf("IPv4: total length %d, but the packet is %d bytes", tlen, wire))
		return
	}
	seg := data[ihl:min(tlen, len(data))]
	if d.FragOffset > 0 {
		// Only the first fragment has the transport header (RFC 791
		// section 2.3): no reassembly here.
		d.Transport = protoName(d.Protocol)
		d.PayloadLen = tlen - ihl
		return
	}
	t.transport(d, seg, tlen-ihl, len(data) >= tlen && !d.Fragment)
}

// ipv6 decodes an IPv6 header and its extension headers, RFC 8200 sections 3
// and 4.
func (t *Tracer) ipv6(d *Decoded, data []byte, wire int) {
	d.Network = "IPv6"
	if len(data) < header.IPv6MinimumSize {
		d.short(layerIP, "IPv6", len(data), wire, header.IPv6MinimumSize)
		return
	}
	ip := header.IPv6(data)
	d.Src = netip.AddrFrom16([16]byte(ip.SourceAddressSlice()))
	d.Dst = netip.AddrFrom16([16]byte(ip.DestinationAddressSlice()))
	d.TTL = ip.HopLimit()
	d.TOS, d.FlowLabel = ip.TOS()
	d.NextHeader = ip.NextHeader()
	plen := int(ip.PayloadLength())
	tlen := header.IPv6MinimumSize + plen
	d.IPLen = tlen
	if tlen != wire {
		d.malformed(layerNetwork, fmt.Sprintf("IPv6: payload length %d, but %d bytes follow the header", plen, wire-header.IPv6MinimumSize))
		return
	}
	avail := min(tlen, len(data))
	w := walkIPv6(data[:avail], d.NextHeader, tlen)
	for _, id := range w.exts[:w.n] {
		d.ExtHeaders = append(d.ExtHeaders, extName(id))
	}
	d.Protocol = w.proto
	if w.frag {
		d.Fragment = true
		d.FragOffset, d.MoreFragments, d.ID = w.fragOff, w.more, w.fragID
	}
	if w.problem != "" {
		if w.cut {
			d.cut(layerNetwork, w.problem)
		} else {
			d.malformed(layerNetwork, w.problem)
		}
		return
	}
	if d.FragOffset > 0 {
		d.Transport = protoName(d.Protocol)
		d.PayloadLen = tlen - w.off
		return
	}
	// The last extension header may end past the capture: the transport
	// header then has nothing captured.
	t.transport(d, data[min(w.off, avail):avail], tlen-w.off, len(data) >= tlen && !d.Fragment)
}

// maxExtHeaders bounds the extension headers walked; real packets have one or
// two.
const maxExtHeaders = 8

// v6walk is the outcome of walking IPv6 extension headers.
type v6walk struct {
	proto   uint8 // the last next header: the transport protocol
	off     int   // where the transport header starts
	exts    [maxExtHeaders]uint8
	n       int
	frag    bool
	fragOff int // bytes
	more    bool
	fragID  uint32
	problem string // why the walk stopped early
	cut     bool   // because the capture ended, not the packet
}

// walkIPv6 follows the chain of extension headers in an IPv6 packet b, whose
// first next header is nh and whose length on the wire is total (b may be
// shorter: the captured part). It stops at the transport header, at a
// fragment other than the first, or at a problem. The lengths follow RFC 8200
// section 4 (units of 8 octets, not counting the first 8) and, for the
// authentication header, RFC 4302 section 2.2 (units of 4 octets, minus 2).
func walkIPv6(b []byte, nh uint8, total int) v6walk {
	w := v6walk{off: header.IPv6MinimumSize}
	for {
		id := header.IPv6ExtensionHeaderIdentifier(nh)
		switch id {
		case header.IPv6HopByHopOptionsExtHdrIdentifier, header.IPv6RoutingExtHdrIdentifier,
			header.IPv6FragmentExtHdrIdentifier, header.IPv6DestinationOptionsExtHdrIdentifier,
			header.IPv6AuthenticationExtHdrIdentifier:
		default:
			// The transport protocol, or No Next Header (59).
			w.proto = nh
			return w
		}
		if w.n == maxExtHeaders {
			w.problem = fmt.Sprintf("IPv6: more than %d extension headers", maxExtHeaders)
			return w
		}
		need := 2 // next header and length
		if id == header.IPv6FragmentExtHdrIdentifier {
			need = header.IPv6FragmentHeaderSize
		}
		switch {
		case w.off+need > total:
			w.problem = fmt.Sprintf("IPv6: %s header truncated (%d of %d bytes)", extName(nh), total-w.off, need)
			return w
		case w.off+need > len(b):
			w.problem, w.cut = fmt.Sprintf("IPv6 %s header not captured (%d of %d bytes)", extName(nh), len(b)-w.off, need), true
			return w
		}
		var hlen int
		switch id {
		case header.IPv6FragmentExtHdrIdentifier:
			f := header.IPv6Fragment(b[w.off : w.off+header.IPv6FragmentHeaderSize])
			hlen = header.IPv6FragmentHeaderSize
			w.frag, w.more, w.fragID = true, f.More(), f.ID()
			w.fragOff = int(f.FragmentOffset()) * 8 // in 8-octet units
		case header.IPv6AuthenticationExtHdrIdentifier:
			hlen = (int(b[w.off+1]) + 2) * 4
		default:
			hlen = (int(b[w.off+1]) + 1) * 8
		}
		if w.off+hlen > total {
			w.problem = fmt.Sprintf("IPv6: %s header of %d bytes overruns the packet", extName(nh), hlen)
			return w
		}
		w.exts[w.n] = nh
		w.n++
		nh = b[w.off]
		w.off += hlen
		if w.frag && w.fragOff > 0 {
			w.proto = nh
			return w
		}
	}
}

// extName names an IPv6 extension header.
func extName(nh uint8) string {
	switch header.IPv6ExtensionHeaderIdentifier(nh) {
	case header.IPv6HopByHopOptionsExtHdrIdentifier:
		return "hop-by-hop"
	case header.IPv6RoutingExtHdrIdentifier:
		return "routing"
	case header.IPv6FragmentExtHdrIdentifier:
		return "fragment"
	case header.IPv6DestinationOptionsExtHdrIdentifier:
		return "dest-opts"
	case header.IPv6AuthenticationExtHdrIdentifier:
		return "auth"
	}
	return protoName(nh)
}

// protoNames names the IP protocol numbers (IANA's registry) ustack may see.
var protoNames = func() (names [256]string) {
	for i := range names {
		names[i] = "proto " + strconv.Itoa(i)
	}
	names[header.ICMPv4ProtocolNumber] = "ICMP"
	names[2] = "IGMP"
	names[header.TCPProtocolNumber] = "TCP"
	names[header.UDPProtocolNumber] = "UDP"
	names[41] = "IPv6-in-IP"
	names[47] = "GRE"
	names[50] = "ESP"
	names[51] = "AH"
	names[header.ICMPv6ProtocolNumber] = "ICMPv6"
	names[header.IPv6NoNextHeaderIdentifier] = "no next header"
	names[132] = "SCTP"
	return names
}()

func protoName(p uint8) string { return protoNames[p] }

// transport decodes the transport header in seg, the captured part of an IP
// payload of segLen bytes on the wire. complete says the whole segment is
// there, so its checksum can be verified.
func (t *Tracer) transport(d *Decoded, seg []byte, segLen int, complete bool) {
	d.Transport = protoName(d.Protocol)
	switch tcpip.TransportProtocolNumber(d.Protocol) {
	case header.TCPProtocolNumber:
		t.tcp(d, seg, segLen, complete)
	case header.UDPProtocolNumber:
		t.udp(d, seg, segLen, complete)
	case header.ICMPv4ProtocolNumber:
		if d.Network == "IPv4" {
			icmpv4(d, seg, segLen, complete)
			return
		}
		d.PayloadLen = segLen
	case header.ICMPv6ProtocolNumber:
		if d.Network == "IPv6" {
			icmpv6(d, seg, segLen, complete)
			return
		}
		d.PayloadLen = segLen
	default:
		d.PayloadLen = segLen
		d.Payload = seg[:min(len(seg), payloadKept)]
	}
}

// tcpipAddr converts for gVisor's checksum helpers, without allocating.
func tcpipAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// keepPayload records the payload of a transport segment whose header ends at
// off.
func (d *Decoded) keepPayload(seg []byte, off, segLen int) {
	d.PayloadLen = segLen - off
	if off < len(seg) {
		d.Payload = seg[off:min(len(seg), off+payloadKept)]
	}
}

// tcp decodes a TCP header, RFC 9293 section 3.1, and tracks its connection.
func (t *Tracer) tcp(d *Decoded, seg []byte, segLen int, complete bool) {
	if len(seg) < header.TCPMinimumSize {
		d.short(layerTransport, "TCP", len(seg), segLen, header.TCPMinimumSize)
		return
	}
	h := header.TCP(seg)
	d.hdr = true
	d.SrcPort, d.DstPort = h.SourcePort(), h.DestinationPort()
	d.RawSeq, d.RawAck = h.SequenceNumber(), h.AckNumber()
	d.Seq, d.Ack = d.RawSeq, d.RawAck
	flags := h.Flags()
	d.TCPFlags = uint8(flags)
	d.Flags = flagNames[flags]
	d.Window = h.WindowSize()
	d.Checksum = h.Checksum()
	d.Urgent = h.UrgentPointer()
	off := int(h.DataOffset())
	d.DataOffset = off
	switch {
	case off < header.TCPMinimumSize:
		d.malformed(layerTransport, fmt.Sprintf("TCP: data offset %d bytes is less than %d", off, header.TCPMinimumSize))
		return
	case off > segLen:
		d.malformed(layerTransport, fmt.Sprintf("TCP: data offset %d bytes, but the segment is %d bytes", off, segLen))
		return
	case off > len(seg):
		d.short(layerTransport, "TCP", len(seg), segLen, off)
		return
	}
	raw := seg[header.TCPMinimumSize:off]
	d.Options.Raw = raw
	if flags.Contains(header.TCPFlagSyn) {
		o := header.ParseSynOptions(raw, flags.Contains(header.TCPFlagAck))
		if hasOption(raw, header.TCPOptionMSS, header.TCPOptionMSSLength) {
			d.Options.MSS = o.MSS
		}
		if o.WS >= 0 {
			d.Options.HasWScale, d.Options.WScale = true, uint8(o.WS)
		}
		d.Options.SACKPermitted = o.SACKPermitted
		d.Options.TS, d.Options.TSVal, d.Options.TSEcr = o.TS, o.TSVal, o.TSEcr
	} else if len(raw) > 0 {
		o := header.ParseTCPOptions(raw)
		d.Options.TS, d.Options.TSVal, d.Options.TSEcr = o.TS, o.TSVal, o.TSEcr
		for _, s := range o.SACKBlocks {
			d.Options.SACK = append(d.Options.SACK, SACKBlock{uint32(s.Start), uint32(s.End)})
		}
	}
	d.keepPayload(seg, off, segLen)
	if complete {
		payload := seg[off:segLen]
		if h.IsChecksumValid(tcpipAddr(d.Src), tcpipAddr(d.Dst), checksum.Checksum(payload, 0), uint16(len(payload))) {
			d.ChecksumVerdict = ChecksumGood
		} else {
			d.ChecksumVerdict = ChecksumBad
			d.drop = true
			d.note("bad TCP checksum")
		}
	}
	if d.drop || d.Fragment {
		t.peekTCP(d)
		return
	}
	t.trackTCP(d)
}

// hasOption tells whether the TCP options in o hold one of the given kind and
// length. It walks them the way ParseSynOptions does, which tells the values
// but not whether an MSS option was there.
func hasOption(o []byte, kind, length int) bool {
	for i := 0; i < len(o); {
		switch o[i] {
		case header.TCPOptionEOL:
			return false
		case header.TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= len(o) || o[i+1] < 2 || i+int(o[i+1]) > len(o) {
			return false
		}
		if int(o[i]) == kind && int(o[i+1]) == length {
			return true
		}
		i += int(o[i+1])
	}
	return false
}

// flagNames names every combination of TCP control bits: the set bits joined
// with "-" in the order of the header (RFC 9293 section 3.1, RFC 3168 for ECE
// and CWR), which gives the usual SYN-ACK, PSH-ACK, FIN-ACK and RST-ACK.
var flagNames = func() (names [256]string) {
	bits := [...]struct {
		f    header.TCPFlags
		name string
	}{
		{header.TCPFlagFin, "FIN"}, {header.TCPFlagSyn, "SYN"}, {header.TCPFlagRst, "RST"},
		{header.TCPFlagPsh, "PSH"}, {header.TCPFlagAck, "ACK"}, {header.TCPFlagUrg, "URG"},
		{header.TCPFlagEce, "ECE"}, {header.TCPFlagCwr, "CWR"},
	}
	for i := range names {
		s := ""
		for _, b := range bits {
			if header.TCPFlags(i)&b.f != 0 {
				if s != "" {
					s += "-"
				}
				s += b.name
			}
		}
		if s == "" {
			s = "no-flags"
		}
		names[i] = s
	}
	return names
}()

// udp decodes a UDP header, RFC 768.
func (t *Tracer) udp(d *Decoded, seg []byte, segLen int, complete bool) {
	if len(seg) < header.UDPMinimumSize {
		d.short(layerTransport, "UDP", len(seg), segLen, header.UDPMinimumSize)
		return
	}
	u := header.UDP(seg)
	d.hdr = true
	d.SrcPort, d.DstPort = u.SourcePort(), u.DestinationPort()
	d.UDPLen = int(u.Length())
	d.Checksum = u.Checksum()
	d.Conn = connName(d)
	if d.Fragment {
		// The first fragment: the length is the whole datagram's.
		d.keepPayload(seg, header.UDPMinimumSize, max(d.UDPLen, header.UDPMinimumSize))
		return
	}
	if d.UDPLen != segLen {
		d.malformed(layerTransport, fmt.Sprintf("UDP: length %d, but the IP payload is %d bytes", d.UDPLen, segLen))
		return
	}
	d.keepPayload(seg, header.UDPMinimumSize, segLen)
	switch {
	case d.Checksum == 0 && d.Network == "IPv4":
		d.ChecksumVerdict = ChecksumNone
	case complete:
		if u.IsChecksumValid(tcpipAddr(d.Src), tcpipAddr(d.Dst), checksum.Checksum(seg[header.UDPMinimumSize:segLen], 0)) {
			d.ChecksumVerdict = ChecksumGood
		} else {
			d.ChecksumVerdict = ChecksumBad
			d.note("bad UDP checksum")
		}
	}
}

// connName is the 4-tuple of d, the userspace stack's side first.
func connName(d *Decoded) string {
	src, dst := netip.AddrPortFrom(d.Src, d.SrcPort), netip.AddrPortFrom(d.Dst, d.DstPort)
	if d.Dir != tap.Out {
		src, dst = dst, src
	}
	return src.String() + "-" + dst.String()
}
