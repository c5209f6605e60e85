package main

// End-to-end tests of the taps: --trace, --pcap, --tcp-probe, --metrics,
// ustack stats and ustack plot, on the real binary in a private namespace.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/probe"
	"github.com/ustack/ustack/tunif/netnstest"
)

// statsJSON runs ustack stats --json and decodes it.
func statsJSON(t *testing.T, args ...string) *stack.Snapshot {
	t.Helper()
	out, err := exec.Command(ustackBinary(t), append([]string{"stats", "--json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("ustack stats --json: %v\n%s", err, out)
	}
	var s stack.Snapshot
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("ustack stats --json printed no snapshot: %v\n%s", err, out)
	}
	return &s
}

// freePort returns a TCP port nobody listens on in the namespace.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestObserve runs one ustack up with every tap on and checks each against
// what real clients did.
func TestObserve(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	needTool(t, "ping")
	needTool(t, "tcpdump")
	dir := t.TempDir()
	pcapFile := filepath.Join(dir, "up.pcap")
	probeFile := filepath.Join(dir, "probe.csv")
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// IPv4 only: the kernel sends no IPv6 chatter (router solicitations)
	// into the interface, so the packet counts are exactly ours.
	p := start(t, "TCP Server running", "up", "--no-ipv6", "--trace", "--pcap", pcapFile, "--tcp-probe", probeFile, "--metrics", metrics)

	before := statsJSON(t)

	t.Run("trace of an nc session", func(t *testing.T) {
		if got, err := run(t, 10*time.Second, "hello\n", "nc", "-N", stackV4, "5000"); err != nil || got != "ACK: hello\n" {
			t.Fatalf("nc: %q, %v", got, err)
		}
		// The lines of one connection, in order.
		want := []string{
			`→ in   IPv4 198\.18\.0\.1 → 198\.18\.0\.2 ttl 64 len 60 \| TCP (\d+) → 5000 SYN seq 0 win \d+ mss 1460 .*\[handshake 1/3: Client → SYN → Server\]`,
			`← out  IPv4 198\.18\.0\.2 → 198\.18\.0\.1 .*\| TCP 5000 → (\d+) SYN-ACK seq 0 ack 1 .*\[handshake 2/3.*\] state SYN-RCVD`,
			`→ in   .*\| TCP (\d+) → 5000 ACK ack 1 .*\[handshake 3/3.*\] state ESTABLISHED`,
			`→ in   .*\| TCP (\d+) → 5000 PSH-ACK seq 1:7 ack 1 .*\(6 bytes\) "hello\\n".*\[data\]`,
			`← out  .*\| TCP 5000 → (\d+) .*seq 1:12 .*\(11 bytes\) "ACK: hello\\n"`,
			`FIN`,
		}
		waitFor(t, "the trace of the nc session", func() bool { return traceHas(p.stdout.String(), want) == "" })
		if missing := traceHas(p.stdout.String(), want); missing != "" {
			t.Errorf("trace: no line matching %s after the previous ones in\n%s", missing, p.stdout.String())
		}
	})

	t.Run("trace of ping", func(t *testing.T) {
		if out, err := run(t, 10*time.Second, "", "ping", "-c", "2", "-i", "0.2", "-W", "2", stackV4); err != nil {
			t.Fatalf("ping: %v\n%s", err, out)
		}
		want := []string{
			`→ in   IPv4 198\.18\.0\.1 → 198\.18\.0\.2 ttl 64 len 84 \| ICMP echo request id \d+ seq 1`,
			`← out  IPv4 198\.18\.0\.2 → 198\.18\.0\.1 .*\| ICMP echo reply id \d+ seq 1`,
		}
		waitFor(t, "the trace of ping", func() bool { return traceHas(p.stdout.String(), want) == "" })
	})

	t.Run("stats change as traffic flows", func(t *testing.T) {
		c, err := net.Dial("tcp", net.JoinHostPort(stackV4, "5000"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "still here\n")
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "ACK: still here\n" {
			t.Fatalf("reply %q, %v", line, err)
		}
		after := statsJSON(t)
		if after.Link.RxPackets <= before.Link.RxPackets || after.Link.TxPackets <= before.Link.TxPackets {
			t.Errorf("link packets did not grow: before %+v after %+v", before.Link, after.Link)
		}
		if after.TCP.PassiveOpens < before.TCP.PassiveOpens+2 {
			t.Errorf("tcp passive opens %d → %d, want at least 2 more (nc and this connection)", before.TCP.PassiveOpens, after.TCP.PassiveOpens)
		}
		if after.ICMP.V4EchoRequestsIn < before.ICMP.V4EchoRequestsIn+2 || after.TCP.Established < 1 {
			t.Errorf("icmp %+v, tcp %+v", after.ICMP, after.TCP)
		}
		local := c.LocalAddr().(*net.TCPAddr).AddrPort()
		found := false
		for _, conn := range after.Conns {
			if conn.Remote.Port() == local.Port() {
				found = true
				if conn.State != "ESTABLISHED" || conn.Cwnd == 0 || conn.SegmentsIn == 0 || conn.RecvBuf == 0 {
					t.Errorf("connection row %+v: want ESTABLISHED with cwnd, segments and buffers", conn)
				}
			}
		}
		if !found {
			t.Errorf("no connection row for %v in %+v", local, after.Conns)
		}
		text, err := exec.Command(ustackBinary(t), "stats").CombinedOutput()
		if err != nil {
			t.Fatalf("ustack stats: %v\n%s", err, text)
		}
		for _, want := range []string{"link", "tcp", "ESTABLISHED", "198.18.0.1:" + strconv.Itoa(int(local.Port())), "taps", "trace:"} {
			if !strings.Contains(string(text), want) {
				t.Errorf("ustack stats: no %q in\n%s", want, text)
			}
		}
	})

	t.Run("prometheus", func(t *testing.T) {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("the metrics do not parse as the Prometheus text format: %v", err)
		}
		value := func(name string, labels map[string]string) float64 {
			f, ok := families[name]
			if !ok {
				t.Errorf("no metric %s", name)
				return 0
			}
			if f.GetHelp() == "" {
				t.Errorf("metric %s has no help", name)
			}
		next:
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
						continue next
					}
				}
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
			t.Errorf("metric %s has no series %v", name, labels)
			return 0
		}
		if v := value("ustack_link_packets_total", map[string]string{"direction": "rx", "ip": "4"}); v < 10 {
			t.Errorf("ustack_link_packets_total{rx,4} = %v", v)
		}
		if v := value("ustack_link_transport_bytes_total", map[string]string{"direction": "rx", "protocol": "tcp"}); v < 100 {
			t.Errorf("ustack_link_transport_bytes_total{rx,tcp} = %v", v)
		}
		if v := value("ustack_icmp_echo_replies_total", map[string]string{"ip": "4"}); v < 2 {
			t.Errorf("ustack_icmp_echo_replies_total{4} = %v", v)
		}
		if v := value("ustack_tcp_passive_opens_total", nil); v < 2 {
			t.Errorf("ustack_tcp_passive_opens_total = %v", v)
		}
		if v := value("ustack_tcp_connections", map[string]string{"state": "LISTEN"}); v != 1 {
			t.Errorf("ustack_tcp_connections{LISTEN} = %v, want 1", v)
		}
		if f := families["ustack_tcp_passive_opens_total"]; f != nil && f.GetType().String() != "COUNTER" {
			t.Errorf("ustack_tcp_passive_opens_total is a %v", f.GetType())
		}
	})

	t.Run("bulk transfer with the trace on", func(t *testing.T) {
		in, want := randomLines(4<<20, 4)
		c, err := net.Dial("tcp", net.JoinHostPort(stackV4, "5000"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(in)
			c.(*net.TCPConn).CloseWrite()
			errc <- err
		}()
		got, err := io.ReadAll(c)
		if err != nil || <-errc != nil || !bytes.Equal(got, want) {
			t.Fatalf("bulk transfer: %d of %d bytes back, %v", len(got), len(want), err)
		}
	})

	// Let the last FINs and ACKs cross, then count what the stack saw.
	waitFor(t, "the connections to close", func() bool {
		for _, c := range statsJSON(t).Conns {
			if c.State != "LISTEN" && c.State != "TIME-WAIT" && c.State != "CLOSED" {
				return false
			}
		}
		return true
	})
	final := statsJSON(t)
	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Fatalf("ustack up exited %d\n%s", code, p.stderr.String())
	}
	for _, tp := range final.Taps {
		if tp.Dropped != 0 {
			t.Errorf("tap %s skipped %d events", tp.Name, tp.Dropped)
		}
	}
	if !strings.Contains(p.stdout.String(), "link  ") || !strings.Contains(p.stdout.String(), "retransmits:") {
		t.Errorf("no exit summary on stdout:\n%s", lastLines(p.stdout.String(), 20))
	}

	t.Run("pcap read back by tcpdump", func(t *testing.T) {
		out, err := run(t, 20*time.Second, "", "tcpdump", "-nr", pcapFile)
		if err != nil {
			t.Fatalf("tcpdump -r: %v\n%s", err, lastLines(out, 20))
		}
		hs := regexp.MustCompile(`(?s)198\.18\.0\.1\.\d+ > 198\.18\.0\.2\.5000: Flags \[S\].*` +
			`198\.18\.0\.2\.5000 > 198\.18\.0\.1\.\d+: Flags \[S\.\].*` +
			`198\.18\.0\.1\.\d+ > 198\.18\.0\.2\.5000: Flags \[\.\]`)
		if !hs.MatchString(out) {
			t.Errorf("no handshake in the pcap:\n%s", lastLines(out, 20))
		}
		packets := uint64(strings.Count(out, "\n"))
		if seen := final.Link.RxPackets + final.Link.TxPackets; packets < seen {
			t.Errorf("the pcap has %d packets, ustack stats counted %d crossing the link", packets, seen)
		}
		// After the final stats only the teardown may add packets.
		if seen := final.Link.RxPackets + final.Link.TxPackets; packets > seen+4 {
			t.Errorf("the pcap has %d packets, ustack stats counted %d crossing the link", packets, seen)
		}
	})

	t.Run("probe CSV and plot", func(t *testing.T) {
		f, err := os.Open(probeFile)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		recs, err := probe.ReadAll(f)
		if err != nil {
			t.Fatalf("the probe CSV does not read back: %v", err)
		}
		rows := map[string][]probe.Record{}
		for _, r := range recs {
			rows[r.Conn] = append(rows[r.Conn], r)
		}
		// The bulk transfer is the connection with the most rows; the ACK
		// server sends as much as it receives, so its cwnd grows.
		var bulk []probe.Record
		for _, rs := range rows {
			if len(rs) > len(bulk) {
				bulk = rs
			}
		}
		maxCwnd := 0
		for _, r := range bulk {
			maxCwnd = max(maxCwnd, r.Cwnd)
		}
		if len(bulk) < 100 || maxCwnd <= bulk[0].Cwnd {
			t.Errorf("probe: %d rows for the bulk connection, cwnd %d at first and at most %d: want it to grow", len(bulk), bulk[0].Cwnd, maxCwnd)
		}
		img := filepath.Join(t.TempDir(), "cwnd.png")
		if out, err := exec.Command(ustackBinary(t), "plot", probeFile, "-o", img).CombinedOutput(); err != nil {
			t.Fatalf("ustack plot: %v\n%s", err, out)
		}
		pf, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		defer pf.Close()
		im, err := png.Decode(pf)
		if err != nil || im.Bounds().Dx() < 100 {
			t.Fatalf("ustack plot wrote no valid PNG: %v", err)
		}
	})
}

// traceHas checks that the trace has, in order, lines matching each pattern
// (the first pattern's port, if it captures one, is the connection's and must
// be the same in the others). It returns the first pattern it did not find.
func traceHas(trace string, patterns []string) string {
	lines := strings.Split(trace, "\n")
	port := ""
	i := 0
	for _, pat := range patterns {
		re := regexp.MustCompile(pat)
		found := false
		for ; i < len(lines); i++ {
			m := re.FindStringSubmatch(lines[i])
			if m == nil || (port != "" && len(m) > 1 && m[1] != port) {
				continue
			}
			if port == "" && len(m) > 1 {
				port = m[1]
			}
			found = true
			i++
			break
		}
		if !found {
			return pat
		}
	}
	return ""
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestPcapToStdout pipes ustack up --pcap - into tcpdump -r -.
func TestPcapToStdout(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	needTool(t, "tcpdump")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	up := exec.CommandContext(ctx, ustackBinary(t), "up", "--name", "ustack5", "--addr", "198.18.5.1/24", "--no-ipv6", "--pcap", "-")
	var upErr syncBuffer
	up.Stderr = &upErr
	pipe, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	dump := exec.CommandContext(ctx, "tcpdump", "-nlr", "-")
	dump.Stdin = pipe
	var dumpOut, dumpErr syncBuffer
	dump.Stdout, dump.Stderr = &dumpOut, &dumpErr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	if err := dump.Start(); err != nil {
		up.Process.Kill()
		up.Wait()
		t.Fatal(err)
	}
	defer func() {
		up.Process.Signal(syscall.SIGINT)
		up.Wait()
		dump.Wait()
	}()
	// The ready lines go to stderr when stdout carries the pcap.
	waitFor(t, "ustack up --pcap - to be ready", func() bool { return strings.Contains(upErr.String(), "TCP Server running") })
	if got, err := run(t, 10*time.Second, "piped\n", "nc", "-N", "198.18.5.2", "5000"); err != nil || got != "ACK: piped\n" {
		t.Fatalf("nc: %q, %v", got, err)
	}
	waitFor(t, "tcpdump to print the handshake", func() bool {
		return strings.Contains(dumpOut.String(), "198.18.5.2.5000: Flags [S]") && strings.Contains(dumpOut.String(), "Flags [S.]")
	})
	up.Process.Signal(syscall.SIGINT)
	if err := up.Wait(); err != nil {
		t.Errorf("ustack up --pcap -: %v\n%s", err, upErr.String())
	}
	if err := dump.Wait(); err != nil {
		t.Errorf("tcpdump -r - did not read the stream to its end: %v\n%s", err, dumpErr.String())
	}
}

// TestPcapWriteErrorSwitchesTheTapOff: a pcap file that cannot be written
// costs one log line, and the stack runs on.
func TestPcapWriteErrorSwitchesTheTapOff(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	p := start(t, "TCP Server running", "up", "--name", "ustack6", "--addr", "198.18.6.1/24", "--no-ipv6", "--pcap", "/dev/full")
	for i := range 3 {
		msg := fmt.Sprintf("still served %d\n", i)
		if got, err := run(t, 10*time.Second, msg, "nc", "-N", "198.18.6.2", "5000"); err != nil || got != "ACK: "+msg {
			t.Fatalf("nc after the pcap failed: %q, %v", got, err)
		}
	}
	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("ustack up exited %d", code)
	}
	logs := p.stderr.String()
	if n := strings.Count(logs, "pcap: write /dev/full: no space left on device: this tap is off from now on; the stack runs on"); n != 1 {
		t.Errorf("want one log line about the pcap failure, got %d:\n%s", n, logs)
	}
}

// TestPcapReaderGoesAway: the reader of --pcap - quits; the tap goes off, the
// stack runs on and stops cleanly.
func TestPcapReaderGoesAway(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	up := exec.Command(ustackBinary(t), "up", "--name", "ustack7", "--addr", "198.18.7.1/24", "--no-ipv6", "--pcap", "-")
	var upErr syncBuffer
	up.Stderr = &upErr
	pipe, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		up.Process.Kill()
		up.Wait()
	}()
	waitFor(t, "ustack up to be ready", func() bool { return strings.Contains(upErr.String(), "TCP Server running") })
	head := make([]byte, 24)
	if _, err := io.ReadFull(pipe, head); err != nil {
		t.Fatalf("read the pcap header: %v", err)
	}
	pipe.Close() // the reader quits
	for i := range 3 {
		msg := fmt.Sprintf("nobody captures %d\n", i)
		if got, err := run(t, 10*time.Second, msg, "nc", "-N", "198.18.7.2", "5000"); err != nil || got != "ACK: "+msg {
			t.Fatalf("nc after the pcap reader left: %q, %v\n%s", got, err, upErr.String())
		}
	}
	waitFor(t, "the log line", func() bool { return strings.Contains(upErr.String(), "this tap is off") })
	up.Process.Signal(syscall.SIGINT)
	if err := up.Wait(); err != nil {
		t.Errorf("ustack up: %v\n%s", err, upErr.String())
	}
	if !strings.Contains(upErr.String(), "broken pipe") || strings.Count(upErr.String(), "this tap is off") != 1 {
		t.Errorf("want one line about the broken pipe:\n%s", upErr.String())
	}
}

// TestCwndPlotScript runs the script that draws the README's picture, small.
func TestCwndPlotScript(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	needTool(t, "unshare")
	out := filepath.Join(t.TempDir(), "cwnd.png")
	if text := runScript(t, ustackBinary(t), []string{"USTACK_PLOT_MIB=1"}, 2*time.Minute, "cwnd-plot.sh", out); !strings.Contains(string(text), "wrote "+out) {
		t.Fatalf("scripts/cwnd-plot.sh wrote no picture:\n%s", text)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("the script's picture is no PNG: %v", err)
	}
}

// TestTapCostScript runs the script that measures what the taps cost, small.
func TestTapCostScript(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	needTool(t, "unshare")
	out := runScript(t, ustackBinary(t), []string{"USTACK_TAPCOST_MIB=2"}, 3*time.Minute, "tap-cost.sh", "1")
	for _, tap := range []string{"off", "trace", "trace-filtered", "pcap", "tcp-probe", "all"} {
		if !regexp.MustCompile(`(?m)^` + tap + ` +\d+ +\[\d+-\d+\] +\d+\.\d\dx +0$`).Match(out) {
			t.Errorf("no result line for %s (with 0 skipped) in\n%s", tap, out)
		}
	}
}

// TestTraceReaderGoesAway: ustack up --trace | head — the reader quits; the
// trace goes off with one log line, the stack runs on and stops cleanly.
func TestTraceReaderGoesAway(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	up := exec.Command(ustackBinary(t), "up", "--name", "ustack13", "--addr", "198.18.13.1/24", "--no-ipv6", "--trace")
	var upErr syncBuffer
	up.Stderr = &upErr
	pipe, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		up.Process.Kill()
		up.Wait()
	}()
	r := bufio.NewReader(pipe)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("no ready line: %v\n%s", err, upErr.String())
		}
		if strings.Contains(line, "TCP Server running") {
			break
		}
	}
	pipe.Close() // the reader quits, like head
	for i := range 3 {
		msg := fmt.Sprintf("nobody reads the trace %d\n", i)
		if got, err := run(t, 10*time.Second, msg, "nc", "-N", "198.18.13.2", "5000"); err != nil || got != "ACK: "+msg {
			t.Fatalf("nc after the trace's reader left: %q, %v\n%s", got, err, upErr.String())
		}
	}
	waitFor(t, "the log line", func() bool {
		return strings.Contains(upErr.String(), "trace: ") && strings.Contains(upErr.String(), "this tap is off")
	})
	up.Process.Signal(syscall.SIGINT)
	if err := up.Wait(); err != nil {
		t.Errorf("ustack up: %v\n%s", err, upErr.String())
	}
	if linkExists("ustack13") {
		t.Error("ustack13 is still there")
	}
}
