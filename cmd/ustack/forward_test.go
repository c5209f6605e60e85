package main

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// kernelWebServer serves content at http://10.77.0.1:8080/file from the test's
// namespace, on an address of its own (on lo).
func kernelWebServer(t *testing.T, content []byte) string {
	t.Helper()
	exec.Command("ip", "addr", "add", "10.77.0.1/32", "dev", "lo").Run()
	ln, err := net.Listen("tcp", "10.77.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(content) }), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://10.77.0.1:8080/file"
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestRun: ustack run -- curl reaches a kernel web server in the test's
// namespace through the userspace stack, also at 5% loss; a destination
// outside --allow is refused.
func TestRun(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "curl")
	needTool(t, "ip")
	content := randomBytes(t, 2<<20)
	url := kernelWebServer(t, content)
	want := sha(content) + "  -\n"
	for _, extra := range [][]string{nil, {"--loss", "5%", "--seed", "3"}} {
		args := append(append([]string{"run", "--allow", "10.77.0.1/32"}, extra...), "--", "sh", "-c", "curl -sS --max-time 60 "+url+" | sha256sum")
		cmd := exec.Command(ustackBinary(t), args...)
		var stderr syncBuffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || string(out) != want {
			t.Errorf("ustack run %v: %q, %v, want %q\n%s", extra, out, err, want, stderr.String())
		}
		if !strings.Contains(stderr.String(), "forwarding to 10.77.0.1/32") || !regexpMatch(`forward\s+tcp: 1 flows opened`, stderr.String()) {
			t.Errorf("ustack run's own lines:\n%s", stderr.String())
		}
		if len(extra) > 0 && !regexpMatch(`retransmits: [1-9]`, stderr.String()) {
			t.Errorf("no retransmissions at 5%% loss:\n%s", stderr.String())
		}
	}
	// Outside --allow: refused (curl: couldn't connect, exit 7), and said so.
	cmd := exec.Command(ustackBinary(t), "run", "--allow", "10.77.0.1/32", "--", "curl", "-sS", "--max-time", "10", "http://10.88.0.1/")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 7 || !strings.Contains(string(out), "refused: not in --allow") {
		t.Errorf("a destination outside --allow: exit %d\n%s", cmd.ProcessState.ExitCode(), out)
	}
	// COMMAND's exit status is ustack run's; nothing is left behind.
	cmd = exec.Command(ustackBinary(t), "run", "--", "sh", "-c", "exit 9")
	cmd.Run()
	if cmd.ProcessState.ExitCode() != 9 {
		t.Errorf("exit status %d, want COMMAND's 9", cmd.ProcessState.ExitCode())
	}
	if linkExists("ustack0") {
		t.Error("ustack run left ustack0 in the test's namespace")
	}
}

// TestUpForward: ustack up --forward --netns NS: a client in NS whose default
// route is the TUN reaches a server in ustack's namespace.
func TestUpForward(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "curl")
	needTool(t, "ip")
	content := randomBytes(t, 1<<20)
	url := kernelWebServer(t, content)
	ns := "ustack-fwd-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	p := start(t, "TCP Server running", "up", "--netns", ns, "--no-ipv6", "--forward", "--allow", "10.77.0.1/32")
	if !strings.Contains(p.stdout.String(), "forwarding to 10.77.0.1/32") {
		t.Errorf("no forwarding line:\n%s", p.stdout.String())
	}
	if out, err := exec.Command("ip", "-n", ns, "route", "add", "default", "dev", "ustack0").CombinedOutput(); err != nil {
		t.Fatalf("route: %v\n%s", err, out)
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "sh", "-c", "curl -sS --max-time 30 "+url+" | sha256sum").Output()
	if err != nil || string(out) != sha(content)+"  -\n" {
		t.Errorf("curl through the forwarder: %q, %v", out, err)
	}
	// The stack's own address still reaches the ACK server, not the
	// forwarder.
	if got, err := run(t, 10*time.Second, "", "ip", "netns", "exec", ns, "sh", "-c", "echo own | nc -N 198.18.0.2 5000"); err != nil || got != "ACK: own\n" {
		t.Errorf("the ACK server behind --forward: %q, %v", got, err)
	}
	s := statsJSON(t, "--netns", ns)
	if s.Forward == nil || s.Forward.TCP.Opened != 1 {
		t.Errorf("forward counters: %+v", s.Forward)
	}
	p.stop(t, syscall.SIGINT)
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }
