package stack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// FuzzParseFrame feeds arbitrary frames (virtio header and packet) to the
// fast path's parser and, for those it accepts, to the segmenter that cuts
// them for the fault injector. Invariants, not examples: nothing panics; an
// accepted superpacket's segments carry at most an MSS of payload each, with
// the superpacket's headers, whole IPv4 header checksums and TCP checksums,
// and their payloads put together are the superpacket's; a partial checksum
// at TCP's or UDP's place, once completed, verifies.
func FuzzParseFrame(f *testing.F) {
	for _, v6 := range []bool{false, true} {
		f.Add(gsoHdr(v6, 1448), tcpSuperpacket(v6, 5000, header.TCPFlagAck|header.TCPFlagPsh))
		f.Add(gsoHdr(v6, minGSOSize), tcpSuperpacket(v6, 200, header.TCPFlagAck|header.TCPFlagFin))
		small := gsoHdr(v6, 1448)
		small[1] = virtioGSONone
		f.Add(small, tcpSuperpacket(v6, 100, header.TCPFlagAck))
	}
	f.Add(make([]byte, VirtioNetHdrLen), benchPacket(60))
	f.Add([]byte{virtioFlagDataValid, 0, 0, 0, 0, 0, 0, 0, 0, 0}, benchPacket(1500))
	f.Add([]byte{virtioFlagNeedsCsum, virtioGSOTCPv4, 0xff, 0xff, 0, 0, 20, 0, 16, 0}, benchPacket(40))
	f.Fuzz(func(t *testing.T, hdr, pkt []byte) {
		if len(pkt) > maxFramePacket {
			return
		}
		orig := append([]byte(nil), pkt...)
		fr, why := parseFrame(hdr, pkt)
		if why != "" {
			return
		}
		if fr.segments < 1 {
			t.Fatalf("accepted with %d segments", fr.segments)
		}
		var s segmenter
		if fr.gso {
			if fr.mss <= 0 || fr.hdrLen > len(pkt) || fr.hdrLen < fr.ipLen+header.TCPMinimumSize || !fr.trusted {
				t.Fatalf("accepted superpacket with mss %d, headers %d of %d bytes", fr.mss, fr.hdrLen, len(pkt))
			}
			segs := s.wirePackets(&fr)
			if fr.segments > 1 && len(segs) != fr.segments {
				t.Fatalf("%d segments, the frame said %d", len(segs), fr.segments)
			}
			if fr.segments == 1 {
				return // completed in place: checked below for the others
			}
			var payload []byte
			for i, seg := range segs {
				if len(seg) > fr.hdrLen+fr.mss || len(seg) <= fr.hdrLen {
					t.Fatalf("segment %d: %d bytes with %d of headers and an MSS of %d", i, len(seg), fr.hdrLen, fr.mss)
				}
				if !segmentChecksumsValid(seg, fr.ipLen, true) {
					t.Fatalf("segment %d: a checksum is wrong", i)
				}
				payload = append(payload, seg[fr.hdrLen:]...)
			}
			if !bytes.Equal(payload, orig[fr.hdrLen:]) {
				t.Fatal("the segments' payloads differ from the superpacket's")
			}
			return
		}
		if fr.partial && fr.trusted {
			// As the kernel leaves it: the pseudo header's sum in the
			// checksum field (the fuzzer's bytes there mean nothing).
			binary.BigEndian.PutUint16(pkt[fr.csumAt:], pseudoHeaderSum(pkt, fr.csumStart))
			s.wirePackets(&fr)
			if !segmentChecksumsValid(pkt, fr.csumStart, false) {
				t.Fatal("a completed partial checksum does not verify")
			}
		}
	})
}

// pseudoHeaderSum is the pseudo header's sum (RFC 9293 §3.1, RFC 8200 §8.1)
// for the transport header at ipLen.
func pseudoHeaderSum(pkt []byte, ipLen int) uint16 {
	n := uint16(len(pkt) - ipLen)
	if header.IPVersion(pkt) == header.IPv4Version {
		ip := header.IPv4(pkt)
		return header.PseudoHeaderChecksum(ip.TransportProtocol(), ip.SourceAddress(), ip.DestinationAddress(), n)
	}
	// The fast path takes no IPv6 extension headers: the next header is
	// the transport.
	ip := header.IPv6(pkt)
	return header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(ip.NextHeader()), ip.SourceAddress(), ip.DestinationAddress(), n)
}

// segmentChecksumsValid checks a TCP or UDP packet's transport checksum (its
// transport header at ipLen) and, with ipSum, an IPv4 header checksum.
func segmentChecksumsValid(pkt []byte, ipLen int, ipSum bool) bool {
	var pseudo uint16
	var proto uint8
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		ip := header.IPv4(pkt)
		if ipSum && !ip.IsChecksumValid() {
			return false
		}
		proto = ip.Protocol()
		pseudo = header.PseudoHeaderChecksum(ip.TransportProtocol(), ip.SourceAddress(), ip.DestinationAddress(), uint16(len(pkt)-ipLen))
	case header.IPv6Version:
		ip := header.IPv6(pkt)
		proto = ip.NextHeader() // no extension headers on the fast path
		pseudo = header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(proto), ip.SourceAddress(), ip.DestinationAddress(), uint16(len(pkt)-ipLen))
	default:
		return false
	}
	if proto == uint8(header.UDPProtocolNumber) && len(pkt) >= ipLen+header.UDPMinimumSize &&
		header.UDP(pkt[ipLen:]).Checksum() == 0 {
		return false // a completed UDP checksum is never 0 (RFC 768)
	}
	return checksum.Checksum(pkt[ipLen:], pseudo) == 0xffff
}

// FuzzFrameIngress feeds arbitrary frames — virtio header and packet, the
// header's claims included (a checksum the kernel vouches for, a superpacket
// to take whole) — to a stack on the fast path, through its read loop. One
// stack serves every input of the fuzz process. It checks: nothing panics
// (netstack takes trusted garbage without its checksum to stop it); every
// frame is consumed and counted once, as delivered, dropped or malformed;
// every frame the stack writes parses; and after every input the stack still
// answers a ping.
func FuzzFrameIngress(f *testing.F) {
	for _, v6 := range []bool{false, true} {
		f.Add(gsoHdr(v6, 1448), tcpSuperpacket(v6, 5000, header.TCPFlagAck))
		f.Add(gsoHdr(v6, minGSOSize), tcpSuperpacket(v6, 100, header.TCPFlagSyn))
	}
	f.Add([]byte{virtioFlagDataValid, 0, 0, 0, 0, 0, 0, 0, 0, 0}, synFrame(40000, virtioFlagDataValid)[VirtioNetHdrLen:])
	f.Add(make([]byte, VirtioNetHdrLen), echoRequest4(v4A.Addr(), v4B.Addr(), pingID, 1, []byte("hi")))
	var rig *frameRig
	f.Fuzz(func(t *testing.T, hdr, pkt []byte) {
		if len(hdr) != VirtioNetHdrLen || len(pkt) > maxFramePacket {
			return
		}
		if rig == nil {
			var err error
			if rig, err = newFrameRig(); err != nil {
				t.Fatal(err)
			}
		}
		ok := false
		defer func() {
			if !ok { // a failed input leaves the stack in an unknown state
				rig.close()
				rig = nil
			}
		}()
		rig.feed(t, hdr, pkt)
		rig.ping(t)
		ok = true
	})
	if rig != nil {
		rig.close()
	}
}

// frameRig is one stack on the fast path and the far end of its frame wire.
type frameRig struct {
	s    *Stack
	peer *framePipe
	end  *framePipe
	seq  uint16
	fed  uint64 // frames written to the stack
}

// feed writes one frame to the stack and waits until the link has counted
// it, once.
func (r *frameRig) feed(t *testing.T, hdr, pkt []byte) {
	t.Helper()
	r.peer.WriteFrame([][]byte{hdr, pkt})
	r.fed++
	deadline := time.Now().Add(consumeTimeout)
	for {
		n := r.consumed()
		if n > r.fed {
			t.Fatalf("%d frames counted, %d fed", n, r.fed)
		}
		if n == r.fed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d frames counted within %v, %d fed", n, consumeTimeout, r.fed)
		}
		r.drain(t)
		time.Sleep(50 * time.Microsecond)
	}
}

func newFrameRig() (*frameRig, error) {
	peer, end := newFramePipe()
	dev, _ := newPipe(1, ingressMTU)
	s, err := New(dev, Config{Addrs: []netip.Prefix{v4B, v6B}, MTU: ingressMTU, Frames: end})
	if err != nil {
		return nil, err
	}
	ln, err := s.Listen(netip.AddrPortFrom(v4B.Addr(), ingressPort))
	if err != nil {
		s.Close()
		return nil, err
	}
	_ = ln // closed with the stack
	return &frameRig{s: s, peer: peer, end: end}, nil
}

// close cuts the wire first, so that a stack blocked writing to it lets go,
// then closes the stack.
func (r *frameRig) close() {
	r.end.closeOnce.Do(func() { close(r.end.closed) })
	r.peer.closeOnce.Do(func() { close(r.peer.closed) })
	r.s.Close()
}

// consumed is how many frames the link took in and counted, one way or
// another.
func (r *frameRig) consumed() uint64 {
	st := r.s.Link().Stats()
	return st.RxPackets.Load() + st.RxDropped.Load() + st.RxBadFrames.Load()
}

// drain takes the frames the stack wrote, and checks each.
func (r *frameRig) drain(t *testing.T) {
	t.Helper()
	for {
		select {
		case fr := <-r.peer.in:
			r.checkSent(t, fr)
		default:
			return
		}
	}
}

func (r *frameRig) checkSent(t *testing.T, fr []byte) {
	t.Helper()
	if len(fr) < VirtioNetHdrLen {
		t.Fatalf("the stack wrote a frame of %d bytes", len(fr))
	}
	if _, why := parseFrame(fr[:VirtioNetHdrLen], fr[VirtioNetHdrLen:]); why != "" {
		t.Fatalf("the stack wrote a frame its own parser refuses (%s): % x", why, fr[:min(len(fr), 80)])
	}
}

// ping sends an ICMP echo request and waits for the reply, sending it again
// every pingRetry: netstack limits its ICMP messages (1000/s, bursts of 50,
// echo replies and errors alike), and a fast fuzzer exceeds that.
func (r *frameRig) ping(t *testing.T) {
	t.Helper()
	r.seq++
	payload := []byte("ping")
	req := echoRequest4(v4A.Addr(), v4B.Addr(), pingID, r.seq, payload)
	deadline := time.Now().Add(consumeTimeout)
	for time.Now().Before(deadline) {
		r.feed(t, make([]byte, VirtioNetHdrLen), req)
		retry := time.NewTimer(pingRetry)
		for waiting := true; waiting; {
			select {
			case fr := <-r.peer.in:
				r.checkSent(t, fr)
				if isEchoReply(fr[VirtioNetHdrLen:], r.seq, payload) {
					retry.Stop()
					return
				}
			case <-retry.C:
				waiting = false
			}
		}
	}
	t.Fatalf("the stack did not answer ping %d within %v", r.seq, consumeTimeout)
}

// pingRetry is how long ping waits for a reply before it asks again.
const pingRetry = 100 * time.Millisecond
