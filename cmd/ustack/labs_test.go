package main

// The network-namespace labs of docs/labs.md, run as CI runs every lab: each
// script makes a namespace of its own inside the test's (unshare -n), and
// another for its "host" where it needs one, held by a process of the script
// rather than named under /run/netns.

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// namedNetns lists the named network namespaces (ip netns list): /run/netns is
// the machine's, shared by every network namespace.
func namedNetns(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v\n%s", err, out)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// runLab runs scripts/NAME with the ustack program bin, for at most limit, and
// returns its output (stdout and stderr). It fails the test when the script
// fails or overruns, and when a named network namespace appeared meanwhile, or
// this namespace's ip_forward changed: what a lab makes stays in its own.
func runLab(t *testing.T, bin string, limit time.Duration, name string, args ...string) []byte {
	t.Helper()
	return runScript(t, bin, nil, limit, name, args...)
}

// runScript is runLab with more environment for the script (VAR=value).
func runScript(t *testing.T, bin string, env []string, limit time.Duration, name string, args ...string) []byte {
	t.Helper()
	before := namedNetns(t)
	fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../../scripts/"+name, args...)
	cmd.Env = append(append(os.Environ(), "USTACK_BIN="+bin), env...)
	// Past the limit, SIGTERM: the script's trap stops the ustacks and the
	// host namespace's process it started.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second // longer than any one bounded step of a lab (curl --max-time 15)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("scripts/%s: still running after %v: %v\n%s", name, limit, err, out)
	}
	if err != nil {
		t.Fatalf("scripts/%s: %v\n%s", name, err, out)
	}
	for _, n := range namedNetns(t) {
		if !slices.Contains(before, n) {
			t.Errorf("scripts/%s left a named network namespace behind: %s", name, n)
		}
	}
	if now, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil || string(now) != string(fwd) {
		t.Errorf("scripts/%s changed ip_forward outside its namespace: %q, then %q (%v)", name, fwd, now, err)
	}
	t.Logf("scripts/%s:\n%s", name, out)
	return out
}

// mustMatch fails the test unless out has a line matching each pattern.
func mustMatch(t *testing.T, script string, out []byte, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)` + p).Match(out) {
			t.Errorf("scripts/%s: no line matching %s in\n%s", script, p, out)
		}
	}
}

// TestTwoStacksScript runs the two-stacks lab: a third userspace stack reaches
// two others through the kernel's forwarding, and only with ip_forward=1.
func TestTwoStacksScript(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	needTool(t, "unshare")
	needTool(t, "ip")
	needTool(t, "sysctl")
	bin := ustackBinary(t)
	out := runLab(t, bin, 60*time.Second, "two-stacks.sh")
	mustMatch(t, "two-stacks.sh", out,
		`^   ACK: hello A from the kernel$`,
		`^   ACK: hello B from the kernel$`,
		`^   no answer within 2s: the kernel dropped the [1-9]\d* packets it may not forward`,
		`^   Server says: ACK: hello A$`,
		`^   Server says: ACK: hello B$`,
		`^   the kernel forwarded [1-9]\d* packets between ustack1 and ustack0 \(Ip ForwDatagrams\); stack A logged "Client connected: 198\.18\.1\.2 \d+"$`,
		`^   the kernel forwarded [1-9]\d* packets between ustack1 and ustack2 \(Ip ForwDatagrams\); stack B logged "Client connected: 198\.18\.1\.2 \d+"$`,
	)
}

// TestRouterScript runs the router lab: nc from a host namespace through a
// kernel router to the ACK server, and TTL 1 expiring at the router while TTL
// 2 reaches netstack with ttl 1 left.
func TestRouterScript(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	needTool(t, "ping")
	needTool(t, "unshare")
	needTool(t, "setpriv")
	needTool(t, "nsenter")
	needTool(t, "ip")
	needTool(t, "sysctl")
	bin := ustackBinary(t)
	out := runLab(t, bin, 60*time.Second, "router.sh")
	mustMatch(t, "router.sh", out,
		`^1\. host: nc 198\.18\.0\.2 5000 → ACK: hello from the host$`,
		`^   ustack's log:   Client connected: 198\.18\.10\.2 \d+$`,
		`^   ustack's trace: → in +IPv4 198\.18\.10\.2 → 198\.18\.0\.2 ttl 63 .* SYN `,
		`^   ttl 1: From 198\.18\.10\.1 icmp_seq=1 Time to live exceeded$`,
		`^   ttl 2: 64 bytes from 198\.18\.0\.2: icmp_seq=1 ttl=63 `,
		`^ +→ in +IPv4 198\.18\.10\.2 → 198\.18\.0\.2 ttl 1 len 84 \| ICMP echo request id \d+ seq 1 `,
		`^ +← out +IPv4 198\.18\.0\.2 → 198\.18\.10\.2 ttl 64 len 84 \| ICMP echo reply id \d+ seq 1 `,
	)
}

// TestMTULabScript runs the MTU lab, small: path MTU discovery through a
// 1280-byte hop, ustack's --mss, and the host announcing MSS 1200.
func TestMTULabScript(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "curl")
	needTool(t, "unshare")
	needTool(t, "setpriv")
	needTool(t, "nsenter")
	needTool(t, "ip")
	needTool(t, "sysctl")
	bin := ustackBinary(t)
	out := runLab(t, bin, 90*time.Second, "mtu-lab.sh", "1")
	// case, bytes, seconds, ICMP in, RTOs, first packet, most packets.
	row := func(name, icmp string) string {
		return `^` + name + `\s+1000000\s+\d+\.\d\d\s+` + icmp + `\s+\d+\s+\d+\s+\d+$`
	}
	mustMatch(t, "mtu-lab.sh", out,
		row(`1\. as it is, 1st connection`, `[1-9]\d*`),
		row(`   as it is, 2nd connection`, `[1-9]\d*`),
		row(`2\. ustack up --mss 1200`, `[1-9]\d*`),
		row(`3\. the host announces mss 1200`, `0`),
		`ICMP destination unreachable \(fragmentation needed mtu 1280\) for TCP 198\.18\.0\.2:80 → 198\.18\.10\.2:\d+`,
	)
}
