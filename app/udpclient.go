package app

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// ErrNoReply is returned (wrapped) by RunUDPClient when at least one message
// got no reply.
var ErrNoReply = errors.New("app: no reply from the server")

// RunUDPClient is the article's client over UDP. conn is a connected UDP
// socket (net.Dial("udp", ...), or the stack's equivalent): UDP has no
// connection to set up, so it prints "Sending to <addr> over UDP" rather than
// "Connected to server". It sends each line read from msgs as one datagram,
// with its newline as nc -u does (a final line without one gets one; a line
// longer than MaxUDPPayload goes out in pieces of that size, a datagram each),
// and then waits up to opts.ReplyTimeout (default 10s) for a reply, printing
// "Server says: <reply>" (without the reply's trailing newline) when it
// comes. UDP does not retransmit, so a lost datagram, or a lost reply, stays
// lost: after the timeout it prints `No reply to "<msg>" within <timeout>
// (UDP does not retransmit)` and goes on with the next line. If the server's
// host answers with ICMP port unreachable (nobody listens on that port; the
// kernel reports it on a connected socket as "connection refused"), it says
// so instead of waiting out the timeout.
//
// It is stop-and-wait: one datagram in flight at a time, so at most one read
// buffer of 64 KiB is held. A reply that arrives after its message's timeout
// is taken as the reply to the next message (UDP carries no sequence numbers
// for it to be matched by).
//
// It returns nil when every message got a reply, an error wrapping
// ErrNoReply when some did not, and an error wrapping ctx.Err() when ctx was
// cancelled (which closes conn). It closes conn before returning. As with
// RunClient, a Read on msgs that is blocked when RunUDPClient stops early ends
// only when msgs delivers or fails, unless msgs has SetReadDeadline.
func RunUDPClient(ctx context.Context, conn net.Conn, msgs io.Reader, opts ClientOptions) error {
	out, timeout := opts.output(), opts.replyTimeout()
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	// Lines are read on their own goroutine so that cancelling ctx does not
	// wait for a blocked read of msgs (say, stdin).
	lines := make(chan []byte)
	readDone := make(chan error, 1)
	quit := make(chan struct{})
	go func() { readDone <- readDatagrams(msgs, lines, quit) }()
	readerExited := false
	defer func() {
		close(quit) // ends a reader waiting to hand over a line
		if readerExited {
			return
		}
		if d, ok := msgs.(interface{ SetReadDeadline(time.Time) error }); ok && d.SetReadDeadline(time.Now()) == nil {
			<-readDone // unblocked, so this does not hang
		}
	}()

	fmt.Fprintf(out, "Sending to %v over UDP\n", conn.RemoteAddr())
	buf := make([]byte, udpReadBufSize)
	sent, missing := 0, 0
	for {
		var msg []byte
		select {
		case msg = <-lines:
		case err := <-readDone:
			readerExited = true
			if err != nil {
				return err
			}
			if missing > 0 {
				return fmt.Errorf("%w: %d of %d messages to %v got none", ErrNoReply, missing, sent, conn.RemoteAddr())
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("app: udp client: %w", ctx.Err())
		}

		shown := loggable(bytes.TrimSuffix(msg, []byte("\n")))
		if err := sendDatagram(conn, msg, timeout); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("app: udp client: %w", ctx.Err())
			}
			return fmt.Errorf("app: send to %v: %w", conn.RemoteAddr(), err)
		}
		sent++
		conn.SetReadDeadline(time.Now().Add(timeout))
		n, err := conn.Read(buf)
		switch {
		case err == nil:
			reply := bytes.TrimSuffix(buf[:n], []byte("\n"))
			if len(reply) < n {
				reply = bytes.TrimSuffix(reply, []byte("\r"))
			}
			fmt.Fprintf(out, "Server says: %s\n", reply)
		case ctx.Err() != nil:
			return fmt.Errorf("app: udp client: %w", ctx.Err())
		case isTimeout(err):
			missing++
			fmt.Fprintf(out, "No reply to %q within %v (UDP does not retransmit)\n", shown, timeout)
		case errors.Is(err, syscall.ECONNREFUSED):
			missing++
			fmt.Fprintf(out, "No reply to %q: %v answered port unreachable (nobody listens there)\n", shown, conn.RemoteAddr())
		default:
			return fmt.Errorf("app: receive from %v: %w", conn.RemoteAddr(), err)
		}
	}
}

// sendDatagram writes msg as one datagram. A connected UDP socket reports an
// ICMP error that arrived for an earlier datagram on its next call, which may
// be this Write: that one is retried once, since the refusal was not about msg.
func sendDatagram(conn net.Conn, msg []byte, timeout time.Duration) error {
	conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err := conn.Write(msg)
	if errors.Is(err, syscall.ECONNREFUSED) {
		_, err = conn.Write(msg)
	}
	return err
}

// readDatagrams sends the datagrams read from msgs on lines, each in its own
// slice, until msgs ends (nil), fails (a *msgsError) or quit is closed (nil).
func readDatagrams(msgs io.Reader, lines chan<- []byte, quit <-chan struct{}) error {
	r := bufio.NewReaderSize(msgs, MaxUDPPayload)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			d := make([]byte, len(line), len(line)+1)
			copy(d, line)
			if err == io.EOF && len(d) < MaxUDPPayload {
				d = append(d, '\n') // the last line had none
			}
			select {
			case lines <- d:
			case <-quit:
				return nil
			}
		}
		switch {
		case err == nil || err == bufio.ErrBufferFull:
		case err == io.EOF:
			return nil
		default:
			return &msgsError{err}
		}
	}
}
