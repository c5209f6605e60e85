package trace

import (
	"container/list"
	"net/netip"
	"time"

	"github.com/ustack/ustack/stack/tap"
)

// Options configure a Tracer.
type Options struct {
	// Verbose adds, under each line, the raw header fields of every layer and
	// a hex dump of the first payload bytes, and starts the line with the time
	// since the tracer's first packet.
	Verbose bool
	// Filter selects the packets Line prints; nil prints every packet. A
	// packet the filter rejects still updates the connection state.
	Filter *Filter
}

// Tracer turns packets into trace lines, keeping per-connection state. Not
// safe for concurrent use; one goroutine owns it.
type Tracer struct {
	opts  Options
	first time.Time // time of the first packet with a time

	conns     map[connKey]*conn
	lru       list.List // of *conn; front: most recently seen
	lastSweep time.Time

	scratch Decoded // reused by Line, which hands out only a string
	buf     []byte

	ladderConv string // the conversation of LadderLine's last arrow
}

// New returns a Tracer with no connection state.
func New(opts Options) *Tracer {
	return &Tracer{opts: opts, conns: make(map[connKey]*conn)}
}

// Line decodes p, updates the connection state, and returns its trace line
// (without trailing newline; in verbose mode the extra lines are joined with
// "\n"), and false when the filter rejects it.
func (t *Tracer) Line(p tap.Packet) (string, bool) {
	d := &t.scratch
	d.reset()
	t.decode(p, d)
	if !t.opts.Filter.Match(p.Data) {
		return "", false
	}
	b := t.buf[:0]
	if t.opts.Verbose {
		b = appendElapsed(b, d.Elapsed)
	}
	b = d.appendLine(b)
	if t.opts.Verbose {
		b = d.appendDetails(b)
	}
	t.buf = b
	return string(b), true
}

// Decode decodes p and updates connection state, returning the structured
// result that Line formats. It ignores the filter. The result's Payload and
// Options.Raw alias p.Data, which a tap.Packet's consumers never modify.
func (t *Tracer) Decode(p tap.Packet) *Decoded {
	d := new(Decoded)
	t.decode(p, d)
	return d
}

// Decoded is one packet taken apart, layer by layer. Fields of a layer the
// packet does not have, or that decoding did not reach, are zero.
type Decoded struct {
	// The packet as the link endpoint saw it.
	Dir     tap.Dir
	Time    time.Time
	Elapsed time.Duration // since the tracer's first packet
	Len     int           // length on the wire

	// Malformed says why decoding stopped, naming the layer: "IPv4: truncated
	// (12 of 20 header bytes)". Empty when nothing was wrong with the packet.
	Malformed string
	// Cut says where the capture ended before a header did, when the packet on
	// the wire was long enough: "TCP header not captured (12 of 20 bytes)".
	Cut string

	// Internet layer: IPv4 (RFC 791) or IPv6 (RFC 8200).
	Network      string // "IPv4", "IPv6"; empty when the version is unknown
	Src, Dst     netip.Addr
	TTL          uint8 // IPv4 time to live or IPv6 hop limit
	IPLen        int   // the packet's length as its IP header gives it
	IHL          int   // IPv4 header length in bytes
	TOS          uint8 // IPv4 type of service or IPv6 traffic class
	FlowLabel    uint32
	ID           uint32 // IPv4 identification, or IPv6 fragment header identification
	DontFragment bool   // IPv4 DF
	// Fragment is true for one fragment of a larger datagram: MoreFragments
	// is set, or the offset is not zero. Only the first fragment (offset 0) carries the
	// transport header, and only it is decoded further; no fragment's checksum
	// can be verified, and none changes connection state.
	Fragment          bool
	FragOffset        int // bytes
	MoreFragments     bool
	NextHeader        uint8    // IPv4 protocol or IPv6 next header field
	ExtHeaders        []string // IPv6 extension headers, in order: "hop-by-hop", "fragment", …
	Protocol          uint8    // transport protocol number, after any extension headers
	IPChecksum        uint16
	IPChecksumVerdict Verdict // of the IPv4 header checksum

	// Transport layer.
	Transport        string // "TCP", "UDP", "ICMP", "ICMPv6", or another protocol's name
	SrcPort, DstPort uint16
	Checksum         uint16
	ChecksumVerdict  Verdict
	PayloadLen       int    // payload bytes after the transport header, on the wire
	Payload          []byte // the captured part of the payload, at most 64 bytes

	// TCP (RFC 9293 section 3.1).
	Flags          string // "SYN", "SYN-ACK", "PSH-ACK", …
	TCPFlags       uint8  // the control bits as on the wire
	Seq, Ack       uint32 // relative to each side's initial sequence number
	RawSeq, RawAck uint32
	Window         uint16 // as on the wire, not scaled
	DataOffset     int    // TCP header length in bytes
	Urgent         uint16
	Options        TCPOptions
	SACK           []SACKBlock // Options.SACK made relative

	// UDP (RFC 768).
	UDPLen int // the length field

	// ICMP (RFC 792) and ICMPv6 (RFC 4443).
	ICMPType, ICMPCode uint8
	ICMP               string // "echo request id 7 seq 1 (56 bytes)", "destination unreachable (port unreachable) …"

	// Connection, for TCP and UDP: the 4-tuple, the userspace stack's side
	// first, "198.18.0.2:5000-198.18.0.1:43512".
	Conn string
	// Annotations say what the packet means: "handshake 1/3: Client → SYN →
	// Server", "data", "retransmission", "bad TCP checksum", …
	Annotations    []string
	Retransmission bool // TCP: data, SYN or FIN this side had sent already
	ZeroWindow     bool // TCP: the sender has no room to receive
	DuplicateACK   bool
	MidStream      bool // TCP: the first segment of a connection whose SYN was not seen
	// State is the TCP state of the userspace stack's endpoint after this
	// segment, by RFC 9293's names, replayed from what crossed the wire:
	// "LISTEN" after a peer's SYN that the stack has not answered yet,
	// "ESTABLISHED" assumed for a connection first seen mid-stream. Empty
	// when unknown: not TCP, or a connection not tracked.
	State string
	// ShowState is true when the line prints State: it changed, or the
	// segment opens or closes the connection (and the state is not LISTEN).
	ShowState bool

	// Fault injection: FaultDrop says why the packet never crossed the link
	// ("loss", "queue full"), FaultNote what was done to one that did
	// ("corrupted", "delayed 20ms", "duplicate", "reordered").
	FaultDrop, FaultNote string
	lostIn               bool // FaultDrop on the way in: the stack never got it

	// Segments and SegmentSize: a TCP superpacket that crossed the TUN
	// whole (offloads), standing for Segments wire segments of
	// SegmentSize bytes of payload; 0 otherwise.
	Segments, SegmentSize int

	stopped layer // the layer Malformed or Cut is about
	drop    bool  // a checksum is bad: the receiver drops it, it changes no state
	hdr     bool  // the transport's fixed header was decoded
}

// Verdict is what checking a checksum found.
type Verdict uint8

const (
	// ChecksumUnverified: the packet was not captured whole, or is a
	// fragment, or decoding did not reach the checksum.
	ChecksumUnverified Verdict = iota
	// ChecksumGood: the checksum is right.
	ChecksumGood
	// ChecksumBad: the checksum is wrong.
	ChecksumBad
	// ChecksumNone: the sender computed none (UDP over IPv4 with checksum 0,
	// RFC 768).
	ChecksumNone
)

// String returns "unverified", "ok", "bad" or "none".
func (c Verdict) String() string {
	switch c {
	case ChecksumGood:
		return "ok"
	case ChecksumBad:
		return "bad"
	case ChecksumNone:
		return "none"
	}
	return "unverified"
}

// TCPOptions are the TCP options of a segment (RFC 9293 section 3.2).
type TCPOptions struct {
	// Raw is the options part of the header as on the wire.
	Raw []byte
	// On a SYN, from gVisor's header.ParseSynOptions: the values netstack
	// acts on (it clamps a window scale above 14, for one).
	MSS           uint16 // 0 when absent
	HasWScale     bool
	WScale        uint8
	SACKPermitted bool
	// TS is the timestamps option (RFC 7323), on any segment.
	TS           bool
	TSVal, TSEcr uint32
	// SACK are the selective acknowledgment blocks (RFC 2018) of a segment
	// other than a SYN, with absolute sequence numbers.
	SACK []SACKBlock
}

// SACKBlock is one selectively acknowledged range, [Start, End).
type SACKBlock struct {
	Start, End uint32
}

// layer is where decoding stopped.
type layer uint8

const (
	layerNone    layer = iota
	layerIP            // before the addresses were known
	layerNetwork       // after them
	layerTransport
)

// reset empties d for reuse, keeping the backing arrays of its slices.
func (d *Decoded) reset() {
	*d = Decoded{Annotations: d.Annotations[:0], ExtHeaders: d.ExtHeaders[:0], SACK: d.SACK[:0]}
}

// String returns the one-line form of d: the line Tracer.Line prints, without
// verbose mode's time and details.
func (d *Decoded) String() string {
	return string(d.appendLine(nil))
}
