package stack

import (
	"net/netip"
	"sort"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/ustack/ustack/stack/fault"
)

// Snapshot is what a running stack has counted, layer by layer, and its TCP
// connections, at one moment. The link layer's counters are ours (the
// endpoint's atomics); everything above is netstack's own tcpip.Stats and
// endpoint state. It marshals to the JSON of `ustack stats --json`.
type Snapshot struct {
	Time  time.Time     `json:"time"`
	Link  LinkCounters  `json:"link"`
	IPv4  IPCounters    `json:"ipv4"`
	IPv6  IPCounters    `json:"ipv6"`
	ICMP  ICMPCounters  `json:"icmp"`
	TCP   TCPCounters   `json:"tcp"`
	UDP   UDPCounters   `json:"udp"`
	Drops []Drop        `json:"drops"` // every reason a packet was dropped, with its count (zeros left out)
	Conns []ConnInfo    `json:"connections"`
	Taps  []TapCounters `json:"taps,omitempty"` // filled in by whoever runs the taps
	// Faults is the fault injection on the link: what is set and what it
	// did; nil when no fault was ever set.
	Faults *FaultCounters `json:"faults,omitempty"`
	// Process is the ustack process's own use of the machine, filled in by
	// whoever runs the stack.
	Process *ProcessInfo `json:"process,omitempty"`
	// Endpoints is how many transport endpoints netstack has registered
	// (TCP connections, listeners and those in TIME-WAIT, UDP sockets).
	Endpoints int `json:"endpoints"`
	// Forward is the forwarding mode's counters; nil when it is off.
	Forward *ForwardStats `json:"forward,omitempty"`
}

// ProcessInfo is what a process uses: for leak checks and the soak test.
type ProcessInfo struct {
	PID        int    `json:"pid"`
	Goroutines int    `json:"goroutines"`
	FDs        int    `json:"fds"`
	RSSBytes   uint64 `json:"rss_bytes"`
	HeapBytes  uint64 `json:"heap_bytes"` // live heap, from the Go runtime
}

// FaultCounters is the fault injection's settings and counters.
type FaultCounters struct {
	Settings string       `json:"settings"` // "loss 5% · delay 20ms ±5ms · both directions · seed 42", or "no faults"
	Config   fault.Config `json:"config"`
	Stats    fault.Stats  `json:"stats"`
}

// LinkCounters is the link layer: packets and bytes that crossed the TUN
// device, per direction and per IP version.
type LinkCounters struct {
	RxPackets     uint64 `json:"rx_packets"`
	RxBytes       uint64 `json:"rx_bytes"`
	TxPackets     uint64 `json:"tx_packets"`
	TxBytes       uint64 `json:"tx_bytes"`
	RxIPv4Packets uint64 `json:"rx_ipv4_packets"`
	RxIPv4Bytes   uint64 `json:"rx_ipv4_bytes"`
	RxIPv6Packets uint64 `json:"rx_ipv6_packets"`
	RxIPv6Bytes   uint64 `json:"rx_ipv6_bytes"`
	TxIPv4Packets uint64 `json:"tx_ipv4_packets"`
	TxIPv4Bytes   uint64 `json:"tx_ipv4_bytes"`
	TxIPv6Packets uint64 `json:"tx_ipv6_packets"`
	TxIPv6Bytes   uint64 `json:"tx_ipv6_bytes"`
	RxDropped     uint64 `json:"rx_dropped"`
	RxReadErrors  uint64 `json:"rx_read_errors"`
	TxErrors      uint64 `json:"tx_errors"`
	// The fast path (offloads): frames dropped as malformed, and TCP
	// superpackets with the wire-sized segments every packet stands for
	// (EndpointStats says how they count).
	RxBadFrames    uint64 `json:"rx_bad_frames"`
	RxSuperpackets uint64 `json:"rx_superpackets"`
	RxSegments     uint64 `json:"rx_segments"`
	TxSuperpackets uint64 `json:"tx_superpackets"`
	TxSegments     uint64 `json:"tx_segments"`
	// Offload is true on the fast path.
	Offload bool `json:"offload"`
	// Per transport protocol, as the IP header names it.
	Rx ProtoCounters `json:"rx_by_protocol"`
	Tx ProtoCounters `json:"tx_by_protocol"`
}

// ProtoCounters is packets and bytes per transport protocol.
type ProtoCounters struct {
	TCP   PacketsBytes `json:"tcp"`
	UDP   PacketsBytes `json:"udp"`
	ICMP  PacketsBytes `json:"icmp"` // ICMPv4 and ICMPv6
	Other PacketsBytes `json:"other"`
}

// PacketsBytes is a packet count and the bytes of those packets.
type PacketsBytes struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func protoCounters(c *[numProtos]struct{ Packets, Bytes atomic.Uint64 }) ProtoCounters {
	pb := func(i int) PacketsBytes { return PacketsBytes{c[i].Packets.Load(), c[i].Bytes.Load()} }
	return ProtoCounters{TCP: pb(ProtoTCP), UDP: pb(ProtoUDP), ICMP: pb(ProtoICMP), Other: pb(ProtoOther)}
}

// IPCounters is one IP version's counters (netstack's per-NIC IPStats).
type IPCounters struct {
	PacketsReceived  uint64 `json:"packets_received"`
	PacketsDelivered uint64 `json:"packets_delivered"` // handed to ICMP, TCP or UDP
	PacketsSent      uint64 `json:"packets_sent"`
	Malformed        uint64 `json:"malformed"`
	BadDestination   uint64 `json:"bad_destination"` // not one of our addresses
	BadSource        uint64 `json:"bad_source"`
	OutgoingErrors   uint64 `json:"outgoing_errors"`
}

// ICMPCounters is ICMPv4 and ICMPv6, echo (ping) in detail.
type ICMPCounters struct {
	V4EchoRequestsIn uint64 `json:"v4_echo_requests_in"`
	V4EchoRepliesOut uint64 `json:"v4_echo_replies_out"`
	V4In             uint64 `json:"v4_in"`
	V4Out            uint64 `json:"v4_out"`
	V4Invalid        uint64 `json:"v4_invalid"`
	V6EchoRequestsIn uint64 `json:"v6_echo_requests_in"`
	V6EchoRepliesOut uint64 `json:"v6_echo_replies_out"`
	V6In             uint64 `json:"v6_in"`
	V6Out            uint64 `json:"v6_out"`
	V6Invalid        uint64 `json:"v6_invalid"`
}

// TCPCounters is netstack's TCPStats.
type TCPCounters struct {
	ActiveOpens     uint64 `json:"active_opens"`  // connections we dialled (SYN sent)
	PassiveOpens    uint64 `json:"passive_opens"` // connections we accepted (SYN received)
	Established     uint64 `json:"established"`   // now
	SegmentsIn      uint64 `json:"segments_in"`
	SegmentsOut     uint64 `json:"segments_out"`
	Retransmits     uint64 `json:"retransmits"`
	FastRetransmits uint64 `json:"fast_retransmits"`
	Timeouts        uint64 `json:"timeouts"` // retransmission timer expiries (RTO)
	FastRecoveries  uint64 `json:"fast_recoveries"`
	ResetsIn        uint64 `json:"resets_in"`
	ResetsOut       uint64 `json:"resets_out"`
	FailedAttempts  uint64 `json:"failed_attempts"`
	ChecksumErrors  uint64 `json:"checksum_errors"`
	InvalidSegments uint64 `json:"invalid_segments"`
}

// UDPCounters is netstack's UDPStats.
type UDPCounters struct {
	DatagramsIn    uint64 `json:"datagrams_in"`
	DatagramsOut   uint64 `json:"datagrams_out"`
	UnknownPort    uint64 `json:"unknown_port"`
	ChecksumErrors uint64 `json:"checksum_errors"`
	Malformed      uint64 `json:"malformed"`
	BufferErrors   uint64 `json:"buffer_errors"`
}

// Drop is one reason packets were dropped, and how many.
type Drop struct {
	Layer  string `json:"layer"`
	Reason string `json:"reason"`
	Count  uint64 `json:"count"`
}

// TapCounters is what one tap (trace, pcap, probe) handled and what it had
// to skip because it fell behind.
type TapCounters struct {
	Name    string `json:"name"`
	Events  uint64 `json:"events"`
	Dropped uint64 `json:"dropped"`
}

// ConnInfo is one TCP endpoint of the stack, like a line of `ss -ti`.
type ConnInfo struct {
	Local       netip.AddrPort `json:"local"`
	Remote      netip.AddrPort `json:"remote"`
	State       string         `json:"state"`
	Cwnd        uint32         `json:"cwnd"`     // segments
	Ssthresh    uint32         `json:"ssthresh"` // segments
	SRTT        time.Duration  `json:"srtt_ns"`
	RTTVar      time.Duration  `json:"rttvar_ns"`
	RTO         time.Duration  `json:"rto_ns"`
	SegmentsIn  uint64         `json:"segments_in"`
	SegmentsOut uint64         `json:"segments_out"`
	Retransmits uint64         `json:"retransmits"`
	Timeouts    uint64         `json:"timeouts"`
	BytesAcked  *uint64        `json:"bytes_acked,omitempty"` // known when the TCP probe is on
	RecvQueued  int            `json:"recv_queued"`           // bytes received, not yet read by the app
	RecvBuf     int            `json:"recv_buf"`
	SendQueued  int            `json:"send_queued"` // bytes written by the app, not yet acknowledged
	SendBuf     int            `json:"send_buf"`
}

// Snapshot reads the stack's counters and connections.
func (s *Stack) Snapshot() *Snapshot {
	snap := &Snapshot{Time: time.Now()}
	ls := s.ep.Stats()
	snap.Link = LinkCounters{
		RxPackets: ls.RxPackets.Load(), RxBytes: ls.RxBytes.Load(),
		TxPackets: ls.TxPackets.Load(), TxBytes: ls.TxBytes.Load(),
		RxIPv4Packets: ls.RxIPv4Packets.Load(), RxIPv4Bytes: ls.RxIPv4Bytes.Load(),
		RxIPv6Packets: ls.RxIPv6Packets.Load(), RxIPv6Bytes: ls.RxIPv6Bytes.Load(),
		TxIPv4Packets: ls.TxIPv4Packets.Load(), TxIPv4Bytes: ls.TxIPv4Bytes.Load(),
		TxIPv6Packets: ls.TxIPv6Packets.Load(), TxIPv6Bytes: ls.TxIPv6Bytes.Load(),
		RxDropped: ls.RxDropped.Load(), RxReadErrors: ls.RxReadErrors.Load(), TxErrors: ls.TxErrors.Load(),
		Rx: protoCounters(&ls.Rx), Tx: protoCounters(&ls.Tx),
		RxBadFrames: ls.RxBadFrames.Load(), RxSuperpackets: ls.RxSuperpackets.Load(), RxSegments: ls.RxSegments.Load(),
		TxSuperpackets: ls.TxSuperpackets.Load(), TxSegments: ls.TxSegments.Load(),
		Offload: s.ep.Offload(),
	}
	st := s.ns.Stats()
	if info, ok := s.ns.NICInfo()[nicID]; ok {
		if v4, ok := info.NetworkStats[header.IPv4ProtocolNumber].(*ipv4.Stats); ok {
			snap.IPv4 = ipCounters(&v4.IP)
			snap.ICMP.V4EchoRequestsIn = v4.ICMP.PacketsReceived.EchoRequest.Value()
			snap.ICMP.V4EchoRepliesOut = v4.ICMP.PacketsSent.EchoReply.Value()
			snap.ICMP.V4Invalid = v4.ICMP.PacketsReceived.Invalid.Value()
		}
		if v6, ok := info.NetworkStats[header.IPv6ProtocolNumber].(*ipv6.Stats); ok {
			snap.IPv6 = ipCounters(&v6.IP)
			snap.ICMP.V6EchoRequestsIn = v6.ICMP.PacketsReceived.EchoRequest.Value()
			snap.ICMP.V6EchoRepliesOut = v6.ICMP.PacketsSent.EchoReply.Value()
			snap.ICMP.V6Invalid = v6.ICMP.PacketsReceived.Invalid.Value()
		}
		snap.Drops = appendDrop(snap.Drops, "transport", "malformed transport header", info.Stats.MalformedL4RcvdPackets.Value())
	}
	snap.ICMP.V4In = icmpv4Total(&st.ICMP.V4.PacketsReceived.ICMPv4PacketStats)
	snap.ICMP.V4Out = icmpv4Total(&st.ICMP.V4.PacketsSent.ICMPv4PacketStats)
	snap.ICMP.V6In = icmpv6Total(&st.ICMP.V6.PacketsReceived.ICMPv6PacketStats)
	snap.ICMP.V6Out = icmpv6Total(&st.ICMP.V6.PacketsSent.ICMPv6PacketStats)
	t := st.TCP
	snap.TCP = TCPCounters{
		ActiveOpens: t.ActiveConnectionOpenings.Value(), PassiveOpens: t.PassiveConnectionOpenings.Value(),
		Established: t.CurrentEstablished.Value(),
		SegmentsIn:  t.ValidSegmentsReceived.Value() + t.InvalidSegmentsReceived.Value(), SegmentsOut: t.SegmentsSent.Value(),
		Retransmits: t.Retransmits.Value(), FastRetransmits: t.FastRetransmit.Value(), Timeouts: t.Timeouts.Value(),
		FastRecoveries: t.FastRecovery.Value(), ResetsIn: t.ResetsReceived.Value(), ResetsOut: t.ResetsSent.Value(),
		FailedAttempts: t.FailedConnectionAttempts.Value(), ChecksumErrors: t.ChecksumErrors.Value(),
		InvalidSegments: t.InvalidSegmentsReceived.Value(),
	}
	u := st.UDP
	snap.UDP = UDPCounters{
		DatagramsIn: u.PacketsReceived.Value(), DatagramsOut: u.PacketsSent.Value(),
		UnknownPort: u.UnknownPortErrors.Value(), ChecksumErrors: u.ChecksumErrors.Value(),
		Malformed: u.MalformedPacketsReceived.Value(), BufferErrors: u.ReceiveBufferErrors.Value(),
	}
	d := snap.Drops
	d = appendDrop(d, "link", "not an IPv4 or IPv6 packet", snap.Link.RxDropped)
	d = appendDrop(d, "link", "device read failed", snap.Link.RxReadErrors)
	d = appendDrop(d, "link", "malformed offload frame", snap.Link.RxBadFrames)
	d = appendDrop(d, "link", "device refused a write batch", snap.Link.TxErrors)
	for _, v := range []struct {
		name string
		c    IPCounters
	}{{"ipv4", snap.IPv4}, {"ipv6", snap.IPv6}} {
		d = appendDrop(d, v.name, "malformed (bad header, checksum or length)", v.c.Malformed)
		d = appendDrop(d, v.name, "destination is not ours", v.c.BadDestination)
		d = appendDrop(d, v.name, "bad source address", v.c.BadSource)
	}
	d = appendDrop(d, "icmp", "invalid ICMPv4", snap.ICMP.V4Invalid)
	d = appendDrop(d, "icmp", "invalid ICMPv6", snap.ICMP.V6Invalid)
	d = appendDrop(d, "tcp", "bad checksum", snap.TCP.ChecksumErrors)
	d = appendDrop(d, "tcp", "invalid segment (outside the window, bad header)", snap.TCP.InvalidSegments)
	d = appendDrop(d, "tcp", "listen queue full (SYN)", t.ListenOverflowSynDrop.Value())
	d = appendDrop(d, "tcp", "listen queue full (ACK)", t.ListenOverflowAckDrop.Value())
	d = appendDrop(d, "udp", "no socket on that port", snap.UDP.UnknownPort)
	d = appendDrop(d, "udp", "bad checksum", snap.UDP.ChecksumErrors)
	d = appendDrop(d, "udp", "malformed", snap.UDP.Malformed)
	d = appendDrop(d, "udp", "receive buffer full", snap.UDP.BufferErrors)
	snap.Drops = d
	if j := s.ep.Faults(); j != nil {
		cfg := j.Config()
		snap.Faults = &FaultCounters{Settings: cfg.String(), Config: cfg, Stats: j.Stats()}
		fs := snap.Faults.Stats
		snap.Drops = appendDrop(snap.Drops, "fault", "lost on the way in (--loss)", fs.In.Lost)
		snap.Drops = appendDrop(snap.Drops, "fault", "lost on the way out (--loss)", fs.Out.Lost)
		snap.Drops = appendDrop(snap.Drops, "fault", "rate limiter queue full, in (--rate)", fs.In.RateDropped)
		snap.Drops = appendDrop(snap.Drops, "fault", "rate limiter queue full, out (--rate)", fs.Out.RateDropped)
	}
	snap.Conns = s.conns()
	snap.Endpoints = len(s.ns.RegisteredEndpoints())
	if s.fwd != nil {
		fs := s.ForwardStats()
		snap.Forward = &fs
	}
	s.forgetClosed(snap.Conns)
	return snap
}

func ipCounters(ip *tcpip.IPStats) IPCounters {
	return IPCounters{
		PacketsReceived: ip.PacketsReceived.Value(), PacketsDelivered: ip.PacketsDelivered.Value(),
		PacketsSent: ip.PacketsSent.Value(), Malformed: ip.MalformedPacketsReceived.Value(), // netstack counts a malformed fragment here too, and again in MalformedFragmentsReceived
		BadDestination: ip.InvalidDestinationAddressesReceived.Value(), BadSource: ip.InvalidSourceAddressesReceived.Value(),
		OutgoingErrors: ip.OutgoingPacketErrors.Value(),
	}
}

func sum(counters ...*tcpip.StatCounter) uint64 {
	var total uint64
	for _, c := range counters {
		total += c.Value()
	}
	return total
}

func icmpv4Total(v *tcpip.ICMPv4PacketStats) uint64 {
	return sum(v.EchoRequest, v.EchoReply, v.DstUnreachable, v.SrcQuench, v.Redirect, v.TimeExceeded, v.ParamProblem, v.Timestamp, v.TimestampReply, v.InfoRequest, v.InfoReply)
}

func icmpv6Total(v *tcpip.ICMPv6PacketStats) uint64 {
	return sum(v.EchoRequest, v.EchoReply, v.DstUnreachable, v.PacketTooBig, v.TimeExceeded, v.ParamProblem, v.RouterSolicit, v.RouterAdvert, v.NeighborSolicit, v.NeighborAdvert, v.RedirectMsg, v.MulticastListenerQuery, v.MulticastListenerReport, v.MulticastListenerDone)
}

func appendDrop(d []Drop, layer, reason string, n uint64) []Drop {
	if n == 0 {
		return d
	}
	return append(d, Drop{Layer: layer, Reason: reason, Count: n})
}

// Conn returns the stack's TCP connection between local (the stack's side)
// and remote.
func (s *Stack) Conn(local, remote netip.AddrPort) (ConnInfo, bool) {
	for _, c := range s.conns() {
		if c.Local == local && c.Remote == remote {
			return c, true
		}
	}
	return ConnInfo{}, false
}

// conns lists the stack's TCP endpoints with their state and congestion
// control, ordered by local then remote address.
func (s *Stack) conns() []ConnInfo {
	var out []ConnInfo
	for _, te := range s.ns.RegisteredEndpoints() {
		ep, ok := te.(*tcp.Endpoint)
		if !ok {
			continue
		}
		id := ep.Info().(*stack.TransportEndpointInfo).ID
		c := ConnInfo{
			Local:  netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort),
			Remote: netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort),
			State:  StateName(tcp.EndpointState(ep.State())),
		}
		var info tcpip.TCPInfoOption
		if tcpipErr := ep.GetSockOpt(&info); tcpipErr == nil {
			c.Cwnd, c.Ssthresh, c.SRTT, c.RTTVar, c.RTO = info.SndCwnd, info.SndSsthresh, info.RTT, info.RTTVar, info.RTO
		}
		if es, ok := ep.Stats().(*tcp.Stats); ok {
			c.SegmentsIn, c.SegmentsOut = es.SegmentsReceived.Value(), es.SegmentsSent.Value()
			c.Retransmits, c.Timeouts = es.SendErrors.Retransmits.Value(), es.SendErrors.Timeouts.Value()
		}
		c.RecvQueued, _ = ep.GetSockOptInt(tcpip.ReceiveQueueSizeOption)
		c.SendQueued, _ = ep.GetSockOptInt(tcpip.SendQueueSizeOption)
		c.RecvBuf = int(ep.SocketOptions().GetReceiveBufferSize())
		c.SendBuf = int(ep.SocketOptions().GetSendBufferSize())
		if acked, ok := s.bytesAcked(c.Local, c.Remote); ok {
			c.BytesAcked = &acked
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Local.Compare(out[j].Local); c != 0 {
			return c < 0
		}
		return out[i].Remote.Compare(out[j].Remote) < 0
	})
	return out
}

func addrFrom(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

// StateName returns the RFC 9293 name of a netstack TCP state.
func StateName(st tcp.EndpointState) string {
	switch st {
	case tcp.StateInitial, tcp.StateBound:
		return "CLOSED"
	case tcp.StateListen:
		return "LISTEN"
	case tcp.StateConnecting, tcp.StateSynSent:
		return "SYN-SENT"
	case tcp.StateSynRecv:
		return "SYN-RCVD"
	case tcp.StateEstablished:
		return "ESTABLISHED"
	case tcp.StateFinWait1:
		return "FIN-WAIT-1"
	case tcp.StateFinWait2:
		return "FIN-WAIT-2"
	case tcp.StateTimeWait:
		return "TIME-WAIT"
	case tcp.StateClose, tcp.StateError:
		return "CLOSED"
	case tcp.StateCloseWait:
		return "CLOSE-WAIT"
	case tcp.StateLastAck:
		return "LAST-ACK"
	case tcp.StateClosing:
		return "CLOSING"
	}
	return st.String()
}
