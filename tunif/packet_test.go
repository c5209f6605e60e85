package tunif

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// Packet crafting and parsing by hand: tunif moves bytes and must not import
// gVisor, not even in tests.

// testOffset is the headroom the tests leave in front of every packet; Write
// needs at least WriteHeadroom.
const testOffset = 16

const (
	protoUDP    = 17
	ipv4HdrLen  = 20 // RFC 791 §3.1, no options
	ipv6HdrLen  = 40 // RFC 8200 §3
	udpHdrLen   = 8  // RFC 768
	discardPort = 9  // RFC 863
)

// sum16 adds b to the one's-complement sum (RFC 1071).
func sum16(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

// fold folds the sum to 16 bits and complements it.
func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// udpChecksum computes the UDP checksum over the pseudo-header of RFC 768
// (IPv4) or RFC 8200 §8.1 (IPv6) and the UDP header and payload (whose
// checksum field must be 0).
func udpChecksum(src, dst netip.Addr, udp []byte) uint16 {
	var sum uint32
	sum = sum16(sum, src.AsSlice())
	sum = sum16(sum, dst.AsSlice())
	sum += protoUDP + uint32(len(udp))
	c := fold(sum16(sum, udp))
	if c == 0 {
		c = 0xffff // 0 means "no checksum"
	}
	return c
}

// buildUDP writes an IP/UDP packet from src to dst into buf after off bytes
// of headroom and returns buf cut to the packet's end.
func buildUDP(buf []byte, off int, src, dst netip.AddrPort, payload []byte) []byte {
	p := buf[off:]
	var udp []byte
	if src.Addr().Is4() {
		// RFC 791 §3.1.
		total := ipv4HdrLen + udpHdrLen + len(payload)
		ip := p[:ipv4HdrLen]
		clear(ip)
		ip[0] = 4<<4 | ipv4HdrLen/4                       // version, IHL
		binary.BigEndian.PutUint16(ip[2:], uint16(total)) // total length
		binary.BigEndian.PutUint16(ip[6:], 0x4000)        // flags: DF
		ip[8] = 64                                        // TTL
		ip[9] = protoUDP
		copy(ip[12:16], src.Addr().AsSlice())
		copy(ip[16:20], dst.Addr().AsSlice())
		binary.BigEndian.PutUint16(ip[10:], fold(sum16(0, ip)))
		udp = p[ipv4HdrLen:total]
	} else {
		// RFC 8200 §3.
		total := ipv6HdrLen + udpHdrLen + len(payload)
		ip := p[:ipv6HdrLen]
		clear(ip)
		ip[0] = 6 << 4
		binary.BigEndian.PutUint16(ip[4:], uint16(udpHdrLen+len(payload))) // payload length
		ip[6] = protoUDP                                                   // next header
		ip[7] = 64                                                         // hop limit
		copy(ip[8:24], src.Addr().AsSlice())
		copy(ip[24:40], dst.Addr().AsSlice())
		udp = p[ipv6HdrLen:total]
	}
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	binary.BigEndian.PutUint16(udp[6:], 0)
	copy(udp[udpHdrLen:], payload)
	if src.Addr().Is6() { // optional for IPv4: leave 0 there
		binary.BigEndian.PutUint16(udp[6:], udpChecksum(src.Addr(), dst.Addr(), udp))
	}
	hdrLen := ipv4HdrLen
	if src.Addr().Is6() {
		hdrLen = ipv6HdrLen
	}
	return buf[:off+hdrLen+len(udp)]
}

// udpPacket is what parseUDP finds in a packet.
type udpPacket struct {
	src, dst netip.AddrPort
	payload  []byte
}

// parseUDP parses an IPv4 or IPv6 packet carrying UDP (IPv6 without
// extension headers), checking lengths and checksums. The IP version comes
// from the first nibble.
func parseUDP(p []byte) (udpPacket, error) {
	if len(p) < 1 {
		return udpPacket{}, errors.New("empty packet")
	}
	var src, dst netip.Addr
	var udp []byte
	switch p[0] >> 4 {
	case 4:
		if len(p) < ipv4HdrLen {
			return udpPacket{}, errors.New("short IPv4 header")
		}
		ihl := int(p[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(p[2:]))
		if ihl < ipv4HdrLen || total < ihl || total > len(p) {
			return udpPacket{}, errors.New("bad IPv4 lengths")
		}
		if p[9] != protoUDP {
			return udpPacket{}, errors.New("not UDP")
		}
		if fold(sum16(0, p[:ihl])) != 0 {
			return udpPacket{}, errors.New("bad IPv4 header checksum")
		}
		src, _ = netip.AddrFromSlice(p[12:16])
		dst, _ = netip.AddrFromSlice(p[16:20])
		udp = p[ihl:total]
	case 6:
		if len(p) < ipv6HdrLen {
			return udpPacket{}, errors.New("short IPv6 header")
		}
		plen := int(binary.BigEndian.Uint16(p[4:]))
		if ipv6HdrLen+plen > len(p) {
			return udpPacket{}, errors.New("bad IPv6 payload length")
		}
		if p[6] != protoUDP {
			return udpPacket{}, errors.New("not UDP")
		}
		src, _ = netip.AddrFromSlice(p[8:24])
		dst, _ = netip.AddrFromSlice(p[24:40])
		udp = p[ipv6HdrLen : ipv6HdrLen+plen]
	default:
		return udpPacket{}, errors.New("not IP")
	}
	if len(udp) < udpHdrLen || int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		return udpPacket{}, errors.New("bad UDP length")
	}
	if c := binary.BigEndian.Uint16(udp[6:]); c != 0 || src.Is6() {
		var sum uint32
		sum = sum16(sum, src.AsSlice())
		sum = sum16(sum, dst.AsSlice())
		sum += protoUDP + uint32(len(udp))
		if fold(sum16(sum, udp)) != 0 {
			return udpPacket{}, errors.New("bad UDP checksum")
		}
	}
	return udpPacket{
		src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(udp[0:])),
		dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(udp[2:])),
		payload: udp[udpHdrLen:],
	}, nil
}

// reader reads packets from the device until it fails (at Close) and hands
// copies of them over.
type reader struct {
	packets chan []byte
	done    chan error // the error that stopped it
}

func startReader(i *Interface) *reader {
	r := &reader{packets: make(chan []byte, 128), done: make(chan error, 1)}
	dev := i.Device()
	bufs := make([][]byte, dev.BatchSize())
	for k := range bufs {
		bufs[k] = make([]byte, testOffset+i.MTU())
	}
	sizes := make([]int, len(bufs))
	go func() {
		for {
			n, err := dev.Read(bufs, sizes, testOffset)
			for k := range n {
				select {
				case r.packets <- bytes.Clone(bufs[k][testOffset : testOffset+sizes[k]]):
				default: // the test is not waiting for these
				}
			}
			if err != nil {
				r.done <- err
				return
			}
		}
	}()
	return r
}

// TestPacketsFlow sends a datagram from a kernel socket into the interface
// and reads it from the device, then writes one to the device and receives
// it on the kernel socket, over IPv4 and IPv6.
func TestPacketsFlow(t *testing.T) {
	netnstest.Require(t)
	checkNoLeaks(t)
	i := mustCreate(t, DefaultConfig())
	r := startReader(i)
	t.Cleanup(func() {
		// Registered after mustCreate's Close, so it runs first: Close
		// must unblock the reader.
		if err := i.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-r.done:
			t.Logf("Read after Close: %v", err)
		case <-time.After(3 * time.Second):
			t.Error("Read still blocked 3 s after Close")
		}
	})

	for _, tc := range []struct {
		name       string
		host, peer netip.Addr
	}{
		{"IPv4", netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")},
		{"IPv6", netip.MustParseAddr("fd75:7374:6163:6b::1"), netip.MustParseAddr("fd75:7374:6163:6b::2")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.host, 0)))
			if err != nil {
				t.Fatalf("listen on %v: %v", tc.host, err)
			}
			defer conn.Close()
			local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
			peer := netip.AddrPortFrom(tc.peer, discardPort)

			// Kernel → device.
			out := []byte("hello from the kernel over " + tc.name)
			if _, err := conn.WriteToUDPAddrPort(out, peer); err != nil {
				t.Fatalf("send to %v: %v", peer, err)
			}
			timeout := time.After(5 * time.Second)
		read:
			for {
				select {
				case p := <-r.packets:
					got, err := parseUDP(p)
					if err != nil || got.dst != peer {
						continue // IPv6 housekeeping (MLD, router solicitations), …
					}
					if got.src != local || !bytes.Equal(got.payload, out) {
						t.Errorf("read %v → %v %q; want %v → %v %q", got.src, got.dst, got.payload, local, peer, out)
					}
					break read
				case err := <-r.done:
					t.Fatalf("Read: %v", err)
				case <-timeout:
					t.Fatalf("no UDP packet to %v read from the device within 5 s", peer)
				}
			}

			// Device → kernel.
			in := []byte("hello from the device over " + tc.name)
			buf := make([]byte, testOffset+i.MTU())
			pkt := buildUDP(buf, testOffset, peer, local, in)
			if _, err := parseUDP(pkt[testOffset:]); err != nil {
				t.Fatalf("the test's own packet does not parse: %v", err)
			}
			// tun.Device documents Write's count as packets; wireguard's
			// Linux device returns the bytes it wrote to the fd, the
			// virtio-net header included. Accept both.
			plen := len(pkt) - testOffset
			if n, err := i.Device().Write([][]byte{pkt}, testOffset); err != nil || (n != 1 && n != WriteHeadroom+plen) {
				t.Fatalf("Write = %d, %v; want 1 (packet) or %d (bytes), nil", n, err, WriteHeadroom+plen)
			}
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := make([]byte, 2048)
			n, from, err := conn.ReadFromUDPAddrPort(got)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				snmp6, _ := os.ReadFile("/proc/net/snmp6")
				t.Fatalf("the kernel socket received nothing within 5 s of writing %d bytes to the device: % x\n%s", plen, pkt[testOffset:], snmp6)
			}
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			if from != peer || !bytes.Equal(got[:n], in) {
				t.Errorf("received %q from %v; want %q from %v", got[:n], from, in, peer)
			}
		})
	}
}
