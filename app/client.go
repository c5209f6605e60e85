package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// DefaultReplyTimeout is ClientOptions.ReplyTimeout when it is 0.
const DefaultReplyTimeout = 10 * time.Second

// ClientOptions configure RunClient and RunUDPClient.
type ClientOptions struct {
	Out io.Writer // where the article's lines go; nil: discarded
	// ReplyTimeout is how long RunClient waits for the server after the last
	// message is sent, and how long RunUDPClient waits for each reply. 0: 10s.
	ReplyTimeout time.Duration
}

// output is where the client prints: Out, or nowhere.
func (o ClientOptions) output() io.Writer {
	if o.Out == nil {
		return io.Discard
	}
	return o.Out
}

// replyTimeout is ReplyTimeout, or its default.
func (o ClientOptions) replyTimeout() time.Duration {
	if o.ReplyTimeout <= 0 {
		return DefaultReplyTimeout
	}
	return o.ReplyTimeout
}

// ErrServerClosed is returned (wrapped) by RunClient when the server closed the
// connection while there were still messages to send.
var ErrServerClosed = errors.New("app: server closed the connection early")

// RunClient runs the article's client on an already connected conn. It prints
// "Connected to server", sends each line read from msgs as soon as it is read
// (a final line without a newline gets one), and prints "Server says: <reply>"
// for every reply line as it arrives, concurrently with sending. When msgs is
// exhausted it half-closes conn (CloseWrite, which *net.TCPConn and gVisor's
// gonet.TCPConn have) so the server knows it has everything, reads the
// remaining replies until the server closes, for at most ReplyTimeout, prints
// "Disconnected from server" and closes conn.
//
// It returns nil when the server closed after answering everything, and an
// error when the server reset the connection or closed it while msgs still had
// lines (ErrServerClosed), when the reply timeout hit (the error wraps
// os.ErrDeadlineExceeded), or when ctx was cancelled (it wraps ctx.Err(); the
// cancellation closes conn). A conn without CloseWrite (net.Pipe) cannot tell
// the server it is done, so its conversation ends with the reply timeout.
//
// RunClient leaves no goroutine behind, with one exception it cannot avoid:
// if it has to stop early (error, cancellation) while a Read on msgs is
// blocked, and msgs has no SetReadDeadline (an *os.File pipe, a net.Conn) to
// interrupt that Read, the goroutine reading msgs exits when the Read returns,
// without writing anything.
func RunClient(ctx context.Context, conn net.Conn, msgs io.Reader, opts ClientOptions) error {
	out, timeout := opts.output(), opts.replyTimeout()
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	fmt.Fprintln(out, "Connected to server")
	// out is written by the receiver only, until it is done.
	recvDone := make(chan error, 1)
	go func() { recvDone <- receive(conn, out) }()
	sendDone := make(chan error, 1)
	go func() { sendDone <- send(conn, msgs) }()

	var err error
	select {
	case err = <-sendDone:
		if err == nil {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		}
		if err == nil {
			conn.SetReadDeadline(time.Now().Add(timeout))
			err = <-recvDone
		} else {
			conn.Close()
			<-recvDone
		}
	case err = <-recvDone:
		// The server ended the conversation before we did.
		select {
		case sendErr := <-sendDone:
			if sendErr != nil && err == nil {
				err = sendErr
			}
		default:
			if err == nil {
				err = ErrServerClosed
			}
			conn.Close() // unblocks a sender stuck in conn.Write
			if d, ok := msgs.(interface{ SetReadDeadline(time.Time) error }); ok && d.SetReadDeadline(time.Now()) == nil {
				<-sendDone // unblocked, so this does not hang
			}
		}
	}
	fmt.Fprintln(out, "Disconnected from server")

	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("app: client: %w", ctx.Err())
	case err == nil || errors.Is(err, ErrServerClosed):
		return err
	case errors.As(err, new(*msgsError)):
		return err
	case isTimeout(err):
		return fmt.Errorf("app: no reply from server %v within %v: %w", conn.RemoteAddr(), timeout, err)
	default:
		return fmt.Errorf("app: connection to server %v lost: %w", conn.RemoteAddr(), err)
	}
}

// receive prints every reply line until the server closes (nil) or an error.
// Reply lines longer than its buffer (the server never sends those) are printed
// in pieces; an unterminated last line is printed too.
func receive(conn net.Conn, out io.Writer) error {
	r := bufio.NewReaderSize(conn, MaxChunk+len("ACK: \r\n"))
	buf := []byte("Server says: ")
	prefix := len(buf)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			line = line[:len(line)-countSuffix(line, '\n')]
			buf = append(append(buf[:prefix], line...), '\n')
			if _, werr := out.Write(buf); werr != nil {
				return werr
			}
		}
		switch {
		case err == nil || err == bufio.ErrBufferFull:
		case err == io.EOF:
			return nil
		default:
			return err
		}
	}
}

// msgsError is a failure to read the messages, not a network error.
type msgsError struct{ err error }

func (e *msgsError) Error() string { return "app: read messages: " + e.err.Error() }
func (e *msgsError) Unwrap() error { return e.err }

func countSuffix(b []byte, c byte) int {
	if len(b) > 0 && b[len(b)-1] == c {
		return 1
	}
	return 0
}

// send copies msgs to conn line by line, each line in one Write as soon as its
// newline has been read, so an interactive msgs is sent as it is typed.
func send(conn net.Conn, msgs io.Reader) error {
	r := bufio.NewReader(msgs)
	for {
		line, err := r.ReadSlice('\n')
		if err == io.EOF && len(line) > 0 {
			line = append(line[:len(line):len(line)], '\n') // the last line had none; copy, don't write into r's buffer
		}
		if len(line) > 0 {
			if _, werr := conn.Write(line); werr != nil {
				return werr
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

// Messages turns command-line arguments into the reader RunClient takes: one
// line per argument.
func Messages(args []string) io.Reader {
	if len(args) == 0 {
		return strings.NewReader("")
	}
	return strings.NewReader(strings.Join(args, "\n") + "\n")
}
