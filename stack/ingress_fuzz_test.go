package stack

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ustack/ustack/stack/fault"
)

// The in-memory wire of the ingress fuzz targets. A batch of 4 lets one
// input's packets arrive as one read, as a busy TUN delivers them.
const (
	ingressMTU   = 1500
	ingressBatch = 4
	// ingressPort has a listener, so that SYNs reach the handshake's state
	// machine instead of only being answered with a RST.
	ingressPort = 5000
	// pingID is the ICMP identifier of the liveness pings ("us").
	pingID = 0x7573
	// maxIngressPacket is the largest packet the endpoint reads (the
	// largest IP packet): a read buffer holds no more.
	maxIngressPacket = maxReadBuffer - DeviceOffset
	// consumeTimeout bounds the wait for the stack to take in what it was
	// fed; it does so in microseconds.
	consumeTimeout = 10 * time.Second
)

// ingressFaults is the fault injection of FuzzIngressWithFaults: every kind
// of per-packet fault that keeps no packet longer than the reordering
// timeout, with a fixed seed.
var ingressFaults = fault.Config{Loss: 0.1, Corrupt: 0.1, Duplicate: 0.1, Reorder: 0.1, Seed: 42}

// FuzzIngress feeds arbitrary bytes to the link endpoint as packets read
// from the TUN device: 1..4 packets an input, carved from the bytes as
// carvePackets describes, through the peer of an in-memory pipe into the
// endpoint's read loop. One stack serves every input of the fuzz process
// (building one per input would cost more than the input). It checks:
//   - nothing panics;
//   - the link layer consumes every packet it is fed and classifies it by its
//     first nibble: per IP version, its packet and byte counters grow by
//     exactly what was fed, and everything else is RxDropped;
//   - every counter of the stack only grows;
//   - every packet the stack sends is a valid IPv4 or IPv6 packet of at most
//     the MTU, from one of its addresses;
//   - after every input the stack still answers a ping.
func FuzzIngress(f *testing.F) {
	fuzzIngress(f, fault.Config{})
}

// FuzzIngressWithFaults is FuzzIngress with fault injection on the link both
// ways: loss, corruption, duplication and reordering, with a fixed seed from
// which the decisions restart at every input. The faults make the
// per-version counts unpredictable, so it checks the sum instead: every
// packet fed while the faults applied was seen by the injector, and what the
// link counted is what was fed, less what the injector lost, plus its
// duplicates. What the stack sends is not checked (it may be corrupted on
// purpose), and the faults are off for the ping.
func FuzzIngressWithFaults(f *testing.F) {
	fuzzIngress(f, ingressFaults)
}

func fuzzIngress(f *testing.F, faults fault.Config) {
	for _, seed := range ingressSeeds() {
		f.Add(seed)
	}
	// The rig is built on the first input, not here: the fuzzing
	// coordinator runs this function too, and never an input. An input that
	// fails leaves the stack in a state nobody knows; the next one gets a new
	// stack, so that a failure is reported with its own message (the fuzzer
	// minimizes a failing input by running it again and again).
	var rig *ingressRig
	f.Cleanup(func() {
		if rig != nil {
			rig.close()
		}
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		if rig == nil {
			var err error
			if rig, err = newIngressRig(faults); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			if t.Failed() {
				rig.close()
				rig = nil
			}
		})
		rig.run(t, carvePackets(data))
	})
}

// carvePackets cuts a fuzz input into packets. The first byte says how
// many (1 + its low two bits) and, with bit 2, that their checksums are to be
// made right (fixChecksums): random bytes almost never carry a valid
// checksum, and without one no packet gets past IP or TCP. Every packet but
// the last is a 2-byte big-endian length and that many bytes (fewer when the
// input ends); the last is the rest. Each is cut to maxIngressPacket.
func carvePackets(data []byte) [][]byte {
	if len(data) == 0 {
		return [][]byte{{}}
	}
	n, fix := 1+int(data[0]&3), data[0]&4 != 0
	data = data[1:]
	var pkts [][]byte
	for i := range n {
		var p []byte
		if i == n-1 {
			p = data
		} else {
			size := len(data)
			if len(data) >= 2 {
				size = int(binary.BigEndian.Uint16(data))
				data = data[2:]
			}
			size = min(size, len(data))
			p, data = data[:size], data[size:]
		}
		p = bytes.Clone(p[:min(len(p), maxIngressPacket)])
		if fix {
			fixChecksums(p)
		}
		pkts = append(pkts, p)
	}
	return pkts
}

// joinPackets is the inverse of carvePackets, for the seeds.
func joinPackets(fix bool, pkts ...[]byte) []byte {
	head := byte(len(pkts) - 1)
	if fix {
		head |= 4
	}
	out := []byte{head}
	for i, p := range pkts {
		if i < len(pkts)-1 {
			out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		}
		out = append(out, p...)
	}
	return out
}

// fixChecksums makes the checksums of pkt right, as far as its headers can
// be followed: the IPv4 header checksum (RFC 791 §3.1), and the TCP, UDP,
// ICMPv4 or ICMPv6 checksum of an unfragmented packet whose transport header
// directly follows the IP header (RFC 9293 §3.1, RFC 768, RFC 792, RFC 4443
// §2.3), over the bytes the IP length field covers. It never reads beyond
// pkt, whatever the length fields say.
func fixChecksums(pkt []byte) {
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		if len(pkt) < header.IPv4MinimumSize {
			return
		}
		ip := header.IPv4(pkt)
		hl := int(ip.HeaderLength())
		if hl < header.IPv4MinimumSize || hl > len(pkt) {
			return
		}
		ip.SetChecksum(0)
		ip.SetChecksum(^checksum.Checksum(pkt[:hl], 0))
		end := min(int(ip.TotalLength()), len(pkt))
		if end < hl || ip.More() || ip.FragmentOffset() != 0 {
			return
		}
		fixTransportChecksum(ip.TransportProtocol(), ip.SourceAddress(), ip.DestinationAddress(), pkt[hl:end], false)
	case header.IPv6Version:
		if len(pkt) < header.IPv6MinimumSize {
			return
		}
		ip := header.IPv6(pkt)
		end := min(header.IPv6MinimumSize+int(ip.PayloadLength()), len(pkt))
		fixTransportChecksum(tcpip.TransportProtocolNumber(ip.NextHeader()), ip.SourceAddress(), ip.DestinationAddress(), pkt[header.IPv6MinimumSize:end], true)
	}
}

func fixTransportChecksum(proto tcpip.TransportProtocolNumber, src, dst tcpip.Address, seg []byte, v6 bool) {
	off, pseudo := -1, true
	switch {
	case proto == header.TCPProtocolNumber:
		off = header.TCPChecksumOffset
	case proto == header.UDPProtocolNumber:
		off = 6 // RFC 768: source port, destination port, length, checksum
	case proto == header.ICMPv4ProtocolNumber && !v6:
		off, pseudo = 2, false // ICMPv4 has no pseudo-header
	case proto == header.ICMPv6ProtocolNumber && v6:
		off = 2
	}
	if off < 0 || len(seg) < off+2 {
		return
	}
	seg[off], seg[off+1] = 0, 0
	var partial uint16
	if pseudo {
		partial = header.PseudoHeaderChecksum(proto, src, dst, uint16(len(seg)))
	}
	sum := ^checksum.Checksum(seg, partial)
	if proto == header.UDPProtocolNumber && sum == 0 {
		sum = 0xffff // 0 means "no checksum" in UDP (RFC 768)
	}
	binary.BigEndian.PutUint16(seg[off:], sum)
}

// ingressRig is one stack on an in-memory wire, driven by hand through the
// wire's far end, and what was fed to it since it started.
type ingressRig struct {
	s        *Stack
	peer     *pipeDevice
	ln       net.Listener
	accept   sync.WaitGroup
	faults   fault.Config
	faulty   bool // faults is not the zero Config
	faultsOn bool // the faults apply now

	fed    fedCounts
	seq    uint16            // of the last liveness ping
	last   map[string]uint64 // the monotonic counters after the last input
	inputs int
}

// fedCounts is what the rig wrote into the wire, classified the way the link
// endpoint does it: by the first nibble.
type fedCounts struct {
	v4, v6, other    uint64 // packets
	v4Bytes, v6Bytes uint64
	total            uint64
	faulted          uint64 // of total, fed while faults applied
}

func (c *fedCounts) add(pkt []byte) {
	c.total++
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		c.v4++
		c.v4Bytes += uint64(len(pkt))
	case header.IPv6Version:
		c.v6++
		c.v6Bytes += uint64(len(pkt))
	default:
		c.other++
	}
}

func newIngressRig(faults fault.Config) (*ingressRig, error) {
	dev, peer := newPipe(ingressBatch, ingressMTU)
	s, err := New(dev, Config{Addrs: []netip.Prefix{v4B, v6B}, MTU: ingressMTU, Faults: faults})
	if err != nil {
		peer.Close()
		return nil, err
	}
	ln, err := s.Listen(netip.AddrPortFrom(netip.IPv6Unspecified(), ingressPort))
	if err != nil {
		s.Close()
		peer.Close()
		return nil, err
	}
	r := &ingressRig{s: s, peer: peer, ln: ln, faults: faults, faulty: faults.Active()}
	r.accept.Add(1)
	go func() {
		defer r.accept.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed by close
			}
			c.Close()
		}
	}()
	return r, nil
}

func (r *ingressRig) close() {
	r.ln.Close()
	r.accept.Wait()
	r.s.Close()
	r.peer.Close()
}

// run feeds one input's packets to the stack and checks the invariants.
func (r *ingressRig) run(t *testing.T, pkts [][]byte) {
	t.Helper()
	r.inputs++
	if r.faulty {
		r.setFaults(t, true)
	}
	r.feed(pkts)
	r.waitConsumed(t)
	if r.faulty {
		// The ping checks the stack, not the faults: without them one
		// is answered at once, or never. With them a lost ping would
		// cost a timeout, and the fuzzer runs every new input again
		// and again to minimize it.
		r.setFaults(t, false)
	}
	r.drain(t)
	r.ping(t)
	r.checkMonotonic(t)
}

// setFaults turns the rig's faults on or off on the running stack. On, the
// injector's random decisions restart from the fixed seed, so that every
// input meets the same faults: an input that fails fails again when the
// fuzzer replays it, and its coverage does not change from one run to the
// next (the fuzzer minimizes each new input by running it again and again,
// keeping its coverage). The injector restarts its streams when the seed
// changes, hence the detour through another seed.
func (r *ingressRig) setFaults(t *testing.T, on bool) {
	t.Helper()
	cfgs := []fault.Config{{}}
	if on {
		other := r.faults
		other.Seed = ^r.faults.Seed
		cfgs = []fault.Config{other, r.faults}
	}
	for _, c := range cfgs {
		if err := r.s.Link().SetFaults(c); err != nil {
			t.Fatal(err)
		}
	}
	r.faultsOn = on
}

// feed writes pkts into the wire as one batch, as a TUN read would return
// them.
func (r *ingressRig) feed(pkts [][]byte) {
	for _, p := range pkts {
		r.fed.add(p)
		if r.faultsOn {
			r.fed.faulted++
		}
	}
	r.peer.Write(pkts, 0)
}

// waitConsumed waits until the link endpoint has counted every packet fed
// so far, and checks that it counted them right.
func (r *ingressRig) waitConsumed(t *testing.T) {
	t.Helper()
	st := r.s.Link().Stats()
	deadline := time.Now().Add(consumeTimeout)
	for {
		got := st.RxPackets.Load() + st.RxDropped.Load() + st.RxReadErrors.Load()
		var want uint64
		done := false
		if !r.faulty {
			want = r.fed.total
			done = got >= want
		} else {
			// What the injector did to the inbound packets decides what
			// reaches the link's counters; held ones count once released.
			in := r.s.Link().Faults().Stats().In
			want = r.fed.total - in.Lost - in.RateDropped + in.Duplicated
			done = in.Packets == r.fed.faulted && in.HeldNow == 0 && got >= want
		}
		if done {
			if got != want {
				t.Fatalf("the link counted %d packets (delivered, dropped, read errors), want %d", got, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the link has counted %d packets, want %d; faults %+v", consumeTimeout, got, want, r.faultStats())
		}
		time.Sleep(20 * time.Microsecond)
	}
	if r.faulty {
		return
	}
	// Without faults the link's classification is exact: by the first
	// nibble (RFC 791 §3.1, RFC 8200 §3), nothing else.
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"RxIPv4Packets", st.RxIPv4Packets.Load(), r.fed.v4},
		{"RxIPv6Packets", st.RxIPv6Packets.Load(), r.fed.v6},
		{"RxIPv4Bytes", st.RxIPv4Bytes.Load(), r.fed.v4Bytes},
		{"RxIPv6Bytes", st.RxIPv6Bytes.Load(), r.fed.v6Bytes},
		{"RxBytes", st.RxBytes.Load(), r.fed.v4Bytes + r.fed.v6Bytes},
		{"RxPackets", st.RxPackets.Load(), r.fed.v4 + r.fed.v6},
		{"RxDropped", st.RxDropped.Load(), r.fed.other},
		{"RxReadErrors", st.RxReadErrors.Load(), 0},
	} {
		if c.got != c.want {
			t.Fatalf("link counter %s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func (r *ingressRig) faultStats() any {
	if j := r.s.Link().Faults(); j != nil {
		return j.Stats()
	}
	return "none"
}

// drain takes what the stack sent so far off the wire, checking each packet.
func (r *ingressRig) drain(t *testing.T) {
	t.Helper()
	for {
		select {
		case p := <-r.peer.in:
			r.checkSent(t, p)
		default:
			return
		}
	}
}

// checkSent checks a packet the stack sent. With faults on the way out it
// may have been corrupted on purpose, and nothing is checked.
func (r *ingressRig) checkSent(t *testing.T, p []byte) {
	t.Helper()
	if r.faulty {
		return
	}
	if len(p) > ingressMTU {
		t.Fatalf("the stack sent a %d-byte packet on a link of MTU %d: % x", len(p), ingressMTU, p[:min(len(p), 64)])
	}
	var src netip.Addr
	switch header.IPVersion(p) {
	case header.IPv4Version:
		ip := header.IPv4(p)
		if !ip.IsValid(len(p)) || !ip.IsChecksumValid() {
			t.Fatalf("the stack sent an invalid IPv4 packet: % x", p)
		}
		src = netip.AddrFrom4(ip.SourceAddress().As4())
	case header.IPv6Version:
		ip := header.IPv6(p)
		if !ip.IsValid(len(p)) {
			t.Fatalf("the stack sent an invalid IPv6 packet: % x", p)
		}
		src = netip.AddrFrom16(ip.SourceAddress().As16())
	default:
		t.Fatalf("the stack sent a packet of IP version %d: % x", header.IPVersion(p), p)
	}
	// NDP and MLD messages go out before an address is usable, from the
	// unspecified address (RFC 4861 §4.1, RFC 3810 §5.2.13).
	if src != v4B.Addr() && src != v6B.Addr() && !src.IsUnspecified() {
		t.Fatalf("the stack sent a packet from %s, which is not its address: % x", src, p)
	}
}

// ping sends an ICMP echo request to the stack and waits for the reply:
// whatever the input did, the stack must still answer. Faults are off by
// then: one ping is enough.
func (r *ingressRig) ping(t *testing.T) {
	t.Helper()
	r.seq++
	payload := fmt.Appendf(nil, "ping %d", r.seq)
	r.feed([][]byte{echoRequest4(v4A.Addr(), v4B.Addr(), pingID, r.seq, payload)})
	timer := time.NewTimer(consumeTimeout)
	defer timer.Stop()
	for {
		select {
		case p := <-r.peer.in:
			r.checkSent(t, p)
			if isEchoReply(p, r.seq, payload) {
				return
			}
		case <-timer.C:
			t.Fatalf("after input %d the stack did not answer ping %d within %v; faults %+v", r.inputs, r.seq, consumeTimeout, r.faultStats())
		}
	}
}

func isEchoReply(p []byte, seq uint16, payload []byte) bool {
	ip := header.IPv4(p)
	if header.IPVersion(p) != header.IPv4Version || !ip.IsValid(len(p)) || ip.TransportProtocol() != header.ICMPv4ProtocolNumber ||
		ip.More() || ip.FragmentOffset() != 0 {
		return false
	}
	icmp := header.ICMPv4(ip.Payload())
	return len(icmp) >= header.ICMPv4MinimumSize && icmp.Type() == header.ICMPv4EchoReply &&
		icmp.Ident() == pingID && icmp.Sequence() == seq && bytes.Equal(icmp.Payload(), payload) &&
		checksum.Checksum(icmp, 0) == 0xffff
}

// checkMonotonic checks that no counter of the stack went down since the
// last input.
func (r *ingressRig) checkMonotonic(t *testing.T) {
	t.Helper()
	now := monotonicCounters(r.s.Snapshot())
	for name, v := range now {
		if prev, ok := r.last[name]; ok && v < prev {
			t.Fatalf("counter %s went down from %d to %d", name, prev, v)
		}
	}
	r.last = now
}

// monotonicCounters flattens the counters of a snapshot that may only grow,
// named by their path ("link.Rx.TCP.Packets"): every uint64 in its counter
// structs, but the gauges (TCP connections established now, packets the
// injector holds now).
func monotonicCounters(s *Snapshot) map[string]uint64 {
	m := make(map[string]uint64)
	var add func(prefix string, v reflect.Value)
	add = func(prefix string, v reflect.Value) {
		switch v.Kind() {
		case reflect.Uint64:
			m[prefix] = v.Uint()
		case reflect.Struct:
			for i := range v.NumField() {
				add(prefix+"."+v.Type().Field(i).Name, v.Field(i))
			}
		}
	}
	add("link", reflect.ValueOf(s.Link))
	add("ipv4", reflect.ValueOf(s.IPv4))
	add("ipv6", reflect.ValueOf(s.IPv6))
	add("icmp", reflect.ValueOf(s.ICMP))
	add("tcp", reflect.ValueOf(s.TCP))
	add("udp", reflect.ValueOf(s.UDP))
	delete(m, "tcp.Established")
	if s.Faults != nil {
		add("faults", reflect.ValueOf(s.Faults.Stats))
		delete(m, "faults.In.HeldNow")
		delete(m, "faults.Out.HeldNow")
	}
	return m
}

// ingressSeeds are inputs for FuzzIngress: valid packets of each kind the
// stack handles, and the malformed ones a broken or hostile peer sends.
func ingressSeeds() [][]byte {
	peer4 := netip.AddrPortFrom(v4A.Addr(), 43512)
	peer6 := netip.AddrPortFrom(v6A.Addr(), 43512)
	stack4 := netip.AddrPortFrom(v4B.Addr(), ingressPort)
	stack6 := netip.AddrPortFrom(v6B.Addr(), ingressPort)
	syn4 := tcpSegment(peer4, stack4, header.TCPFlagSyn, 1000, 0)
	syn6 := tcpSegment(peer6, stack6, header.TCPFlagSyn, 1000, 0)
	echo4 := echoRequest4(v4A.Addr(), v4B.Addr(), 1, 1, []byte("seed"))
	echo6 := echoRequest6(v6A.Addr(), v6B.Addr(), 1, 1, []byte("seed"))
	udp4 := udpDatagram(peer4, netip.AddrPortFrom(v4B.Addr(), 53), []byte("hello\n"))
	udp6 := udpDatagram(peer6, netip.AddrPortFrom(v6B.Addr(), 53), []byte("hello\n"))

	badIHL := bytes.Clone(echo4)
	badIHL[0] = 0x4f // 60-byte header in a 32-byte packet
	shortIHL := bytes.Clone(echo4)
	shortIHL[0] = 0x44 // 16 bytes, below the minimum of 20
	long4 := bytes.Clone(syn4)
	binary.BigEndian.PutUint16(long4[2:], 0xffff) // total length 64 KiB - 1
	long6 := bytes.Clone(echo6)
	binary.BigEndian.PutUint16(long6[4:], 0xffff) // payload length 64 KiB - 1
	frag4 := bytes.Clone(udp4)
	frag4[6] |= 0x20 // more fragments
	withOptions := append([]byte{0x46}, echo4[1:header.IPv4MinimumSize]...)
	withOptions = append(withOptions, 1, 1, 1, 0) // NOP, NOP, NOP, end of options
	withOptions = append(withOptions, echo4[header.IPv4MinimumSize:]...)
	binary.BigEndian.PutUint16(withOptions[2:], uint16(len(withOptions)))
	rst := tcpSegment(peer4, stack4, header.TCPFlagRst|header.TCPFlagAck, 1, 1)
	otherAddr := tcpSegment(peer4, netip.AddrPortFrom(netip.MustParseAddr("198.18.0.9"), ingressPort), header.TCPFlagSyn, 1, 0)

	return [][]byte{
		joinPackets(false, syn4),
		joinPackets(false, echo4),
		joinPackets(false, syn6),
		joinPackets(false, echo6),
		joinPackets(false, udp4, udp6),
		joinPackets(false, echo4[:10]),                                     // IPv4 header cut short
		joinPackets(false, echo6[:20]),                                     // IPv6 header cut short
		joinPackets(false, syn4[:header.IPv4MinimumSize+10]),               // TCP header cut short
		joinPackets(false, badIHL, shortIHL),                               // IHL beyond the packet, and below 5
		joinPackets(true, badIHL),                                          // the same, with a right checksum
		joinPackets(false, long4, long6),                                   // length fields of 64 KiB
		joinPackets(true, long4),                                           // the same, with the checksums made right
		joinPackets(true, frag4),                                           // a first fragment, never completed
		joinPackets(true, withOptions),                                     // IPv4 options
		joinPackets(false, syn4, rst),                                      // a handshake begun and reset
		joinPackets(false, otherAddr),                                      // for an address that is not the stack's
		joinPackets(false, []byte{}, []byte{0x50}, []byte{0xf0, 0}, echo4), // not IP, then a ping
		joinPackets(true, syn4, syn6, echo4, echo6),                        // a full batch
		{},
		{0x04, 0x45},
	}
}

// tcpSegment builds an IPv4 or IPv6 TCP segment without payload, checksums
// right.
func tcpSegment(src, dst netip.AddrPort, flags header.TCPFlags, seq, ack uint32) []byte {
	seg := make([]byte, header.TCPMinimumSize)
	header.TCP(seg).Encode(&header.TCPFields{
		SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack,
		DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535,
	})
	return ipPacket(src.Addr(), dst.Addr(), header.TCPProtocolNumber, seg)
}

// udpDatagram builds an IPv4 or IPv6 UDP datagram, checksums right.
func udpDatagram(src, dst netip.AddrPort, payload []byte) []byte {
	seg := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(seg).Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(seg))})
	copy(seg[header.UDPMinimumSize:], payload)
	return ipPacket(src.Addr(), dst.Addr(), header.UDPProtocolNumber, seg)
}

// ipPacket puts a transport segment in an IPv4 or IPv6 packet (by src's
// family) and makes its checksums right.
func ipPacket(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, seg []byte) []byte {
	var b []byte
	if src.Is4() {
		b = make([]byte, header.IPv4MinimumSize+len(seg))
		header.IPv4(b).Encode(&header.IPv4Fields{
			TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(proto),
			SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4()),
		})
	} else {
		b = make([]byte, header.IPv6MinimumSize+len(seg))
		header.IPv6(b).Encode(&header.IPv6Fields{
			PayloadLength: uint16(len(seg)), TransportProtocol: proto, HopLimit: 64,
			SrcAddr: tcpip.AddrFrom16(src.As16()), DstAddr: tcpip.AddrFrom16(dst.As16()),
		})
	}
	copy(b[len(b)-len(seg):], seg)
	fixChecksums(b)
	return b
}
