package tunif

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// virtio_net_hdr fields the test reads (include/uapi/linux/virtio_net.h).
const (
	vnetNeedsCsum = 1
	vnetGSOTCPv4  = 1
)

// TestFrames: Frames turns the offloads on; a frame read carries the kernel's
// virtio header (a partial checksum marked NEEDS_CSUM points inside the
// packet, and completed it verifies); a frame written in pieces behind a
// header of zeros reaches a kernel socket; closing the interface wakes a
// blocked read. (That the kernel's TCP then hands over TSO superpackets is
// held by stack's tests and the end-to-end TestBulkSHA256: this layer does
// not speak TCP.)
func TestFrames(t *testing.T) {
	netnstest.Require(t)
	checkNoLeaks(t)
	i := mustCreate(t, DefaultConfig())
	f, err := i.Frames()
	if err != nil {
		t.Fatalf("Frames: %v", err)
	}
	host, peer := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")

	// Kernel → device.
	conn, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer, discardPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	out := bytes.Repeat([]byte("x"), 1000)
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, VirtioNetHdrLen)
	pkt := make([]byte, 1<<16-1)
	deadline := time.Now().Add(5 * time.Second)
	f.SetReadDeadline(deadline)
	for {
		n, err := f.ReadFrame(hdr, pkt)
		if err != nil {
			t.Fatalf("ReadFrame: %v", err)
		}
		got, err := parseUDPPartial(pkt[:n], hdr)
		if err != nil || got.dst.Port() != discardPort {
			continue // IPv6 housekeeping
		}
		if !bytes.Equal(got.payload, out) {
			t.Fatalf("read %q, want %q", got.payload, out)
		}
		break
	}
	f.SetReadDeadline(time.Time{})

	// Device → kernel, through WriteFrame with a header of zeros.
	in := []byte("hello through WriteFrame")
	buf := make([]byte, 2048)
	p := buildUDP(buf, 0, netip.AddrPortFrom(peer, discardPort), conn.LocalAddr().(*net.UDPAddr).AddrPort(), in)
	// Two pieces, as netstack's views are written: header and payload.
	if n, err := f.WriteFrame([][]byte{make([]byte, VirtioNetHdrLen), p[:28], p[28:]}); err != nil || n != VirtioNetHdrLen+len(p) {
		t.Fatalf("WriteFrame = %d, %v; want %d", n, err, VirtioNetHdrLen+len(p))
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 2048)
	n, err := conn.Read(got)
	if err != nil || !bytes.Equal(got[:n], in) {
		t.Fatalf("the kernel socket got %q, %v; want %q", got[:n], err, in)
	}

	// A frame without its header is refused before the kernel sees it.
	if _, err := f.WriteFrame([][]byte{p}); err == nil {
		t.Error("WriteFrame without a virtio header: no error")
	}

	// Closing the interface wakes a blocked ReadFrame with os.ErrClosed
	// (or a deadline), never a hang.
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadFrame(hdr, pkt)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := i.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, io.EOF) {
			t.Errorf("ReadFrame after Close: %v; want an error matching os.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("ReadFrame still blocked 3 s after Close")
	}
}

// parseUDPPartial is parseUDP for a frame: when the virtio header says
// NEEDS_CSUM, the UDP checksum holds only the pseudo header's sum, which the
// test completes first, as a NIC would.
func parseUDPPartial(p, hdr []byte) (udpPacket, error) {
	if hdr[0]&vnetNeedsCsum != 0 {
		start := int(binary.LittleEndian.Uint16(hdr[6:]))
		at := start + int(binary.LittleEndian.Uint16(hdr[8:]))
		if at+2 > len(p) || start > at {
			return udpPacket{}, errors.New("checksum place outside the packet")
		}
		if hdr[1] == vnetGSOTCPv4 {
			return udpPacket{}, errors.New("a TCP superpacket")
		}
		c := fold(sum16(0, p[start:]))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(p[at:], c)
	}
	return parseUDP(p)
}
