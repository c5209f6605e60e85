package main

// End-to-end tests of the apps of --serve, on the userspace stack and on the
// kernel's: the same table against both.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// chargenPattern returns the first n bytes RFC 864's character generator
// sends: lines of 72 of the 95 printable ASCII characters, each starting one
// further along, ending in CR LF.
func chargenPattern(n int) []byte {
	var b bytes.Buffer
	for line := 0; b.Len() < n; line++ {
		for i := range 72 {
			b.WriteByte(byte(' ' + (line+i)%95))
		}
		b.WriteString("\r\n")
	}
	return b.Bytes()[:n]
}

// appPorts are where a suite finds each app.
type appPorts struct{ ack, echo, discard, chargen, http int }

func (p appPorts) serve() string {
	return fmt.Sprintf("ack:%d,echo:%d,discard:%d,chargen:%d,http:%d", p.ack, p.echo, p.discard, p.chargen, p.http)
}

// appsSuite drives every app at host with real clients (nc, curl) and Go
// ones; logs is the server's stderr.
func appsSuite(t *testing.T, host string, ports appPorts, logs func() string, size int) {
	at := func(port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

	t.Run("ack over UDP with nc -u", func(t *testing.T) {
		needTool(t, "nc")
		out, _ := run(t, 10*time.Second, "hello udp\n", "nc", "-u", "-w", "1", host, strconv.Itoa(ports.ack))
		if out != "ACK: hello udp\n" {
			t.Errorf("nc -u: %q", out)
		}
		client := ustackCmd(t, "client", "--kernel", "--udp", at(ports.ack), "one", "two")
		if !strings.Contains(client, "Server says: ACK: one\nServer says: ACK: two\n") {
			t.Errorf("ustack client --udp:\n%s", client)
		}
	})

	t.Run("echo", func(t *testing.T) {
		in := randomBytes(t, size)
		c := dial(t, at(ports.echo))
		go func() { c.Write(in); c.(*net.TCPConn).CloseWrite() }()
		got, err := io.ReadAll(c)
		if err != nil || sha256.Sum256(got) != sha256.Sum256(in) {
			t.Fatalf("echo: %d of %d bytes back (%v), or they differ", len(got), len(in), err)
		}
	})

	t.Run("discard", func(t *testing.T) {
		in := randomBytes(t, size)
		c := dial(t, at(ports.discard))
		go func() { c.Write(in); c.(*net.TCPConn).CloseWrite() }()
		if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
			t.Fatalf("discard answered %d bytes, %v", len(got), err)
		}
		sum := sha256.Sum256(in)
		want := fmt.Sprintf("received=%d sent=0 sha256=%s", len(in), hex.EncodeToString(sum[:]))
		waitFor(t, "the discard server's line "+want, func() bool { return strings.Contains(logs(), want) })
	})

	t.Run("chargen", func(t *testing.T) {
		c := dial(t, at(ports.chargen))
		got := make([]byte, size)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(chargenPattern(size)) {
			t.Fatalf("chargen's bytes are not RFC 864's pattern: %q", got[:80])
		}
	})

	t.Run("http with curl", func(t *testing.T) {
		needTool(t, "curl")
		url := "http://" + at(ports.http)
		page, err := run(t, 10*time.Second, "", "curl", "-sS", url+"/")
		if err != nil || !regexp.MustCompile(`You are \S+ port \d+; this server is `+regexp.QuoteMeta(host)+` port \d+`).MatchString(page) {
			t.Fatalf("curl /: %v\n%s", err, page)
		}
		n := 100000
		body, err := run(t, 10*time.Second, "", "curl", "-sS", fmt.Sprintf("%s/bytes?n=%d", url, n))
		if err != nil || body != string(chargenPattern(n)) {
			t.Errorf("curl /bytes?n=%d: %d bytes, %v", n, len(body), err)
		}
		code, _ := run(t, 10*time.Second, "", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url+"/bytes?n=lots")
		if code != "400" {
			t.Errorf("/bytes?n=lots: %s, want 400", code)
		}
		// A malformed request gets a 400, and the server serves on.
		c := dial(t, at(ports.http))
		fmt.Fprintf(c, "GARBAGE\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 400") {
			t.Errorf("a malformed request got %q", line)
		}
		if page, err := run(t, 10*time.Second, "", "curl", "-sS", url+"/"); err != nil || !strings.Contains(page, "You are") {
			t.Errorf("after the malformed request: %v %q", err, page)
		}
	})
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Minute))
	t.Cleanup(func() { c.Close() })
	return c
}

func randomBytes(t *testing.T, n int) []byte {
	in, _ := randomLines(n, uint64(n))
	return in[:n]
}

// TestAppsOnBothStacks runs the same app table on the userspace stack and on
// the kernel's.
func TestAppsOnBothStacks(t *testing.T) {
	netnstest.Require(t)
	ports := appPorts{5000, 7, 9, 19, 80}
	p := start(t, "http on port 80", "up", "--name", "ustack10", "--addr", "198.18.10.1/24", "--no-ipv6", "--serve", ports.serve())
	t.Run("userspace", func(t *testing.T) {
		appsSuite(t, "198.18.10.2", ports, p.stderr.String, 1<<20)
		// The page describes the connection as netstack holds it.
		needTool(t, "curl")
		page, _ := run(t, 10*time.Second, "", "curl", "-sS", "http://198.18.10.2/")
		if !strings.Contains(page, "TCP state               ESTABLISHED") || !strings.Contains(page, "congestion window") {
			t.Errorf("the page says nothing of the TCP connection:\n%s", page)
		}
	})
	p.stop(t, syscall.SIGINT)

	kports := appPorts{15000, 15007, 15009, 15019, 15080}
	k := start(t, "http on port 15080", "serve", "--kernel", "--listen", "127.0.0.1:0", "--serve", kports.serve())
	t.Run("kernel", func(t *testing.T) {
		appsSuite(t, "127.0.0.1", kports, k.stderr.String, 1<<20)
	})
	k.stop(t, syscall.SIGINT)
}

// TestAppsThroughLoss: 8 MiB through discard and chargen at 5% loss, 1%
// reordering and 1% duplication both ways arrive whole.
func TestAppsThroughLoss(t *testing.T) {
	netnstest.Require(t)
	ports := appPorts{5000, 7, 9, 19, 80}
	p := start(t, "http on port 80", "up", "--name", "ustack11", "--addr", "198.18.11.1/24", "--no-ipv6", "--serve", ports.serve(),
		"--loss", "5%", "--reorder", "1%", "--duplicate", "1%", "--seed", "5")
	logs := p.stderr.String
	t.Run("discard", func(t *testing.T) {
		in := randomBytes(t, 8<<20)
		c := dial(t, "198.18.11.2:9")
		go func() { c.Write(in); c.(*net.TCPConn).CloseWrite() }()
		io.ReadAll(c)
		sum := sha256.Sum256(in)
		want := fmt.Sprintf("received=%d sent=0 sha256=%s", len(in), hex.EncodeToString(sum[:]))
		waitFor(t, "the discard server's "+want, func() bool { return strings.Contains(logs(), want) })
	})
	t.Run("chargen", func(t *testing.T) {
		c := dial(t, "198.18.11.2:19")
		got := make([]byte, 8<<20)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(chargenPattern(len(got))) {
			t.Fatal("chargen's 8 MiB differ from RFC 864's pattern")
		}
	})
	s := statsJSON(t, "--name", "ustack11")
	if s.TCP.Retransmits == 0 {
		t.Errorf("no retransmissions at 5%% loss: %+v", s.TCP)
	}
	// The faults decide per wire-sized segment: on the fast path, with
	// faults both ways, no superpacket crosses whole.
	if !s.Link.Offload || s.Link.RxSuperpackets != 0 || s.Link.TxSuperpackets != 0 {
		t.Errorf("offload %v, superpackets in %d, out %d: want the fast path, every superpacket cut for the faults",
			s.Link.Offload, s.Link.RxSuperpackets, s.Link.TxSuperpackets)
	}
	p.stop(t, syscall.SIGINT)
}

// TestRateLimit: --rate 10mbit holds a bulk transfer to 10 Mbit/s, ±15%.
func TestRateLimit(t *testing.T) {
	netnstest.Require(t)
	p := start(t, "discard on port 9", "up", "--name", "ustack12", "--addr", "198.18.12.1/24", "--no-ipv6", "--serve", "discard:9", "--rate", "10mbit")
	defer p.stop(t, syscall.SIGINT)
	in := randomBytes(t, 2500000) // 2 s at 10 Mbit/s
	c := dial(t, "198.18.12.2:9")
	start := time.Now()
	go func() { c.Write(in); c.(*net.TCPConn).CloseWrite() }()
	io.ReadAll(c) // the server closes once it has read everything
	elapsed := time.Since(start)
	// What crossed the link: the payload plus 52 bytes of IPv4 and TCP
	// headers (with timestamps) per segment of at most 1448 bytes.
	wire := float64(len(in)) * 1500 / 1448
	mbit := wire * 8 / elapsed.Seconds() / 1e6
	t.Logf("%.2f MB in %v: %.2f Mbit/s on the wire", float64(len(in))/1e6, elapsed.Round(time.Millisecond), mbit)
	if mbit < 8.5 || mbit > 11.5 {
		t.Errorf("%.2f Mbit/s through --rate 10mbit: want 10 ± 15%%", mbit)
	}
}
