// Package tap is the event bus of the link layer: the link endpoint
// (package stack) publishes every packet that crosses the TUN device, and
// netstack's TCP probe publishes the state of a connection after each segment
// it handled. The consumers — the packet trace, the pcap writer, the TCP probe
// recorder, later the web view — subscribe with a bounded queue each.
//
// Publishing never blocks: a consumer that falls behind loses events, and
// counts them, rather than slow the data path. With nobody subscribed,
// Active is one atomic load and the publisher does nothing else.
package tap

import (
	"sync"
	"sync/atomic"
	"time"
)

// Dir is the direction of a packet as seen from the userspace stack.
type Dir uint8

const (
	// In is a packet the kernel routed into the TUN interface: read from the
	// device, delivered to netstack.
	In Dir = iota
	// Out is a packet netstack sent: written to the device, handed to the
	// kernel.
	Out
)

// String returns "in" or "out".
func (d Dir) String() string {
	if d == Out {
		return "out"
	}
	return "in"
}

// Packet is one IP packet as it crossed the TUN device.
type Packet struct {
	Time time.Time
	Dir  Dir
	// Data is the packet from its IP header on, cut to the largest snap
	// length a subscriber asked for. It is shared by every subscriber:
	// read it, never modify it.
	Data []byte
	// Len is the packet's length on the wire, len(Data) or more.
	Len int
	// Drop says why the packet never crossed, when fault injection dropped
	// it ("loss", "queue full"); "" for a packet that crossed.
	Drop string
	// Note says what fault injection did to a packet that crossed:
	// "corrupted", "duplicate", "delayed 20ms", "reordered"…
	Note string
	// Segments is, for a TCP superpacket that crossed whole (the TUN's
	// offloads: TSO from the kernel, GSO from the stack), how many
	// wire-sized segments it stands for, of SegmentSize bytes of payload
	// each (the last may be shorter); 0 for a packet that would cross a
	// wire as it is. Shown as one packet, as tcpdump shows one on an
	// offloading NIC.
	Segments, SegmentSize int
}

// Bus delivers events of type E to its subscribers. The zero value is
// ready to use.
type Bus[E any] struct {
	mu   sync.Mutex
	subs atomic.Pointer[[]*Sub[E]] // copied on write
}

// Sub is one subscriber: a bounded queue of events and a count of what it
// lost because the queue was full.
type Sub[E any] struct {
	bus     *Bus[E]
	c       chan E
	snap    int
	dropped atomic.Uint64
	once    sync.Once
}

// Subscribe adds a subscriber whose queue holds up to queue events. snap is
// how many bytes of each packet it needs (0: all); the bus ignores it for
// events that are not packets.
func (b *Bus[E]) Subscribe(queue, snap int) *Sub[E] {
	if queue < 1 {
		queue = 1
	}
	s := &Sub[E]{bus: b, c: make(chan E, queue), snap: snap}
	b.mu.Lock()
	defer b.mu.Unlock()
	var subs []*Sub[E]
	if p := b.subs.Load(); p != nil {
		subs = append(subs, *p...)
	}
	subs = append(subs, s)
	b.subs.Store(&subs)
	return s
}

// Active tells whether anybody is subscribed: the publisher's one branch.
func (b *Bus[E]) Active() bool {
	p := b.subs.Load()
	return p != nil && len(*p) > 0
}

// Publish offers e to every subscriber without blocking; a full queue drops
// it and counts the drop.
func (b *Bus[E]) Publish(e E) {
	p := b.subs.Load()
	if p == nil {
		return
	}
	for _, s := range *p {
		select {
		case s.c <- e:
		default:
			s.dropped.Add(1)
		}
	}
}

// snapLen returns how many bytes of a packet the subscribers need: 0 when
// one of them needs all of it.
func (b *Bus[E]) snapLen() int {
	p := b.subs.Load()
	if p == nil {
		return 0
	}
	n := -1
	for _, s := range *p {
		if s.snap <= 0 {
			return 0
		}
		n = max(n, s.snap)
	}
	return max(n, 0)
}

// C returns the subscriber's queue. It is never closed: after Close, drain
// what is left without blocking.
func (s *Sub[E]) C() <-chan E { return s.c }

// Dropped returns how many events the subscriber lost to a full queue.
func (s *Sub[E]) Dropped() uint64 { return s.dropped.Load() }

// Close unsubscribes. A Publish that began before may still queue one last
// event; events already queued stay receivable. Safe to call twice.
func (s *Sub[E]) Close() {
	s.once.Do(func() {
		b := s.bus
		b.mu.Lock()
		defer b.mu.Unlock()
		var subs []*Sub[E]
		for _, o := range *b.subs.Load() {
			if o != s {
				subs = append(subs, o)
			}
		}
		b.subs.Store(&subs)
	})
}

// PublishPacket copies the first bytes of an IP packet that the subscribers
// need and publishes it. data may be reused by the caller as soon as it
// returns. Call it only when b.Active().
func PublishPacket(b *Bus[Packet], now time.Time, dir Dir, data []byte) {
	PublishFaulted(b, now, dir, data, "", "")
}

// PublishSuperpacket is PublishPacket for a TCP superpacket that stands for
// segments wire-sized segments of segSize bytes of payload.
func PublishSuperpacket(b *Bus[Packet], now time.Time, dir Dir, data []byte, segments, segSize int) {
	n := len(data)
	if snap := b.snapLen(); snap > 0 {
		n = min(n, snap)
	}
	b.Publish(Packet{Time: now, Dir: dir, Data: append([]byte(nil), data[:n]...), Len: len(data), Segments: segments, SegmentSize: segSize})
}

// PublishFaulted is PublishPacket for a packet fault injection dropped (drop
// says why) or changed (note says how).
func PublishFaulted(b *Bus[Packet], now time.Time, dir Dir, data []byte, drop, note string) {
	n := len(data)
	if snap := b.snapLen(); snap > 0 {
		n = min(n, snap)
	}
	b.Publish(Packet{Time: now, Dir: dir, Data: append([]byte(nil), data[:n]...), Len: len(data), Drop: drop, Note: note})
}
