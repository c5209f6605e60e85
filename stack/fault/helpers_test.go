package fault

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// fakeClock is a clock that moves only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*fakeTimer
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) newTimer() timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := &fakeTimer{clk: c, ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, ft)
	return ft
}

// advance moves the clock by d and fires the timers that are due.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	for _, ft := range c.timers {
		if ft.armed && !ft.deadline.After(c.t) {
			ft.fire()
		}
	}
}

// fired reports whether a timer fired and its firing was not received yet.
func (c *fakeClock) fired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ft := range c.timers {
		if len(ft.ch) > 0 {
			return true
		}
	}
	return false
}

type fakeTimer struct {
	clk      *fakeClock
	ch       chan time.Time
	deadline time.Time // guarded by clk.mu
	armed    bool      // guarded by clk.mu
}

func (ft *fakeTimer) c() <-chan time.Time { return ft.ch }

// fire sends on the channel; clk.mu is held.
func (ft *fakeTimer) fire() {
	ft.armed = false
	select {
	case ft.ch <- ft.clk.t:
	default:
	}
}

// drain drops a firing not received, as Reset and Stop do since Go 1.23.
func (ft *fakeTimer) drain() {
	select {
	case <-ft.ch:
	default:
	}
}

func (ft *fakeTimer) reset(d time.Duration) {
	ft.clk.mu.Lock()
	defer ft.clk.mu.Unlock()
	ft.drain()
	ft.deadline = ft.clk.t.Add(d)
	ft.armed = true
	if d <= 0 {
		ft.fire()
	}
}

func (ft *fakeTimer) stop() {
	ft.clk.mu.Lock()
	defer ft.clk.mu.Unlock()
	ft.drain()
	ft.armed = false
}

// delivery is one packet the Injector released, with the fake time it came
// out at and the number of the deliver call it came in.
type delivery struct {
	dir   Dir
	at    time.Time
	call  int
	pkt   Released
	start time.Time // the fake time the test started at
}

func (d delivery) after() time.Duration { return d.at.Sub(d.start) }

// harness runs an Injector on a fake clock and records what it delivers.
type harness struct {
	t     testing.TB
	j     *Injector
	clk   *fakeClock
	start time.Time

	gen     atomic.Uint64 // bumped by settle
	idleGen atomic.Uint64 // the gen run last saw with nothing left to do

	mu    sync.Mutex
	got   []delivery
	calls int
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, clk: newFakeClock()}
	h.start = h.clk.now()
	j, err := newInjector(cfg, h.deliver, h.clk, h.idle)
	if err != nil {
		t.Fatalf("newInjector(%+v): %v", cfg, err)
	}
	h.j = j
	t.Cleanup(j.Close)
	return h
}

func (h *harness) deliver(d Dir, pkts []Released) {
	at := h.clk.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	for _, p := range pkts {
		h.got = append(h.got, delivery{dir: d, at: at, call: h.calls, pkt: p, start: h.start})
	}
}

// idle is run's hook before it waits: when nothing is left for it to do — no
// wake-up and no timer firing pending — it records the settle generation.
func (h *harness) idle(j *Injector) {
	if len(j.wake) == 0 && !h.clk.fired() {
		h.idleGen.Store(h.gen.Load())
	}
}

// settle waits until the Injector's goroutine has handled everything the test
// did before: all packets due at the fake time are delivered.
func (h *harness) settle() {
	h.t.Helper()
	g := h.gen.Add(1)
	h.j.poke()
	deadline := time.Now().Add(10 * time.Second)
	for h.idleGen.Load() < g {
		if time.Now().After(deadline) {
			h.t.Fatal("the injector's goroutine did not settle in 10s")
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// advance moves the fake clock by d and settles.
func (h *harness) advance(d time.Duration) {
	h.t.Helper()
	h.clk.advance(d)
	h.settle()
}

// deliveries returns what was delivered so far.
func (h *harness) deliveries() []delivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]delivery(nil), h.got...)
}

var (
	src4 = tcpip.AddrFrom4([4]byte{198, 18, 0, 1})
	dst4 = tcpip.AddrFrom4([4]byte{198, 18, 0, 2})
	src6 = tcpip.AddrFrom16([16]byte{0xfd, 0x75, 15: 1})
	dst6 = tcpip.AddrFrom16([16]byte{0xfd, 0x75, 15: 2})
)

// tcpPacket builds a valid IPv4 (version 4) or IPv6 (6) TCP segment carrying
// payload, with every checksum right.
func tcpPacket(version int, seq uint32, payload []byte) []byte {
	ipLen := header.IPv4MinimumSize
	if version == 6 {
		ipLen = header.IPv6MinimumSize
	}
	pkt := make([]byte, ipLen+header.TCPMinimumSize+len(payload))
	seg := header.TCP(pkt[ipLen:])
	seg.Encode(&header.TCPFields{
		SrcPort: 43512, DstPort: 5000, SeqNum: seq, AckNum: 1,
		DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck | header.TCPFlagPsh, WindowSize: 65535,
	})
	copy(seg[header.TCPMinimumSize:], payload)
	src, dst := src4, dst4
	if version == 6 {
		src, dst = src6, dst6
		header.IPv6(pkt).Encode(&header.IPv6Fields{
			PayloadLength: uint16(len(seg)), TransportProtocol: header.TCPProtocolNumber,
			HopLimit: 64, SrcAddr: src, DstAddr: dst,
		})
	} else {
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(len(pkt)), ID: uint16(seq), TTL: 64,
			Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dst,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(seg)))
	seg.SetChecksum(^checksum.Checksum(seg, xsum))
	return pkt
}

// tcpChecksumOK verifies the TCP checksum of a packet built by tcpPacket,
// whatever its header fields now say: over the whole segment and the
// pseudo-header of the original addresses.
func tcpChecksumOK(version int, pkt []byte) bool {
	ipLen, src, dst := header.IPv4MinimumSize, src4, dst4
	if version == 6 {
		ipLen, src, dst = header.IPv6MinimumSize, src6, dst6
	}
	seg := pkt[ipLen:]
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(seg)))
	return checksum.Checksum(seg, xsum) == 0xffff
}

// ipv4HeaderOK verifies the checksum of the fixed IPv4 header, whatever its
// IHL now says.
func ipv4HeaderOK(pkt []byte) bool {
	return checksum.Checksum(pkt[:header.IPv4MinimumSize], 0) == 0xffff
}

// packets returns n TCP packets of both IP versions and random sizes,
// the same ones for the same seed.
func packets(seed uint64, n int) [][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	pkts := make([][]byte, n)
	for i := range pkts {
		payload := make([]byte, r.IntN(1400))
		for k := range payload {
			payload[k] = byte(r.Uint32())
		}
		version := 4
		if r.IntN(4) == 0 {
			version = 6
		}
		pkts[i] = tcpPacket(version, uint32(i), payload)
	}
	return pkts
}

// diffBits returns the indexes of the bits in which a and b differ.
func diffBits(a, b []byte) []int {
	var d []int
	for i := range a {
		for bit := 0; bit < 8; bit++ {
			if (a[i]^b[i])&(1<<bit) != 0 {
				d = append(d, i*8+bit)
			}
		}
	}
	return d
}
