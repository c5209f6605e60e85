package app

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzServerLines feeds arbitrary bytes to a server connection, delivered in
// reads of arbitrary size, with the real MaxChunk and with a tiny chunk that
// makes the splitting happen all the time, and checks:
//   - the replies are exactly what wantReplies, the readable reference, says;
//   - every reply is "ACK: <payload>\n" with no newline inside and a payload
//     of at most chunk bytes;
//   - the payloads concatenated are the input with each "\r\n" turned into "\n"
//     (one CR stripped per line ending) and then every "\n" removed: chunking
//     only cuts, it never adds, drops or reorders a byte.
//
// The connection is a scripted net.Conn rather than net.Pipe, because net.Pipe
// cannot half-close, and the server answers an unterminated last line only at
// EOF; it also lets the fuzzer choose where reads split the input.
func FuzzServerLines(f *testing.F) {
	f.Add([]byte(""), uint16(0), uint8(0))
	f.Add([]byte("hello\n"), uint16(0), uint8(0))
	f.Add([]byte("hello\r\nworld\r\n"), uint16(1), uint8(3))
	f.Add([]byte("\n\n\r\n"), uint16(2), uint8(1))
	f.Add([]byte("a\r\r\nb\rc\n"), uint16(3), uint8(2))
	f.Add([]byte("unterminated\r"), uint16(5), uint8(4))
	f.Add([]byte("0123456789\r\n0123456789\n01234567890"), uint16(7), uint8(10))
	// Around the piece boundary (smallChunk 7 makes chunk 8): exactly chunk
	// bytes plus CRLF, chunk+1 plus CRLF, a CR as the (chunk+1)th byte.
	f.Add([]byte("01234567\r\n012345678\r\n0123456\r\r\n"), uint16(2), uint8(7))
	f.Add([]byte("0123456789abcdefghij\n01234567"), uint16(100), uint8(7))
	f.Add(append(bytes.Repeat([]byte("w\r"), 40), '\n'), uint16(3), uint8(7))
	// Large inputs are kept out of the seeds: the fuzzer minimizes interesting
	// inputs, which is slow for big ones, and the small chunks above exercise
	// the same splitting. TestServerChunkBoundaries covers the real MaxChunk.
	f.Fuzz(func(t *testing.T, input []byte, readSize uint16, smallChunk uint8) {
		for _, chunk := range []int{MaxChunk, 1 + int(smallChunk)%32} {
			s := NewServer(ServerOptions{Logger: discardLogger()})
			s.chunk = chunk
			c := &scriptedConn{in: input, readSize: 1 + int(readSize)}
			s.serveConn(&serverConn{Conn: c})
			got := c.out.Bytes()

			if want := wantReplies(input, chunk); !bytes.Equal(got, want) {
				i := firstDiff(got, want)
				t.Fatalf("chunk %d: replies differ from the reference at byte %d: got %.40q, want %.40q", chunk, i, got[i:], want[i:])
			}
			var payloads []byte
			for _, reply := range bytes.SplitAfter(got, []byte("\n")) {
				if len(reply) == 0 {
					continue
				}
				p, ok := bytes.CutPrefix(reply, []byte("ACK: "))
				if !ok || !bytes.HasSuffix(p, []byte("\n")) {
					t.Fatalf("malformed reply %q", reply)
				}
				p = p[:len(p)-1]
				if len(p) > chunk {
					t.Fatalf("chunk %d: payload of %d bytes", chunk, len(p))
				}
				payloads = append(payloads, p...)
			}
			want := strings.ReplaceAll(strings.ReplaceAll(string(input), "\r\n", "\n"), "\n", "")
			if string(payloads) != want {
				t.Fatalf("chunk %d: payloads %q, want %q", chunk, payloads, want)
			}
			if !c.closed {
				t.Fatal("connection not closed after EOF")
			}
		}
	})
}

// scriptedConn is a net.Conn whose peer sends in, in reads of at most readSize
// bytes, then half-closes (io.EOF); what the server writes collects in out.
type scriptedConn struct {
	in       []byte
	readSize int
	out      bytes.Buffer
	closed   bool
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.in[:min(len(c.in), c.readSize)])
	c.in = c.in[n:]
	return n, nil
}

func (c *scriptedConn) Write(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(p)
}

func (c *scriptedConn) Close() error                     { c.closed = true; return nil }
func (c *scriptedConn) LocalAddr() net.Addr              { return pipeAddr{} }
func (c *scriptedConn) RemoteAddr() net.Addr             { return pipeAddr{} }
func (c *scriptedConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(time.Time) error { return nil }
