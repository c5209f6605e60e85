package stack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/ustack/ustack/stack/fault"
	"github.com/ustack/ustack/stack/tap"
)

// DeviceOffset is the headroom, in bytes, that every buffer handed to the
// tun.Device keeps in front of the IP packet.
//
// wireguard's Linux TUN opens the device with IFF_VNET_HDR, so every frame the
// kernel exchanges with us starts with a 10-byte virtio-net header
// (virtioNetHdrLen in wireguard's tun/offload_linux.go). On Write the device
// writes that header into the bytes just before the packet, so Write needs an
// offset of at least 10; on Read it copies the packet to the same offset. 16
// keeps the IP header 8-byte aligned.
const DeviceOffset = 16

// maxTxBuffer is the capacity of one transmit buffer. wireguard's TUN coalesces
// consecutive TCP segments of a write batch into one superpacket inside the
// first segment's buffer (its user-space GRO), and only when that buffer has the
// capacity; 64 KiB is the largest IP packet.
const maxTxBuffer = DeviceOffset + 1<<16

// maxReadBuffer is the size of one read buffer: the largest IP packet, so
// that raising the interface's MTU under a running stack (ip link set mtu)
// costs nothing but the larger packets' bytes. Only the bytes a packet fills
// are ever touched, so the batch's buffers take little real memory.
const maxReadBuffer = DeviceOffset + 1<<16 - 1

// maxFailingReads bounds how many reads in a row may fail in the system call
// itself (not a malformed frame, which costs one frame) before the read loop
// gives up rather than spin.
const maxFailingReads = 100

// ErrDeviceGone is reported by Endpoint.Err when the TUN device stopped
// delivering packets under a running stack: it was closed, or its interface
// was deleted (`ip link del`).
var ErrDeviceGone = errors.New("the TUN device is gone")

// ErrDeviceFailing is reported by Endpoint.Err when reads from the device kept
// failing in the system call.
var ErrDeviceFailing = errors.New("reading from the TUN device keeps failing")

// Endpoint is the link layer of ustack: a stack.LinkEndpoint that moves raw IP
// packets between a tun.Device and gVisor's netstack. There is no link header on
// a TUN: what the kernel routes into the interface is an IP packet, and what
// netstack writes out is handed to the kernel as one.
//
// Inbound, one goroutine reads batches of up to BatchSize packets from the
// device into buffers it reuses, and hands each packet to netstack, copying it
// once. Outbound, WritePackets copies netstack's packets into reused buffers
// and writes them to the device as one batch.
//
// On the fast path (NewOffloadEndpoint, offload.go) it reads and writes the
// device's frames itself instead: TCP superpackets cross whole both ways,
// behind a virtio-net header, and the tun.Device is only closed.
type Endpoint struct {
	dev   tun.Device
	batch int
	mtu   atomic.Uint32

	// frames, when set, is the fast path (offload.go): frames with the
	// virtio header are read and written on it, and dev is only closed.
	frames FrameDevice
	// rxTrust is what Capabilities says of RX checksum offload: netstack
	// reads it for every packet it is handed (nic.DeliverNetworkPacket),
	// so the delivering goroutine sets it, under inMu, to what the
	// kernel said of that packet's checksum.
	rxTrust atomic.Bool

	// dispatcher is netstack's side of the NIC; the read loop loads it
	// once a batch.
	dispatcher atomic.Pointer[dispatcherRef]

	mu      sync.Mutex
	started bool   // guarded by mu: the read loop has been started
	held    bool   // guarded by mu: Attach must not start the read loop yet
	onClose func() // guarded by mu

	stopping   atomic.Bool
	readerDone chan struct{}
	err        atomic.Pointer[error]

	writeMu sync.Mutex
	txBufs  [][]byte // guarded by writeMu: one reusable buffer per batch slot
	txSizes []int    // guarded by writeMu: the packet's length in each slot
	txBatch [][]byte // guarded by writeMu: the batch handed to dev.Write
	stats   EndpointStats
	packets tap.Bus[tap.Packet] // every packet that crossed the device, for the taps

	// The fast path's write state, guarded by writeMu: the virtio header
	// of the packet being written, the pieces handed to WriteFrame, a
	// header of zeros for plain packets, a copy of a packet for the fault
	// injector (or one with too many pieces), one for the taps, and the
	// segmenter that cuts superpackets while outbound faults apply.
	txHdr     [VirtioNetHdrLen]byte
	txZeroHdr [VirtioNetHdrLen]byte
	txIov     [][]byte
	txCopy    []byte
	txTap     []byte
	txSeg     segmenter

	// Fault injection, when asked for: faults is nil until then, and the
	// data path pays one atomic load a batch for it.
	faults    atomic.Pointer[fault.Injector]
	faultMu   sync.Mutex // serializes SetFaults and closeFaults
	inMu      sync.Mutex // inbound deliveries while faults apply to them, and every one on the fast path
	rxSeg     segmenter  // guarded by inMu: cuts inbound superpackets while faults apply
	closeOnce sync.Once
	devOnce   sync.Once
}

// EndpointStats counts what the link layer saw; the protocol counters are in
// netstack's tcpip.Stats.
type EndpointStats struct {
	RxPackets    atomic.Uint64 // packets read from the device and delivered
	RxBytes      atomic.Uint64
	RxDropped    atomic.Uint64 // packets that were not IPv4 or IPv6 (first nibble), or empty, or came while detached
	RxReadErrors atomic.Uint64 // failed device reads (a frame the device could not parse, too many segments, a failed read)
	RxBadFrames  atomic.Uint64 // fast path: frames dropped for a malformed virtio header or one that does not fit its packet
	TxPackets    atomic.Uint64 // packets written to the device
	TxBytes      atomic.Uint64
	TxErrors     atomic.Uint64 // write batches the device refused (interface down, device closed)

	// The fast path (offloads on) moves TCP superpackets: one of them
	// counts as one packet above, with all its bytes, and here too, with
	// the number of wire-sized segments it stands for. Segments counts
	// every packet that crossed as the wire-sized segments it stands for
	// (a packet that is not a superpacket is one), so Segments/Packets is
	// the average superpacket's gain.
	RxSuperpackets, RxSegments atomic.Uint64
	TxSuperpackets, TxSegments atomic.Uint64

	// The same, per IP version.
	RxIPv4Packets, RxIPv4Bytes, RxIPv6Packets, RxIPv6Bytes atomic.Uint64
	TxIPv4Packets, TxIPv4Bytes, TxIPv6Packets, TxIPv6Bytes atomic.Uint64

	// The same, per transport protocol of the packets (the IP header's
	// protocol or next-header field; IPv6 extension headers count as
	// other): Rx[ProtoTCP].Packets, …
	Rx, Tx [numProtos]struct{ Packets, Bytes atomic.Uint64 }
}

// Transport protocols the link counts packets and bytes of.
const (
	ProtoTCP = iota
	ProtoUDP
	ProtoICMP // ICMPv4 and ICMPv6
	ProtoOther
	numProtos
)

// transportOf classifies an IP packet by the protocol it carries, reading one
// byte of its header.
func transportOf(pkt []byte) int {
	var p byte
	switch {
	case len(pkt) >= header.IPv4MinimumSize && header.IPVersion(pkt) == header.IPv4Version:
		p = pkt[9] // RFC 791 §3.1: protocol
	case len(pkt) >= header.IPv6MinimumSize && header.IPVersion(pkt) == header.IPv6Version:
		p = pkt[6] // RFC 8200 §3: next header
	default:
		return ProtoOther
	}
	switch p {
	case 6:
		return ProtoTCP
	case 17:
		return ProtoUDP
	case 1, 58:
		return ProtoICMP
	}
	return ProtoOther
}

// protoCount adds up packets and bytes per transport protocol for a batch.
type protoCount [numProtos]struct{ packets, bytes uint64 }

func (c *protoCount) add(pkt []byte) { c.addSized(pkt, len(pkt)) }

// addSized counts a packet of size bytes whose first bytes are pkt (its IP
// header at least).
func (c *protoCount) addSized(pkt []byte, size int) {
	i := transportOf(pkt)
	c[i].packets++
	c[i].bytes += uint64(size)
}

func (c *protoCount) flush(to *[numProtos]struct{ Packets, Bytes atomic.Uint64 }) {
	for i := range c {
		if c[i].packets > 0 {
			to[i].Packets.Add(c[i].packets)
			to[i].Bytes.Add(c[i].bytes)
		}
	}
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)

type dispatcherRef struct{ d stack.NetworkDispatcher }

// NewEndpoint returns a link endpoint on dev. It reads nothing until netstack
// attaches it to a NIC; the caller keeps ownership of dev until Close.
func NewEndpoint(dev tun.Device, mtu int) (*Endpoint, error) {
	if mtu < header.IPv4MinimumMTU || mtu > 1<<16-1 {
		return nil, fmt.Errorf("stack: MTU %d is outside %d..65535", mtu, header.IPv4MinimumMTU)
	}
	batch := dev.BatchSize()
	if batch < 1 {
		batch = 1
	}
	e := &Endpoint{
		dev:        dev,
		batch:      batch,
		readerDone: make(chan struct{}),
		txBufs:     make([][]byte, batch),
		txSizes:    make([]int, batch),
		txBatch:    make([][]byte, 0, batch),
	}
	e.mtu.Store(uint32(mtu))
	return e, nil
}

// NewOffloadEndpoint returns a link endpoint on the fast path: it reads and
// writes frames with the virtio-net header on frames (offload.go), and uses
// dev only to close it. The caller keeps ownership of dev until Close.
func NewOffloadEndpoint(dev tun.Device, frames FrameDevice, mtu int) (*Endpoint, error) {
	e, err := NewEndpoint(dev, mtu)
	if err != nil {
		return nil, err
	}
	e.frames = frames
	e.txIov = make([][]byte, 0, maxTxPieces)
	return e, nil
}

// maxTxPieces is how many pieces one written frame may have: its header and
// the views of a packet of netstack's (a header view and a few payload
// chunks; a 64 KiB payload spans at most a handful).
const maxTxPieces = 64

// Offload tells whether the endpoint is on the fast path.
func (e *Endpoint) Offload() bool { return e.frames != nil }

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() *EndpointStats { return &e.stats }

// SetFaults sets the faults injected on the link, on a running stack too. A
// config without any fault makes packets pass untouched again.
func (e *Endpoint) SetFaults(cfg fault.Config) error {
	e.faultMu.Lock()
	defer e.faultMu.Unlock()
	if j := e.faults.Load(); j != nil {
		return j.SetConfig(cfg)
	}
	if cfg == (fault.Config{}) {
		return nil
	}
	// An injector even without an active fault, when settings were given
	// (a seed, a direction, a queue limit): a later SetFaults that turns
	// a fault on keeps them. Inactive, it costs one atomic load a batch.
	if e.stopping.Load() {
		return fault.ErrClosed
	}
	j, err := fault.New(cfg, e.release)
	if err != nil {
		return err
	}
	e.faults.Store(j)
	return nil
}

// Faults returns the fault injector, or nil when no fault was ever set.
func (e *Endpoint) Faults() *fault.Injector { return e.faults.Load() }

// closeFaults stops the injector's goroutine; packets it still held are
// dropped (and counted). Packets after that pass untouched.
func (e *Endpoint) closeFaults() {
	e.faultMu.Lock()
	defer e.faultMu.Unlock()
	if j := e.faults.Load(); j != nil {
		j.Close()
	}
}

// release is the injector's delivery of packets it held back (delay, jitter,
// reordering, rate): inbound ones go to netstack, outbound ones to the
// device. It runs on the injector's goroutine.
func (e *Endpoint) release(d fault.Dir, pkts []fault.Released) {
	switch d {
	case fault.In:
		e.inMu.Lock()
		defer e.inMu.Unlock()
		r := e.newReceiver()
		for _, p := range pkts {
			r.receive(p.Data, p.Note)
		}
		r.count()
	case fault.Out:
		e.writeMu.Lock()
		defer e.writeMu.Unlock()
		tapped := e.packets.Active()
		now := time.Now()
		w := e.txWriter()
		for _, p := range pkts {
			copy(w.next(len(p.Data)), p.Data)
			if tapped {
				tap.PublishFaulted(&e.packets, now, tap.Out, p.Data, "", p.Note)
			}
			w.add()
			if w.flushIfFull() != nil {
				return
			}
		}
		w.flush()
	}
}

// Packets returns the bus on which the endpoint publishes every packet it
// reads from or writes to the device, as it crossed the device. With nobody
// subscribed it costs one atomic load a batch.
func (e *Endpoint) Packets() *tap.Bus[tap.Packet] { return &e.packets }

// Err returns why the read loop stopped on its own (ErrDeviceGone, wrapped with
// the cause), or nil while it runs or after a requested stop.
func (e *Endpoint) Err() error {
	if p := e.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Done is closed when the read loop has ended, whether stopped by Close or
// because the device went away (then Err says why).
func (e *Endpoint) Done() <-chan struct{} { return e.readerDone }

// MTU implements stack.LinkEndpoint.MTU.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint.SetMTU.
func (e *Endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint.MaxHeaderLength: a TUN carries
// bare IP packets, there is no link header.
func (*Endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint.LinkAddress: an L3 device has none.
func (*Endpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint.SetLinkAddress.
func (*Endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint.Capabilities. There is no
// neighbour resolution on a point-to-point L3 link. Netstack verifies every
// checksum itself, except, on the fast path, those of a packet whose
// checksum the kernel vouched for (rxTrust): netstack asks for the
// capabilities as it takes each packet, and the delivering goroutine sets
// rxTrust just before. Transmit checksums are computed by netstack, except
// TCP's, which host GSO (GSOMaxSize) leaves to the kernel.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	if e.frames != nil && e.rxTrust.Load() {
		return stack.CapabilityRXChecksumOffload
	}
	return stack.CapabilityNone
}

var _ stack.GSOEndpoint = (*Endpoint)(nil)

// GSOMaxSize implements stack.GSOEndpoint.GSOMaxSize: on the fast path, TCP
// segments of up to 64 KiB, for the kernel to cut.
func (e *Endpoint) GSOMaxSize() uint32 {
	if e.frames != nil {
		return gsoMaxSize
	}
	return 0
}

// SupportedGSO implements stack.GSOEndpoint.SupportedGSO: host GSO on the
// fast path (the kernel segments, netstack's TCP leaves the checksum partial),
// none on the tun.Device path.
func (e *Endpoint) SupportedGSO() stack.SupportedGSO {
	if e.frames != nil {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// ARPHardwareType implements stack.LinkEndpoint.ARPHardwareType.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint.AddHeader: no link header.
func (*Endpoint) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint.ParseHeader: no link header.
func (*Endpoint) ParseHeader(*stack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.LinkEndpoint.SetOnCloseAction.
func (e *Endpoint) SetOnCloseAction(f func()) {
	e.mu.Lock()
	e.onClose = f
	e.mu.Unlock()
}

// IsAttached implements stack.LinkEndpoint.IsAttached.
func (e *Endpoint) IsAttached() bool { return e.dispatcher.Load() != nil }

// Attach implements stack.LinkEndpoint.Attach. The first non-nil dispatcher
// starts the read loop; a nil one (the NIC is being removed) detaches, and
// packets read after that are dropped.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.dispatcher.Store(nil)
	} else {
		e.dispatcher.Store(&dispatcherRef{d})
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if d != nil && !e.held {
		e.startLocked()
	}
}

// holdReading keeps Attach from starting the read loop until startReading:
// a packet must not reach netstack while its stack is still being set up
// (the forwarder installs its handlers after the NIC exists).
func (e *Endpoint) holdReading() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.held = true
}

// startReading starts the read loop that holdReading held back, once a
// dispatcher is attached.
func (e *Endpoint) startReading() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.held = false
	if e.dispatcher.Load() != nil {
		e.startLocked()
	}
}

// startLocked starts the read loop, once. Call with e.mu held.
func (e *Endpoint) startLocked() {
	if e.started || e.stopping.Load() {
		return
	}
	e.started = true
	if e.frames != nil {
		go e.readFramesLoop()
	} else {
		go e.readLoop()
	}
}

// Wait implements stack.LinkEndpoint.Wait: once a stop was requested
// (StopReading, Close), it waits for the read loop to end; before that it
// returns at once. netstack's Stack.Wait calls it while removing the NIC,
// before it closes the endpoint: waiting there for a loop nobody stopped
// would never end.
func (e *Endpoint) Wait() {
	e.mu.Lock()
	wait := e.started && e.stopping.Load()
	e.mu.Unlock()
	if wait {
		<-e.readerDone
	}
}

// StopReading stops the read loop and waits for it. A real TUN's file is
// pollable, so a read deadline wakes the loop and the device stays open (the
// stack can still send its last RSTs through it); so does a device with a
// SetReadDeadline method. Any other device is closed instead, the only way to
// unblock its Read.
func (e *Endpoint) StopReading() {
	e.mu.Lock()
	e.stopping.Store(true)
	started := e.started
	e.mu.Unlock()
	if !started {
		return
	}
	stopped := false
	if e.frames != nil {
		stopped = e.frames.SetReadDeadline(time.Now()) == nil
	} else if d, ok := e.dev.(readDeadliner); ok {
		stopped = d.SetReadDeadline(time.Now()) == nil
	} else if f := e.dev.File(); f != nil {
		// wireguard hands the non-blocking fd to Go's poller ("must happen
		// prior to handing it to netpoll"), so a deadline in the past wakes
		// a Read blocked in it.
		stopped = f.SetReadDeadline(time.Now()) == nil
	}
	if !stopped {
		e.closeDevice()
	}
	<-e.readerDone
}

// readDeadliner is a tun.Device that can wake a blocked Read without a file
// (an in-memory device).
type readDeadliner interface {
	SetReadDeadline(time.Time) error
}

// Close implements stack.LinkEndpoint.Close. netstack calls it when the NIC is
// removed. It stops the read loop and closes the device.
func (e *Endpoint) Close() {
	e.closeOnce.Do(func() {
		e.StopReading()
		e.closeFaults()
		e.closeDevice()
		e.mu.Lock()
		f := e.onClose
		e.mu.Unlock()
		if f != nil {
			f()
		}
	})
}

// closeDevice closes the device once; not every tun.Device tolerates a
// second Close.
func (e *Endpoint) closeDevice() {
	e.devOnce.Do(func() {
		if err := e.dev.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			e.setErr(fmt.Errorf("stack: close TUN device: %w", err))
		}
	})
}

func (e *Endpoint) setErr(err error) { e.err.CompareAndSwap(nil, &err) }

// readLoop reads batches of packets from the device and delivers them to
// netstack until it is stopped or the device goes away.
func (e *Endpoint) readLoop() {
	defer close(e.readerDone)
	bufs := make([][]byte, e.batch)
	sizes := make([]int, e.batch)
	for i := range bufs {
		bufs[i] = make([]byte, maxReadBuffer)
	}
	failing := 0
	for {
		n, err := e.dev.Read(bufs, sizes, DeviceOffset)
		if n > 0 {
			e.deliver(bufs[:n], sizes[:n])
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

// readFailed counts a failed read and tells whether the read loop must end
// (then Err says why). failing counts the reads in a row that failed in the
// system call.
func (e *Endpoint) readFailed(err error, failing *int) bool {
	e.stats.RxReadErrors.Add(1)
	var syscallErr *fs.PathError
	switch {
	case errors.Is(err, os.ErrClosed):
		// Closed, or the interface was deleted: the kernel answers
		// EBADFD, which wireguard (and tunif) turn into os.ErrClosed.
		e.setErr(fmt.Errorf("%w: %v", ErrDeviceGone, err))
		return true
	case errors.As(err, &syscallErr):
		// The read itself failed. When the interface was deleted
		// while a read waited, Go's poller may answer "not pollable"
		// for good instead of EBADFD: ask the device.
		if deviceGone(e.dev) {
			e.setErr(fmt.Errorf("%w: %v", ErrDeviceGone, err))
			return true
		}
		// Once is weather (ENOBUFS); a hundred times in a row is a
		// broken device.
		if *failing++; *failing >= maxFailingReads {
			e.setErr(fmt.Errorf("%w: %d reads in a row, the last: %v", ErrDeviceFailing, *failing, err))
			return true
		}
	default:
		// One frame lost: a virtio header wireguard could not
		// parse, or a superpacket that split into more segments
		// than a batch holds (ErrTooManySegments: the first n were
		// delivered, TCP retransmits the rest). Each such error
		// consumed a frame, so this cannot spin.
		*failing = 0
	}
	return false
}

// deviceGone tells whether the TUN interface behind dev's file was deleted:
// the kernel then answers TUNGETIFF with EBADFD. A device without a file
// (an in-memory one) is never gone this way.
func deviceGone(dev tun.Device) bool {
	f := dev.File()
	if f == nil {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	var ioctlErr error
	if err := rc.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		if ifr, ioctlErr = unix.NewIfreq(""); ioctlErr == nil {
			ioctlErr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr)
		}
	}); err != nil {
		return true
	}
	return errors.Is(ioctlErr, unix.EBADFD)
}

// deliver hands a batch of IP packets to netstack. It copies each packet once,
// into the packet buffer netstack owns, so the read buffers can be reused at
// once.
func (e *Endpoint) deliver(bufs [][]byte, sizes []int) {
	r := e.newReceiver()
	if j := e.faults.Load(); j != nil && j.Applies(fault.In) {
		// Decide and deliver under one lock, which the injector's own
		// deliveries take too: a packet held back for reordering then
		// reaches netstack after the ones that overtook it, not beside
		// them.
		e.inMu.Lock()
		defer e.inMu.Unlock()
		for i, buf := range bufs {
			r.faulted(j, buf[DeviceOffset:DeviceOffset+sizes[i]])
		}
	} else {
		for i, buf := range bufs {
			r.receive(buf[DeviceOffset:DeviceOffset+sizes[i]], "")
		}
	}
	r.count()
}

// faulted passes one packet read from the device through the fault
// injector, and on to netstack unless it drops or holds it.
func (r *receiver) faulted(j *fault.Injector, pkt []byte) {
	v := j.Decide(fault.In, pkt)
	switch {
	case v.Drop != "":
		if r.tapped {
			tap.PublishFaulted(&r.e.packets, r.now, tap.In, pkt, v.Drop, "")
		}
	case v.Held:
		// The injector delivers it when its time comes.
	default:
		r.receive(pkt, v.Note)
		if v.Dup {
			r.receive(pkt, "duplicate")
		}
	}
}

// receiver hands packets read from the device to netstack, and counts them.
type receiver struct {
	e                    *Endpoint
	ref                  *dispatcherRef
	tapped               bool
	now                  time.Time
	delivered, bytes, v4 uint64
	v4Bytes, dropped     uint64
	superpackets, segs   uint64
	protos               protoCount
}

func (e *Endpoint) newReceiver() receiver {
	r := receiver{e: e, ref: e.dispatcher.Load(), tapped: e.packets.Active()}
	if r.tapped {
		r.now = time.Now()
	}
	return r
}

// receive hands one packet to netstack, copying it once, into the packet
// buffer netstack owns, so the caller can reuse pkt at once. note is what
// fault injection did to it.
func (r *receiver) receive(pkt []byte, note string) {
	if r.tapped {
		tap.PublishFaulted(&r.e.packets, r.now, tap.In, pkt, "", note)
	}
	r.hand(pkt, nil, 1, false)
}

// hand gives one IP packet to netstack. Its bytes are copied into a buffer
// netstack owns, or, when v is not nil, v (which holds them) becomes
// netstack's: then hand returns true. segments is how many wire-sized
// packets it stands for; trusted says that netstack need not verify its
// checksums (the fast path only, under inMu).
func (r *receiver) hand(pkt []byte, v *buffer.View, segments int, trusted bool) (tookView bool) {
	// A TUN in IFF_NO_PI mode gives no protocol field: the IP version is
	// the first nibble of the packet (RFC 791 §3.1, RFC 8200 §3).
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		r.dropped++
		return false
	}
	if r.ref == nil {
		r.dropped++
		return false
	}
	// Counted before netstack has it: a view handed over may be reused
	// for another packet as soon as netstack is done with this one.
	if segments > 1 {
		r.superpackets++
	}
	r.segs += uint64(segments)
	r.delivered++
	r.bytes += uint64(len(pkt))
	r.protos.add(pkt)
	if proto == header.IPv4ProtocolNumber {
		r.v4++
		r.v4Bytes += uint64(len(pkt))
	}
	if r.e.frames != nil && r.e.rxTrust.Load() != trusted {
		r.e.rxTrust.Store(trusted)
	}
	var payload buffer.Buffer
	if v != nil {
		v.CapLength(len(pkt))
		payload = buffer.MakeWithView(v)
	} else {
		payload = buffer.MakeWithData(pkt)
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: payload})
	r.ref.d.DeliverNetworkPacket(proto, pb)
	pb.DecRef()
	return v != nil
}

// count adds what the receiver handled to the endpoint's counters.
//
// The totals a reader waits on (RxPackets, RxDropped) are added last, so that
// whoever sees them reach a count sees every other counter of those packets
// too.
func (r *receiver) count() {
	st := &r.e.stats
	st.RxBytes.Add(r.bytes)
	st.RxIPv4Packets.Add(r.v4)
	st.RxIPv4Bytes.Add(r.v4Bytes)
	st.RxIPv6Packets.Add(r.delivered - r.v4)
	st.RxIPv6Bytes.Add(r.bytes - r.v4Bytes)
	r.protos.flush(&st.Rx)
	if r.segs > 0 {
		st.RxSegments.Add(r.segs)
		if r.superpackets > 0 {
			st.RxSuperpackets.Add(r.superpackets)
		}
	}
	if r.dropped > 0 {
		st.RxDropped.Add(r.dropped)
	}
	st.RxPackets.Add(r.delivered)
}

// WritePackets implements stack.LinkEndpoint.WritePackets. On the fast path
// it writes each packet behind its virtio header, from netstack's own views
// (writeFrames). Otherwise it copies each packet into a reused buffer behind
// DeviceOffset bytes of headroom and writes them to the device in batches of
// at most BatchSize. With fault injection on the way out, each packet — on
// the fast path each wire-sized segment of it, with full checksums — may be
// dropped, held back (written later by the injector), changed or duplicated
// first.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	all := pkts.AsSlice()
	tapped := e.packets.Active()
	var now time.Time
	if tapped {
		now = time.Now()
	}
	var inj *fault.Injector
	if j := e.faults.Load(); j != nil && j.Applies(fault.Out) {
		inj = j
	}
	if e.frames != nil && inj == nil {
		if err := e.writeFrames(all, tapped, now); err != nil {
			return len(all), &tcpip.ErrClosedForSend{}
		}
		return len(all), nil
	}
	w := e.txWriter()
	for _, pkt := range all {
		if inj != nil && e.frames != nil {
			for _, seg := range e.wireOut(pkt) {
				buf := w.next(len(seg))
				copy(buf, seg)
				if err := w.decideOut(inj, buf, tapped, now); err != nil {
					return len(all), &tcpip.ErrClosedForSend{}
				}
			}
			continue
		}
		buf := w.next(pkt.Size())
		copyPacket(buf, pkt)
		if inj != nil {
			if err := w.decideOut(inj, buf, tapped, now); err != nil {
				return len(all), &tcpip.ErrClosedForSend{}
			}
			continue
		}
		if tapped {
			tap.PublishPacket(&e.packets, now, tap.Out, buf)
		}
		w.add()
		if err := w.flushIfFull(); err != nil {
			return len(all), &tcpip.ErrClosedForSend{}
		}
	}
	if err := w.flush(); err != nil {
		return len(all), &tcpip.ErrClosedForSend{}
	}
	return len(all), nil
}

// decideOut passes the packet in buf, the buffer next returned, through the
// fault injector: it joins the batch (twice, when duplicated) unless the
// injector drops or holds it. It returns an error only when the device is
// closed.
func (w *txWriter) decideOut(inj *fault.Injector, buf []byte, tapped bool, now time.Time) error {
	e := w.e
	v := inj.Decide(fault.Out, buf)
	switch {
	case v.Drop != "":
		if tapped {
			tap.PublishFaulted(&e.packets, now, tap.Out, buf, v.Drop, "")
		}
		return nil
	case v.Held:
		return nil // the injector writes it when its time comes
	}
	if tapped {
		tap.PublishFaulted(&e.packets, now, tap.Out, buf, "", v.Note)
	}
	w.add()
	if v.Dup {
		if err := w.flushIfFull(); err != nil {
			return err
		}
		dup := w.next(len(buf))
		copy(dup, buf)
		if tapped {
			tap.PublishFaulted(&e.packets, now, tap.Out, dup, "", "duplicate")
		}
		w.add()
	}
	return w.flushIfFull()
}

// txWriter fills the endpoint's transmit buffers and writes them to the
// device a batch at a time. Hold writeMu while using it.
type txWriter struct {
	e     *Endpoint
	batch [][]byte
}

func (e *Endpoint) txWriter() txWriter { return txWriter{e: e, batch: e.txBatch[:0]} }

// next returns the next free transmit buffer, size bytes long behind the
// device's headroom. It joins the batch only through add.
func (w *txWriter) next(size int) []byte {
	e, i := w.e, len(w.batch)
	if e.txBufs[i] == nil || cap(e.txBufs[i]) < DeviceOffset+size {
		e.txBufs[i] = make([]byte, 0, max(maxTxBuffer, DeviceOffset+size))
	}
	e.txSizes[i] = size
	return e.txBufs[i][DeviceOffset : DeviceOffset+size]
}

// add puts the buffer next returned into the batch.
func (w *txWriter) add() {
	i := len(w.batch)
	w.batch = append(w.batch, w.e.txBufs[i][:DeviceOffset+w.e.txSizes[i]])
}

func (w *txWriter) flushIfFull() error {
	if len(w.batch) < w.e.batch {
		return nil
	}
	return w.flush()
}

// flush writes the batch. Only a closed device is an error: the kernel
// refusing part of a batch (the interface is down, a packet was malformed) is
// like a wire that lost them, and TCP retransmits; reporting it would only
// make netstack drop the rest of its list too.
func (w *txWriter) flush() error {
	if len(w.batch) == 0 {
		return nil
	}
	e := w.e
	n := len(w.batch)
	var err error
	if e.frames != nil {
		err = e.writePlainFrames(w.batch)
	} else {
		_, err = e.dev.Write(w.batch, DeviceOffset)
	}
	w.batch = w.batch[:0]
	if err != nil {
		e.stats.TxErrors.Add(1)
		if errors.Is(err, os.ErrClosed) {
			return err
		}
		return nil
	}
	var bytes, v4, v4Bytes uint64
	var protos protoCount
	for i := range n {
		pkt := e.txBufs[i][DeviceOffset : DeviceOffset+e.txSizes[i]]
		bytes += uint64(len(pkt))
		protos.add(pkt)
		if header.IPVersion(pkt) == header.IPv4Version {
			v4++
			v4Bytes += uint64(len(pkt))
		}
	}
	e.stats.TxPackets.Add(uint64(n))
	e.stats.TxSegments.Add(uint64(n))
	e.stats.TxBytes.Add(bytes)
	e.stats.TxIPv4Packets.Add(v4)
	e.stats.TxIPv4Bytes.Add(v4Bytes)
	e.stats.TxIPv6Packets.Add(uint64(n) - v4)
	e.stats.TxIPv6Bytes.Add(bytes - v4Bytes)
	protos.flush(&e.stats.Tx)
	return nil
}

// copyPacket copies the whole packet, headers and payload, into dst without
// allocating.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) {
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil && len(dst) > 0; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		n := copy(dst, s[off:])
		dst = dst[n:]
		off = 0
	}
}
