package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testClient is an http.Client whose connections are remembered, so a test
// knows the client's port as the server sees it.
type testClient struct {
	*http.Client
	mu    sync.Mutex
	ports []string
}

// newTestClient returns a client that remembers its connections' ports.
func newTestClient(t *testing.T) *testClient {
	tc := &testClient{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				tc.mu.Lock()
				tc.ports = append(tc.ports, localPort(c))
				tc.mu.Unlock()
			}
			return c, err
		},
	}
	tc.Client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return tc
}

// port is the local port of the client's latest connection.
func (c *testClient) port() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ports[len(c.ports)-1]
}

// get does a request and returns the response with its body read.
func (c *testClient) do(t *testing.T, method, url string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp, string(body)
}

func TestHTTPPage(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	var infoLocal, infoRemote net.Addr
	var infoMu sync.Mutex
	s := NewHTTPServer(HTTPOptions{
		ServerOptions: ServerOptions{Logger: newLogger(&logs)},
		StackName:     "the kernel",
		ConnInfo: func(local, remote net.Addr) []KV {
			infoMu.Lock()
			infoLocal, infoRemote = local, remote
			infoMu.Unlock()
			return []KV{{"state", "ESTABLISHED"}, {"cwnd", "10"}, {"note", "<b>&\nnext"}}
		},
	})
	addr := startService(t, kernelEnv, s)
	_, sport, _ := net.SplitHostPort(addr)
	client := newTestClient(t)

	resp, body := client.do(t, "GET", "http://"+addr+"/")
	port := client.port()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("%s, %s:\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	for _, want := range []string{
		"You are 127.0.0.1 port " + port + "; this server is 127.0.0.1 port " + sport + ".\n",
		"This page was served by the kernel: ",
		"\n  state  ESTABLISHED\n  cwnd   10\n  note   <b>& next\n",
		"/bytes?n=1000000",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	infoMu.Lock()
	if infoLocal.String() != addr || infoRemote.String() != "127.0.0.1:"+port {
		t.Errorf("ConnInfo(%v, %v), want (%v, 127.0.0.1:%s)", infoLocal, infoRemote, addr, port)
	}
	infoMu.Unlock()
	logs.waitFor(t, "level=INFO", "service=http", fmt.Sprintf(`msg="GET / from 127.0.0.1 %s: 200, %d bytes"`, port, len(body)))

	resp, body = client.do(t, "GET", "http://"+addr+"/", "Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Accept: text/html got %s", ct)
	}
	for _, want := range []string{"<b>127.0.0.1</b> port <b>" + port + "</b>", "&lt;b&gt;&amp; next", "served by the kernel"} {
		if !strings.Contains(body, want) {
			t.Errorf("HTML page lacks %q:\n%s", want, body)
		}
	}

	resp, body = client.do(t, "HEAD", "http://"+addr+"/")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength <= 0 {
		t.Errorf("HEAD /: %s, Content-Length %d, body %q", resp.Status, resp.ContentLength, body)
	}
}

// Without ConnInfo or StackName the page has the addresses only.
func TestHTTPPageMinimal(t *testing.T) {
	checkNoLeaks(t)
	s := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{Logger: discardLogger()}})
	addr := startService(t, kernelEnv, s)
	client := newTestClient(t)
	_, body := client.do(t, "GET", "http://"+addr+"/")
	if !strings.Contains(body, "You are 127.0.0.1 port "+client.port()) || strings.Contains(body, "served by") ||
		strings.Contains(body, "as that stack sees it") {
		t.Errorf("page:\n%s", body)
	}
}

func TestHTTPBytes(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{Logger: newLogger(&logs)}})
	addr := startService(t, kernelEnv, s)
	client := newTestClient(t)
	for _, n := range []int{1000000, 0, 1, 7031} {
		resp, body := client.do(t, "GET", fmt.Sprintf("http://%s/bytes?n=%d", addr, n))
		if resp.StatusCode != 200 || resp.ContentLength != int64(n) || len(body) != n {
			t.Fatalf("n=%d: %s, Content-Length %d, %d bytes", n, resp.Status, resp.ContentLength, len(body))
		}
		if want := string(rfc864(n)); body != want {
			t.Errorf("n=%d: body differs from RFC 864's pattern at byte %d", n, firstDiff([]byte(body), []byte(want)))
		}
	}
	logs.waitFor(t, fmt.Sprintf(`msg="GET /bytes?n=1000000 from 127.0.0.1 %s: 200, 1000000 bytes"`, client.port()))

	resp, body := client.do(t, "HEAD", "http://"+addr+"/bytes?n=5000")
	if resp.StatusCode != 200 || resp.ContentLength != 5000 || body != "" {
		t.Errorf("HEAD: %s, Content-Length %d, body of %d bytes", resp.Status, resp.ContentLength, len(body))
	}
}

func TestHTTPErrors(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{Logger: newLogger(&logs), MaxBytes: 1 << 20}})
	addr := startService(t, kernelEnv, s)
	client := newTestClient(t)
	for _, tt := range []struct {
		method, target string
		status         int
		says           string
	}{
		{"GET", "/bytes?n=-1", 400, "is not a number of bytes"},
		{"GET", "/bytes?n=abc", 400, "is not a number of bytes"},
		{"GET", "/bytes?n=1e6", 400, "is not a number of bytes"},
		{"GET", "/bytes?n=1048577", 400, "at most 1048576 bytes"},
		{"GET", "/bytes?n=99999999999999999999", 400, "is not a number of bytes"},
		{"GET", "/bytes", 400, "missing n"},
		{"GET", "/bytes?n=1&n=2", 400, "more than one n"},
		{"GET", "/bytes?n=%zz", 400, "malformed query"},
		{"GET", "/nope", 404, "not found"},
		{"GET", "/bytes/", 404, "not found"},
		{"POST", "/", 405, "use GET"},
		{"PUT", "/bytes?n=1", 405, "use GET"},
		{"DELETE", "/nope", 404, "not found"},
	} {
		resp, body := client.do(t, tt.method, "http://"+addr+tt.target)
		if resp.StatusCode != tt.status || !strings.Contains(body, tt.says) || strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") {
			t.Errorf("%s %s: %s %q; want %d and one line saying %q", tt.method, tt.target, resp.Status, body, tt.status, tt.says)
		}
		if tt.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", tt.method, tt.target, resp.Header.Get("Allow"))
		}
	}
	logs.waitFor(t, fmt.Sprintf(`msg="GET /bytes?n=-1 from 127.0.0.1 %s: 400, `, client.port()))
	logs.waitFor(t, `msg="POST / from 127.0.0.1 `, ": 405, ")
}

// Malformed requests get net/http's 400 (or 431) and never a crash; the
// server goes on serving.
func TestHTTPMalformedRequest(t *testing.T) {
	checkNoLeaks(t)
	s := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{Logger: discardLogger()}})
	addr := startService(t, kernelEnv, s)
	for _, tt := range []struct {
		name, request, status string
	}{
		{"garbage line", "GARBAGE\r\n\r\n", "400 Bad Request"},
		{"bad version", "GET / HTTP/9.9x\r\nHost: x\r\n\r\n", "400 Bad Request"},
		{"bad header", "GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", "400 Bad Request"},
		{"no host", "GET / HTTP/1.1\r\n\r\n", "400 Bad Request"},
		{"binary", "\x00\x01\x02\xff\r\n\r\n", "400 Bad Request"},
		{"header too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 32<<10) + "\r\n\r\n", "431 Request Header Fields Too Large"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			if _, err := io.WriteString(c, tt.request); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "HTTP/1.1 "+tt.status) {
				t.Errorf("got %q, %v; want %s", line, err, tt.status)
			}
		})
	}
	client := newTestClient(t)
	if resp, _ := client.do(t, "GET", "http://"+addr+"/bytes?n=10"); resp.StatusCode != 200 {
		t.Errorf("after the malformed requests: %s", resp.Status)
	}
	waitConns(t, s, 1) // the test client's kept-alive connection
}

// A client that stops reading a download is dropped after the idle timeout:
// each write of the response has it as its deadline.
func TestHTTPStalledDownload(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	s := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{Logger: newLogger(&logs), IdleTimeout: 200 * time.Millisecond}})
	addr := startService(t, kernelEnv, s)
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET /bytes?n=1073741824 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitConns(t, s, 1)
	waitConns(t, s, 0)
	l := logs.waitFor(t, `msg="GET /bytes?n=1073741824 from 127.0.0.1 `+localPort(c)+`: 200, `)
	if !strings.Contains(l, "err=") || !strings.Contains(l, "timeout") {
		t.Errorf("stalled download logged without its timeout: %s", l)
	}
}

// A download that keeps going may take much longer than the idle timeout:
// the write deadline is renewed for every piece. Small socket buffers at both
// ends keep the server's writes in step with the client's reads, so the
// server is still writing long after one idle timeout.
func TestHTTPSlowDownload(t *testing.T) {
	checkNoLeaks(t)
	var logs logBuffer
	const idle = 200 * time.Millisecond
	s := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{Logger: newLogger(&logs), IdleTimeout: idle}})
	const n = 8 << 20
	want := sha256.Sum256(rfc864(n)) // before the transfer: the reference is slow under -race
	addr := serveListener(t, s, &smallBufListener{kernelEnv.listen(t)})
	c := dialSmallBuf(t, addr)
	if _, err := fmt.Fprintf(c, "GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, d := readSlowly(t, resp.Body, want)
	if got != n {
		t.Errorf("got %d bytes, want %d", got, n)
	}
	if d < 3*idle {
		t.Errorf("the download took only %v: it did not outlast the idle timeout", d)
	}
	logs.waitFor(t, fmt.Sprintf("GET /bytes?n=%d from 127.0.0.1 %s: 200, %d bytes", n, localPort(c), n))
	if strings.Contains(logs.String(), "err=") {
		t.Errorf("slow download logged an error:\n%s", logs.String())
	}
}

// smallBuf is the socket buffer size for the tests of slow readers. The
// host's own autotuned buffers may hold tens of MiB, enough to absorb a whole
// transfer; and a blocked writer is woken only when a third of its send
// buffer is free, so a big one makes single writes wait long for a slow
// reader. Much smaller buffers stall too, on loopback, whose 64 KiB MSS then
// exceeds the receive window: the sender waits for its persist timer.
const smallBuf = 256 << 10

// dialSmallBuf is dial with a small receive buffer, set before the
// connection is made: set after, it leaves the window that was offered at the
// handshake out of step with the buffer, and the connection stalls.
func dialSmallBuf(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if cerr := rc.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, smallBuf)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.TCPConn)
}

// smallBufListener gives its connections a small send buffer.
type smallBufListener struct{ net.Listener }

func (l *smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		c.(*net.TCPConn).SetWriteBuffer(smallBuf)
	}
	return c, err
}

// readSlowly reads r to its end, 64 KiB every 5ms, and checks that what it
// read has SHA-256 want. It returns how much it read and for how long.
func readSlowly(t *testing.T, r io.Reader, want [sha256.Size]byte) (int64, time.Duration) {
	t.Helper()
	start := time.Now()
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := io.ReadFull(r, buf)
		h.Write(buf[:k])
		n += int64(k)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Errorf("the %d bytes read differ from what was expected", n)
	}
	return n, time.Since(start)
}

// Shutdown lets a download in progress finish, and closes idle connections at
// once.
func TestHTTPShutdownDuringDownload(t *testing.T) {
	checkNoLeaks(t)
	ln := &smallBufListener{kernelEnv.listen(t)} // so that the download is still being written when Shutdown starts
	s := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{Logger: discardLogger()}})
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	addr := ln.Addr().String()

	idle := dial(t, addr)
	converseHTTP(t, idle)

	c := dialSmallBuf(t, addr)
	const n = 8 << 20
	if _, err := fmt.Fprintf(c, "GET /bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n", n); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}

	shutdown := make(chan error, 1)
	go func() { shutdown <- s.Shutdown(context.Background()) }()
	if err := drain(idle); err != nil {
		t.Errorf("idle connection during Shutdown: %v; want it closed", err)
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v during a download", err)
	case <-time.After(50 * time.Millisecond):
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(first)+len(rest) != n {
		t.Errorf("download during Shutdown: %d bytes, %v; want %d", len(first)+len(rest), err, n)
	}
	if err := drain(c); err != nil {
		t.Errorf("after the download: %v; want the connection closed", err)
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the download")
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

// Shutdown whose grace runs out closes a download in progress.
func TestHTTPShutdownForced(t *testing.T) {
	checkNoLeaks(t)
	ln := kernelEnv.listen(t)
	s := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{Logger: discardLogger()}})
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	c := dial(t, ln.Addr().String())
	if _, err := io.WriteString(c, "GET /bytes?n=1073741824 HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	if n := s.ActiveConns(); n != 0 {
		t.Errorf("ActiveConns = %d after Shutdown", n)
	}
	if err := drain(c); err != nil {
		t.Errorf("download after a forced Shutdown: %v; want it closed", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

func TestHTTPParseN(t *testing.T) {
	s := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{Logger: discardLogger(), MaxBytes: 100}})
	for q, want := range map[string]int64{"n=0": 0, "n=100": 100, "n=%2B5": 5, "n=007": 7, "x=1&n=3": 3} {
		if n, problem := s.parseN(q); problem != "" || n != want {
			t.Errorf("parseN(%q) = %d, %q; want %d", q, n, problem, want)
		}
	}
	for _, q := range []string{"", "n=", "n=101", "n=-0x1", "n= 1", "n=1.0", "n=" + strconv.Itoa(1<<62) + "0"} {
		if _, problem := s.parseN(q); problem == "" || strings.Contains(problem, "\n") {
			t.Errorf("parseN(%q): problem %q, want one line", q, problem)
		}
	}
	unlimited := NewHTTPServer(HTTPOptions{ServerOptions: ServerOptions{MaxBytes: -1}})
	if n, problem := unlimited.parseN("n=9223372036854775807"); problem != "" || n != 1<<63-1 {
		t.Errorf("no limit: %d, %q", n, problem)
	}
}
