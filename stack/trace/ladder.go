package trace

import (
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ustack/ustack/stack/tap"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// labelPreview is how many payload bytes a ladder label quotes: enough for
// "hello", short enough for the arrow.
const labelPreview = 16

// Label returns what a ladder diagram writes on the arrow of d, in the
// textbooks' notation: "SYN seq=0", "SYN-ACK seq=0 ack=1", "ACK ack=1",
// "PSH-ACK 1:7 \"hello\"", "FIN-ACK seq=7 ack=12". Sequence numbers are
// relative, as in the trace line.
func (d *Decoded) Label() string {
	if d.Malformed != "" {
		// Malformed starts with the layer it is about: "IPv4: truncated…".
		layer, _, _ := strings.Cut(d.Malformed, ":")
		return "malformed " + layer
	}
	if d.FragOffset > 0 {
		return d.Transport + " fragment (" + strconv.Itoa(d.PayloadLen) + " bytes)"
	}
	switch d.Transport {
	case "TCP":
		if !d.hdr {
			return "TCP (header not captured)"
		}
		return d.tcpLabel()
	case "UDP":
		b := append([]byte("UDP "), strconv.Itoa(d.PayloadLen)...)
		b = append(b, " bytes"...)
		return string(appendLabelPayload(b, d.Payload, d.PayloadLen))
	case "ICMP", "ICMPv6":
		return d.Transport + " " + d.ICMP
	case "":
		return d.Network
	}
	return d.Transport + " (" + strconv.Itoa(d.PayloadLen) + " bytes)"
}

func (d *Decoded) tcpLabel() string {
	flags := header.TCPFlags(d.TCPFlags)
	syn, ack := flags.Contains(header.TCPFlagSyn), flags.Contains(header.TCPFlagAck)
	b := make([]byte, 0, 64)
	b = append(b, d.Flags...)
	switch {
	case d.PayloadLen > 0:
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(d.Seq), 10)
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(d.Seq+uint32(d.PayloadLen)), 10)
		return string(appendLabelPayload(b, d.Payload, d.PayloadLen))
	case syn || !ack || flags.Intersects(header.TCPFlagFin|header.TCPFlagRst):
		b = append(b, " seq="...)
		b = strconv.AppendUint(b, uint64(d.Seq), 10)
	}
	if ack {
		b = append(b, " ack="...)
		b = strconv.AppendUint(b, uint64(d.Ack), 10)
	}
	if d.ZeroWindow {
		b = append(b, " win=0"...)
	}
	return string(b)
}

// appendLabelPayload appends a short quoted preview of a payload.
func appendLabelPayload(b, captured []byte, n int) []byte {
	if n == 0 {
		return b
	}
	show := captured[:min(len(captured), labelPreview)]
	b = append(b, ' ')
	b = strconv.AppendQuoteToASCII(b, string(show)) // no lifeline or control character from the wire
	if n > len(show) {
		b = append(b, "…"...)
	}
	return b
}

// Phase tells which part of a TCP connection's life d belongs to, from its
// annotations: "handshake" with step "1/3", "2/3" or "3/3", or "teardown"
// with step "1/2", "2/2" or "ack" (a FIN acknowledged). Both are empty for
// a segment of neither.
func (d *Decoded) Phase() (phase, step string) {
	for _, a := range d.Annotations {
		for _, p := range [...]string{"handshake", "teardown"} {
			rest, ok := strings.CutPrefix(a, p)
			if !ok {
				continue
			}
			rest = strings.TrimPrefix(rest, " ")
			if s, _, ok := strings.Cut(rest, ":"); ok && s != "" {
				return p, s
			}
			if strings.Contains(rest, "acknowledged") {
				return p, "ack"
			}
			return p, ""
		}
	}
	return "", ""
}

// The terminal ladder's geometry.
const (
	ladderMargin = 8  // columns before the left lifeline
	ladderArrow  = 42 // the arrow's width in columns, heads included, unless its label needs more
)

// LadderLine returns the ladder-diagram form of d for a terminal: an arrow
// between the kernel's lifeline (left) and the stack's (right), labelled,
// with the phase and the stack's new state at its right. header is non-empty
// when the packet belongs to another conversation than the one before it:
// the two endpoints' names over their lifelines, to print first.
func (t *Tracer) LadderLine(p tap.Packet) (header, line string, ok bool) {
	d := &t.scratch
	d.reset()
	t.decode(p, d)
	if !t.opts.Filter.Match(p.Data) {
		return "", "", false
	}
	peer, stk := d.ladderEnds()
	if conv := peer + " " + stk; conv != t.ladderConv {
		t.ladderConv = conv
		header = ladderHeader(peer, stk)
	}
	return header, d.ladderArrow(), true
}

// ladderEnds names the two lifelines of d's conversation: the kernel's side
// and the stack's, as address:port for TCP and UDP, addresses otherwise.
func (d *Decoded) ladderEnds() (peer, stk string) {
	src, dst := d.Src.String(), d.Dst.String()
	if d.Transport == "TCP" || d.Transport == "UDP" {
		if d.hdr || d.SrcPort != 0 {
			src = netip.AddrPortFrom(d.Src, d.SrcPort).String()
			dst = netip.AddrPortFrom(d.Dst, d.DstPort).String()
		}
	}
	if d.Dir == tap.Out {
		return dst, src
	}
	return src, dst
}

// ladderHeader is the line over the lifelines: each name centred on its line.
func ladderHeader(peer, stk string) string {
	right := ladderMargin + ladderArrow + 1 // the stack's lifeline
	b := strings.Repeat(" ", max(ladderMargin-utf8.RuneCountInString(peer)/2, 1)) + peer
	gap := right - utf8.RuneCountInString(stk)/2 - utf8.RuneCountInString(b)
	return b + strings.Repeat(" ", max(gap, 2)) + stk
}

// ladderArrow draws d's arrow: "│ ──── SYN seq=0 ──────▶ │  handshake 1/3".
// An arrow the stack never got (fault injection dropped it on its way in)
// or the kernel never got (on its way out) ends in ✗ short of its lifeline.
func (d *Decoded) ladderArrow() string {
	label := d.Label()
	if d.Malformed != "" || d.Cut != "" {
		label = strings.TrimSpace(string(d.appendProblem(nil)))
	}
	inner := ladderArrow - 2 // between the spaces inside the lifelines
	n := utf8.RuneCountInString(label)
	dashes := func(used int) string { return strings.Repeat("─", max(inner-n-used, 3)) }
	var arrow string
	switch {
	case d.FaultDrop != "" && d.Dir == tap.Out:
		arrow = "✗ ◀── " + label + " " + dashes(7)
	case d.FaultDrop != "":
		arrow = "──── " + label + " " + dashes(9) + "▶ ✗"
	case d.Dir == tap.Out:
		arrow = "◀─── " + label + " " + dashes(6)
	default:
		arrow = "──── " + label + " " + dashes(7) + "▶"
	}
	var b strings.Builder
	b.WriteString(strings.Repeat(" ", ladderMargin))
	b.WriteString("│ ")
	b.WriteString(arrow)
	b.WriteString(" │")
	var notes []string
	if phase, step := d.Phase(); phase != "" {
		if step != "" && step != "ack" {
			phase += " " + step
		}
		notes = append(notes, phase)
	}
	if d.Retransmission {
		notes = append(notes, "retransmission")
	}
	if d.DuplicateACK {
		notes = append(notes, "duplicate ACK")
	}
	if d.ZeroWindow {
		notes = append(notes, "zero window")
	}
	if d.ChecksumVerdict == ChecksumBad {
		notes = append(notes, "bad checksum")
	}
	if d.FaultDrop != "" {
		notes = append(notes, "dropped: "+d.FaultDrop)
	} else if d.FaultNote != "" {
		notes = append(notes, d.FaultNote)
	}
	if d.ShowState && d.State != "" {
		notes = append(notes, d.State)
	}
	if len(notes) > 0 {
		b.WriteString("  ")
		b.WriteString(strings.Join(notes, " · "))
	}
	return b.String()
}
