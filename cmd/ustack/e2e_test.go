package main

// End-to-end tests: the built ustack binary, in a private network namespace,
// driven by the clients a person would use (nc, ping, tcpdump) and by Go
// clients on kernel sockets for precise assertions.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// asUstackEnv makes the test binary run main() instead of the tests: the
// end-to-end tests run it as the ustack program. It is the built program —
// main and everything below it — with the race detector when the tests have
// it, and it needs no Go toolchain at run time (tests may run under sudo,
// whose PATH has no go).
const asUstackEnv = "USTACK_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asUstackEnv) == "1" {
		main()
		return
	}
	netnstest.Main(m)
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// ustackBinary returns the path of the ustack program: a copy of this test
// binary in a directory every user may read (the unprivileged tests run it
// as nobody), which runs main() because asUstackEnv is set in the
// environment the tests pass on to their children.
func ustackBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binErr = func() error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			// Under the namespace's private run directory, which the
			// test binary removes when it ends (tunif/netnstest): a
			// copy per run would otherwise pile up in /tmp.
			dir, err := os.MkdirTemp(os.Getenv(netnstest.RunDirEnv), "ustack-e2e-")
			if err != nil {
				return err
			}
			if err := os.Chmod(dir, 0o755); err != nil {
				return err
			}
			src, err := os.Open(self)
			if err != nil {
				return err
			}
			defer src.Close()
			binPath = filepath.Join(dir, "ustack")
			dst, err := os.OpenFile(binPath, os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				return err
			}
			if _, err := io.Copy(dst, src); err != nil {
				dst.Close()
				return err
			}
			if err := dst.Close(); err != nil {
				return err
			}
			// Under -race, every process sleeps a second at exit by
			// default (atexit_sleep_ms): a run of many short ustack
			// processes would spend most of its time there.
			if err := os.Setenv("GORACE", "atexit_sleep_ms=0"); err != nil {
				return err
			}
			return os.Setenv(asUstackEnv, "1")
		}()
	})
	if binErr != nil {
		t.Fatalf("prepare the ustack binary: %v", binErr)
	}
	return binPath
}

// needTool skips (or, in CI, fails) a test whose real client is missing.
func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		netnstest.Skipf(t, "%s is not installed (apt-get install %s)", name, map[string]string{
			"nc": "netcat-openbsd", "curl": "curl", "ip": "iproute2", "nsenter": "util-linux", "sysctl": "procps", "ping": "iputils-ping", "tcpdump": "tcpdump", "setpriv": "util-linux", "unshare": "util-linux",
		}[name])
	}
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a running ustack.
type proc struct {
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	err    error
}

// start runs the ustack binary with args and waits until stdout has a line
// matching ready.
func start(t *testing.T, ready string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(ustackBinary(t), args...), done: make(chan struct{})}
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t, syscall.SIGKILL)
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.stdout.String(), ready) {
		select {
		case <-p.done:
			t.Fatalf("ustack %s exited before it was ready: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.err, p.stdout.String(), p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ustack %s not ready within 15s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	}
	return p
}

// stop sends sig and waits for the process (5s at most, then SIGKILL). It
// returns the exit status, or -1.
func (p *proc) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
			t.Errorf("ustack did not exit within 5s of %v", sig)
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

// linkExists tells whether an interface of that name exists in the namespace.
func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// run runs a command with a timeout and returns its combined output.
func run(t *testing.T, timeout time.Duration, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const (
	stackV4 = "198.18.0.2"
	stackV6 = "fd75:7374:6163:6b::2"
)

// TestUp runs the default `ustack up` and drives it as a person would: on
// the fast path (offloads, the default) and on the tun.Device path.
func TestUp(t *testing.T) {
	netnstest.Require(t)
	for _, offload := range []string{"on", "off"} {
		t.Run("offload="+offload, func(t *testing.T) { testUp(t, offload) })
	}
}

func testUp(t *testing.T, offload string) {
	p := start(t, "TCP Server running", "up", "--offload", offload)
	if got := statsJSON(t).Link.Offload; got != (offload == "on") {
		t.Errorf("--offload %s: the link says offload=%v; stderr:\n%s", offload, got, p.stderr.String())
	}

	out := p.stdout.String()
	for _, want := range []string{
		"ustack0 up: host 198.18.0.1/24, fd75:7374:6163:6b::1/64  ·  userspace stack 198.18.0.2, fd75:7374:6163:6b::2  ·  MTU 1500\n",
		"TCP Server running on port 5000 (userspace stack)   try: nc 198.18.0.2 5000   ping 198.18.0.2\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ready lines: missing %q in\n%s", want, out)
		}
	}

	t.Run("nc", func(t *testing.T) {
		needTool(t, "nc")
		// -N: shut the socket down for writing after stdin's EOF, so the
		// server answers and closes.
		got, err := run(t, 10*time.Second, "hello\n", "nc", "-N", stackV4, "5000")
		if err != nil || got != "ACK: hello\n" {
			t.Fatalf("nc: %q, %v; want %q", got, err, "ACK: hello\n")
		}
		got, err = run(t, 10*time.Second, "hello over v6\n", "nc", "-N", stackV6, "5000")
		if err != nil || got != "ACK: hello over v6\n" {
			t.Fatalf("nc -6: %q, %v", got, err)
		}
		// The article's log lines, for the IPv4 client.
		logs := p.stderr.String()
		for _, re := range []string{
			`(?m)^Client connected: 198\.18\.0\.1 \d+$`,
			`(?m)^Received: hello$`,
			`(?m)^Client disconnected$`,
			`(?m)^Client connected: fd75:7374:6163:6b::1 \d+$`,
		} {
			if !regexp.MustCompile(re).MatchString(logs) {
				t.Errorf("log has no line matching %s:\n%s", re, logs)
			}
		}
	})

	t.Run("ping", func(t *testing.T) {
		needTool(t, "ping")
		for _, args := range [][]string{
			{"-c", "3", "-i", "0.2", "-W", "2", stackV4},
			{"-6", "-c", "3", "-i", "0.2", "-W", "2", stackV6},
		} {
			out, err := run(t, 15*time.Second, "", "ping", args...)
			if err != nil || !strings.Contains(out, "3 received") {
				t.Errorf("ping %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})

	t.Run("tcpdump shows the handshake", func(t *testing.T) {
		needTool(t, "tcpdump")
		needTool(t, "nc")
		file := filepath.Join(t.TempDir(), "handshake.pcap")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var stderr syncBuffer
		// -Z root: tcpdump would otherwise drop to its own user before it
		// opens the file, in a directory only root may write.
		dump := exec.CommandContext(ctx, "tcpdump", "-Z", "root", "--immediate-mode", "-ni", "ustack0", "-U", "-w", file, "tcp port 5000")
		dump.Stderr = &stderr
		if err := dump.Start(); err != nil {
			t.Fatal(err)
		}
		for !strings.Contains(stderr.String(), "listening on") {
			if ctx.Err() != nil {
				t.Fatalf("tcpdump did not start: %s", stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got, err := run(t, 10*time.Second, "dump me\n", "nc", "-N", stackV4, "5000"); err != nil || got != "ACK: dump me\n" {
			t.Fatalf("nc: %q, %v", got, err)
		}
		time.Sleep(200 * time.Millisecond) // the last FIN-ACKs
		dump.Process.Signal(syscall.SIGINT)
		dump.Wait()
		out, err := run(t, 10*time.Second, "", "tcpdump", "-nr", file)
		if err != nil {
			t.Fatalf("tcpdump -r: %v\n%s", err, out)
		}
		// (--immediate-mode: without it, packets wait in tcpdump's ring
		// buffer for up to a second, and SIGINT loses them.)
		// tcpdump's flags: [S] SYN, [S.] SYN-ACK, [.] ACK.
		hs := regexp.MustCompile(`(?s)198\.18\.0\.1\.\d+ > 198\.18\.0\.2\.5000: Flags \[S\].*` +
			`198\.18\.0\.2\.5000 > 198\.18\.0\.1\.\d+: Flags \[S\.\].*` +
			`198\.18\.0\.1\.\d+ > 198\.18\.0\.2\.5000: Flags \[\.\]`)
		if !hs.MatchString(out) {
			t.Errorf("no SYN, SYN-ACK, ACK in the capture:\n%s", out)
		}
	})

	t.Run("app", func(t *testing.T) {
		appSuite(t, net.JoinHostPort(stackV4, "5000"))
	})
	t.Run("app IPv6", func(t *testing.T) {
		appSuite(t, net.JoinHostPort(stackV6, "5000"))
	})

	t.Run("client on netstack through kernel forwarding", func(t *testing.T) {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
			t.Fatalf("enable forwarding in the test namespace: %v", err)
		}
		out, err := run(t, 20*time.Second, "", ustackBinary(t), "client", "198.18.0.2:5000", "hi", "there")
		want := "Connected to server\nServer says: ACK: hi\nServer says: ACK: there\nDisconnected from server\n"
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("client: %v\n%s\nwant:\n%s", err, out, want)
		}
		if linkExists("ustack1") {
			t.Error("the client left its interface ustack1 behind")
		}
	})

	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("ustack up exited %d after SIGINT; stderr:\n%s", code, p.stderr.String())
	}
	if !strings.HasSuffix(p.stdout.String(), "ustack0 removed\n") {
		t.Errorf("no 'ustack0 removed' at the end of stdout:\n%s", p.stdout.String())
	}
	if linkExists("ustack0") {
		t.Error("ustack0 still exists after SIGINT")
	}
}

// TestServeKernel runs the same app tests against the kernel's stack.
func TestServeKernel(t *testing.T) {
	netnstest.Require(t)
	p := start(t, "TCP Server running", "serve", "--kernel", "--listen", "127.0.0.1:5001")
	appSuite(t, "127.0.0.1:5001")
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("ustack serve exited %d; stderr:\n%s", code, p.stderr.String())
	}
	if !regexp.MustCompile(`(?m)^Client connected: 127\.0\.0\.1 \d+$`).MatchString(p.stderr.String()) {
		t.Errorf("no article log lines:\n%s", p.stderr.String())
	}
}

// TestClientOnNetstackToKernelServer: `ustack client` on its own userspace
// stack reaches a kernel server on its host side.
func TestClientOnNetstackToKernelServer(t *testing.T) {
	netnstest.Require(t)
	srv := start(t, "TCP Server running", "serve", "--kernel", "--listen", ":5002")
	out, err := run(t, 20*time.Second, "", ustackBinary(t), "client", "--via-name", "ustackc", "198.18.1.1:5002", "hello")
	want := "Connected to server\nServer says: ACK: hello\nDisconnected from server\n"
	if err != nil || !strings.Contains(out, want) {
		t.Fatalf("client: %v\n%s", err, out)
	}
	// The kernel server saw the client at the userspace stack's address.
	if !regexp.MustCompile(`(?m)^Client connected: 198\.18\.1\.2 \d+$`).MatchString(srv.stderr.String()) {
		t.Errorf("the server did not see 198.18.1.2:\n%s", srv.stderr.String())
	}
	if linkExists("ustackc") {
		t.Error("the client left its interface behind")
	}
	// Messages from stdin when none are given.
	out, err = run(t, 20*time.Second, "from stdin\n", ustackBinary(t), "client", "--via-name", "ustackc", "198.18.1.1:5002")
	if err != nil || !strings.Contains(out, "Server says: ACK: from stdin\n") {
		t.Fatalf("client from stdin: %v\n%s", err, out)
	}
	// And with --kernel, no TUN at all.
	out, err = run(t, 20*time.Second, "", ustackBinary(t), "client", "--kernel", "127.0.0.1:5002", "k")
	if err != nil || !strings.Contains(out, "Server says: ACK: k\n") {
		t.Fatalf("client --kernel: %v\n%s", err, out)
	}
}

// TestSIGTERMDuringTransfers stops ustack up while clients are mid-transfer
// and idle: it exits 0 promptly and removes the interface.
func TestSIGTERMDuringTransfers(t *testing.T) {
	netnstest.Require(t)
	p := start(t, "TCP Server running", "up", "--name", "ustackt", "--addr", "198.18.4.1/24", "--no-ipv6")
	var conns []net.Conn
	for range 5 {
		c, err := net.DialTimeout("tcp", "198.18.4.2:5000", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// Two of them stream data without pause.
	stopWriting := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range conns[:2] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			go io.Copy(io.Discard, c)
			line := []byte(strings.Repeat("x", 1000) + "\n")
			for {
				select {
				case <-stopWriting:
					return
				default:
				}
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(line); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	began := time.Now()
	code := p.stop(t, syscall.SIGTERM)
	took := time.Since(began)
	close(stopWriting)
	wg.Wait()
	if code != 0 {
		t.Errorf("exit status %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
	}
	if took > 4*time.Second { // 1s of grace for open connections, then teardown; generous for -race on a busy machine
		t.Errorf("took %v to exit after SIGTERM", took)
	}
	if linkExists("ustackt") {
		t.Error("ustackt still exists")
	}
	// The clients' connections ended (reset or closed), they do not hang.
	for _, c := range conns[2:] {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("an idle client's connection is still open")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Error("an idle client's connection was left hanging")
		}
	}
}

// TestInterfaceDeletedUnderUs: the stack notices, and ustack up ends with a
// clear error instead of spinning or hanging.
func TestInterfaceDeletedUnderUs(t *testing.T) {
	netnstest.Require(t)
	p := start(t, "TCP Server running", "up", "--name", "ustackd", "--addr", "198.18.6.1/24", "--no-ipv6")
	if out, err := exec.Command("ip", "link", "del", "ustackd").CombinedOutput(); err != nil {
		t.Fatalf("ip link del: %v %s", err, out)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Signal(syscall.SIGQUIT)
		<-p.done
		t.Fatalf("ustack up still runs 5s after its interface was deleted:\n%s", p.stderr.String())
	}
	want := "ustack up: the interface ustackd went away under the running stack"
	if code := p.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(p.stderr.String(), want) {
		t.Errorf("exit %d, stderr %q; want 1 and %q", code, p.stderr.String(), want)
	}
}

// TestMTURaisedUnderUs: the interface's MTU goes up while ustack runs, and a
// burst of packets larger than the old MTU arrives. Each is read whole (or
// dropped) and the stack keeps serving; before, every such frame failed the
// read and a hundred of them ended the stack.
func TestMTURaisedUnderUs(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "ping")
	p := start(t, "TCP Server running", "up", "--name", "ustackm", "--addr", "198.18.7.1/24", "--no-ipv6")
	if out, err := exec.Command("ip", "link", "set", "ustackm", "mtu", "9000").CombinedOutput(); err != nil {
		t.Fatalf("ip link set mtu: %v %s", err, out)
	}
	// 150 echo requests of 4 KB, as fast as ping sends them (root may). The
	// stack reads them whole and answers in fragments of its own MTU.
	out, _ := run(t, 20*time.Second, "", "ping", "-q", "-s", "4000", "-c", "150", "-i", "0.002", "-W", "1", "198.18.7.2")
	if m := regexp.MustCompile(`(\d+) received`).FindStringSubmatch(out); m == nil || m[1] == "0" {
		t.Errorf("no 4 KB echo request answered:\n%s", out)
	}
	select {
	case <-p.done:
		t.Fatalf("ustack up ended: %v\n%s", p.err, p.stderr.String())
	default:
	}
	c, err := net.DialTimeout("tcp", "198.18.7.2:5000", 5*time.Second)
	if err != nil {
		t.Fatalf("after the burst: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "still here\n")
	if r, err := bufio.NewReader(c).ReadString('\n'); r != "ACK: still here\n" {
		t.Fatalf("after the burst: %q, %v", r, err)
	}
}

// appSuite is the table of ACK-server tests, run against any address: the
// userspace stack's and the kernel's.
func appSuite(t *testing.T, addr string) {
	dial := func(t *testing.T) *net.TCPConn {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(60 * time.Second))
		return c.(*net.TCPConn)
	}
	// exchange sends in, half-closes, and returns everything the server sent
	// until it closed.
	exchange := func(t *testing.T, in []byte) []byte {
		t.Helper()
		c := dial(t)
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(in)
			if err == nil {
				err = c.CloseWrite()
			}
			errc <- err
		}()
		out, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		return out
	}

	for _, tc := range []struct {
		name   string
		in     string
		want   string
		detail string
	}{
		{"one line", "hello\n", "ACK: hello\n", ""},
		{"CRLF", "hello\r\n", "ACK: hello\n", "a trailing CR is not part of the message"},
		{"pipelined", "a\nb\nc\n", "ACK: a\nACK: b\nACK: c\n", ""},
		{"final chunk without newline", "a\nlast", "ACK: a\nACK: last\n", ""},
		{"empty line", "\n", "ACK: \n", ""},
		{"long line in 64 KiB pieces", strings.Repeat("L", 150<<10) + "\n",
			"ACK: " + strings.Repeat("L", 64<<10) + "\nACK: " + strings.Repeat("L", 64<<10) + "\nACK: " + strings.Repeat("L", 22<<10) + "\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(exchange(t, []byte(tc.in))); got != tc.want {
				t.Errorf("sent %.40q…, got %.80q…, want %.80q… %s", tc.in, got, tc.want, tc.detail)
			}
		})
	}

	t.Run("16 MiB of random lines", func(t *testing.T) {
		in, want := randomLines(16<<20, 42)
		began := time.Now()
		got := exchange(t, in)
		t.Logf("16 MiB of lines to %s and their ACKs back: %v", addr, time.Since(began).Round(time.Millisecond))
		if !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			t.Fatalf("replies differ from byte %d of %d (got %d bytes)", i, len(want), len(got))
		}
	})

	t.Run("100 concurrent clients", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i := range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				msg := fmt.Sprintf("client %d", i)
				if _, err := fmt.Fprintf(c, "%s\n", msg); err != nil {
					errs <- err
					return
				}
				reply, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || reply != "ACK: "+msg+"\n" {
					errs <- fmt.Errorf("client %d: %q, %v", i, reply, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// randomLines returns about size bytes of printable lines (deterministic for
// seed) and the replies the ACK server owes them.
func randomLines(size int, seed uint64) (in, want []byte) {
	r := rand.New(rand.NewPCG(seed, seed))
	var inb, wantb bytes.Buffer
	for inb.Len() < size {
		line := make([]byte, 1+r.IntN(2000))
		for i := range line {
			line[i] = byte(' ' + r.IntN(95))
		}
		inb.Write(line)
		inb.WriteByte('\n')
		wantb.WriteString("ACK: ")
		wantb.Write(line)
		wantb.WriteByte('\n')
	}
	return inb.Bytes(), wantb.Bytes()
}
