package stack

// Micro-benchmarks of the link endpoint's two data paths, on an in-memory
// device: ns/op and allocs/op are per packet.
//
//	go test -run '^$' -bench Endpoint -benchmem ./stack

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

const benchBatch = 64 // packets per device read or write, like a TUN with offloads

var benchSizes = []int{header.IPv4MinimumSize + header.TCPMinimumSize, 1500}

// benchPacket returns a valid IPv4/TCP packet of size bytes from
// 198.18.0.1:40000 to 198.18.0.2:9999, where nobody listens. It is a RST, so
// netstack parses and checks it all the way to TCP's demuxer and then drops
// it without an answer: the read path is measured without the write path.
func benchPacket(size int) []byte {
	pkt := make([]byte, size)
	src, dst := tcpip.AddrFrom4([4]byte{198, 18, 0, 1}), tcpip.AddrFrom4([4]byte{198, 18, 0, 2})
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(size),
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     src,
		DstAddr:     dst,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(pkt[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{
		SrcPort:    40000,
		DstPort:    9999,
		SeqNum:     1,
		DataOffset: header.TCPMinimumSize,
		Flags:      header.TCPFlagRst,
	})
	payload := tcp[header.TCPMinimumSize:]
	for i := range payload {
		payload[i] = byte(i)
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	xsum = checksum.Checksum(payload, xsum)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return pkt
}

// benchDevice is a tun.Device that hands out copies of one prepared packet,
// as many as it is told to, and discards what is written to it.
type benchDevice struct {
	pkt    []byte
	budget chan int      // packets to hand out, sent by the benchmark
	idle   chan struct{} // Read came back for more with none left: all delivered
	closed chan struct{}
	left   int
}

var _ tun.Device = (*benchDevice)(nil)

func newBenchDevice(pkt []byte) *benchDevice {
	return &benchDevice{pkt: pkt, budget: make(chan int), idle: make(chan struct{}, 1), closed: make(chan struct{})}
}

// wait, when the packets granted so far are all handed out, says so (the
// read loop delivers what it read before it reads again: they have all
// reached netstack) and waits for the next grant.
func (d *benchDevice) wait() error {
	if d.left > 0 {
		return nil
	}
	select {
	case d.idle <- struct{}{}:
	default:
	}
	select {
	case d.left = <-d.budget:
		return nil
	case <-d.closed:
		return os.ErrClosed
	}
}

func (d *benchDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if err := d.wait(); err != nil {
		return 0, err
	}
	n := min(len(bufs), d.left)
	for i := range n {
		sizes[i] = copy(bufs[i][offset:], d.pkt)
	}
	d.left -= n
	return n, nil
}

func (d *benchDevice) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (d *benchDevice) File() *os.File                               { return nil }
func (d *benchDevice) MTU() (int, error)                            { return 1500, nil }
func (d *benchDevice) Name() (string, error)                        { return "bench", nil }
func (d *benchDevice) Events() <-chan tun.Event                     { return nil }
func (d *benchDevice) BatchSize() int                               { return benchBatch }

func (d *benchDevice) Close() error {
	select {
	case <-d.closed:
	default:
		close(d.closed)
	}
	return nil
}

// BenchmarkEndpointRead measures the inbound path: the endpoint's read loop
// takes batches from the device and delivers each packet into netstack (IPv4
// and TCP parsing and checksums included). One op is one packet.
func BenchmarkEndpointRead(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			dev := newBenchDevice(benchPacket(size))
			s, err := New(dev, Config{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.2/24")}, MTU: 1500})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			benchRead(b, dev, s, size)
		})
	}
}

// BenchmarkEndpointWrite measures the outbound path: WritePackets of a list of
// benchBatch packets as netstack makes them (headers pushed in front of a
// payload view), copied into the endpoint's buffers and written to the
// device as one batch. One op is one packet.
func BenchmarkEndpointWrite(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			dev := newBenchDevice(nil)
			ep, err := NewEndpoint(dev, 1500)
			if err != nil {
				b.Fatal(err)
			}
			pkts := benchPacketBuffers(size, nil)
			defer pkts.DecRef()
			benchWrite(b, ep, pkts, size)
		})
	}
}

// benchFrames is a FrameDevice that hands out copies of one prepared frame,
// as many as it is told to, and discards what is written to it: the fast
// path's counterpart of benchDevice.
type benchFrames struct {
	*benchDevice
	frame []byte
}

func (d *benchFrames) ReadFrame(hdr, pkt []byte) (int, error) {
	if err := d.wait(); err != nil {
		return 0, err
	}
	d.left--
	copy(hdr, d.frame[:VirtioNetHdrLen])
	return copy(pkt, d.frame[VirtioNetHdrLen:]), nil
}

func (d *benchFrames) WriteFrame(bufs [][]byte) (int, error) {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n, nil
}

func (d *benchFrames) SetReadDeadline(time.Time) error { return d.Close() }

// benchFrame returns a frame of the fast path: a plain packet of size bytes
// (benchPacket) behind a virtio header of zeros, or, with tso, a TCP RST
// superpacket of size bytes with a partial checksum behind a TSO header
// (gso_size 1448), as the kernel hands them over.
func benchFrame(size int, tso bool) []byte {
	pkt := benchPacket(size)
	var h virtioNetHdr
	if tso {
		tcp := header.TCP(pkt[header.IPv4MinimumSize:])
		ip := header.IPv4(pkt)
		tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp))))
		h = virtioNetHdr{flags: virtioFlagNeedsCsum, gsoType: virtioGSOTCPv4, hdrLen: header.IPv4MinimumSize + header.TCPMinimumSize,
			gsoSize: 1448, csumStart: header.IPv4MinimumSize, csumOffset: tcpCsumOffset}
	}
	f := make([]byte, VirtioNetHdrLen+size)
	h.encode(f)
	copy(f[VirtioNetHdrLen:], pkt)
	return f
}

// BenchmarkEndpointReadFrames measures the fast path's inbound side: one frame
// read, checked and delivered into netstack per op. A TSO superpacket goes to
// netstack whole, without a copy, its checksum trusted.
func BenchmarkEndpointReadFrames(b *testing.B) {
	for _, tc := range []struct {
		size int
		tso  bool
	}{{header.IPv4MinimumSize + header.TCPMinimumSize, false}, {1500, false}, {maxFramePacket, true}} {
		name := fmt.Sprintf("size=%d", tc.size)
		if tc.tso {
			name += "/TSO"
		}
		b.Run(name, func(b *testing.B) {
			dev := &benchFrames{benchDevice: newBenchDevice(nil), frame: benchFrame(tc.size, tc.tso)}
			s, err := New(dev, Config{Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.2/24")}, MTU: 1500, Frames: dev})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			benchRead(b, dev.benchDevice, s, tc.size)
		})
	}
}

// BenchmarkEndpointWriteFrames measures the fast path's outbound side:
// WritePackets of benchBatch packets as netstack's TCP makes them on a
// host-GSO route (GSOOptions set, partial checksum), each written as one
// frame from a small header buffer and netstack's own views. One op is one
// packet: a 64 KiB superpacket or a 1500-byte one.
func BenchmarkEndpointWriteFrames(b *testing.B) {
	for _, size := range []int{header.IPv4MinimumSize + header.TCPMinimumSize, 1500, maxFramePacket} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			dev := &benchFrames{benchDevice: newBenchDevice(nil)}
			ep, err := NewOffloadEndpoint(dev, dev, 1500)
			if err != nil {
				b.Fatal(err)
			}
			pkts := benchPacketBuffers(size, &stack.GSO{Type: stack.GSOTCPv4, NeedsCsum: true, CsumOffset: tcpCsumOffset, MSS: 1448,
				L3HdrLen: header.IPv4MinimumSize, MaxSize: gsoMaxSize})
			defer pkts.DecRef()
			benchWrite(b, ep, pkts, size)
			if size > 1500 && ep.Stats().TxSuperpackets.Load() == 0 {
				b.Fatal("no superpacket written")
			}
		})
	}
}

// benchPacketBuffers makes benchBatch packets of size bytes as netstack's TCP
// makes them: the headers pushed in front of a payload view, with gso's
// options when it is not nil.
func benchPacketBuffers(size int, gso *stack.GSO) stack.PacketBufferList {
	raw := benchPacket(size)
	hdrLen := header.IPv4MinimumSize + header.TCPMinimumSize
	var pkts stack.PacketBufferList
	for range benchBatch {
		pb := stack.NewPacketBuffer(stack.PacketBufferOptions{
			ReserveHeaderBytes: hdrLen,
			Payload:            buffer.MakeWithData(raw[hdrLen:]),
		})
		copy(pb.TransportHeader().Push(header.TCPMinimumSize), raw[header.IPv4MinimumSize:hdrLen])
		copy(pb.NetworkHeader().Push(header.IPv4MinimumSize), raw[:header.IPv4MinimumSize])
		if gso != nil {
			pb.GSOOptions = *gso
		}
		pkts.PushBack(pb)
	}
	return pkts
}

// benchWrite writes pkts through ep until b.N packets are written, and checks
// the endpoint counted each.
func benchWrite(b *testing.B, ep *Endpoint, pkts stack.PacketBufferList, size int) {
	b.Helper()
	before := ep.Stats().TxPackets.Load()
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	written := 0
	for written < b.N {
		n, tcpipErr := ep.WritePackets(pkts)
		if tcpipErr != nil {
			b.Fatal(tcpipErr)
		}
		written += n
	}
	b.StopTimer()
	if got := ep.Stats().TxPackets.Load() - before; got != uint64(written) {
		b.Fatalf("wrote %d packets, the counters say %d", written, got)
	}
}

// benchRead grants dev b.N packets of size bytes and waits until s's read
// loop delivered them all, timing that.
func benchRead(b *testing.B, dev *benchDevice, s *Stack, size int) {
	b.Helper()
	waitIdle := func() {
		select {
		case <-dev.idle:
		case <-time.After(30 * time.Second):
			b.Fatal("the read loop did not come back for more packets")
		}
	}
	waitIdle() // the read loop has started
	before := s.Link().Stats().RxPackets.Load()
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	dev.budget <- b.N
	waitIdle()
	b.StopTimer()
	if got := s.Link().Stats().RxPackets.Load() - before; got != uint64(b.N) {
		b.Fatalf("delivered %d packets, want %d (%d bad frames)", got, b.N, s.Link().Stats().RxBadFrames.Load())
	}
}
