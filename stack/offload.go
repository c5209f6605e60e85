package stack

// The fast path of the link endpoint: frames with the virtio-net header,
// TCP superpackets in both directions, checksums the kernel vouches for.
//
// A TUN opened with IFF_VNET_HDR and TUNSETOFFLOAD(TUN_F_CSUM|TUN_F_TSO4|
// TUN_F_TSO6) exchanges frames: a 10-byte struct virtio_net_hdr
// (include/uapi/linux/virtio_net.h), then an IP packet of up to 64 KiB.
//
//	 0        1          2 … 3     4 … 5      6 … 7        8 … 9
//	+-------+----------+---------+----------+------------+-------------+
//	| flags | gso_type | hdr_len | gso_size | csum_start | csum_offset |
//	+-------+----------+---------+----------+------------+-------------+
//	(16-bit fields little-endian, virtio 1.0 §5.1.6)
//
// Inbound, the kernel's TCP hands us its TSO superpackets uncut (gso_type
// TCPV4/6, gso_size the MSS it would have cut at) with a partial checksum
// (NEEDS_CSUM: the TCP checksum field holds only the pseudo-header's sum,
// the way CHECKSUM_PARTIAL leaves it for a NIC). Netstack's TCP takes a 64
// KiB segment as it is, so the fast path delivers it whole and tells
// netstack not to verify its checksum: the kernel made the packet in memory,
// and "verifying" a partial checksum would reject every one.
//
// Outbound, the endpoint advertises host GSO (stack.GSOEndpoint,
// HostGSOSupported), so netstack's TCP sends up to 64 KiB at a time with a
// partial checksum and tells us the MSS (pkt.GSOOptions); we write it behind
// a virtio header (gso_type, gso_size = MSS, NEEDS_CSUM at csum_start/
// csum_offset) and the kernel cuts it into wire-sized segments — or, as the
// receiver here, does not even need to. The header lives in a small buffer
// of its own and the packet's views are written as they are (writev): the
// 64 KiB payload is never copied.
//
// Fault injection decides per wire-sized segment. While a fault applies to
// a direction, superpackets of that direction are cut first, in software,
// into the segments the kernel would have made, each with a full checksum,
// and those pass the injector one by one; inbound, netstack then verifies
// every checksum, so a corrupted segment is caught as on a real wire.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ustack/ustack/stack/fault"
	"github.com/ustack/ustack/stack/tap"
)

// FrameDevice is what the fast path needs of a TUN: whole frames, each a
// virtio-net header and an IP packet (tunif.Frames on a real device; an
// in-memory one in tests). The tun.Device the endpoint was made with stays
// its owner: the endpoint closes that, and uses it for nothing else.
type FrameDevice interface {
	// ReadFrame reads one frame: VirtioNetHdrLen bytes of header into hdr
	// and the IP packet into pkt; it returns the packet's length. It is
	// called from one goroutine at a time.
	ReadFrame(hdr, pkt []byte) (int, error)
	// WriteFrame writes one frame gathered from bufs: bufs[0] is the
	// header, the rest the packet's pieces. It is called from one
	// goroutine at a time; it must not keep bufs.
	WriteFrame(bufs [][]byte) (int, error)
	// SetReadDeadline wakes a blocked ReadFrame (with an error) at t.
	SetReadDeadline(t time.Time) error
}

// VirtioNetHdrLen is the size of struct virtio_net_hdr.
const VirtioNetHdrLen = 10

// virtio_net_hdr flags and gso_type values (include/uapi/linux/virtio_net.h).
const (
	virtioFlagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum is partial
	virtioFlagDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID: the kernel checked it

	virtioGSONone  = 0
	virtioGSOTCPv4 = 1
	virtioGSOTCPv6 = 4
	virtioGSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN, or'ed into gso_type
)

// maxFramePacket is the largest IP packet a frame carries (the 16-bit IPv4
// total length; a TUN's superpackets stay within it).
const maxFramePacket = 1<<16 - 1

// frameReadSize is how much of a frame's packet a read takes: one pooled 64
// KiB chunk of netstack's, a byte more than maxFramePacket, so that an IPv6
// packet of 40 bytes of header and a 16-bit payload length just past 65535
// in all is read whole, not cut and dropped.
const frameReadSize = buffer.MaxChunkSize

// gsoMaxSize is what GSOMaxSize advertises: netstack's TCP then sends at most
// gsoMaxSize - header.TCPTotalHeaderMaximumSize - 1 bytes of payload at a
// time, so that the IP packet stays within maxFramePacket.
const gsoMaxSize = 1 << 16

// zeroCopyMin is the smallest inbound packet handed to netstack in the read
// buffer itself (a 64 KiB chunk); smaller ones are copied into a buffer of
// their size, so that a segment waiting in a TCP receive queue does not pin
// 64 KiB.
const zeroCopyMin = buffer.MaxChunkSize / 2

// minGSOSize is the smallest gso_size the kernel's TCP makes: it never sends
// segments below net.ipv4.tcp_min_snd_mss, 48 bytes by default and at least
// 48 (Documentation/networking/ip-sysctl.rst). A smaller one is malformed, and
// would make one frame thousands of segments when faults cut it.
const minGSOSize = 48

// TCP checksum offsets inside the transport header (RFC 9293 §3.1, RFC 768).
const (
	tcpCsumOffset = 16
	udpCsumOffset = 6
)

// virtioNetHdr is struct virtio_net_hdr.
type virtioNetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func (h *virtioNetHdr) decode(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	h.flags = b[0]
	h.gsoType = b[1]
	h.hdrLen = binary.LittleEndian.Uint16(b[2:])
	h.gsoSize = binary.LittleEndian.Uint16(b[4:])
	h.csumStart = binary.LittleEndian.Uint16(b[6:])
	h.csumOffset = binary.LittleEndian.Uint16(b[8:])
}

func (h *virtioNetHdr) encode(b []byte) {
	_ = b[VirtioNetHdrLen-1]
	b[0] = h.flags
	b[1] = h.gsoType
	binary.LittleEndian.PutUint16(b[2:], h.hdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.gsoSize)
	binary.LittleEndian.PutUint16(b[6:], h.csumStart)
	binary.LittleEndian.PutUint16(b[8:], h.csumOffset)
}

// frame is an inbound frame, checked.
type frame struct {
	pkt []byte
	// gso: a TCP superpacket, mss bytes of payload per wire segment,
	// ipLen bytes of IP header and hdrLen of IP and TCP header.
	gso           bool
	mss           int
	ipLen, hdrLen int
	// segments is how many wire-sized packets it stands for: 1, or the
	// superpacket's count.
	segments int
	// partial: the transport checksum at csumAt is only the pseudo
	// header's (NEEDS_CSUM); it is made whole from csumStart on before
	// anything checks it.
	partial           bool
	csumStart, csumAt int
	// trusted: netstack need not verify the checksums — the kernel made
	// the packet with a partial checksum at the TCP or UDP checksum's
	// place, or checked it (DATA_VALID).
	trusted bool
}

// parseFrame checks a frame read from the device: hdr is its virtio header,
// pkt its IP packet. It returns why the frame must be dropped, or "". It
// never panics, whatever the bytes: a frame comes from the kernel, but the
// kernel passes on what a local process (a raw socket, another TUN writer)
// made.
func parseFrame(hdr, pkt []byte) (frame, string) {
	f := frame{pkt: pkt, segments: 1}
	if len(hdr) != VirtioNetHdrLen {
		return f, "short virtio header"
	}
	var h virtioNetHdr
	h.decode(hdr)
	if len(pkt) == 0 {
		return f, "empty packet"
	}
	gsoType := h.gsoType &^ virtioGSOECN
	if gsoType == virtioGSONone && h.flags&virtioFlagNeedsCsum == 0 {
		// An ordinary packet: netstack checks all of it. DATA_VALID
		// says the kernel checked the checksum already — of this packet,
		// so never of a fragment: netstack would carry the trust over to
		// the datagram it reassembles.
		f.trusted = h.flags&virtioFlagDataValid != 0 && wholeTransport(pkt)
		return f, ""
	}
	// Where the transport header starts, and what it is.
	var ipLen int
	var proto uint8
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		if len(pkt) < header.IPv4MinimumSize {
			return f, "IPv4 header cut short"
		}
		ip := header.IPv4(pkt)
		ipLen = int(ip.HeaderLength())
		if ipLen < header.IPv4MinimumSize || ipLen > len(pkt) || int(ip.TotalLength()) != len(pkt) {
			return f, "IPv4 lengths do not match the frame"
		}
		proto = ip.Protocol()
	case header.IPv6Version:
		if len(pkt) < header.IPv6MinimumSize {
			return f, "IPv6 header cut short"
		}
		ip := header.IPv6(pkt)
		if int(ip.PayloadLength())+header.IPv6MinimumSize != len(pkt) {
			return f, "IPv6 length does not match the frame"
		}
		ipLen = header.IPv6MinimumSize
		proto = ip.NextHeader()
	default:
		return f, "not IPv4 or IPv6"
	}
	if header.IPVersion(pkt) == header.IPv4Version && !wholeTransport(pkt) {
		// The kernel completes a checksum before it fragments: an
		// offload on a fragment is not its.
		return f, "checksum offload or GSO on an IPv4 fragment"
	}
	if h.flags&virtioFlagNeedsCsum != 0 {
		start, at := int(h.csumStart), int(h.csumStart)+int(h.csumOffset)
		if start < ipLen || at+2 > len(pkt) {
			return f, "checksum place outside the packet"
		}
		f.partial, f.csumStart, f.csumAt = true, start, at
		// Trusted only where netstack will look for it: TCP's or UDP's
		// checksum field right behind the IP header. Elsewhere (an
		// extension header in between, another protocol) the endpoint
		// completes it and netstack checks it as usual.
		f.trusted = start == ipLen &&
			(proto == uint8(header.TCPProtocolNumber) && h.csumOffset == tcpCsumOffset ||
				proto == uint8(header.UDPProtocolNumber) && h.csumOffset == udpCsumOffset)
	}
	if gsoType == virtioGSONone {
		return f, ""
	}
	// A TCP superpacket. (UDP ones never come: Frames does not turn on
	// TUN_F_USO4/6.)
	want := uint8(virtioGSOTCPv4)
	if header.IPVersion(pkt) == header.IPv6Version {
		want = virtioGSOTCPv6
	}
	switch {
	case gsoType != want:
		return f, fmt.Sprintf("GSO type %d for an IPv%d packet", h.gsoType, header.IPVersion(pkt))
	case proto != uint8(header.TCPProtocolNumber):
		return f, "TCP GSO on a packet that is not TCP"
	case f.partial && !f.trusted:
		return f, "TCP GSO with a partial checksum elsewhere than TCP's"
	case !f.partial && h.flags&virtioFlagDataValid == 0:
		// A superpacket's checksum is either left to complete
		// (NEEDS_CSUM, the usual) or was checked (DATA_VALID, a
		// received one forwarded): nothing else can be right for it.
		return f, "TCP GSO with neither NEEDS_CSUM nor DATA_VALID"
	case h.gsoSize < minGSOSize:
		return f, fmt.Sprintf("GSO size %d", h.gsoSize)
	case len(pkt) < ipLen+header.TCPMinimumSize:
		return f, "TCP header cut short"
	}
	// hdr_len is a hint the kernel may set to the whole first packet
	// (forwarded packets): the TCP header's own length is the truth.
	tcpLen := int(header.TCP(pkt[ipLen:]).DataOffset())
	if tcpLen < header.TCPMinimumSize || ipLen+tcpLen > len(pkt) {
		return f, "TCP header length outside the packet"
	}
	f.gso, f.mss, f.ipLen, f.hdrLen = true, int(h.gsoSize), ipLen, ipLen+tcpLen
	f.trusted = true // at TCP's place, or checked
	if payload := len(pkt) - f.hdrLen; payload > f.mss {
		f.segments = (payload + f.mss - 1) / f.mss
	}
	return f, ""
}

// wholeTransport tells whether pkt carries its whole transport segment right
// behind the IP header: not an IPv4 fragment, no IPv6 extension header (a
// fragment header among them).
func wholeTransport(pkt []byte) bool {
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		if len(pkt) < header.IPv4MinimumSize {
			return false
		}
		ip := header.IPv4(pkt)
		return !ip.More() && ip.FragmentOffset() == 0
	case header.IPv6Version:
		if len(pkt) < header.IPv6MinimumSize {
			return false
		}
		next := header.IPv6(pkt).NextHeader()
		return next == uint8(header.TCPProtocolNumber) || next == uint8(header.UDPProtocolNumber)
	}
	return false
}

// completeChecksum turns a partial checksum (the pseudo header's sum at at)
// into the full one: the one's-complement sum of everything from start on,
// complemented, as the kernel's skb_checksum_help does for a device without
// checksum offload.
func completeChecksum(pkt []byte, start, at int) {
	sum := ^checksum.Checksum(pkt[start:], 0)
	if sum == 0 && at-start == udpCsumOffset {
		sum = 0xffff // RFC 768: a computed 0 is sent as all ones
	}
	binary.BigEndian.PutUint16(pkt[at:], sum)
}

// fillTCPChecksum computes the full TCP checksum of pkt, whose TCP header
// starts at ipLen, as if it crossed a wire whole.
func fillTCPChecksum(pkt []byte, ipLen int) {
	tcp := header.TCP(pkt[ipLen:])
	var src, dst tcpip.Address
	if header.IPVersion(pkt) == header.IPv4Version {
		ip := header.IPv4(pkt)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	} else {
		ip := header.IPv6(pkt)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	tcp.SetChecksum(0)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
}

// segmenter cuts TCP superpackets into wire-sized segments with full
// checksums, into a buffer it reuses.
type segmenter struct {
	buf  []byte
	segs [][]byte
}

// split cuts the superpacket pkt (IP and TCP headers of hdrLen bytes in all,
// the IP header ipLen of them) into segments of at most mss bytes of payload,
// each with the headers a TSO engine gives them (RFC 9293 §3.1; Linux's
// tcp_gso_segment): its own sequence number, IP length and ID, PSH and FIN
// only on the last, CWR only on the first, and full IP and TCP checksums. The
// segments are valid until the next split.
func (s *segmenter) split(pkt []byte, ipLen, hdrLen, mss int) [][]byte {
	payload := len(pkt) - hdrLen
	n := max(1, (payload+mss-1)/mss)
	if need := n*hdrLen + payload; cap(s.buf) < need {
		s.buf = make([]byte, 0, max(need, 2*maxFramePacket))
	}
	buf := s.buf[:0]
	s.segs = s.segs[:0]
	v4 := header.IPVersion(pkt) == header.IPv4Version
	seq := header.TCP(pkt[ipLen:]).SequenceNumber()
	flags := header.TCP(pkt[ipLen:]).Flags()
	var id uint16
	if v4 {
		id = header.IPv4(pkt).ID()
	}
	for i := range n {
		off := hdrLen + i*mss
		size := min(mss, len(pkt)-off)
		start := len(buf)
		buf = append(buf, pkt[:hdrLen]...)
		buf = append(buf, pkt[off:off+size]...)
		seg := buf[start:]
		tcp := header.TCP(seg[ipLen:])
		tcp.SetSequenceNumber(seq + uint32(i*mss))
		f := flags
		if i != n-1 {
			f &^= header.TCPFlagFin | header.TCPFlagPsh
		}
		if i != 0 {
			f &^= header.TCPFlagCwr
		}
		tcp.SetFlags(uint8(f))
		if v4 {
			ip := header.IPv4(seg)
			ip.SetTotalLength(uint16(len(seg)))
			ip.SetID(id + uint16(i))
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
		} else {
			header.IPv6(seg).SetPayloadLength(uint16(len(seg) - header.IPv6MinimumSize))
		}
		fillTCPChecksum(seg, ipLen)
		s.segs = append(s.segs, seg)
	}
	s.buf = buf[:0]
	return s.segs
}

// wirePackets turns an inbound frame into the packets that would have crossed
// a wire, each with a full checksum: the superpacket's segments, or the
// packet itself with its partial checksum completed (in place).
func (s *segmenter) wirePackets(f *frame) [][]byte {
	if f.gso && f.segments > 1 {
		return s.split(f.pkt, f.ipLen, f.hdrLen, f.mss)
	}
	if f.partial {
		completeChecksum(f.pkt, f.csumStart, f.csumAt)
	}
	s.segs = append(s.segs[:0], f.pkt)
	return s.segs
}

// gsoHeader is the virtio header for an outbound packet of netstack's: for
// TCP on a host-GSO route, the checksum to complete (netstack left the
// pseudo header's sum in place, see tcp's buildTCPHdr) and, for more than an
// MSS of payload, the segmentation to do. It returns how many wire segments
// the packet stands for.
func gsoHeader(pkt *stack.PacketBuffer) (virtioNetHdr, int) {
	var h virtioNetHdr
	g := &pkt.GSOOptions
	if g.Type != stack.GSOTCPv4 && g.Type != stack.GSOTCPv6 {
		return h, 1
	}
	ipLen := len(pkt.NetworkHeader().Slice())
	if g.NeedsCsum {
		h.flags = virtioFlagNeedsCsum
		h.csumStart = uint16(ipLen)
		h.csumOffset = g.CsumOffset
	}
	payload := pkt.Data().Size()
	if g.MSS == 0 || payload <= int(g.MSS) {
		return h, 1
	}
	h.gsoType = virtioGSOTCPv4
	if g.Type == stack.GSOTCPv6 {
		h.gsoType = virtioGSOTCPv6
	}
	h.gsoSize = g.MSS
	h.hdrLen = uint16(pkt.HeaderSize())
	return h, (payload + int(g.MSS) - 1) / int(g.MSS)
}

// readFramesLoop is the fast path's read loop: one frame at a time, each
// read into a 64 KiB view that a large packet keeps (netstack takes it
// without a copy; the loop takes a new one) and a small one leaves for the
// next frame.
func (e *Endpoint) readFramesLoop() {
	defer close(e.readerDone)
	var hdr [VirtioNetHdrLen]byte
	var v *buffer.View
	defer func() {
		if v != nil {
			v.Release()
		}
	}()
	failing := 0
	for {
		if v == nil {
			v = buffer.NewViewSize(frameReadSize)
		}
		n, err := e.frames.ReadFrame(hdr[:], v.AsSlice())
		if err == nil && e.deliverFrame(hdr[:], v, n) {
			v = nil // netstack's now
		}
		if e.stopping.Load() {
			return
		}
		if err == nil {
			failing = 0
			continue
		}
		if e.readFailed(err, &failing) {
			return
		}
	}
}

// deliverFrame checks one frame and hands its packet to netstack: whole, a
// superpacket as one segment, with the kernel's word on its checksum — or,
// while inbound faults apply, cut into the wire's segments, each through the
// injector and checked by netstack. It tells whether netstack took v.
func (e *Endpoint) deliverFrame(hdr []byte, v *buffer.View, n int) bool {
	f, bad := parseFrame(hdr, v.AsSlice()[:n])
	if bad != "" {
		e.stats.RxBadFrames.Add(1)
		return false
	}
	e.inMu.Lock()
	defer e.inMu.Unlock()
	r := e.newReceiver()
	defer r.count()
	if j := e.faults.Load(); j != nil && j.Applies(fault.In) {
		for _, pkt := range e.rxSeg.wirePackets(&f) {
			r.faulted(j, pkt)
		}
		return false
	}
	if f.partial && (r.tapped || !f.trusted) {
		// Made whole: for the taps, which show the packet as it would
		// cross a wire (the trace checks checksums), and where the
		// kernel put a partial checksum where netstack does not look
		// for one, for netstack to check it. Otherwise netstack takes
		// it on the kernel's word, and nobody computes it.
		completeChecksum(f.pkt, f.csumStart, f.csumAt)
	}
	if r.tapped && f.gso && !f.partial {
		// A superpacket the kernel vouched for (DATA_VALID: received
		// segments it merged, forwarded here) keeps its first segment's
		// checksum; netstack trusts it, the trace would call it bad.
		fillTCPChecksum(f.pkt, f.ipLen)
	}
	if r.tapped {
		if f.segments > 1 {
			tap.PublishSuperpacket(&e.packets, r.now, tap.In, f.pkt, f.segments, f.mss)
		} else {
			tap.PublishPacket(&e.packets, r.now, tap.In, f.pkt)
		}
	}
	if n < zeroCopyMin {
		v = nil
	}
	return r.hand(f.pkt, v, f.segments, f.trusted)
}

// writeFrames writes netstack's packets on the fast path, each as one frame:
// its virtio header (gsoHeader) from a small buffer of its own, then the
// packet's views as they are. Only a closed device is an error (see flush).
func (e *Endpoint) writeFrames(pkts []*stack.PacketBuffer, tapped bool, now time.Time) error {
	var sent, bytes, v4, v4Bytes, supers, segs uint64
	var protos protoCount
	defer func() {
		st := &e.stats
		st.TxPackets.Add(sent)
		st.TxBytes.Add(bytes)
		st.TxIPv4Packets.Add(v4)
		st.TxIPv4Bytes.Add(v4Bytes)
		st.TxIPv6Packets.Add(sent - v4)
		st.TxIPv6Bytes.Add(bytes - v4Bytes)
		st.TxSuperpackets.Add(supers)
		st.TxSegments.Add(segs)
		protos.flush(&st.Tx)
	}()
	for _, pkt := range pkts {
		h, n := gsoHeader(pkt)
		h.encode(e.txHdr[:])
		size := pkt.Size()
		iov := append(e.txIov[:0], e.txHdr[:])
		views, off := pkt.AsViewList()
		for v := views.Front(); v != nil; v = v.Next() {
			b := v.AsSlice()
			if off >= len(b) {
				off -= len(b)
				continue
			}
			if len(iov) == cap(iov) {
				// More pieces than a frame takes: one copy instead.
				iov = append(iov[:1], e.copyOut(pkt))
				break
			}
			iov = append(iov, b[off:])
			off = 0
		}
		e.txIov = iov
		if tapped {
			// The taps see the packet with the checksum the kernel
			// fills in, as it leaves a NIC (a copy of their own:
			// iov may hold txCopy), before it is written, so that
			// the kernel's answer cannot be published first.
			b := copyInto(&e.txTap, pkt)
			if h.flags&virtioFlagNeedsCsum != 0 && int(h.csumStart)+int(h.csumOffset)+2 <= len(b) {
				completeChecksum(b, int(h.csumStart), int(h.csumStart)+int(h.csumOffset))
			}
			if n > 1 {
				tap.PublishSuperpacket(&e.packets, now, tap.Out, b, n, int(h.gsoSize))
			} else {
				tap.PublishPacket(&e.packets, now, tap.Out, b)
			}
		}
		_, err := e.frames.WriteFrame(iov)
		clear(iov) // netstack reuses the views once the packet is released
		if err != nil {
			e.stats.TxErrors.Add(1)
			if errors.Is(err, os.ErrClosed) {
				return err
			}
			continue
		}
		ip := pkt.NetworkHeader().Slice()
		sent++
		bytes += uint64(size)
		segs += uint64(n)
		if n > 1 {
			supers++
		}
		protos.addSized(ip, size)
		if header.IPVersion(ip) == header.IPv4Version {
			v4++
			v4Bytes += uint64(size)
		}
	}
	return nil
}

// copyOut copies the whole packet into the endpoint's copy buffer (hold
// writeMu) and returns it.
func (e *Endpoint) copyOut(pkt *stack.PacketBuffer) []byte { return copyInto(&e.txCopy, pkt) }

// copyInto copies the whole packet into *buf, grown to hold it, and returns
// the copy.
func copyInto(buf *[]byte, pkt *stack.PacketBuffer) []byte {
	size := pkt.Size()
	if cap(*buf) < size {
		*buf = make([]byte, max(size, maxFramePacket))
	}
	b := (*buf)[:size]
	copyPacket(b, pkt)
	return b
}

// wireOut returns the packets that netstack's pkt stands for on a wire, each
// with full checksums: the segments of a superpacket, cut as the kernel
// would, or the packet with its partial TCP checksum completed. They are
// valid until the next call (hold writeMu).
func (e *Endpoint) wireOut(pkt *stack.PacketBuffer) [][]byte {
	b := e.copyOut(pkt)
	h, n := gsoHeader(pkt)
	if n > 1 {
		return e.txSeg.split(b, len(pkt.NetworkHeader().Slice()), int(h.hdrLen), int(h.gsoSize))
	}
	if h.flags&virtioFlagNeedsCsum != 0 {
		completeChecksum(b, int(h.csumStart), int(h.csumStart)+int(h.csumOffset))
	}
	e.txSeg.segs = append(e.txSeg.segs[:0], b)
	return e.txSeg.segs
}

// writePlainFrames writes packets that need nothing of the kernel, each
// behind a virtio header of zeros: the fault injector's, whose checksums
// are whole. It returns an error only for a closed device.
func (e *Endpoint) writePlainFrames(bufs [][]byte) error {
	var failed error
	for _, b := range bufs {
		iov := append(e.txIov[:0], e.txZeroHdr[:], b[DeviceOffset:])
		_, err := e.frames.WriteFrame(iov)
		clear(iov)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return err
			}
			failed = err
		}
	}
	return failed
}
