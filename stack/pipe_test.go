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

// wireEnd is one end of an in-memory wire: what its peer sent, waiting to be
// read. The test devices of both link paths are made of it.
type wireEnd struct {
	in   chan []byte // what the peer sent
	peer *wireEnd

	closeOnce sync.Once
	closed    chan struct{}
	// readStop, once closed, makes receive return os.ErrDeadlineExceeded.
	readStopOnce sync.Once
	readStop     chan struct{}

	mu     sync.Mutex
	onSend func(msg []byte) // called with every message sent
}

// newWire returns the two ends of a wire.
func newWire() (a, b *wireEnd) {
	mk := func() *wireEnd {
		return &wireEnd{in: make(chan []byte, 4096), closed: make(chan struct{}), readStop: make(chan struct{})}
	}
	a, b = mk(), mk()
	a.peer, b.peer = b, a
	return a, b
}

func (w *wireEnd) setOnSend(f func([]byte)) {
	w.mu.Lock()
	w.onSend = f
	w.mu.Unlock()
}

// receive waits for the next message.
func (w *wireEnd) receive() ([]byte, error) {
	select {
	case <-w.closed:
		return nil, os.ErrClosed
	case <-w.readStop:
		return nil, os.ErrDeadlineExceeded
	case msg := <-w.in:
		return msg, nil
	}
}

// send hands msg, which the wire now owns, to the peer. A peer that is
// closed loses it, as a cut wire does.
func (w *wireEnd) send(msg []byte) error {
	w.mu.Lock()
	onSend := w.onSend
	w.mu.Unlock()
	if onSend != nil {
		onSend(msg)
	}
	select {
	case <-w.closed:
		return os.ErrClosed
	case <-w.peer.closed:
	case w.peer.in <- msg:
	}
	return nil
}

// SetReadDeadline supports only a deadline in the past: it wakes a blocked
// read for good, as a real TUN's file does.
func (w *wireEnd) SetReadDeadline(t time.Time) error {
	if time.Until(t) > 0 {
		return errors.New("in-memory wire: only a past deadline is supported")
	}
	w.readStopOnce.Do(func() { close(w.readStop) })
	return nil
}

func (w *wireEnd) Close() error {
	w.closeOnce.Do(func() { close(w.closed) })
	return nil
}

// pipeDevice is a tun.Device on an in-memory wire: its writes are read by its
// peer. Unlike tuntest's ChannelTUN it moves batches, so the endpoint's batch
// paths run, and it can record every packet that crosses.
type pipeDevice struct {
	*wireEnd
	batch int
	mtu   int
}

var _ tun.Device = (*pipeDevice)(nil)

// newPipe returns two connected devices.
func newPipe(batch, mtu int) (a, b *pipeDevice) {
	wa, wb := newWire()
	return &pipeDevice{wa, batch, mtu}, &pipeDevice{wb, batch, mtu}
}

func (d *pipeDevice) File() *os.File { return nil }

func (d *pipeDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	pkt, err := d.receive()
	if err != nil {
		return 0, err
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
	for i, b := range bufs {
		if err := d.send(append([]byte(nil), b[offset:]...)); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

func (d *pipeDevice) MTU() (int, error)        { return d.mtu, nil }
func (d *pipeDevice) Name() (string, error)    { return "pipe", nil }
func (d *pipeDevice) Events() <-chan tun.Event { return nil }
func (d *pipeDevice) BatchSize() int           { return d.batch }

// serveEcho answers one connection to addr on s with everything it sends,
// until the test ends.
func serveEcho(t *testing.T, s *Stack, addr netip.AddrPort) {
	t.Helper()
	ln, err := s.Listen(addr)
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
	serveEcho(t, b, netip.AddrPortFrom(v4B.Addr(), 7))
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
