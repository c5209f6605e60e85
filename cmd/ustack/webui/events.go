package webui

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/tap"
	"github.com/ustack/ustack/stack/trace"
)

// The events of the stream, as the page reads them: the package comment
// describes each.

type helloEvent struct {
	Version string   `json:"version"`
	Iface   string   `json:"iface"`
	Stack   []string `json:"stack"`
	Keep    int      `json:"keep"`
}

type packetEvent struct {
	N            uint64   `json:"n"`
	T            float64  `json:"t"`
	Dir          string   `json:"dir"`
	Conn         string   `json:"conn"`
	Proto        string   `json:"proto"`
	Src          string   `json:"src"`
	Dst          string   `json:"dst"`
	Label        string   `json:"label"`
	Line         string   `json:"line"`
	Flags        string   `json:"flags"`
	Len          int      `json:"len"`
	Retrans      bool     `json:"retrans"`
	Drop         string   `json:"drop"`
	Note         string   `json:"note"`
	State        string   `json:"state"`
	StateChanged bool     `json:"stateChanged"`
	Phase        string   `json:"phase"`
	Step         string   `json:"step"`
	Annotations  []string `json:"annotations"`
	Layers       []layer  `json:"layers"`
}

// layer is one protocol layer of a packet, as name/value pairs in header
// order.
type layer struct {
	Name   string      `json:"name"`
	Fields [][2]string `json:"fields"`
}

type sampleEvent struct {
	N            uint64  `json:"n"`
	T            float64 `json:"t"`
	Conn         string  `json:"conn"`
	Cwnd         int     `json:"cwnd"`
	Ssthresh     int     `json:"ssthresh"`
	SRTT         float64 `json:"srtt"`
	RTTVar       float64 `json:"rttvar"`
	RTO          float64 `json:"rto"`
	InFlight     int     `json:"inflight"`
	MSS          int     `json:"mss"`
	SndWnd       int     `json:"sndWnd"`
	FastRecovery bool    `json:"fastRecovery"`
}

type connsEvent struct {
	T     float64   `json:"t"`
	Conns []connRow `json:"conns"`
}

// connRow is one line of the connections table.
type connRow struct {
	Conn     string   `json:"conn"`
	Local    string   `json:"local"`
	Remote   string   `json:"remote"`
	Proto    string   `json:"proto"`
	State    string   `json:"state"`
	Open     bool     `json:"open"`
	ClosedAt *float64 `json:"closedAt"`
	Client   string   `json:"client"`
	Cwnd     uint32   `json:"cwnd"`
	Ssthresh uint32   `json:"ssthresh"`
	SRTT     float64  `json:"srtt"`
	RTO      float64  `json:"rto"`
	Retrans  uint64   `json:"retrans"`
	Timeouts uint64   `json:"timeouts"`
	BytesIn  uint64   `json:"bytesIn"`
	BytesOut uint64   `json:"bytesOut"`
	SegsIn   uint64   `json:"segsIn"`
	SegsOut  uint64   `json:"segsOut"`
	Kept     int      `json:"kept"`
	Trimmed  uint64   `json:"trimmed"`
}

type countersEvent struct {
	T      float64        `json:"t"`
	Layers []counterLayer `json:"layers"`
	Faults string         `json:"faults"`
}

// counterLayer is one layer's counters, as label/number pairs.
type counterLayer struct {
	Name   string       `json:"name"`
	Values []counterVal `json:"values"`
}

// counterVal marshals as ["label", number].
type counterVal [2]any

type lostEvent struct {
	T   float64 `json:"t"`
	N   uint64  `json:"n"`
	Why string  `json:"why"`
}

// udpPrefix starts the key of a UDP flow, which may share its 4-tuple with a
// TCP connection.
const udpPrefix = "udp:"

// newPacketEvent turns a decoded packet into its event.
func newPacketEvent(d *trace.Decoded, line string) *packetEvent {
	e := &packetEvent{
		Dir:         d.Dir.String(),
		Conn:        d.Conn,
		Proto:       d.Transport,
		Src:         endpoint(d, true),
		Dst:         endpoint(d, false),
		Label:       d.Label(),
		Line:        line,
		Flags:       d.Flags,
		Len:         d.PayloadLen,
		Retrans:     d.Retransmission,
		Drop:        d.FaultDrop,
		Note:        d.FaultNote,
		State:       d.State,
		Annotations: d.Annotations,
		Layers:      layers(d),
	}
	if e.Annotations == nil {
		e.Annotations = []string{}
	}
	if d.Transport == "UDP" && d.Conn != "" {
		e.Conn = udpPrefix + d.Conn
	}
	e.Phase, e.Step = d.Phase()
	return e
}

// endpoint is a packet's source (or destination) as address:port for TCP and
// UDP, as an address otherwise.
func endpoint(d *trace.Decoded, src bool) string {
	a, port := d.Src, d.SrcPort
	if !src {
		a, port = d.Dst, d.DstPort
	}
	if !a.IsValid() {
		return ""
	}
	if d.Transport == "TCP" || d.Transport == "UDP" {
		if port != 0 || d.Conn != "" {
			return netip.AddrPortFrom(a, port).String()
		}
	}
	return a.String()
}

// layers is the packet's headers layer by layer, for the page's detail
// panel: what the verbose trace prints, as fields.
func layers(d *trace.Decoded) []layer {
	dir := "in: kernel → ustack"
	if d.Dir == tap.Out {
		dir = "out: ustack → kernel"
	}
	link := layer{Name: "Link (TUN)", Fields: [][2]string{
		{"direction", dir},
		{"length", strconv.Itoa(d.Len) + " bytes"},
		{"link header", "none: a TUN carries bare IP packets"},
	}}
	if d.FaultDrop != "" {
		link.Fields = append(link.Fields, [2]string{"fault injection", "dropped: " + d.FaultDrop})
	} else if d.FaultNote != "" {
		link.Fields = append(link.Fields, [2]string{"fault injection", d.FaultNote})
	}
	out := []layer{link}
	if d.Network == "" {
		if d.Malformed != "" {
			out[0].Fields = append(out[0].Fields, [2]string{"problem", d.Malformed})
		}
		return out
	}
	ip := layer{Name: d.Network}
	add := func(l *layer, k, v string) { l.Fields = append(l.Fields, [2]string{k, v}) }
	add(&ip, "source", d.Src.String())
	add(&ip, "destination", d.Dst.String())
	if d.Network == "IPv4" {
		add(&ip, "header length", strconv.Itoa(d.IHL)+" bytes")
		add(&ip, "total length", strconv.Itoa(d.IPLen))
		add(&ip, "TTL", strconv.Itoa(int(d.TTL)))
		add(&ip, "TOS", fmt.Sprintf("0x%02x", d.TOS))
		add(&ip, "identification", strconv.Itoa(int(d.ID)))
		add(&ip, "flags", ipv4Flags(d))
		add(&ip, "fragment offset", strconv.Itoa(d.FragOffset))
		add(&ip, "protocol", fmt.Sprintf("%d (%s)", d.NextHeader, d.Transport))
		add(&ip, "checksum", fmt.Sprintf("0x%04x (%s)", d.IPChecksum, d.IPChecksumVerdict))
	} else {
		add(&ip, "payload length", strconv.Itoa(d.IPLen))
		add(&ip, "hop limit", strconv.Itoa(int(d.TTL)))
		add(&ip, "traffic class", fmt.Sprintf("0x%02x", d.TOS))
		add(&ip, "flow label", fmt.Sprintf("0x%05x", d.FlowLabel))
		add(&ip, "next header", fmt.Sprintf("%d (%s)", d.NextHeader, d.Transport))
		if len(d.ExtHeaders) > 0 {
			add(&ip, "extension headers", strings.Join(d.ExtHeaders, ", "))
		}
	}
	if d.Malformed != "" {
		add(&ip, "problem", d.Malformed)
	} else if d.Cut != "" {
		add(&ip, "capture", d.Cut)
	}
	out = append(out, ip)
	if d.Transport == "" {
		return out
	}
	tl := layer{Name: d.Transport}
	switch d.Transport {
	case "TCP":
		add(&tl, "source port", strconv.Itoa(int(d.SrcPort)))
		add(&tl, "destination port", strconv.Itoa(int(d.DstPort)))
		add(&tl, "flags", d.Flags)
		add(&tl, "sequence number", fmt.Sprintf("%d (raw %d)", d.Seq, d.RawSeq))
		add(&tl, "acknowledgment", fmt.Sprintf("%d (raw %d)", d.Ack, d.RawAck))
		add(&tl, "header length", strconv.Itoa(d.DataOffset)+" bytes")
		add(&tl, "window", strconv.Itoa(int(d.Window)))
		add(&tl, "checksum", fmt.Sprintf("0x%04x (%s)", d.Checksum, d.ChecksumVerdict))
		if o := d.Options; len(o.Raw) > 0 {
			add(&tl, "options", tcpOptions(d))
		}
		if d.State != "" {
			add(&tl, "stack's state after it", d.State)
		}
	case "UDP":
		add(&tl, "source port", strconv.Itoa(int(d.SrcPort)))
		add(&tl, "destination port", strconv.Itoa(int(d.DstPort)))
		add(&tl, "length", strconv.Itoa(d.UDPLen))
		add(&tl, "checksum", fmt.Sprintf("0x%04x (%s)", d.Checksum, d.ChecksumVerdict))
	case "ICMP", "ICMPv6":
		add(&tl, "type", strconv.Itoa(int(d.ICMPType)))
		add(&tl, "code", strconv.Itoa(int(d.ICMPCode)))
		add(&tl, "message", d.ICMP)
		add(&tl, "checksum", fmt.Sprintf("0x%04x (%s)", d.Checksum, d.ChecksumVerdict))
	}
	if len(d.Annotations) > 0 {
		add(&tl, "meaning", strings.Join(d.Annotations, "; "))
	}
	out = append(out, tl)
	if d.PayloadLen > 0 {
		pl := layer{Name: "Payload"}
		add(&pl, "length", strconv.Itoa(d.PayloadLen)+" bytes")
		if len(d.Payload) > 0 {
			text := strconv.QuoteToASCII(string(d.Payload))
			if d.PayloadLen > len(d.Payload) {
				text += "…"
			}
			add(&pl, "text", text)
			add(&pl, "hex", spacedHex(d.Payload))
		}
		out = append(out, pl)
	}
	return out
}

func ipv4Flags(d *trace.Decoded) string {
	var f []string
	if d.DontFragment {
		f = append(f, "DF")
	}
	if d.MoreFragments {
		f = append(f, "MF")
	}
	if len(f) == 0 {
		return "none"
	}
	return strings.Join(f, " ")
}

func tcpOptions(d *trace.Decoded) string {
	o := d.Options
	var f []string
	if o.MSS != 0 {
		f = append(f, "MSS "+strconv.Itoa(int(o.MSS)))
	}
	if o.SACKPermitted {
		f = append(f, "SACK permitted")
	}
	if o.HasWScale {
		f = append(f, "window scale "+strconv.Itoa(int(o.WScale)))
	}
	if o.TS {
		f = append(f, fmt.Sprintf("timestamps %d/%d", o.TSVal, o.TSEcr))
	}
	for _, b := range d.SACK {
		f = append(f, fmt.Sprintf("SACK %d:%d", b.Start, b.End))
	}
	if len(f) == 0 {
		return strconv.Itoa(len(o.Raw)) + " bytes"
	}
	return strings.Join(f, ", ")
}

func spacedHex(b []byte) string {
	h := hex.EncodeToString(b)
	var s strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			s.WriteByte(' ')
		}
		s.WriteString(h[i : i+2])
	}
	return s.String()
}

// ms is a duration in milliseconds, for the page.
func ms(d interface{ Seconds() float64 }) float64 { return d.Seconds() * 1000 }

// counters turns a snapshot into the counters strip.
func counters(s *stack.Snapshot) []counterLayer {
	v := func(label string, n uint64) counterVal { return counterVal{label, n} }
	l := s.Link
	out := []counterLayer{
		{"Link (TUN)", []counterVal{v("packets in", l.RxPackets), v("packets out", l.TxPackets), v("bytes in", l.RxBytes), v("bytes out", l.TxBytes), v("dropped", l.RxDropped), v("read errors", l.RxReadErrors), v("write errors", l.TxErrors)}},
		{"IP", []counterVal{
			v("IPv4 received", s.IPv4.PacketsReceived), v("IPv4 sent", s.IPv4.PacketsSent), v("IPv4 malformed", s.IPv4.Malformed),
			v("IPv6 received", s.IPv6.PacketsReceived), v("IPv6 sent", s.IPv6.PacketsSent), v("IPv6 malformed", s.IPv6.Malformed)}},
		{"TCP", []counterVal{
			v("segments in", s.TCP.SegmentsIn), v("segments out", s.TCP.SegmentsOut), v("established", s.TCP.Established),
			v("passive opens", s.TCP.PassiveOpens), v("active opens", s.TCP.ActiveOpens), v("retransmits", s.TCP.Retransmits),
			v("timeouts", s.TCP.Timeouts), v("resets in", s.TCP.ResetsIn), v("resets out", s.TCP.ResetsOut), v("checksum errors", s.TCP.ChecksumErrors)}},
		{"UDP", []counterVal{v("datagrams in", s.UDP.DatagramsIn), v("datagrams out", s.UDP.DatagramsOut), v("unknown port", s.UDP.UnknownPort), v("checksum errors", s.UDP.ChecksumErrors)}},
		{"ICMP", []counterVal{
			v("echo requests in", s.ICMP.V4EchoRequestsIn+s.ICMP.V6EchoRequestsIn), v("echo replies out", s.ICMP.V4EchoRepliesOut+s.ICMP.V6EchoRepliesOut),
			v("in", s.ICMP.V4In+s.ICMP.V6In), v("out", s.ICMP.V4Out+s.ICMP.V6Out), v("invalid", s.ICMP.V4Invalid+s.ICMP.V6Invalid)}},
	}
	f := counterLayer{Name: "Faults"}
	if s.Faults != nil {
		in, o := s.Faults.Stats.In, s.Faults.Stats.Out
		f.Values = []counterVal{v("lost in", in.Lost), v("lost out", o.Lost), v("corrupted", in.Corrupted+o.Corrupted),
			v("duplicated", in.Duplicated+o.Duplicated), v("reordered", in.Reordered+o.Reordered), v("delayed", in.Delayed+o.Delayed),
			v("rate-dropped", in.RateDropped+o.RateDropped)}
	} else {
		f.Values = []counterVal{v("lost in", 0), v("lost out", 0), v("corrupted", 0)}
	}
	return append(out, f)
}
