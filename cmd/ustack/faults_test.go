package main

// End-to-end tests of fault injection: TCP recovers from what IP does not
// guarantee, on the real binary with real clients.

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// ackTransfer sends in through the ACK server at addr and returns what came
// back, within limit.
func ackTransfer(t *testing.T, addr string, in []byte, limit time.Duration) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(limit))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("after %d bytes back: %v", len(got), err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("send: %v", err)
	}
	return got
}

// ustackCmd runs ustack with args and returns its stdout, failing the test
// on an error.
func ustackCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(ustackBinary(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ustack %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestTCPRecoversFromLoss: 5% loss, 1% reordering and 1% duplication both
// ways, and 8 MiB through the ACK server arrive whole; then a 2-second outage
// (100% loss) in the middle of a transfer, which completes once it ends.
func TestTCPRecoversFromLoss(t *testing.T) {
	netnstest.Require(t)
	p := start(t, "TCP Server running", "up", "--name", "ustack8", "--addr", "198.18.8.1/24", "--no-ipv6",
		"--loss", "5%", "--reorder", "1%", "--duplicate", "1%", "--seed", "1")
	if !strings.Contains(p.stdout.String(), "faults: loss 5% · reorder 1% · duplicate 1% · both directions · seed 1") {
		t.Errorf("no faults line in\n%s", p.stdout.String())
	}
	stats := func() (retrans, lost uint64) {
		s := statsJSON(t, "--name", "ustack8")
		if s.Faults == nil {
			t.Fatal("ustack stats shows no faults")
		}
		return s.TCP.Retransmits, s.Faults.Stats.In.Lost + s.Faults.Stats.Out.Lost
	}

	t.Run("8 MiB at 5% loss", func(t *testing.T) {
		in, want := randomLines(8<<20, 21)
		got := ackTransfer(t, "198.18.8.2:5000", in, 5*time.Minute)
		if sha256.Sum256(got) != sha256.Sum256(want) {
			t.Fatalf("%d bytes back, want %d; SHA-256 differs", len(got), len(want))
		}
		if retrans, lost := stats(); retrans == 0 || lost == 0 {
			t.Errorf("retransmits %d, packets lost %d: want both > 0", retrans, lost)
		}
	})

	t.Run("2 s of 100% loss mid-transfer", func(t *testing.T) {
		ustackCmd(t, "set", "--name", "ustack8", "--clear")
		in, want := randomLines(2<<20, 22)
		done := make(chan []byte, 1)
		go func() {
			c, err := net.Dial("tcp", "198.18.8.2:5000")
			if err != nil {
				done <- nil
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			go func() {
				// Slowly, so the outage falls in the middle.
				for off := 0; off < len(in); off += 64 << 10 {
					c.Write(in[off:min(off+64<<10, len(in))])
					time.Sleep(20 * time.Millisecond)
				}
				c.(*net.TCPConn).CloseWrite()
			}()
			got, _ := io.ReadAll(c)
			done <- got
		}()
		time.Sleep(200 * time.Millisecond)
		if out := ustackCmd(t, "set", "--name", "ustack8", "--loss", "100%"); !strings.Contains(out, "loss 100% · both directions · seed 1") {
			t.Errorf("ustack set said %q", out)
		}
		time.Sleep(2 * time.Second)
		ustackCmd(t, "set", "--name", "ustack8", "--loss", "0%")
		select {
		case got := <-done:
			if !bytes.Equal(got, want) {
				t.Fatalf("after the outage: %d bytes back, want %d", len(got), len(want))
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("the transfer did not complete after the outage")
		}
	})

	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("exit %d\n%s", code, p.stderr.String())
	}
	if out := p.stdout.String(); !strings.Contains(out, "faults  ") {
		t.Errorf("the exit summary shows no faults:\n%s", lastLines(out, 25))
	}
}

// TestFaultSeedIsReproducible: the same seed and the same packets give the
// same losses — here, the stack's replies to the same 40 pings, twice.
func TestFaultSeedIsReproducible(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "ping")
	lost := func() string {
		p := start(t, "TCP Server running", "up", "--name", "ustack9", "--addr", "198.18.9.1/24", "--no-ipv6", "--loss", "30%", "--fault-dir", "out", "--seed", "42")
		// The echo replies are the only packets the stack sends (the
		// kernel's own IPv6 router solicitations come in, at times of
		// their own): the same sequence each time.
		out, _ := run(t, 30*time.Second, "", "ping", "-c", "40", "-i", "0.05", "-W", "1", "198.18.9.2")
		s := statsJSON(t, "--name", "ustack9")
		p.stop(t, syscall.SIGINT)
		var seqs []string
		for _, line := range strings.Split(out, "\n") {
			if i := strings.Index(line, "icmp_seq="); i >= 0 {
				seqs = append(seqs, strings.Fields(line[i:])[0])
			}
		}
		return fmt.Sprintf("%d lost: %v", s.Faults.Stats.Out.Lost, seqs)
	}
	first, second := lost(), lost()
	if first != second {
		t.Errorf("same seed, same pings, different losses:\n%s\n%s", first, second)
	}
	if strings.HasPrefix(first, "0 lost") {
		t.Errorf("30%% loss lost nothing: %s", first)
	}
}

// TestLossLabScript runs the loss lab, small.
func TestLossLabScript(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "curl")
	needTool(t, "unshare")
	out := runScript(t, ustackBinary(t), []string{"USTACK_LAB_LOSSES=0% 5%"}, 3*time.Minute, "loss-lab.sh", "1")
	for _, row := range []string{`0%\s+reno`, `0%\s+cubic`, `5%\s+reno`, `5%\s+cubic`} {
		if !regexp.MustCompile(`(?m)^` + row + `\s+\d+\.\d\d\s+\d+\.\d\s+\d+\s+\d+$`).Match(out) {
			t.Errorf("no row %s in\n%s", row, out)
		}
	}
	if m := regexp.MustCompile(`(?m)^5%\s+reno\s+\S+\s+\S+\s+(\d+)`).FindSubmatch(out); m == nil || string(m[1]) == "0" {
		t.Errorf("no retransmissions at 5%% loss:\n%s", out)
	}
}

// TestRACKLabScript: with RACK-TLP on, ustack's default, a transfer at 10%
// loss both ways completes (with it off, netstack stalls: scripts/rack-lab.sh
// shows it; docs/labs.md has the figures).
func TestRACKLabScript(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	needTool(t, "unshare")
	out := runScript(t, ustackBinary(t), []string{"USTACK_RACK_LOSSES=10%", "USTACK_RACK_SEEDS=1 2", "USTACK_RACK_MODES=on"}, 3*time.Minute, "rack-lab.sh", "200", "60")
	if n := len(regexp.MustCompile(`(?m)^10%\s+on\s+\d\s+\d+\.\d s$`).FindAll(out, -1)); n != 2 {
		t.Errorf("want two finished runs with RACK on at 10%% loss:\n%s", out)
	}
}
