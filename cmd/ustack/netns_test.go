package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// TestNetns runs ustack with --netns: the interface appears in a named
// namespace the test made, `ip netns exec NAME nc` reaches the ACK server, and
// the clients and the kernel server work from there too.
func TestNetns(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	needTool(t, "ip")
	ns := "ustack-e2e-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	inNS := func(args ...string) (string, error) {
		return run(t, 20*time.Second, "", "ip", append([]string{"netns", "exec", ns}, args...)...)
	}
	inNS("ip", "link", "set", "lo", "up")

	// As nobody after the set-up, too: the drop must not break what the
	// namespace needs at teardown.
	p := start(t, "TCP Server running", "up", "--netns", ns, "--user", "nobody")
	if linkExists("ustack0") {
		t.Error("ustack0 is in the test's namespace, not in " + ns)
	}
	if out, err := run(t, 10*time.Second, "hello from the namespace\n", "ip", "netns", "exec", ns, "nc", "-N", stackV4, "5000"); err != nil || out != "ACK: hello from the namespace\n" {
		t.Fatalf("ip netns exec %s nc: %q, %v", ns, out, err)
	}
	if out := ustackCmd(t, "stats", "--netns", ns); !strings.Contains(out, "passive") {
		t.Errorf("ustack stats --netns: %s", out)
	}
	if out := ustackCmd(t, "client", "--kernel", "--netns", ns, stackV4+":5000", "kernel client"); !strings.Contains(out, "Server says: ACK: kernel client") {
		t.Errorf("client --kernel --netns:\n%s", out)
	}
	// The userspace client's own interface goes there too; the namespace's
	// kernel forwards between the two.
	inNS("sysctl", "-qw", "net.ipv4.ip_forward=1")
	if out := ustackCmd(t, "client", "--netns", ns, stackV4+":5000", "netstack client"); !strings.Contains(out, "Server says: ACK: netstack client") {
		t.Errorf("client --netns:\n%s", out)
	}
	k := start(t, "TCP Server running", "serve", "--kernel", "--netns", ns, "--listen", "127.0.0.1:6000")
	if out, err := inNS("sh", "-c", "echo kernel server | nc -N 127.0.0.1 6000"); err != nil || out != "ACK: kernel server\n" {
		t.Errorf("serve --kernel --netns: %q, %v", out, err)
	}
	k.stop(t, syscall.SIGINT)
	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("exit %d\n%s", code, p.stderr.String())
	}
	if out, err := inNS("ip", "link", "show", "ustack0"); err == nil {
		t.Errorf("ustack0 still exists in %s:\n%s", ns, out)
	}
	exec.Command("ip", "netns", "del", ns).Run()
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), ns) {
		t.Errorf("the namespace %s is still listed:\n%s", ns, out)
	}
}
