package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/ustack/ustack/tunif/netnstest"
)

// asNobodyWithTUN runs bin's argv as nobody, in a private mount namespace
// whose /dev/net/tun is a fresh node of the given mode (the machine's own
// node is left alone), and returns the exit status and output.
func asNobodyWithTUN(t *testing.T, mode string, bin string, args ...string) (int, string) {
	t.Helper()
	script := `set -e
d=$(mktemp -d)
mount -t tmpfs tmpfs "$d"
mknod "$d/tun" c 10 200
chmod ` + mode + ` "$d/tun"
mount --bind "$d/tun" /dev/net/tun
exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", bin}, args...)...)
	out, _ := cmd.CombinedOutput()
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestLabWithoutSudo: ustack lab, run by nobody, brings the interface, the
// stack and the server up in namespaces of its own and runs the command
// there; with a /dev/net/tun nobody may not open, it says so and what to do.
func TestLabWithoutSudo(t *testing.T) {
	netnstest.Require(t)
	for _, tool := range []string{"unshare", "setpriv", "nc", "ip"} {
		needTool(t, tool)
	}
	bin := ustackBinary(t)
	code, out := asNobodyWithTUN(t, "0666", bin, "lab", "--no-ipv6", "--", "sh", "-c", "echo from the lab | nc -N 198.18.0.2 5000 && id -u && ip -o link show ustack0")
	if code != 0 || !strings.Contains(out, "ACK: from the lab\n") || !strings.Contains(out, "\n0\n") || !strings.Contains(out, "ustack0 removed") {
		t.Errorf("ustack lab as nobody: exit %d\n%s", code, out)
	}
	if linkExists("ustack0") {
		t.Error("the lab's interface is in the test's namespace")
	}
	code, out = asNobodyWithTUN(t, "0600", bin, "lab", "--", "true")
	if code != 2 || !strings.Contains(out, "ustack lab: your user cannot open /dev/net/tun (it is Dcrw-------): a lab without sudo needs it readable and writable by everyone, as most distributions ship it: sudo chmod 0666 /dev/net/tun") {
		t.Errorf("ustack lab with a 0600 /dev/net/tun: exit %d\n%s", code, out)
	}
	code, out = asNobodyWithTUN(t, "0666", bin, "lab", "--", "sh", "-c", "exit 7")
	if code != 7 {
		t.Errorf("the lab's command's exit status is not passed on: %d\n%s", code, out)
	}
}
