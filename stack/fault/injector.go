package fault

import (
	"container/heap"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Why Decide dropped a packet: the values of Verdict.Drop.
const (
	DropLoss      = "loss"            // Config.Loss
	DropQueueFull = "queue full"      // the rate limiter's queue held QueueLimit packets: tail drop
	DropHoldFull  = "hold queue full" // holding it would pass MaxHeldPackets or MaxHeldBytes
)

// NoteCorrupted is Verdict.Note for a packet that had a bit flipped.
const NoteCorrupted = "corrupted"

// Reordering: a reordered packet is held back until reorderAfter later
// packets of its direction have passed, or for reorderTimeout past the time it
// was due, whichever comes first. The timeout keeps the last packet of a burst
// from waiting for packets that never come; 5 ms is well below any
// retransmission timeout, so only the duplicate ACKs of the overtaking packets
// tell the sender.
const (
	reorderAfter   = 2
	reorderTimeout = 5 * time.Millisecond
)

// ErrClosed is returned by SetConfig after Close.
var ErrClosed = errors.New("fault: the injector is closed")

// Verdict is what happens to one packet.
type Verdict struct {
	// Drop is "" or why the packet was dropped: DropLoss, DropQueueFull,
	// DropHoldFull. A dropped packet is gone.
	Drop string
	// Held: the Injector kept a copy and hands it over later, through the
	// deliver function; the caller passes nothing on now. With Dup, both
	// copies come through deliver, one after the other.
	Held bool
	// Dup: pass the packet on twice (the second is a duplicate), or, when
	// Held, the Injector will.
	Dup bool
	// Note is what was done to the packet: NoteCorrupted or "".
	Note string
}

// Released is a packet the Injector hands over after holding it.
type Released struct {
	// Data is the packet. It is the receiver's: it may keep and modify it.
	Data []byte
	// Note says what happened to it, like "delayed 21.3ms", "reordered",
	// "rate-limited 4ms" or "corrupted, delayed 20ms"; the second copy of a
	// duplicated packet ends in "duplicate".
	Note string
}

// Stats counts what the Injector did, per direction.
type Stats struct {
	In  DirStats `json:"in"`
	Out DirStats `json:"out"`
}

// DirStats counts what the Injector did to the packets of one direction.
type DirStats struct {
	// Packets is the packets Decide saw while a fault applied to the
	// direction; the other counters are parts of it.
	Packets uint64 `json:"packets"`
	// Lost: dropped by Loss, dropped because the hold caps were reached,
	// or still held when the Injector was closed (each copy of a
	// duplicated one).
	Lost        uint64 `json:"lost"`
	Corrupted   uint64 `json:"corrupted"`
	Duplicated  uint64 `json:"duplicated"`
	Reordered   uint64 `json:"reordered"`
	Delayed     uint64 `json:"delayed"`      // held for Delay and Jitter
	RateQueued  uint64 `json:"rate_queued"`  // waited for the rate limiter
	RateDropped uint64 `json:"rate_dropped"` // tail-dropped by it (queue full)
	HeldNow     uint64 `json:"held_now"`     // held at this moment, duplicates counted
}

// The random values drawn for each packet, always all of them, so that a
// packet's decisions do not depend on which faults are set.
const (
	drawLoss = iota
	drawCorrupt
	drawBit
	drawDuplicate
	drawReorder
	drawJitter
	draws
)

// Injector injects the faults of a Config into the packets of a link. Its
// methods are safe for concurrent use.
type Injector struct {
	deliver func(Dir, []Released)
	clk     clock

	// applies is the set of Dirs a fault applies to, 0 when none or after
	// Close: Decide's one atomic load when no fault applies.
	applies atomic.Uint32

	mu          sync.Mutex
	cfg         Config // guarded by mu: normalized, with the seed in use
	closed      bool   // guarded by mu
	dirs        [2]dirState
	held        holdHeap // guarded by mu: every held packet, earliest release first
	seq         uint64   // guarded by mu: numbers the packets decided, both directions
	heldPackets int      // guarded by mu: copies held, for MaxHeldPackets
	heldBytes   int      // guarded by mu: bytes held, for MaxHeldBytes

	// The hold caps, MaxHeldPackets and MaxHeldBytes; tests lower them.
	capPackets, capBytes int

	wake      chan struct{} // the earliest release time moved earlier
	done      chan struct{} // closed by Close
	exited    chan struct{} // closed when run returns
	closeOnce sync.Once

	// idleHook, when set (by tests), is called by run each time before it
	// waits.
	idleHook func(*Injector)
}

// dirState is the state of one direction, guarded by Injector.mu.
type dirState struct {
	rng   rand.PCG
	stats DirStats
	// lastDeparture is when the rate limiter finishes sending the last packet
	// it accepted; departures are the departure times still ahead, oldest
	// first, from departures[head] on: the packets waiting for it.
	lastDeparture time.Time
	departures    []time.Time
	head          int
	// waiting are the reordered packets still waiting to be overtaken.
	waiting []*heldPacket
}

// heldPacket is one packet the Injector holds (two with dup).
type heldPacket struct {
	at   time.Time // release time: the heap's key
	due  time.Time // when it would be released if it were not reordered
	seq  uint64    // arrival order: the heap's second key, and what overtakes whom
	dir  Dir
	data []byte
	wait int // reordered: later packets still to pass it

	rateWait, delay         time.Duration
	corrupted, dup, reorder bool

	index int // in the heap
}

func (h *heldPacket) copies() int {
	if h.dup {
		return 2
	}
	return 1
}

// New starts an Injector with the faults of cfg (see Config.Validate for the
// errors). deliver is called from the Injector's one goroutine with the held
// packets whose time has come, in release order, direction by direction: all
// those of a direction due at once in one call. The slice is valid only during
// the call; the packets in it are the receiver's.
//
// deliver is called without any lock held: it may call Decide, SetConfig,
// Stats (netstack answering an inbound packet at once sends one out through
// Decide), but not Close, which waits for it.
func New(cfg Config, deliver func(d Dir, pkts []Released)) (*Injector, error) {
	return newInjector(cfg, deliver, realClock{}, nil)
}

// newInjector is New on clock clk, with a hook for tests that run calls each
// time before it waits (nil: none).
func newInjector(cfg Config, deliver func(Dir, []Released), clk clock, idleHook func(*Injector)) (*Injector, error) {
	if deliver == nil {
		return nil, errors.New("fault: New needs a deliver function")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	j := &Injector{
		deliver: deliver,
		clk:     clk,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		exited:  make(chan struct{}),

		idleHook: idleHook,

		capPackets: MaxHeldPackets,
		capBytes:   MaxHeldBytes,
	}
	j.cfg = cfg.normalized()
	for j.cfg.Seed == 0 {
		j.cfg.Seed = rand.Uint64()
	}
	j.reseed()
	j.setApplies()
	go j.run()
	return j, nil
}

// reseed restarts both directions' random streams from j.cfg.Seed.
func (j *Injector) reseed() {
	for i, d := range [2]Dir{In, Out} {
		j.dirs[i].rng.Seed(splitmix(j.cfg.Seed^uint64(d)<<56), splitmix(j.cfg.Seed+uint64(d)))
	}
}

// splitmix is SplitMix64's finalizer: it spreads nearby seeds apart.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

func (j *Injector) setApplies() {
	var a Dir
	if !j.closed && j.cfg.Active() {
		a = j.cfg.Dir
	}
	j.applies.Store(uint32(a))
}

func index(d Dir) int { return int(d >> 1) } // In 0, Out 1

// Applies reports whether a fault is active for d (for Both: for either).
func (j *Injector) Applies(d Dir) bool { return Dir(j.applies.Load())&d != 0 }

// Config returns the configuration in use, with its defaults filled in and
// the seed in use.
func (j *Injector) Config() Config {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cfg
}

// Seed returns the seed in use: Config.Seed, or the one New picked.
func (j *Injector) Seed() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cfg.Seed
}

// Stats returns the counters.
func (j *Injector) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return Stats{In: j.dirs[0].stats, Out: j.dirs[1].stats}
}

// SetConfig changes the faults of a running Injector (see Config.Validate for
// the errors). The random streams go on where they are, unless cfg.Seed is
// non-zero and not the seed in use: then both restart from it. Packets held
// already are released at the time they were given, whatever the new faults.
func (j *Injector) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	seed := j.cfg.Seed
	j.cfg = cfg.normalized()
	if cfg.Seed == 0 || cfg.Seed == seed {
		j.cfg.Seed = seed
	} else {
		j.reseed()
	}
	j.setApplies()
	return nil
}

// Close stops the Injector's goroutine. Packets still held are dropped and
// counted as Lost. After Close, Decide passes every packet untouched. Close is
// safe to call twice; it must not be called from deliver.
func (j *Injector) Close() {
	j.closeOnce.Do(func() {
		j.mu.Lock()
		j.closed = true
		j.setApplies()
		j.mu.Unlock()
		close(j.done)
		<-j.exited
		j.mu.Lock()
		defer j.mu.Unlock()
		for _, h := range j.held {
			st := &j.dirs[index(h.dir)].stats
			st.Lost += uint64(h.copies())
			st.HeldNow -= uint64(h.copies())
		}
		j.held = nil
		j.heldPackets, j.heldBytes = 0, 0
		for i := range j.dirs {
			j.dirs[i].waiting = nil
		}
	})
}

// Decide decides what happens to one packet of direction d (In or Out; any
// other value passes). When no fault applies to d it is one atomic load and
// allocates nothing; otherwise it takes a mutex for a moment. It may flip a
// bit of pkt in place (Corrupt); when it holds the packet it copies it, and
// the caller may reuse pkt at once.
//
// The faults apply in this order: loss (a lost packet is gone); then, for a
// packet that goes on, corruption, duplication, and the timing: the rate
// limiter's queue, the delay with its jitter, and reordering.
func (j *Injector) Decide(d Dir, pkt []byte) Verdict {
	if Dir(j.applies.Load())&d == 0 || (d != In && d != Out) {
		return Verdict{}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	c := &j.cfg
	if j.closed || !c.Active() || c.Dir&d == 0 { // changed since the load
		return Verdict{}
	}
	ds := &j.dirs[index(d)]
	var r [draws]uint64
	for i := range r {
		r[i] = ds.rng.Uint64()
	}
	ds.stats.Packets++
	j.seq++
	if chance(r[drawLoss], c.Loss) {
		ds.stats.Lost++
		return Verdict{Drop: DropLoss}
	}
	corrupt := chance(r[drawCorrupt], c.Corrupt)
	dup := chance(r[drawDuplicate], c.Duplicate)
	reorder := chance(r[drawReorder], c.Reorder)
	var delay time.Duration
	if c.Delay > 0 || c.Jitter > 0 {
		delay = jittered(c.Delay, c.Jitter, r[drawJitter])
	}

	if !reorder && delay == 0 && c.Rate == 0 {
		v := j.mangle(ds, pkt, corrupt, dup, r[drawBit])
		if len(ds.waiting) > 0 {
			j.overtake(ds, j.seq, j.clk.now())
		}
		return v
	}

	// The packet is held. The rate limiter comes first, as on a real link:
	// a packet queues at the sender's interface and is serialized at the
	// link's rate (tail drop when the queue is full), then travels for the
	// delay; reordering holds it back at the receiving end.
	now := j.clk.now()
	copies := 1
	if dup {
		copies = 2
	}
	if j.heldPackets+copies > j.capPackets || j.heldBytes+len(pkt) > j.capBytes {
		ds.stats.Lost++
		return Verdict{Drop: DropHoldFull}
	}
	release := now
	var rateWait time.Duration
	if c.Rate > 0 {
		for ds.head < len(ds.departures) && !ds.departures[ds.head].After(now) {
			ds.head++
		}
		if len(ds.departures)-ds.head >= c.QueueLimit {
			ds.stats.RateDropped++
			return Verdict{Drop: DropQueueFull}
		}
		release = later(now, ds.lastDeparture).Add(txTime(len(pkt), c.Rate))
		ds.lastDeparture = release
		if release.After(now) {
			if ds.head > 0 && ds.head >= len(ds.departures)/2 {
				n := copy(ds.departures, ds.departures[ds.head:])
				ds.departures = ds.departures[:n]
				ds.head = 0
			}
			ds.departures = append(ds.departures, release)
			ds.stats.RateQueued++
			rateWait = release.Sub(now)
		}
	}
	if delay > 0 {
		ds.stats.Delayed++
		release = release.Add(delay)
	}
	v := j.mangle(ds, pkt, corrupt, dup, r[drawBit])
	if !reorder && !release.After(now) {
		// A rate so high that the packet took no time to send.
		if len(ds.waiting) > 0 {
			j.overtake(ds, j.seq, now)
		}
		return v
	}
	h := &heldPacket{
		at: release, due: release, seq: j.seq, dir: d,
		data:     append([]byte(nil), pkt...),
		rateWait: rateWait, delay: delay,
		corrupted: v.Note == NoteCorrupted, dup: dup, reorder: reorder,
	}
	if reorder {
		ds.stats.Reordered++
		h.wait = reorderAfter
		h.at = release.Add(reorderTimeout)
		ds.waiting = append(ds.waiting, h)
	}
	heap.Push(&j.held, h)
	j.heldPackets += copies
	j.heldBytes += len(h.data)
	ds.stats.HeldNow += uint64(copies)
	if h.index == 0 {
		j.poke()
	}
	v.Held = true
	return v
}

// mangle applies corruption and duplication to a packet that goes on.
func (j *Injector) mangle(ds *dirState, pkt []byte, corrupt, dup bool, bit uint64) Verdict {
	var v Verdict
	if corrupt && flipBit(pkt, bit) {
		ds.stats.Corrupted++
		v.Note = NoteCorrupted
	}
	if dup {
		ds.stats.Duplicated++
		v.Dup = true
	}
	return v
}

// overtake records that the packet numbered seq of ds's direction passed, at
// now: the reordered packets before it that waited for it to pass are due
// once it was the last they waited for.
func (j *Injector) overtake(ds *dirState, seq uint64, now time.Time) {
	kept := ds.waiting[:0]
	for _, w := range ds.waiting {
		if w.seq < seq {
			w.wait--
		}
		if w.wait > 0 {
			kept = append(kept, w)
			continue
		}
		w.at = later(w.due, now)
		heap.Fix(&j.held, w.index)
		if w.index == 0 {
			j.poke()
		}
	}
	clear(ds.waiting[len(kept):])
	ds.waiting = kept
}

// poke wakes run to look at the earliest release time again.
func (j *Injector) poke() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// run is the Injector's one goroutine: it releases the held packets of both
// directions when their time comes, on one timer set to the earliest.
func (j *Injector) run() {
	defer close(j.exited)
	t := j.clk.newTimer()
	defer t.stop()
	var batches [2][]Released
	for {
		if j.idleHook != nil {
			j.idleHook(j)
		}
		select {
		case <-j.done:
			return
		case <-j.wake:
		case <-t.c():
		}
		for {
			j.mu.Lock()
			next, more := j.releaseDue(j.clk.now(), &batches)
			j.mu.Unlock()
			for i, d := range [2]Dir{In, Out} {
				if len(batches[i]) > 0 {
					j.deliver(d, batches[i])
					clear(batches[i]) // the receiver's now: let go of them
					batches[i] = batches[i][:0]
				}
			}
			if !more {
				t.stop()
				break
			}
			if wait := next.Sub(j.clk.now()); wait > 0 {
				t.reset(wait)
				break
			}
		}
	}
}

// releaseDue moves the held packets due at now into batches, by direction,
// and returns the next release time, if any packet is left.
func (j *Injector) releaseDue(now time.Time, batches *[2][]Released) (next time.Time, more bool) {
	for len(j.held) > 0 && !j.held[0].at.After(now) {
		h := heap.Pop(&j.held).(*heldPacket)
		ds := &j.dirs[index(h.dir)]
		if h.wait > 0 { // timed out waiting to be overtaken
			for i, w := range ds.waiting {
				if w == h {
					ds.waiting = slices.Delete(ds.waiting, i, i+1)
					break
				}
			}
		}
		n := h.copies()
		j.heldPackets -= n
		j.heldBytes -= len(h.data)
		ds.stats.HeldNow -= uint64(n)
		note := h.note()
		b := &batches[index(h.dir)]
		if h.dup {
			dupNote := "duplicate"
			if note != "" {
				dupNote = note + ", duplicate"
			}
			*b = append(*b, Released{Data: h.data, Note: note}, Released{Data: append([]byte(nil), h.data...), Note: dupNote})
		} else {
			*b = append(*b, Released{Data: h.data, Note: note})
		}
		h.data = nil
		if len(ds.waiting) > 0 {
			j.overtake(ds, h.seq, now)
		}
	}
	if len(j.held) == 0 {
		return time.Time{}, false
	}
	return j.held[0].at, true
}

// note says what was done to a held packet.
func (h *heldPacket) note() string {
	var parts []string
	if h.corrupted {
		parts = append(parts, NoteCorrupted)
	}
	if h.rateWait > 0 {
		parts = append(parts, "rate-limited "+roundDuration(h.rateWait).String())
	}
	if h.delay > 0 {
		parts = append(parts, "delayed "+roundDuration(h.delay).String())
	}
	if h.reorder {
		parts = append(parts, "reordered")
	}
	return strings.Join(parts, ", ")
}

// roundDuration rounds d for a person: 21.3ms, 850µs.
func roundDuration(d time.Duration) time.Duration {
	if d >= time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// chance reports whether the random value u falls below probability p.
func chance(u uint64, p float64) bool {
	return p > 0 && unit(u) < p
}

// unit maps u to [0, 1) with 53 bits of precision, as rand.Float64 does.
func unit(u uint64) float64 { return float64(u>>11) * 0x1p-53 }

// jittered returns a delay uniform over [max(0, delay−jitter), delay+jitter],
// picked by the random value u.
func jittered(delay, jitter time.Duration, u uint64) time.Duration {
	if jitter == 0 {
		return delay
	}
	lo := max(0, delay-jitter)
	hi := delay + jitter
	return lo + time.Duration(unit(u)*float64(hi-lo))
}

// txTime is how long a link of rate bits per second takes to send n bytes.
// n is at most an IP packet (64 KiB), far from overflowing n·8·10⁹.
func txTime(n int, rate uint64) time.Duration {
	return time.Duration(uint64(n) * 8 * uint64(time.Second) / rate)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// holdHeap is a min-heap of held packets by release time, then arrival
// (container/heap).
type holdHeap []*heldPacket

func (h holdHeap) Len() int { return len(h) }

func (h holdHeap) Less(a, b int) bool {
	if !h[a].at.Equal(h[b].at) {
		return h[a].at.Before(h[b].at)
	}
	return h[a].seq < h[b].seq
}

func (h holdHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].index = a
	h[b].index = b
}

func (h *holdHeap) Push(x any) {
	p := x.(*heldPacket)
	p.index = len(*h)
	*h = append(*h, p)
}

func (h *holdHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.index = -1
	return p
}
