package trace

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/ustack/ustack/stack/tap"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The direction column: an arrow towards the stack for what the kernel routed
// in, away from it for what the stack sent.
const (
	prefixIn  = "→ in   "
	prefixOut = "← out  "
)

// detailIndent starts each verbose line.
const detailIndent = "\n    "

// appendLine appends the one-line form of d to b.
func (d *Decoded) appendLine(b []byte) []byte {
	if d.Dir == tap.Out {
		b = append(b, prefixOut...)
	} else {
		b = append(b, prefixIn...)
	}
	switch {
	case d.stopped == layerIP:
		return d.appendProblem(b)
	case d.Network == "":
		return append(b, "nothing decoded"...)
	}
	b = d.appendNetwork(b)
	b = append(b, " | "...)
	if d.stopped == layerNetwork {
		b = d.appendProblem(b)
	} else {
		b = d.appendTransport(b)
	}
	if len(d.Annotations) > 0 {
		b = append(b, "   ["...)
		for i, a := range d.Annotations {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = append(b, a...)
		}
		b = append(b, ']')
	}
	if d.ShowState {
		b = append(b, " state "...)
		b = append(b, d.State...)
	}
	if d.Segments > 1 {
		// As tcpdump shows a packet an offloading NIC has yet to cut.
		b = append(b, "   TSO "...)
		b = strconv.AppendInt(b, int64(d.Segments), 10)
		b = append(b, "×"...)
		b = strconv.AppendInt(b, int64(d.SegmentSize), 10)
	}
	switch {
	case d.FaultDrop != "":
		b = append(b, "   ✗ dropped by fault injection: "...)
		b = append(b, d.FaultDrop...)
	case d.FaultNote != "":
		b = append(b, "   ⚡ fault injection: "...)
		b = append(b, d.FaultNote...)
	}
	return b
}

// appendProblem appends why decoding stopped.
func (d *Decoded) appendProblem(b []byte) []byte {
	if d.Malformed != "" {
		b = append(b, "malformed "...)
		return append(b, d.Malformed...)
	}
	return append(b, d.Cut...)
}

// appendNetwork appends the internet layer: "IPv4 a → b ttl 64 len 60".
func (d *Decoded) appendNetwork(b []byte) []byte {
	b = append(b, d.Network...)
	b = append(b, ' ')
	b = d.Src.AppendTo(b)
	b = append(b, " → "...)
	b = d.Dst.AppendTo(b)
	if d.Network == "IPv4" {
		b = append(b, " ttl "...)
	} else {
		b = append(b, " hlim "...)
	}
	b = strconv.AppendUint(b, uint64(d.TTL), 10)
	b = append(b, " len "...)
	b = strconv.AppendInt(b, int64(d.IPLen), 10)
	if d.Network == "IPv4" {
		if d.FragOffset > 0 {
			b = append(b, " frag off "...)
			b = strconv.AppendInt(b, int64(d.FragOffset), 10)
		}
		if d.MoreFragments {
			b = append(b, " more-frags"...)
		}
		return b
	}
	for _, e := range d.ExtHeaders {
		b = append(b, ' ')
		b = append(b, e...)
		if e == "fragment" {
			b = append(b, " off "...)
			b = strconv.AppendInt(b, int64(d.FragOffset), 10)
			if d.MoreFragments {
				b = append(b, " more-frags"...)
			}
		}
	}
	return b
}

// appendTransport appends the transport layer: "TCP 43512 → 5000 SYN …".
func (d *Decoded) appendTransport(b []byte) []byte {
	if d.stopped == layerTransport {
		return d.appendProblem(b)
	}
	if d.FragOffset > 0 {
		b = append(b, d.Transport...)
		b = append(b, " fragment ("...)
		b = strconv.AppendInt(b, int64(d.PayloadLen), 10)
		return append(b, " bytes)"...)
	}
	switch d.Transport {
	case "TCP":
		b = append(b, "TCP "...)
		b = appendPorts(b, d.SrcPort, d.DstPort)
		return d.appendTCP(b)
	case "UDP":
		b = append(b, "UDP "...)
		b = appendPorts(b, d.SrcPort, d.DstPort)
		b = append(b, " len "...)
		b = strconv.AppendInt(b, int64(d.UDPLen), 10)
		return appendPayload(b, d.Payload, d.PayloadLen)
	case "ICMP", "ICMPv6":
		b = append(b, d.Transport...)
		b = append(b, ' ')
		return append(b, d.ICMP...)
	}
	b = append(b, d.Transport...)
	b = append(b, " ("...)
	b = strconv.AppendInt(b, int64(d.PayloadLen), 10)
	return append(b, " bytes)"...)
}

func appendPorts(b []byte, src, dst uint16) []byte {
	b = strconv.AppendUint(b, uint64(src), 10)
	b = append(b, " → "...)
	return strconv.AppendUint(b, uint64(dst), 10)
}

// appendTCP appends a TCP segment after its ports, the way tcpdump shows one:
// the sequence range it carries, what it acknowledges, the window it offers.
func (d *Decoded) appendTCP(b []byte) []byte {
	flags := header.TCPFlags(d.TCPFlags)
	syn, ack := flags.Contains(header.TCPFlagSyn), flags.Contains(header.TCPFlagAck)
	b = append(b, ' ')
	b = append(b, d.Flags...)
	// A pure acknowledgment occupies no sequence space: its seq says nothing.
	if d.PayloadLen > 0 || syn || !ack || flags.Intersects(header.TCPFlagFin|header.TCPFlagRst) {
		b = append(b, " seq "...)
		b = strconv.AppendUint(b, uint64(d.Seq), 10)
		if d.PayloadLen > 0 {
			b = append(b, ':')
			b = strconv.AppendUint(b, uint64(d.Seq+uint32(d.PayloadLen)), 10)
		}
	}
	if ack {
		b = append(b, " ack "...)
		b = strconv.AppendUint(b, uint64(d.Ack), 10)
	}
	b = append(b, " win "...)
	b = strconv.AppendUint(b, uint64(d.Window), 10)
	if flags.Contains(header.TCPFlagUrg) {
		b = append(b, " urg "...)
		b = strconv.AppendUint(b, uint64(d.Urgent), 10)
	}
	o := &d.Options
	if syn {
		if o.MSS != 0 {
			b = append(b, " mss "...)
			b = strconv.AppendUint(b, uint64(o.MSS), 10)
		}
		if o.SACKPermitted {
			b = append(b, " sack-ok"...)
		}
		if o.HasWScale {
			b = append(b, " wscale "...)
			b = strconv.AppendUint(b, uint64(o.WScale), 10)
		}
		if o.TS {
			b = append(b, " ts"...)
		}
	} else if blocks := d.SACK; len(blocks) > 0 || len(o.SACK) > 0 {
		if len(blocks) == 0 {
			blocks = o.SACK // not tracked: absolute
		}
		b = append(b, " sack "...)
		for i, s := range blocks {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(s.Start), 10)
			b = append(b, ':')
			b = strconv.AppendUint(b, uint64(s.End), 10)
		}
	}
	if d.PayloadLen > 0 {
		b = appendPayload(b, d.Payload, d.PayloadLen)
	}
	return b
}

// appendPayload appends " (N bytes)" and a quoted preview of the first bytes,
// Go-escaped, with "…" when there is more than it shows.
func appendPayload(b, captured []byte, n int) []byte {
	b = append(b, " ("...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, " bytes)"...)
	if n == 0 {
		return b
	}
	show := captured[:min(len(captured), previewLen)]
	b = append(b, ' ')
	b = strconv.AppendQuote(b, string(show))
	if n > len(show) {
		b = append(b, "…"...)
	}
	return b
}

// appendElapsed appends verbose mode's time since the first packet,
// "+0.000123s ".
func appendElapsed(b []byte, d time.Duration) []byte {
	if d >= 0 {
		b = append(b, '+')
	}
	b = strconv.AppendFloat(b, d.Seconds(), 'f', 6, 64)
	return append(b, "s "...)
}

// appendDetails appends verbose mode's lines: every header field as on the
// wire, layer by layer, and a hex dump of the first payload bytes.
func (d *Decoded) appendDetails(b []byte) []byte {
	if d.stopped == layerIP || d.Network == "" {
		return b
	}
	b = append(b, detailIndent...)
	if d.Network == "IPv4" {
		b = fmt.Appendf(b, "IPv4 tos 0x%02x id %d flags %s frag-off %d ttl %d proto %d (%s) checksum 0x%04x %s ihl %d",
			d.TOS, d.ID, ipv4Flags(d.DontFragment, d.MoreFragments), d.FragOffset, d.TTL, d.NextHeader, protoName(d.NextHeader),
			d.IPChecksum, d.IPChecksumVerdict, d.IHL)
	} else {
		b = fmt.Appendf(b, "IPv6 tclass 0x%02x flow-label 0x%05x next-header %d (%s) hop-limit %d payload-len %d",
			d.TOS, d.FlowLabel, d.NextHeader, extName(d.NextHeader), d.TTL, d.IPLen-header.IPv6MinimumSize)
		for _, e := range d.ExtHeaders {
			b = append(b, detailIndent...)
			b = append(b, "IPv6 extension header "...)
			b = append(b, e...)
			if e == "fragment" {
				b = fmt.Appendf(b, " offset %d more %t id 0x%08x", d.FragOffset, d.MoreFragments, d.ID)
			}
		}
	}
	if d.stopped == layerNetwork || d.FragOffset > 0 {
		return b
	}
	switch d.Transport {
	case "TCP":
		if d.DataOffset == 0 {
			return b // the header did not fit
		}
		b = fmt.Appendf(b, "%sTCP seq %d ack %d data-offset %d flags %s window %d checksum 0x%04x %s urgent %d",
			detailIndent, d.RawSeq, d.RawAck, d.DataOffset, d.Flags, d.Window, d.Checksum, d.ChecksumVerdict, d.Urgent)
		if len(d.Options.Raw) > 0 {
			b = append(b, detailIndent...)
			b = append(b, "TCP options: "...)
			b = appendOptionList(b, d.Options.Raw)
		}
	case "UDP":
		if d.UDPLen == 0 && d.stopped == layerTransport {
			return b
		}
		b = fmt.Appendf(b, "%sUDP length %d checksum 0x%04x %s", detailIndent, d.UDPLen, d.Checksum, d.ChecksumVerdict)
	case "ICMP", "ICMPv6":
		if d.ICMP == "" {
			return b
		}
		b = fmt.Appendf(b, "%s%s type %d code %d checksum 0x%04x %s", detailIndent, d.Transport, d.ICMPType, d.ICMPCode, d.Checksum, d.ChecksumVerdict)
	}
	if d.stopped != layerNone || len(d.Payload) == 0 {
		return b
	}
	b = fmt.Appendf(b, "%spayload, first %d of %d bytes:", detailIndent, len(d.Payload), d.PayloadLen)
	return appendHexDump(b, d.Payload)
}

// ipv4Flags names the IPv4 flags field (RFC 791 section 3.1).
func ipv4Flags(df, mf bool) string {
	switch {
	case df && mf:
		return "DF+MF"
	case df:
		return "DF"
	case mf:
		return "MF"
	}
	return "none"
}

// appendOptionList appends every TCP option in o, in wire order, with its
// raw values: "mss 1460, sack-permitted, ts val 1 ecr 0, nop, wscale 7". It
// walks the kind and length octets of RFC 9293 section 3.2 itself: gVisor's
// parsers return the values they act on, not the list.
func appendOptionList(b, o []byte) []byte {
	for i := 0; i < len(o); {
		if i > 0 {
			b = append(b, ", "...)
		}
		kind := o[i]
		switch kind {
		case header.TCPOptionEOL:
			b = append(b, "eol"...)
			if rest := len(o) - i - 1; rest > 0 {
				b = fmt.Appendf(b, " (then %d bytes of padding)", rest)
			}
			return b
		case header.TCPOptionNOP:
			b = append(b, "nop"...)
			i++
			continue
		}
		if i+1 >= len(o) {
			return fmt.Appendf(b, "truncated option kind %d", kind)
		}
		l := int(o[i+1])
		if l < 2 || i+l > len(o) {
			return fmt.Appendf(b, "bad option kind %d len %d", kind, l)
		}
		v := o[i+2 : i+l]
		switch {
		case kind == header.TCPOptionMSS && l == header.TCPOptionMSSLength:
			b = fmt.Appendf(b, "mss %d", binary.BigEndian.Uint16(v))
		case kind == header.TCPOptionWS && l == header.TCPOptionWSLength:
			b = fmt.Appendf(b, "wscale %d", v[0])
		case kind == header.TCPOptionSACKPermitted && l == header.TCPOptionSackPermittedLength:
			b = append(b, "sack-permitted"...)
		case kind == header.TCPOptionSACK && len(v)%8 == 0:
			b = append(b, "sack"...)
			for j := 0; j+8 <= len(v); j += 8 {
				b = fmt.Appendf(b, " %d-%d", binary.BigEndian.Uint32(v[j:]), binary.BigEndian.Uint32(v[j+4:]))
			}
		case kind == header.TCPOptionTS && l == header.TCPOptionTSLength:
			b = fmt.Appendf(b, "ts val %d ecr %d", binary.BigEndian.Uint32(v), binary.BigEndian.Uint32(v[4:]))
		default:
			b = fmt.Appendf(b, "unknown kind %d len %d", kind, l)
		}
		i += l
	}
	return b
}

// appendHexDump appends p as indented lines of 16 bytes: offset, hex, and the
// printable ASCII.
func appendHexDump(b, p []byte) []byte {
	const hexDigits = "0123456789abcdef"
	for off := 0; off < len(p); off += 16 {
		line := p[off:min(off+16, len(p))]
		b = fmt.Appendf(b, "%s  %04x ", detailIndent, off)
		for i := range 16 {
			if i == 8 {
				b = append(b, ' ')
			}
			if i < len(line) {
				b = append(b, ' ', hexDigits[line[i]>>4], hexDigits[line[i]&0xf])
			} else {
				b = append(b, "   "...)
			}
		}
		b = append(b, "  |"...)
		for _, c := range line {
			if c < 0x20 || c > 0x7e {
				c = '.'
			}
			b = append(b, c)
		}
		b = append(b, '|')
	}
	return b
}
