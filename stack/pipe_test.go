package stack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// pipeDevice is one end of an in-memory wire: a tun.Device whose writes are
// read by its peer. Unlike tuntest's ChannelTUN it moves batches, so the
// endpoint's batch paths run, and it can record every packet that crosses.
type pipeDevice struct {
	in    chan []byte // packets the peer wrote, for Read
	peer  *pipeDevice
	batch int
	mtu   int

	closeOnce sync.Once
	closed    chan struct{}
	// readStop, once closed, makes Read return os.ErrDeadlineExceeded.
	readStopOnce sync.Once
	readStop     chan struct{}

	mu     sync.Mutex
	onSend func(pkt []byte) // called with a copy of every packet written
}

var _ tun.Device = (*pipeDevice)(nil)

// newPipe returns two connected devices.
func newPipe(batch, mtu int) (a, b *pipeDevice) {
	a = &pipeDevice{in: make(chan []byte, 4096), batch: batch, mtu: mtu, closed: make(chan struct{}), readStop: make(chan struct{})}
	b = &pipeDevice{in: make(chan []byte, 4096), batch: batch, mtu: mtu, closed: make(chan struct{}), readStop: make(chan struct{})}
	a.peer, b.peer = b, a
	return a, b
}

func (d *pipeDevice) setOnSend(f func([]byte)) {
	d.mu.Lock()
	d.onSend = f
	d.mu.Unlock()
}

func (d *pipeDevice) File() *os.File { return nil }

func (d *pipeDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var pkt []byte
	select {
	case <-d.closed:
		return 0, os.ErrClosed
	case <-d.readStop:
		return 0, os.ErrDeadlineExceeded
	case pkt = <-d.in:
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], pkt)
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case pkt = <-d.in:
		default:
			return n, nil
		}
	}
}

func (d *pipeDevice) Write(bufs [][]byte, offset int) (int, error) {
	d.mu.Lock()
	onSend := d.onSend
	d.mu.Unlock()
	for i, b := range bufs {
		pkt := append([]byte(nil), b[offset:]...)
		if onSend != nil {
			onSend(pkt)
		}
		select {
		case <-d.closed:
			return i, os.ErrClosed
		case <-d.peer.closed:
			// The wire is cut: the packet is lost, as on a real link.
		case d.peer.in <- pkt:
		}
	}
	return len(bufs), nil
}

// SetReadDeadline supports only a deadline in the past: it wakes a blocked
// Read for good, as a real TUN's file does.
func (d *pipeDevice) SetReadDeadline(t time.Time) error {
	if time.Until(t) > 0 {
		return errors.New("pipeDevice: only a past deadline is supported")
	}
	d.readStopOnce.Do(func() { close(d.readStop) })
	return nil
}

func (d *pipeDevice) MTU() (int, error)        { return d.mtu, nil }
func (d *pipeDevice) Name() (string, error)    { return "pipe", nil }
func (d *pipeDevice) Events() <-chan tun.Event { return nil }
func (d *pipeDevice) BatchSize() int           { return d.batch }

func (d *pipeDevice) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}

// echoPair builds two stacks joined by an in-memory wire of the given batch
// size: A (198.18.0.1) with default settings, B (198.18.0.2) with bCfg's
// (its addresses and MTU filled in), an echo server on B's port 7, and a
// connection from A to it, with a deadline of limit. Everything is closed
// when the test ends.
func echoPair(t *testing.T, batch int, bCfg Config, limit time.Duration) (a, b *Stack, c net.Conn) {
	t.Helper()
	da, db := newPipe(batch, 1500)
	a, err := New(da, Config{Addrs: []netip.Prefix{v4A}, MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	bCfg.Addrs, bCfg.MTU = []netip.Prefix{v4B}, 1500
	b, err = New(db, bCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ln, err := b.Listen(netip.AddrPortFrom(v4B.Addr(), 7))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	c, err = a.DialContext(ctx, "tcp", "198.18.0.2:7")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(limit))
	return a, b, c
}
