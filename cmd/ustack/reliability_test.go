package main

// Reliability tests: ustack up under hostile or heavy use, on the real binary
// in the test's private network namespace. A SYN flood from spoofed sources,
// malformed and off-path packets, 10,000 concurrent connections, slowloris
// against the connection limit, kill -9 and restart, SIGINT in the middle of a
// bulk transfer, and a leak check over 1,000 connections. Each test uses an
// interface and a /24 of its own (198.18.20.0/24 …), and every packet it makes
// by hand goes to that interface only.
//
// Hand-made packets leave the kernel two ways:
//   - a raw IP socket (AF_INET, SOCK_RAW, IPPROTO_RAW, which implies
//     IP_HDRINCL): the kernel routes the packet by its destination into the
//     TUN, but always rewrites the IPv4 header checksum and total length
//     (raw(7): "Checksum: Always filled in", "Total Length: Always filled
//     in"); everything after the IPv4 header is sent as given;
//   - a packet socket (AF_PACKET, SOCK_DGRAM) bound to the TUN interface: the
//     bytes are queued on the device exactly as given, with no IP processing,
//     so a bad header checksum or total length reaches ustack as made.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/tunif/netnstest"
)

// listenBacklog is netstack's listen queue in ustack (stack.listenBacklog):
// it also bounds the half-open (SYN-RCVD) connections a listener keeps before
// it answers with SYN cookies instead.
const listenBacklog = 1024

// ackOnce connects to the ACK server at addr, sends msg as a line and checks
// the reply, all within timeout.
func ackOnce(addr, msg string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	if want := "ACK: " + msg + "\n"; got != want {
		return fmt.Errorf("reply %q, want %q", got, want)
	}
	return nil
}

// stackStats is statsJSON for the ustack of that name. A stack busy with
// thousands of connections under -race may not answer within the control
// socket's 5 s: it tries three times, and says why it failed.
func stackStats(t *testing.T, name string) *stack.Snapshot {
	t.Helper()
	var err error
	for range 3 {
		var s *stack.Snapshot
		if s, err = tryStackStats(t, name); err == nil {
			return s
		}
		t.Log(err)
	}
	t.Fatal(err)
	return nil
}

// tryStackStats runs ustack stats --json --name name.
func tryStackStats(t *testing.T, name string) (*stack.Snapshot, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(ustackBinary(t), "stats", "--json", "--name", name)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("ustack stats --json --name %s: %v after %v: %s", name, err, time.Since(began).Round(time.Millisecond), strings.TrimSpace(stderr.String()))
	}
	var s stack.Snapshot
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		return nil, fmt.Errorf("ustack stats --json printed no snapshot: %v\n%s", err, stdout.String())
	}
	return &s, nil
}

// mib formats a byte count in MiB.
func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// txDropped is what the kernel dropped on its way into the TUN interface
// (the queue to its reader, ustack, was full), from netlink: /sys/class/net
// shows the namespace that mounted /sys, not this one.
func txDropped(name string) (uint64, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0, err
	}
	if s := l.Attrs().Statistics; s != nil {
		return s.TxDropped, nil
	}
	return 0, nil
}

func tunTxDropped(t *testing.T, name string) uint64 {
	t.Helper()
	n, err := txDropped(name)
	if err != nil {
		t.Fatalf("netlink: %v", err)
	}
	return n
}

// ---- hand-made IPv4 packets ----

func tcpipAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFrom4(a.As4()) }

// ipv4Packet returns an IPv4 packet around payload with a correct header
// checksum (RFC 791 §3.1). flags and fragOff (in bytes, a multiple of 8) make
// it a fragment.
func ipv4Packet(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, id uint16, flags uint8, fragOff uint16, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength:    uint16(len(b)),
		ID:             id,
		Flags:          flags,
		FragmentOffset: fragOff,
		TTL:            64,
		Protocol:       uint8(proto),
		SrcAddr:        tcpipAddr(src),
		DstAddr:        tcpipAddr(dst),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.IPv4MinimumSize:], payload)
	return b
}

// echoRequest returns an ICMPv4 echo request (RFC 792) with a correct
// checksum, as an IPv4 packet.
func echoRequest(src, dst netip.Addr, id, seq uint16) []byte {
	icmp := header.ICMPv4(make([]byte, header.ICMPv4MinimumSize+8))
	icmp.SetType(header.ICMPv4Echo)
	icmp.SetIdent(id)
	icmp.SetSequence(seq)
	copy(icmp.Payload(), "ustack!!")
	icmp.SetChecksum(^checksum.Checksum(icmp, 0))
	return ipv4Packet(src, dst, header.ICMPv4ProtocolNumber, id, 0, 0, icmp)
}

// tcpSegment describes a TCP segment (RFC 9293 §3.1) to make by hand.
type tcpSegment struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    header.TCPFlags
	window   uint16
	options  []byte // a multiple of 4 bytes
	payload  []byte
	badSum   bool // make the TCP checksum wrong
}

// size is the length of the IPv4 packet that carries s.
func (s *tcpSegment) size() int {
	return header.IPv4MinimumSize + header.TCPMinimumSize + len(s.options) + len(s.payload)
}

// encodeInto writes s as an IPv4 packet into b (of s.size() bytes), with
// correct IPv4 and TCP checksums unless s.badSum.
func (s *tcpSegment) encodeInto(b []byte, id uint16) {
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)),
		ID:          id,
		TTL:         64,
		Protocol:    uint8(header.TCPProtocolNumber),
		SrcAddr:     tcpipAddr(s.src.Addr()),
		DstAddr:     tcpipAddr(s.dst.Addr()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	seg := b[header.IPv4MinimumSize:]
	tcp := header.TCP(seg)
	tcp.Encode(&header.TCPFields{
		SrcPort:    s.src.Port(),
		DstPort:    s.dst.Port(),
		SeqNum:     s.seq,
		AckNum:     s.ack,
		DataOffset: uint8(header.TCPMinimumSize + len(s.options)),
		Flags:      s.flags,
		WindowSize: s.window,
	})
	copy(seg[header.TCPMinimumSize:], s.options)
	copy(seg[header.TCPMinimumSize+len(s.options):], s.payload)
	// The checksum covers a pseudo-header of addresses, protocol and
	// length, then the whole segment with the checksum field zero.
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, tcpipAddr(s.src.Addr()), tcpipAddr(s.dst.Addr()), uint16(len(seg)))
	sum := ^checksum.Checksum(seg, xsum)
	if s.badSum {
		sum ^= 0x00ff
	}
	tcp.SetChecksum(sum)
}

// encode returns s as a new IPv4 packet.
func (s *tcpSegment) encode(id uint16) []byte {
	b := make([]byte, s.size())
	s.encodeInto(b, id)
	return b
}

// mssOption is a TCP MSS option of 1460, as a Linux SYN carries.
var mssOption = []byte{header.TCPOptionMSS, header.TCPOptionMSSLength, 1460 >> 8, 1460 & 0xff}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// rawIPv4 sends hand-made IPv4 packets through the kernel's IP output (a raw
// socket with IP_HDRINCL): routed by destination, header checksum and total
// length rewritten by the kernel, the rest as given.
type rawIPv4 struct{ fd int }

func openRawIPv4(t *testing.T) *rawIPv4 {
	t.Helper()
	// IPPROTO_RAW implies IP_HDRINCL (raw(7)).
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_RAW)
	if err != nil {
		t.Fatalf("raw IPv4 socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return &rawIPv4{fd: fd}
}

func (r *rawIPv4) send(pkt []byte) error {
	to := &syscall.SockaddrInet4{}
	copy(to.Addr[:], header.IPv4(pkt).DestinationAddressSlice())
	return syscall.Sendto(r.fd, pkt, 0, to)
}

// linkInjector queues packets on the TUN interface exactly as given (a packet
// socket bound to it): no IP processing, no checksum or length fixed up.
type linkInjector struct {
	fd int
	to *syscall.SockaddrLinklayer
}

func openLinkInjector(t *testing.T, ifname string) *linkInjector {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	// Protocol 0: this socket receives nothing; the protocol of what it
	// sends is in the address.
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return &linkInjector{fd: fd, to: &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_IP), Ifindex: ifi.Index}}
}

func (l *linkInjector) send(pkt []byte) error { return syscall.Sendto(l.fd, pkt, 0, l.to) }

// sniffedSegment is a TCP segment seen on the TUN interface, either way.
type sniffedSegment struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    header.TCPFlags
	payload  int
}

// sniffer records the TCP segments crossing an interface, in both directions
// (a packet socket for ETH_P_ALL bound to it).
type sniffer struct {
	f    *os.File
	mu   sync.Mutex
	segs []sniffedSegment
	done chan struct{}
}

func sniff(t *testing.T, ifname string) *sniffer {
	t.Helper()
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, int(htons(syscall.ETH_P_ALL)))
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		syscall.Close(fd)
		t.Fatalf("bind packet socket to %s: %v", ifname, err)
	}
	// Non-blocking, so the File is pollable and Close ends a blocked Read.
	s := &sniffer{f: os.NewFile(uintptr(fd), "sniffer"), done: make(chan struct{})}
	go s.loop()
	t.Cleanup(s.close)
	return s
}

func (s *sniffer) loop() {
	defer close(s.done)
	buf := make([]byte, 1<<16)
	for {
		n, err := s.f.Read(buf)
		if err != nil {
			return
		}
		ip := header.IPv4(buf[:n])
		if n < header.IPv4MinimumSize || header.IPVersion(ip) != header.IPv4Version || !ip.IsValid(n) ||
			ip.TransportProtocol() != header.TCPProtocolNumber || ip.FragmentOffset() != 0 {
			continue
		}
		seg := header.TCP(ip.Payload())
		if len(seg) < header.TCPMinimumSize || int(seg.DataOffset()) > len(seg) || seg.DataOffset() < header.TCPMinimumSize {
			continue
		}
		src, _ := netip.AddrFromSlice(ip.SourceAddressSlice())
		dst, _ := netip.AddrFromSlice(ip.DestinationAddressSlice())
		s.mu.Lock()
		s.segs = append(s.segs, sniffedSegment{
			src: netip.AddrPortFrom(src, seg.SourcePort()), dst: netip.AddrPortFrom(dst, seg.DestinationPort()),
			seq: seg.SequenceNumber(), ack: seg.AckNumber(), flags: seg.Flags(), payload: len(seg) - int(seg.DataOffset()),
		})
		s.mu.Unlock()
	}
}

func (s *sniffer) close() {
	s.f.Close()
	<-s.done
}

// count returns how many segments from src to dst were seen so far.
func (s *sniffer) count(src, dst netip.AddrPort) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.segs {
		if g.src == src && g.dst == dst {
			n++
		}
	}
	return n
}

// payloadBytes returns how many bytes of data src sent to dst so far
// (retransmissions included).
func (s *sniffer) payloadBytes(src, dst netip.AddrPort) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.segs {
		if g.src == src && g.dst == dst {
			n += g.payload
		}
	}
	return n
}

// next returns the sequence number after the last byte (SYN and FIN count
// one) that src has sent to dst, and whether src sent anything.
func (s *sniffer) next(src, dst netip.AddrPort) (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var nxt uint32
	found := false
	for _, g := range s.segs {
		if g.src != src || g.dst != dst {
			continue
		}
		end := g.seq + uint32(g.payload)
		if g.flags&(header.TCPFlagSyn|header.TCPFlagFin) != 0 {
			end++
		}
		if !found || int32(end-nxt) > 0 {
			nxt = end
		}
		found = true
	}
	return nxt, found
}

// ---- the tests ----

// synISN is the initial sequence number of the flood's SYN from src: fixed
// per source, so that the "host" at a spoofed address can later answer the
// SYN-ACK it never asked for as a real host would, with a RST whose sequence
// number is the SYN-ACK's acknowledgement (RFC 9293 §3.10.7.1).
func synISN(src netip.AddrPort) uint32 {
	a := src.Addr().As4()
	return binary.BigEndian.Uint32(a[:])*2654435761 ^ uint32(src.Port())*40503
}

// floodDuration is 5 s, or $USTACK_FLOOD_SECONDS.
func floodDuration(t *testing.T) time.Duration {
	if s := os.Getenv("USTACK_FLOOD_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 600 {
			t.Fatalf("USTACK_FLOOD_SECONDS=%q: want 1..600", s)
		}
		return time.Duration(n) * time.Second
	}
	return 5 * time.Second
}

// raceEnabled tells whether the binaries (this one, and ustack, which is a
// copy of it) run under the race detector, which costs memory and CPU.
func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}

// TestSYNFlood floods the ACK server with SYNs from spoofed sources in its
// subnet while real clients keep connecting, one every 20 ms. netstack keeps
// at most listenBacklog half-open connections per listener and answers the
// rest with SYN cookies (RFC 4987 §3.6), so legitimate clients still get
// through, memory stays bounded, and the half-open connections go once their
// "peers" reset them.
//
// The flood is paced to what ustack takes in (see the flood loop). Unpaced
// (USTACK_FLOOD_UNPACED=1, with USTACK_FLOOD_SECONDS for its length) it
// overruns the kernel's 500-packet queue in front of the TUN, which drops
// flood and legitimate packets alike; and once more SYNs reach netstack than
// its listener handles, they pile up in the listener's segment queue, which
// takes segments without payload whatever its size (gVisor's
// transport/tcp/segment_queue.go): the live heap grows by about 30 MiB/s
// without bound and this test fails, on memory and on the legitimate clients.
// That is a known problem, left out of the default run.
func TestSYNFlood(t *testing.T) {
	netnstest.Require(t)
	const (
		name    = "ustack20"
		addr    = "198.18.20.2:5000"
		maxSent = 50_000_000 // a hard bound on the flood, whatever its duration
		// heapBound is for the live heap: listenBacklog half-open
		// endpoints of a few KiB each, cookies that cost no state,
		// packets in flight (measured: 20-45 MiB, with or without
		// -race, for 5 s or 30 s). A stack that kept state per SYN, of
		// 1 KiB or more, would pass it within seconds: the flood sends
		// 5,000-20,000 SYNs a second.
		heapBound = 128 << 20
	)
	// rssBound adds the runtime's slack (freed memory not yet returned)
	// to heapBound; under -race the detector's shadow memory as well
	// (measured peaks: 170-250 MiB under -race, 50-65 MiB without).
	rssBound := uint64(300 << 20)
	if raceEnabled() {
		rssBound = 600 << 20
	}
	dur := floodDuration(t)
	unpaced := os.Getenv("USTACK_FLOOD_UNPACED") == "1"
	p := start(t, "TCP Server running", "up", "--name", name, "--addr", "198.18.20.1/24", "--no-ipv6", "--quiet")
	if err := ackOnce(addr, "warm-up", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	base := stackStats(t, name)
	dropBase := tunTxDropped(t, name)
	raw := openRawIPv4(t)
	dst := netip.MustParseAddrPort(addr)
	// spoofedHalfOpen counts the half-open connections of the flood.
	spoofedHalfOpen := func(s *stack.Snapshot) int {
		n := 0
		for _, c := range s.Conns {
			if c.State == "SYN-RCVD" && c.Remote.Addr().Is4() && c.Remote.Addr().As4()[3] > 2 {
				n++
			}
		}
		return n
	}

	stop := make(chan struct{})
	var sent, sendErrs atomic.Uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the flood
		defer wg.Done()
		r := rand.New(rand.NewPCG(20, 20))
		seg := tcpSegment{dst: dst, flags: header.TCPFlagSyn, window: 64240, options: mssOption}
		buf := make([]byte, seg.size())
		// Paced in windows of 20 ms: the rate grows by 2% a window; when
		// the kernel dropped any of the window's SYNs in front of the
		// TUN because ustack had not read the previous ones yet, it
		// halves and holds for 10 windows. So the flood probes the
		// stack's capacity and mostly runs below it: what it measures
		// is netstack's answer to a SYN flood, not how a saturated CPU
		// shares out a full queue.
		const window = 20 * time.Millisecond
		rate, hold := 2_000.0, 0
		if unpaced {
			rate = 1e9
		}
		tick := time.NewTicker(window)
		defer tick.Stop()
		for i := 0; i < maxSent; {
			drop0, _ := txDropped(name)
			quota := min(int(rate*window.Seconds()), maxSent-i)
			for range quota {
				if unpaced && i%256 == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
				// Neither .1 (the kernel) nor .2 (the stack), nor .255.
				src := netip.AddrFrom4([4]byte{198, 18, 20, byte(3 + r.IntN(252))})
				seg.src = netip.AddrPortFrom(src, uint16(1024+r.IntN(65536-1024)))
				seg.seq = synISN(seg.src)
				seg.encodeInto(buf, uint16(i))
				i++
				if err := raw.send(buf); err != nil {
					sendErrs.Add(1)
					continue
				}
				sent.Add(1)
			}
			if unpaced {
				continue
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			switch drop1, err := txDropped(name); {
			case err == nil && drop1 > drop0:
				rate, hold = max(rate/2, 500), 10
			case hold > 0:
				hold--
			default:
				rate = min(rate*1.02, 1e7)
			}
		}
	}()

	var legitOK, legitFail atomic.Int64
	var legitErrMu sync.Mutex
	var legitErrs []string
	var clients sync.WaitGroup
	wg.Add(1)
	go func() { // the legitimate clients
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			clients.Add(1)
			go func() {
				defer clients.Done()
				// 5 s: room for two SYN retransmissions (1 s, then 2 s)
				// should a queue drop one.
				if err := ackOnce(addr, fmt.Sprintf("legit %d", i), 5*time.Second); err != nil {
					legitFail.Add(1)
					legitErrMu.Lock()
					if len(legitErrs) < 5 {
						legitErrs = append(legitErrs, err.Error())
					}
					legitErrMu.Unlock()
					return
				}
				legitOK.Add(1)
			}()
		}
	}()

	// Sample the stack while the flood runs.
	began := time.Now()
	var peakRSS, peakHeap uint64
	peakEndpoints, peakGoroutines, peakHalfOpen, samples := 0, 0, 0, 0
	sample := func(s *stack.Snapshot) {
		samples++
		peakRSS = max(peakRSS, s.Process.RSSBytes)
		peakHeap = max(peakHeap, s.Process.HeapBytes)
		peakEndpoints = max(peakEndpoints, s.Endpoints)
		peakGoroutines = max(peakGoroutines, s.Process.Goroutines)
		peakHalfOpen = max(peakHalfOpen, spoofedHalfOpen(s))
	}
	// A snapshot of a thousand connections is tens of milliseconds of the
	// stack's CPU under -race: one a second. RSS, the same VmRSS the
	// snapshot reports, is read from /proc ten times a second, which
	// costs the stack nothing.
	pid := p.cmd.Process.Pid
	nextSnapshot := began
	for time.Since(began) < dur {
		if time.Now().After(nextSnapshot) {
			sample(stackStats(t, name))
			nextSnapshot = time.Now().Add(time.Second)
		}
		peakRSS = max(peakRSS, procRSS(pid))
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	floodTime := time.Since(began)
	clients.Wait() // each bounded by its 5 s
	end := stackStats(t, name)
	sample(end)

	rate := float64(sent.Load()) / floodTime.Seconds()
	reached := end.Link.RxPackets - base.Link.RxPackets
	ok, fail := legitOK.Load(), legitFail.Load()
	success := 100 * float64(ok) / float64(max(ok+fail, 1))
	fwd, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	t.Logf("flood: %d SYNs in %v (%.0f SYNs/s; %d sends failed), %d packets reached the stack (%.0f/s), the kernel dropped %d in front of the TUN; race detector %v",
		sent.Load(), floodTime.Round(time.Millisecond), rate, sendErrs.Load(), reached, float64(reached)/floodTime.Seconds(), tunTxDropped(t, name)-dropBase, raceEnabled())
	t.Logf("legitimate clients: %d of %d got their ACK (%.1f%%)", ok, ok+fail, success)
	t.Logf("ustack: peak RSS %s (baseline %s), peak heap %s (baseline %s), peak endpoints %d (baseline %d), peak half-open %d, peak goroutines %d (baseline %d), %d samples",
		mib(peakRSS), mib(base.Process.RSSBytes), mib(peakHeap), mib(base.Process.HeapBytes), peakEndpoints, base.Endpoints, peakHalfOpen, peakGoroutines, base.Process.Goroutines, samples)
	t.Logf("TCP: passive opens +%d; segments out +%d, nearly all SYN-ACKs with SYN cookies (the snapshot has no counter for those: netstack's TCP.ListenOverflowSynCookieSent); drops %+v; ip_forward=%s",
		end.TCP.PassiveOpens-base.TCP.PassiveOpens, end.TCP.SegmentsOut-base.TCP.SegmentsOut, end.Drops, strings.TrimSpace(string(fwd)))
	for _, e := range legitErrs {
		t.Logf("a failed legitimate client: %s", e)
	}

	if success < 95 {
		t.Errorf("only %.1f%% of the legitimate clients got their ACK during the flood (%d of %d); want at least 95%%", success, ok, ok+fail)
	}
	if peakRSS > rssBound {
		t.Errorf("peak RSS %s during the flood; want below %s", mib(peakRSS), mib(rssBound))
	}
	if peakHeap > heapBound {
		t.Errorf("peak live heap %s during the flood; want below %s", mib(peakHeap), mib(heapBound))
	}
	if peakHalfOpen > listenBacklog {
		t.Errorf("%d half-open connections of the flood at once: more than the listen backlog (%d)", peakHalfOpen, listenBacklog)
	}
	if peakHalfOpen < listenBacklog/2 {
		t.Errorf("only %d half-open connections of the flood at once: the backlog never filled, the SYN cookies were not exercised", peakHalfOpen)
	}

	// Within 10 s of the end, a new client is served…
	afterFlood := time.Now()
	var err error
	for time.Since(afterFlood) < 10*time.Second {
		if err = ackOnce(addr, "after the flood", 3*time.Second); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no client served within 10 s of the flood: %v", err)
	}
	t.Logf("a new client was served %v after the flood", time.Since(afterFlood).Round(time.Millisecond))
	// … and the goroutines are back to the baseline.
	var s *stack.Snapshot
	waitFor(t, "the goroutines to return to the baseline after the flood", func() bool {
		s = stackStats(t, name)
		return s.Process.Goroutines <= base.Process.Goroutines+5
	})

	// netstack keeps a half-open connection until its SYN-ACK has been
	// retransmitted for 1+2+4+8+16+32 s = 63 s (its handshake back-off
	// ends at MaxRTO, 60 s): the backlog bounds them, not time. A real
	// host at a spoofed address answers the unexpected SYN-ACK with a RST
	// (RFC 9293 §3.10.7.1: seq = the SYN-ACK's ack); do that for each, and
	// the endpoints must go at once.
	t.Logf("%v after the flood: %d half-open endpoints left (endpoints %d, baseline %d); the spoofed peers now reset them",
		time.Since(afterFlood).Round(time.Millisecond), spoofedHalfOpen(s), s.Endpoints, base.Endpoints)
	resets, rounds := 0, 0
	resetBegan := time.Now()
	for s.Endpoints > base.Endpoints+2 && time.Since(resetBegan) < 10*time.Second {
		rounds++
		for _, c := range s.Conns {
			if c.State != "SYN-RCVD" || !c.Remote.Addr().Is4() || c.Remote.Addr().As4()[3] <= 2 {
				continue
			}
			rst := tcpSegment{src: c.Remote, dst: c.Local, seq: synISN(c.Remote) + 1, flags: header.TCPFlagRst}
			if err := raw.send(rst.encode(uint16(resets))); err != nil {
				t.Fatalf("send RST: %v", err)
			}
			resets++
			if resets%16 == 0 {
				time.Sleep(time.Millisecond) // do not overrun the device queue
			}
		}
		time.Sleep(200 * time.Millisecond)
		s = stackStats(t, name)
	}
	t.Logf("%d RSTs in %d rounds; %v later: endpoints %d (baseline %d), goroutines %d (baseline %d), RSS %s, heap %s",
		resets, rounds, time.Since(resetBegan).Round(time.Millisecond), s.Endpoints, base.Endpoints, s.Process.Goroutines, base.Process.Goroutines, mib(s.Process.RSSBytes), mib(s.Process.HeapBytes))
	if s.Endpoints > base.Endpoints+2 {
		t.Errorf("endpoints %d 10 s after resetting the half-open connections; baseline %d", s.Endpoints, base.Endpoints)
	}
	select {
	case <-p.done:
		t.Fatalf("ustack exited: %v\n%s", p.err, p.stderr.String())
	default:
	}
}

// TestHostilePackets injects malformed and off-path packets, hundreds of each
// kind, while a legitimate connection sits idle; the connection survives, and
// every kind shows up where `ustack stats` says it should.
func TestHostilePackets(t *testing.T) {
	netnstest.Require(t)
	const (
		name = "ustack21"
		n    = 300 // of each kind
	)
	var (
		host   = netip.MustParseAddr("198.18.21.1")
		stk    = netip.MustParseAddr("198.18.21.2")
		server = netip.AddrPortFrom(stk, 5000)
	)
	p := start(t, "TCP Server running", "up", "--name", name, "--addr", "198.18.21.1/24", "--no-ipv6", "--quiet")
	sn := sniff(t, name)
	raw := openRawIPv4(t)
	link := openLinkInjector(t, name)

	// The legitimate connection, without keepalive probes so that it is
	// silent unless spoken to.
	c, err := (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}).Dial("tcp", server.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := bufio.NewReader(c)
	say := func(msg string) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, msg+"\n"); err != nil {
			return err
		}
		got, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		if want := "ACK: " + msg + "\n"; got != want {
			return fmt.Errorf("reply %q, want %q", got, want)
		}
		return nil
	}
	if err := say("before"); err != nil {
		t.Fatal(err)
	}
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	// RCV.NXT and SND.NXT of the stack's side, from what crossed the wire
	// (the reply comes after the line it answers, on the sniffer too).
	waitFor(t, "the sniffer to see the exchange", func() bool {
		return sn.payloadBytes(server, client) >= len("ACK: before\n")
	})
	rcvNxt, _ := sn.next(client, server)
	sndNxt, _ := sn.next(server, client)
	t.Logf("the legitimate connection %v → %v: stack's RCV.NXT %d, SND.NXT %d", client, server, rcvNxt, sndNxt)
	r := rand.New(rand.NewPCG(21, 21))
	// far is a sequence number at least 2^30 away from next: outside any
	// window (at most 64 KiB here) in either direction.
	far := func(next uint32) uint32 { return next + 1<<31 + uint32(r.IntN(1<<30)) - 1<<29 }
	spoofed := func() netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 21, byte(3 + r.IntN(252))}), uint16(1024+r.IntN(60000)))
	}
	synTo5000 := func(i int, badSum bool) []byte {
		s := tcpSegment{src: spoofed(), dst: server, seq: r.Uint32(), flags: header.TCPFlagSyn, window: 1000, options: mssOption, badSum: badSum}
		return s.encode(uint16(i))
	}

	type delta struct{ before, after *stack.Snapshot }
	diff := func(get func(*stack.Snapshot) uint64) func(d delta) uint64 {
		return func(d delta) uint64 { return get(d.after) - get(d.before) }
	}
	malformed := diff(func(s *stack.Snapshot) uint64 { return s.IPv4.Malformed })
	echoes := diff(func(s *stack.Snapshot) uint64 { return s.ICMP.V4EchoRequestsIn })
	received := diff(func(s *stack.Snapshot) uint64 { return s.IPv4.PacketsReceived })
	delivered := diff(func(s *stack.Snapshot) uint64 { return s.IPv4.PacketsDelivered })
	l4Malformed := diff(func(s *stack.Snapshot) uint64 { return dropCount(s, "transport", "malformed transport header") })
	tcpInvalid := diff(func(s *stack.Snapshot) uint64 { return s.TCP.InvalidSegments })
	badSums := diff(func(s *stack.Snapshot) uint64 { return s.TCP.ChecksumErrors })
	opens := diff(func(s *stack.Snapshot) uint64 { return s.TCP.PassiveOpens })
	segsIn := diff(func(s *stack.Snapshot) uint64 { return s.TCP.SegmentsIn })
	resetsIn := diff(func(s *stack.Snapshot) uint64 { return s.TCP.ResetsIn })

	type want struct {
		what  string
		count func(delta) uint64
		n     uint64 // expected exactly (less what the kernel dropped)
	}
	// replies: what the stack must send back to the client on the
	// connection's 4-tuple.
	const (
		none      = iota // nothing (a silent drop, or nothing of the connection's)
		challenge        // RFC 5961 challenge ACKs: at least one, rate-limited to one per 500 ms
		each             // an ACK for each
	)
	for _, k := range []struct {
		name    string
		send    func([]byte) error
		make    func(i int) []byte
		wants   []want
		replies int
	}{
		{"bad IPv4 header checksum, packet socket", link.send, func(i int) []byte {
			b := echoRequest(host, stk, uint16(i), 1)
			b[10] ^= 0x55
			return b
		}, []want{{"IPv4 malformed", malformed, n}, {"echo requests", echoes, 0}}, none},
		{"bad IPv4 header checksum, raw socket (the kernel recomputes it)", raw.send, func(i int) []byte {
			b := echoRequest(host, stk, uint16(i), 2)
			b[10] ^= 0x55
			return b
		}, []want{{"echo requests", echoes, n}, {"IPv4 malformed", malformed, 0}}, none},
		{"total length past the end, packet socket", link.send, func(i int) []byte {
			b := echoRequest(host, stk, uint16(i), 3)
			ip := header.IPv4(b)
			ip.SetTotalLength(uint16(len(b) + 100))
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
			return b
		}, []want{{"IPv4 malformed", malformed, n}, {"echo requests", echoes, 0}}, none},
		{"total length past the end, raw socket (the kernel rewrites it)", raw.send, func(i int) []byte {
			b := echoRequest(host, stk, uint16(i), 4)
			header.IPv4(b).SetTotalLength(uint16(len(b) + 100))
			return b
		}, []want{{"echo requests", echoes, n}, {"IPv4 malformed", malformed, 0}}, none},
		{"total length shorter than the IPv4 header, packet socket", link.send, func(i int) []byte {
			b := echoRequest(host, stk, uint16(i), 5)
			ip := header.IPv4(b)
			ip.SetTotalLength(12)
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
			return b
		}, []want{{"IPv4 malformed", malformed, n}, {"echo requests", echoes, 0}}, none},
		// The rest is trailing bytes past the total length, which IP
		// trims as link padding: a valid IP packet with 10 bytes of TCP.
		{"total length cutting the TCP header, packet socket", link.send, func(i int) []byte {
			b := synTo5000(i, false)
			ip := header.IPv4(b)
			ip.SetTotalLength(header.IPv4MinimumSize + 10)
			ip.SetChecksum(0)
			ip.SetChecksum(^ip.CalculateChecksum())
			return b
		}, []want{{"transport malformed", l4Malformed, n}, {"IPv4 malformed", malformed, 0}, {"passive opens", opens, 0}}, none},
		{"TCP header of 10 bytes, raw socket", raw.send, func(i int) []byte {
			return synTo5000(i, false)[:header.IPv4MinimumSize+10]
		}, []want{{"transport malformed", l4Malformed, n}, {"passive opens", opens, 0}}, none},
		{"TCP data offset past the segment, raw socket", raw.send, func(i int) []byte {
			b := synTo5000(i, false)
			b[header.IPv4MinimumSize+12] = 15 << 4 // 60 bytes of header in a 24-byte segment
			return b
		}, []want{{"TCP invalid", tcpInvalid, n}, {"passive opens", opens, 0}}, none},
		// Fragments wait for the rest in netstack's reassembler (30 s,
		// within a memory bound); the snapshot does not count them apart.
		{"first fragment that never completes, raw socket", raw.send, func(i int) []byte {
			return ipv4Packet(host, stk, header.TCPProtocolNumber, uint16(10000+i), header.IPv4FlagMoreFragments, 0, make([]byte, 64))
		}, []want{{"IPv4 received", received, n}, {"IPv4 delivered", delivered, 0}, {"IPv4 malformed", malformed, 0}}, none},
		{"lone middle fragment, raw socket", raw.send, func(i int) []byte {
			return ipv4Packet(host, stk, header.TCPProtocolNumber, uint16(20000+i), header.IPv4FlagMoreFragments, 64, make([]byte, 64))
		}, []want{{"IPv4 received", received, n}, {"IPv4 delivered", delivered, 0}, {"IPv4 malformed", malformed, 0}}, none},
		{"fragment not a multiple of 8 bytes, raw socket", raw.send, func(i int) []byte {
			return ipv4Packet(host, stk, header.TCPProtocolNumber, uint16(30000+i), header.IPv4FlagMoreFragments, 0, make([]byte, 60))
		}, []want{{"IPv4 malformed", malformed, n}, {"IPv4 delivered", delivered, 0}}, none},
		{"SYN with a bad TCP checksum, raw socket", raw.send, func(i int) []byte {
			return synTo5000(i, true)
		}, []want{{"TCP bad checksums", badSums, n}, {"passive opens", opens, 0}}, none},
		// RFC 9293 §3.10.7.4: an unacceptable segment gets an ACK.
		// netstack sends one for every segment with data (it rate-limits
		// only empty ones); Linux rate-limits both.
		{"data far outside the window on the connection's 4-tuple", raw.send, func(i int) []byte {
			s := tcpSegment{src: client, dst: server, seq: far(rcvNxt), ack: sndNxt, flags: header.TCPFlagAck | header.TCPFlagPsh, window: 1000, payload: []byte("INJECTED\n")}
			return s.encode(uint16(i))
		}, []want{{"TCP segments in", segsIn, n}, {"TCP invalid", tcpInvalid, 0}}, each},
		// RFC 5961 §3.2: a RST outside the window is dropped silently;
		// inside it but not at RCV.NXT it gets a challenge ACK.
		{"RST far outside the window on the connection's 4-tuple", raw.send, func(i int) []byte {
			s := tcpSegment{src: client, dst: server, seq: far(rcvNxt), flags: header.TCPFlagRst}
			return s.encode(uint16(i))
		}, []want{{"TCP resets in", resetsIn, n}}, none},
		{"RST inside the window but not at RCV.NXT on the connection's 4-tuple", raw.send, func(i int) []byte {
			s := tcpSegment{src: client, dst: server, seq: rcvNxt + 1 + uint32(r.IntN(16000)), flags: header.TCPFlagRst}
			return s.encode(uint16(i))
		}, []want{{"TCP resets in", resetsIn, n}}, challenge},
		// RFC 5961 §4.2: a SYN in a synchronized state gets a challenge
		// ACK, whatever its sequence number.
		{"SYN on the connection's 4-tuple", raw.send, func(i int) []byte {
			s := tcpSegment{src: client, dst: server, seq: r.Uint32(), flags: header.TCPFlagSyn, window: 1000, options: mssOption}
			return s.encode(uint16(i))
		}, []want{{"TCP segments in", segsIn, n}, {"passive opens", opens, 0}}, challenge},
	} {
		if k.replies == challenge {
			// Past the rate limit of the previous kind's challenge ACK.
			time.Sleep(600 * time.Millisecond)
		}
		before := stackStats(t, name)
		drop0 := tunTxDropped(t, name)
		replies0 := sn.count(server, client)
		for i := range n {
			if err := k.send(k.make(i)); err != nil {
				t.Fatalf("%s: send: %v", k.name, err)
			}
			if i%32 == 31 {
				time.Sleep(time.Millisecond) // do not overrun the device queue
			}
		}
		lost := tunTxDropped(t, name) - drop0
		var d delta
		var bad []string
		check := func() bool {
			d = delta{before, stackStats(t, name)}
			bad = bad[:0]
			for _, w := range k.wants {
				got := w.count(d)
				if w.n == 0 && got != 0 || w.n > 0 && (got < w.n-lost || got > w.n) {
					bad = append(bad, fmt.Sprintf("%s +%d, want +%d", w.what, got, w.n))
				}
			}
			return len(bad) == 0 && d.after.Link.RxPackets-before.Link.RxPackets >= n-lost
		}
		deadline := time.Now().Add(5 * time.Second)
		for !check() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if k.replies != none {
			time.Sleep(100 * time.Millisecond) // the last answers on their way through the device
		}
		replies := sn.count(server, client) - replies0
		took := time.Since(d.before.Time)
		t.Logf("%-70s %d sent, %d dropped by the kernel; stack: link rx +%d, IPv4 malformed +%d, transport malformed +%d, TCP invalid +%d, bad checksum +%d, resets in +%d; %d segments from the stack to the client",
			k.name, n, lost, d.after.Link.RxPackets-before.Link.RxPackets, malformed(d), l4Malformed(d), tcpInvalid(d), badSums(d), resetsIn(d), replies)
		if len(bad) > 0 {
			t.Errorf("%s: %s", k.name, strings.Join(bad, "; "))
		}
		switch k.replies {
		case none:
			if replies != 0 {
				t.Errorf("%s: the stack sent %d segments to the client; want none", k.name, replies)
			}
		case challenge:
			if replies < 1 || replies > 1+int(took/(400*time.Millisecond)) {
				t.Errorf("%s: %d challenge ACKs in %v; want at least one, rate-limited (netstack: one per 500 ms)", k.name, replies, took.Round(time.Millisecond))
			}
		case each:
			if replies < 1 || replies > n {
				t.Errorf("%s: %d ACKs for %d segments", k.name, replies, n)
			}
		}
	}

	// The connection is alive and nothing was injected into it.
	if err := say("after"); err != nil {
		t.Fatalf("the legitimate connection after the hostile packets: %v", err)
	}
	end := stackStats(t, name)
	found := false
	for _, cn := range end.Conns {
		if cn.Remote == client {
			found = cn.State == "ESTABLISHED"
		}
	}
	if !found {
		t.Errorf("no ESTABLISHED connection for %v in %+v", client, end.Conns)
	}
	for _, dr := range [][2]string{
		{"ipv4", "malformed"},
		{"transport", "malformed transport header"},
		{"tcp", "bad checksum"},
		{"tcp", "invalid segment"},
	} {
		if dropCount(end, dr[0], dr[1]) == 0 {
			t.Errorf("no %s %q entry in the drops: %+v", dr[0], dr[1], end.Drops)
		}
	}
	t.Logf("drops at the end: %+v; TCP %+v", end.Drops, end.TCP)
	select {
	case <-p.done:
		t.Fatalf("ustack exited: %v\n%s", p.err, p.stderr.String())
	default:
	}
}

// dropCount returns the count of the first drop of layer whose reason
// contains reason.
func dropCount(s *stack.Snapshot, layer, reason string) uint64 {
	for _, d := range s.Drops {
		if d.Layer == layer && strings.Contains(d.Reason, reason) {
			return d.Count
		}
	}
	return 0
}

// raiseNofile raises this process's open-file limit to want (the ustack it
// starts inherits it), or, without CAP_SYS_RESOURCE, as far as the hard limit
// allows, which must be at least need; it restores the limit when the test
// ends.
func raiseNofile(t *testing.T, want, need uint64) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= want {
		return
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: max(old.Max, want)})
	if err == nil {
		return
	}
	if old.Max < need {
		netnstest.Skipf(t, "RLIMIT_NOFILE is %d/%d and cannot be raised to %d (needs CAP_SYS_RESOURCE): %v", old.Cur, old.Max, need, err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: old.Max, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	t.Logf("RLIMIT_NOFILE: %d (the hard limit; raising it to %d needs CAP_SYS_RESOURCE: %v)", old.Max, want, err)
}

// procRSS returns the resident set of process pid (VmRSS), or 0.
func procRSS(pid int) uint64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// procLimit returns a line of /proc/PID/limits.
func procLimit(pid int, what string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, what) {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	return ""
}

// kernelTCPStates counts the kernel's TCP sockets connected to remote, by
// state, from /proc/net/tcp of this network namespace.
func kernelTCPStates(t *testing.T, remote netip.AddrPort) map[string]int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	a := remote.Addr().As4()
	// Addresses are in host byte order (little-endian here), ports in hex.
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], remote.Port())
	names := map[string]string{"01": "ESTABLISHED", "04": "FIN-WAIT-1", "05": "FIN-WAIT-2", "06": "TIME-WAIT", "08": "CLOSE-WAIT", "09": "LAST-ACK", "0B": "CLOSING"}
	states := map[string]int{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[2] == want {
			if n, ok := names[f[3]]; ok {
				states[n]++
			} else {
				states[f[3]]++
			}
		}
	}
	return states
}

// TestTenThousandConnections holds 10,000 connections to the ACK server at
// once, each answered, then closes them: the stack's goroutines, fds and
// endpoints go back to where they were.
func TestTenThousandConnections(t *testing.T) {
	netnstest.Require(t)
	const (
		name     = "ustack22"
		addr     = "198.18.22.2:5000"
		conns    = 10_000
		parallel = 64
		bound    = 2 * time.Minute
	)
	began := time.Now()
	// The clients' sockets are this process's fds; ustack's side of each
	// connection is netstack state, not a file descriptor.
	raiseNofile(t, 25_000, conns+1000)
	p := start(t, "TCP Server running", "up", "--name", name, "--addr", "198.18.22.1/24", "--no-ipv6", "--quiet", "--max-conns", "20000")
	t.Logf("ustack's %s", procLimit(p.cmd.Process.Pid, "Max open files"))
	if err := ackOnce(addr, "warm-up", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	base := stackStats(t, name)

	open := make([]net.Conn, conns)
	defer func() {
		for _, c := range open {
			if c != nil {
				c.Close()
			}
		}
	}()
	work := make(chan int)
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				deadline := time.Now().Add(30 * time.Second)
				c, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", addr)
				if err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					continue
				}
				open[i] = c
				c.SetDeadline(deadline)
				msg := fmt.Sprintf("connection %d", i)
				if _, err := io.WriteString(c, msg+"\n"); err != nil {
					errs <- fmt.Errorf("connection %d: %w", i, err)
					continue
				}
				// One line each, so a small reader wastes nothing.
				got, err := bufio.NewReaderSize(c, 64).ReadString('\n')
				if err != nil || got != "ACK: "+msg+"\n" {
					errs <- fmt.Errorf("connection %d: reply %q, %v", i, got, err)
				}
			}
		}()
	}
	dialing := time.Now()
	tried := 0
	for ; tried < conns && time.Since(began) < bound; tried++ {
		work <- tried
	}
	close(work)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed < 5 {
			t.Error(err)
		}
		failed++
	}
	opened := time.Since(dialing)
	if failed > 0 || tried < conns {
		t.Fatalf("%d of %d connections tried in %v, %d failed", tried, conns, time.Since(began).Round(time.Millisecond), failed)
	}
	peak := stackStats(t, name)
	t.Logf("%d connections open and answered in %v (%.0f/s)", conns, opened.Round(time.Millisecond), conns/opened.Seconds())
	t.Logf("at the peak: RSS %s (baseline %s: %.1f KiB per connection), heap %s, goroutines %d (baseline %d), fds %d (baseline %d), endpoints %d (baseline %d), established %d",
		mib(peak.Process.RSSBytes), mib(base.Process.RSSBytes), float64(peak.Process.RSSBytes-base.Process.RSSBytes)/conns/1024,
		mib(peak.Process.HeapBytes), peak.Process.Goroutines, base.Process.Goroutines, peak.Process.FDs, base.Process.FDs, peak.Endpoints, base.Endpoints, peak.TCP.Established)
	if peak.Endpoints < base.Endpoints+conns || peak.Process.Goroutines < base.Process.Goroutines+conns {
		t.Errorf("not all %d connections were held at once: endpoints %d, goroutines %d", conns, peak.Endpoints, peak.Process.Goroutines)
	}
	if peak.Process.FDs > base.Process.FDs+5 {
		t.Errorf("ustack's fds grew from %d to %d with the connections; netstack connections are not files", base.Process.FDs, peak.Process.FDs)
	}

	// Closed in batches of closeBatch, each once the stack has
	// acknowledged the FINs of the one before (no kernel socket left in
	// FIN-WAIT-1): 10,000 FINs at once overrun the kernel's queue in front
	// of the TUN (500 packets) whenever the stack reads slower than the
	// kernel sends — under -race, 10,000 goroutines make it ten times
	// slower — and a FIN dropped there is retransmitted with exponential
	// back-off, so some connections stayed ESTABLISHED on the stack for a
	// minute or more. The kernel's side is watched, which costs the stack
	// nothing (a snapshot of 10,000 connections is seconds of its CPU
	// under -race).
	const closeBatch = 250
	remote := netip.MustParseAddrPort(addr)
	drop0 := tunTxDropped(t, name)
	closed := time.Now()
	for i := 0; i < len(open); i += closeBatch {
		for j := i; j < min(i+closeBatch, len(open)); j++ {
			open[j].Close()
			open[j] = nil
		}
		for kernelTCPStates(t, remote)["FIN-WAIT-1"] > 0 && time.Since(closed) < 30*time.Second {
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Then for the stack to close its side of each.
	var finWait map[string]int
	for time.Since(closed) < 30*time.Second {
		if finWait = kernelTCPStates(t, remote); finWait["FIN-WAIT-1"]+finWait["FIN-WAIT-2"] == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%v after the first close: kernel sockets to the stack %v; the kernel dropped %d packets in front of the TUN",
		time.Since(closed).Round(time.Millisecond), finWait, tunTxDropped(t, name)-drop0)
	s := peak
	ok, statsFailures := false, 0
	for !ok && time.Since(closed) < 40*time.Second {
		snap, err := tryStackStats(t, name)
		if err != nil {
			statsFailures++
			t.Logf("%v after the close: %v", time.Since(closed).Round(time.Millisecond), err)
			continue
		}
		s = snap
		ok = s.Process.Goroutines <= base.Process.Goroutines+5 && s.Process.FDs <= base.Process.FDs+2 && s.Endpoints <= base.Endpoints+5
		if !ok {
			time.Sleep(time.Second)
		}
	}
	states := map[string]int{}
	for _, c := range s.Conns {
		states[c.State]++
	}
	t.Logf("%v after the close: RSS %s, heap %s, goroutines %d, fds %d, endpoints %d %v; resets in +%d, out +%d (%d stats calls failed)",
		time.Since(closed).Round(time.Millisecond), mib(s.Process.RSSBytes), mib(s.Process.HeapBytes), s.Process.Goroutines, s.Process.FDs, s.Endpoints, states,
		s.TCP.ResetsIn-peak.TCP.ResetsIn, s.TCP.ResetsOut-peak.TCP.ResetsOut, statsFailures)
	if !ok {
		t.Errorf("after closing: goroutines %d (baseline %d), fds %d (baseline %d), endpoints %d (baseline %d) %v",
			s.Process.Goroutines, base.Process.Goroutines, s.Process.FDs, base.Process.FDs, s.Endpoints, base.Endpoints, states)
	}
	if err := ackOnce(addr, "after 10k", 5*time.Second); err != nil {
		t.Errorf("after the 10,000: %v", err)
	}
	if took := time.Since(began); took > bound {
		t.Errorf("took %v; want under %v", took, bound)
	}
}

// TestSlowlorisAndConnLimit: 50 clients that trickle a byte at a time fill
// --max-conns 50; the 51st is refused at once with a log line; once they go
// silent, --idle-timeout 2s closes each of them, and a new client is served.
func TestSlowlorisAndConnLimit(t *testing.T) {
	netnstest.Require(t)
	const (
		name  = "ustack23"
		addr  = "198.18.23.2:5000"
		limit = 50
		idle  = 2 * time.Second
	)
	p := start(t, "TCP Server running", "up", "--name", name, "--addr", "198.18.23.1/24", "--no-ipv6", "--idle-timeout", idle.String(), "--max-conns", strconv.Itoa(limit))
	connected := regexp.MustCompile(`(?m)^Client connected: 198\.18\.23\.1 \d+$`)

	// The slowloris: each sends a byte every 500 ms, never a newline. The
	// idle timeout is a deadline on each read, so a trickle keeps a
	// connection (and its slot) for as long as it lasts.
	type slow struct {
		c        net.Conn
		dialed   time.Time
		lastSent atomic.Int64 // unix nanoseconds of the last byte written
	}
	slows := make([]*slow, limit)
	trickle := make(chan struct{})
	var wg sync.WaitGroup
	for i := range slows {
		dialed := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s := &slow{c: c, dialed: dialed}
		slows[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(idle / 4)
			defer tick.Stop()
			for range 100 { // at most 100 bytes
				s.c.SetWriteDeadline(time.Now().Add(idle))
				if _, err := s.c.Write([]byte("x")); err != nil {
					return
				}
				s.lastSent.Store(time.Now().UnixNano())
				select {
				case <-trickle:
					return
				case <-tick.C:
				}
			}
		}()
	}
	waitFor(t, "the 50 slow clients to be admitted", func() bool {
		return len(connected.FindAllString(p.stderr.String(), -1)) >= limit
	})

	// The 51st is accepted by TCP and closed by the server at once.
	c51, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("the 51st: %v", err)
	}
	defer c51.Close()
	port51 := c51.LocalAddr().(*net.TCPAddr).Port
	c51.SetReadDeadline(time.Now().Add(idle * 3 / 4)) // well before an idle close
	dialed := time.Now()
	if n, err := c51.Read(make([]byte, 1)); err == nil {
		t.Errorf("the 51st connection read %d bytes; want it closed at once", n)
	} else if isTimeout(err) {
		t.Errorf("the 51st connection is still open after %v: not refused", time.Since(dialed).Round(time.Millisecond))
	} else {
		t.Logf("the 51st connection ended after %v: %v", time.Since(dialed).Round(time.Millisecond), err)
	}
	refused := fmt.Sprintf("Refusing client 198.18.23.1 %d: connection limit %d reached", port51, limit)
	waitFor(t, "the refusal log line", func() bool { return strings.Contains(p.stderr.String(), refused) })

	// Still trickling, each is closed an idle timeout after it connected:
	// the bytes of a line that never ends do not restart the clock.
	var closedMu sync.Mutex
	var early, late, open []string
	var longest time.Duration
	for i, s := range slows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.c.SetReadDeadline(s.dialed.Add(idle + 3*time.Second))
			_, err := io.Copy(io.Discard, s.c) // nil at EOF, or the reset
			after := time.Since(s.dialed)
			closedMu.Lock()
			defer closedMu.Unlock()
			longest = max(longest, after)
			switch {
			case isTimeout(err):
				open = append(open, fmt.Sprintf("#%d", i))
			case after < idle-200*time.Millisecond:
				early = append(early, fmt.Sprintf("#%d after %v", i, after.Round(time.Millisecond)))
			case after > idle+2*time.Second:
				late = append(late, fmt.Sprintf("#%d after %v", i, after.Round(time.Millisecond)))
			}
		}()
	}
	wg.Wait()
	close(trickle)
	t.Logf("the trickling clients were closed at most %v after they connected (idle timeout %v), while still sending a byte every %v", longest.Round(time.Millisecond), idle, idle/4)
	if len(open) > 0 {
		t.Errorf("still open %v after they connected, trickling: %v", idle+3*time.Second, open)
	}
	if len(early) > 0 {
		t.Errorf("closed before the idle timeout: %v", early)
	}
	if len(late) > 0 {
		t.Errorf("closed more than 2 s late: %v", late)
	}
	idleLines := regexp.MustCompile(`(?m)^Client idle for 2s, closing: 198\.18\.23\.1 \d+$`)
	waitFor(t, "a log line for each idle close", func() bool {
		return len(idleLines.FindAllString(p.stderr.String(), -1)) >= limit
	})

	if err := ackOnce(addr, "a new client", 5*time.Second); err != nil {
		t.Errorf("after the slowloris: %v", err)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d after SIGTERM:\n%s", code, p.stderr.String())
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestKill9AndRestart: a ustack killed with SIGKILL leaves no interface (the
// kernel removes a non-persistent TUN with its last fd), and its stale
// control socket does not stop a new ustack of the same name. (An interface
// of that name that already exists is TestNameInUse's.)
func TestKill9AndRestart(t *testing.T) {
	netnstest.Require(t)
	const (
		name = "ustack24"
		addr = "198.18.24.2:5000"
	)
	args := []string{"up", "--name", name, "--addr", "198.18.24.1/24", "--no-ipv6"}
	sock := filepath.Join(os.Getenv(netnstest.RunDirEnv), name+".sock")

	p := start(t, "TCP Server running", args...)
	if err := ackOnce(addr, "first life", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("no control socket: %v", err)
	}
	killed := time.Now()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("ustack still runs 5 s after SIGKILL")
	}
	waitFor(t, "the kernel to remove "+name, func() bool { return !linkExists(name) })
	t.Logf("%s gone %v after SIGKILL", name, time.Since(killed).Round(time.Millisecond))

	if _, err := os.Lstat(sock); err == nil {
		t.Logf("the killed ustack left its control socket %s", sock)
	} else {
		// Something removed it (the janitor of ustack up --user): leave
		// one as kill -9 does, a socket file nobody listens on.
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
		t.Logf("the control socket was removed after SIGKILL; left a stale one in its place")
	}
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		t.Fatal("the stale control socket answers")
	}

	p2 := start(t, "TCP Server running", args...)
	if err := ackOnce(addr, "second life", 5*time.Second); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if s := stackStats(t, name); s.Process == nil || s.Process.PID != p2.cmd.Process.Pid {
		t.Errorf("the control socket does not answer for the new ustack: %+v", s.Process)
	}
	if code := p2.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d after SIGTERM:\n%s", code, p2.stderr.String())
	}
	if linkExists(name) {
		t.Errorf("%s still exists after SIGTERM", name)
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("the control socket is left after SIGTERM")
	}
}

// TestSIGINTDuringBulk: SIGINT while 64 MiB go through the ACK server; ustack
// exits 0 within 2 s (at most 1 s of grace for open connections, then
// teardown) and the interface is gone. TestSIGTERMDuringTransfers has SIGTERM with several
// clients, at a looser bound.
func TestSIGINTDuringBulk(t *testing.T) {
	netnstest.Require(t)
	const (
		name  = "ustack27"
		addr  = "198.18.27.2:5000"
		total = 64 // MiB, a 1 MiB chunk of lines repeated
	)
	p := start(t, "TCP Server running", "up", "--name", name, "--addr", "198.18.27.1/24", "--no-ipv6", "--quiet")
	chunk, chunkWant := randomLines(1<<20, 27)
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for range total {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
		c.(*net.TCPConn).CloseWrite()
	}()
	var got atomic.Int64
	mismatch := int64(-1) // the offset of the first wrong byte; read after wg.Wait
	readErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		var off int64
		for {
			n, err := c.Read(buf)
			for i := 0; i < n && mismatch < 0; i++ {
				if buf[i] != chunkWant[(off+int64(i))%int64(len(chunkWant))] {
					mismatch = off + int64(i)
				}
			}
			off += int64(n)
			got.Store(off)
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	waitFor(t, "4 MiB of replies", func() bool { return got.Load() >= 4<<20 })

	sig := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	atSignal := got.Load()
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		t.Errorf("ustack still runs 2 s after SIGINT")
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	took := time.Since(sig)
	want := int64(total) * int64(len(chunkWant))
	t.Logf("SIGINT after %s of %s of replies; ustack exited %v later with status %d", mib(uint64(atSignal)), mib(uint64(want)), took.Round(time.Millisecond), p.cmd.ProcessState.ExitCode())
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGINT; stderr:\n%s", code, p.stderr.String())
	}
	if linkExists(name) {
		t.Errorf("%s still exists after SIGINT", name)
	}
	// Within the grace period the server keeps serving: a fast machine
	// finishes the transfer (EOF after all of it), a slow one is cut off
	// (a reset).
	select {
	case err := <-readErr:
		t.Logf("the client's read ended with %v after %s", err, mib(uint64(got.Load())))
	case <-time.After(5 * time.Second):
		t.Errorf("the client's connection still hangs 5 s after ustack exited")
	}
	c.Close()
	wg.Wait()
	if atSignal >= want {
		t.Errorf("the transfer completed (%d bytes) before SIGINT: nothing was in progress", atSignal)
	}
	if mismatch >= 0 {
		t.Errorf("the replies differ from what the ACK server owes at byte %d", mismatch)
	}
}

// TestNoLeaksAfterThousandCycles: 1,000 sequential connect, send, read the
// ACK, close; then ustack's goroutines, fds and netstack endpoints are back to
// where they were.
func TestNoLeaksAfterThousandCycles(t *testing.T) {
	netnstest.Require(t)
	const (
		name   = "ustack26"
		addr   = "198.18.26.2:5000"
		cycles = 1000
		margin = 2
	)
	p := start(t, "TCP Server running", "up", "--name", name, "--addr", "198.18.26.1/24", "--no-ipv6")
	// A few cycles first, so that what is made once on first use (buffer
	// pools, the stack's processor goroutines, timers) is in the baseline.
	for i := range 10 {
		if err := ackOnce(addr, fmt.Sprintf("warm-up %d", i), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	var base *stack.Snapshot
	waitFor(t, "the warm-up connections to close", func() bool {
		base = stackStats(t, name)
		return base.TCP.Established == 0
	})

	began := time.Now()
	for i := range cycles {
		if err := ackOnce(addr, fmt.Sprintf("cycle %d", i), 5*time.Second); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	took := time.Since(began)

	var s *stack.Snapshot
	timeWait := 0
	back := func() bool {
		s = stackStats(t, name)
		timeWait = 0
		for _, c := range s.Conns {
			if c.State == "TIME-WAIT" {
				timeWait++
			}
		}
		return s.Process.Goroutines <= base.Process.Goroutines+margin && s.Process.FDs <= base.Process.FDs+margin &&
			s.Endpoints-timeWait <= base.Endpoints+margin
	}
	settled := time.Now()
	for !back() && time.Since(settled) < 10*time.Second {
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d cycles in %v (%.1f ms each); settled in %v", cycles, took.Round(time.Millisecond), float64(took.Microseconds())/cycles/1000, time.Since(settled).Round(time.Millisecond))
	t.Logf("before: goroutines %d, fds %d, endpoints %d, heap %s, RSS %s", base.Process.Goroutines, base.Process.FDs, base.Endpoints, mib(base.Process.HeapBytes), mib(base.Process.RSSBytes))
	t.Logf("after:  goroutines %d, fds %d, endpoints %d (%d in TIME-WAIT), heap %s, RSS %s; passive opens +%d",
		s.Process.Goroutines, s.Process.FDs, s.Endpoints, timeWait, mib(s.Process.HeapBytes), mib(s.Process.RSSBytes), s.TCP.PassiveOpens-base.TCP.PassiveOpens)
	if !back() {
		t.Errorf("10 s after %d cycles: goroutines %d (baseline %d), fds %d (baseline %d), endpoints %d less %d in TIME-WAIT (baseline %d); margin %d",
			cycles, s.Process.Goroutines, base.Process.Goroutines, s.Process.FDs, base.Process.FDs, s.Endpoints, timeWait, base.Endpoints, margin)
	}
	if got := s.TCP.PassiveOpens - base.TCP.PassiveOpens; got != cycles {
		t.Errorf("passive opens +%d, want +%d", got, cycles)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d after SIGTERM:\n%s", code, p.stderr.String())
	}
}
