package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

const (
	// MaxUDPPayload is the most data one UDP datagram carries over IPv4:
	// 65535 (the IPv4 total length field) - 20 (IPv4 header) - 8 (UDP
	// header) = 65507 bytes. IPv6 allows 65527 without jumbograms; this
	// package keeps to the smaller figure on both. The UDP server never sends
	// a reply longer than this, and the UDP client never a datagram longer.
	MaxUDPPayload = 65507

	// udpReadBufSize holds any UDP datagram: the largest (65527 bytes, over
	// IPv6) fits, so none is silently cut.
	udpReadBufSize = 64 << 10
	// udpWriteTimeout bounds each reply's WriteTo. Sending a datagram does not
	// wait for the peer, only for room in the send buffer; if there is none
	// for this long, the reply is dropped (UDP may drop it anyway).
	udpWriteTimeout = time.Second
	// udpAck is the reply's prefix.
	udpAck = "ACK: "
)

// UDPServer is the article's ACK server over UDP: each datagram is answered
// with one datagram, "ACK: " followed by the datagram as received (so
// `nc -u 198.18.0.2 5000`, typing hello and Enter, prints "ACK: hello").
// There is no connection, no line framing and no conversation to keep: every
// datagram stands alone, as UDP's do.
//
// Limits: a reply never exceeds MaxUDPPayload (65507 bytes); a longer one is
// cut, and the log says so. One read buffer of 64 KiB and one reply buffer per
// PacketConn; one goroutine per PacketConn (the caller's, in Serve), none per
// datagram. Each reply must be handed to the socket within 1s, or it is
// dropped with a log line. Of ServerOptions only Logger applies: UDP has no
// connections to limit or to time out. A "Received: <datagram> from <ip>
// <port>" line at Info per datagram quotes at most 200 bytes of it.
type UDPServer struct {
	log *slog.Logger

	mu      sync.Mutex
	closing bool                            // set once by Shutdown or Close; no Serve starts after
	done    chan struct{}                   // closed when closing is set: wakes read back-offs
	pcs     map[*trackedPacketConn]struct{} // PacketConns being served, closed by Shutdown
	wg      sync.WaitGroup                  // Serve loops
}

type trackedPacketConn struct{ net.PacketConn }

// NewUDPServer returns a UDPServer with opts applied (only opts.Logger
// matters).
func NewUDPServer(opts ServerOptions) *UDPServer {
	s := &UDPServer{log: opts.Logger, done: make(chan struct{}), pcs: make(map[*trackedPacketConn]struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// Serve answers the datagrams that arrive on pc, one at a time on the calling
// goroutine, until Shutdown or Close is called or pc is closed; then it
// returns nil. Temporary read errors are retried after the same back-off as
// Service.Serve's accept errors; any other read error is returned. Serve may
// be called for several PacketConns at once; called after Shutdown, it closes
// pc and returns nil. A reply that cannot be sent is logged and skipped: a
// peer's ICMP error or a full send buffer must not stop the server.
func (s *UDPServer) Serve(pc net.PacketConn) error {
	tp := &trackedPacketConn{pc}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		pc.Close()
		return nil
	}
	s.pcs[tp] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pcs, tp)
		s.mu.Unlock()
		s.wg.Done()
	}()

	buf := make([]byte, udpReadBufSize)
	reply := make([]byte, 0, MaxUDPPayload)
	var backoff time.Duration
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if s.shuttingDown() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !isTemporary(err) {
				return fmt.Errorf("app: udp: read on %v: %w", pc.LocalAddr(), err)
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			s.log.Warn("udp read failed, retrying", "addr", pc.LocalAddr().String(), "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		reply = s.answer(pc, buf[:n], addr, reply)
	}
}

// answer logs datagram p from addr and sends the reply, built in reply's
// storage, which it returns for reuse.
func (s *UDPServer) answer(pc net.PacketConn, p []byte, addr net.Addr, reply []byte) []byte {
	ip, port := hostPort(addr)
	from := article(ip, port)
	if s.log.Enabled(context.Background(), slog.LevelInfo) {
		shown := bytes.TrimSuffix(p, []byte("\n"))
		if len(shown) < len(p) {
			shown = bytes.TrimSuffix(shown, []byte("\r"))
		}
		s.log.Info("Received: "+loggable(shown)+" from "+from, "client", addr.String())
	}
	if room := MaxUDPPayload - len(udpAck); len(p) > room {
		s.log.Info(fmt.Sprintf("Reply to %s cut to %d bytes, the most a UDP datagram carries (the datagram had %d)",
			from, MaxUDPPayload, len(p)), "client", addr.String())
		p = p[:room]
	}
	reply = append(append(reply[:0], udpAck...), p...) // within reply's capacity: no allocation
	pc.SetWriteDeadline(time.Now().Add(udpWriteTimeout))
	if _, err := pc.WriteTo(reply, addr); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Info("Reply to "+from+" not sent", "client", addr.String(), "err", err)
	}
	return reply
}

func (s *UDPServer) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Shutdown closes the PacketConns, so that every Serve returns nil, and waits
// for the Serve loops. UDP has no conversation in progress to let finish, so
// this is Close; a loop ends as soon as the reply it is sending, if any, is
// handed to the socket or dropped (at most 1s). Shutdown returns ctx.Err() if
// ctx was done before the loops ended (it still waits for them), joined with
// any Close error other than net.ErrClosed. It is safe to call more than once,
// also concurrently.
func (s *UDPServer) Shutdown(ctx context.Context) error {
	err := s.closeAll()
	ended := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
		return err
	case <-ctx.Done():
		<-ended
		return errors.Join(err, ctx.Err())
	}
}

// Close closes the PacketConns and waits for the Serve loops to end.
func (s *UDPServer) Close() error {
	err := s.closeAll()
	s.wg.Wait() // no Add after closing is set: Serve checks it under s.mu
	return err
}

func (s *UDPServer) closeAll() error {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	pcs := make([]*trackedPacketConn, 0, len(s.pcs))
	for tp := range s.pcs {
		pcs = append(pcs, tp)
	}
	s.mu.Unlock()
	var errs []error
	for _, tp := range pcs {
		if err := tp.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("app: udp: close %v: %w", tp.LocalAddr(), err))
		}
	}
	return errors.Join(errs...)
}
