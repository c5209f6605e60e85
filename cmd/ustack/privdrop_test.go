package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// procStatus returns the lines of /proc/PID/status that start with key.
func procStatus(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key+":") {
			return strings.Join(strings.Fields(strings.TrimPrefix(line, key+":")), " ")
		}
	}
	return ""
}

// TestUserDrop: ustack up --user nobody creates the device as root, then runs
// as nobody without any capability; the control socket is nobody's and
// root's only, and nothing is left when it stops, or when it is killed.
func TestUserDrop(t *testing.T) {
	netnstest.Require(t)
	needTool(t, "nc")
	if os.Geteuid() != 0 {
		netnstest.Skipf(t, "needs root to switch users")
	}
	sock := filepath.Join(os.Getenv("USTACK_RUN_DIR"), "ustack25.sock")
	for _, how := range []string{"SIGINT", "kill -9"} {
		t.Run(how, func(t *testing.T) {
			p := start(t, "TCP Server running", "up", "--name", "ustack25", "--addr", "198.18.25.1/24", "--no-ipv6", "--user", "nobody")
			pid := p.cmd.Process.Pid
			if got, err := run(t, 10*time.Second, "as nobody\n", "nc", "-N", "198.18.25.2", "5000"); err != nil || got != "ACK: as nobody\n" {
				t.Fatalf("nc: %q, %v", got, err)
			}
			if uid := procStatus(t, pid, "Uid"); uid != "65534 65534 65534 65534" {
				t.Errorf("ustack runs with uids %q, want nobody's (65534) everywhere", uid)
			}
			for _, c := range []string{"CapEff", "CapPrm", "CapAmb"} {
				if v := procStatus(t, pid, c); v != "0000000000000000" {
					t.Errorf("%s %s, want none", c, v)
				}
			}
			st, err := os.Stat(sock)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 65534 {
				t.Errorf("control socket %v owned by %d, want 0600 and nobody's", st.Mode(), st.Sys().(*syscall.Stat_t).Uid)
			}
			if out := ustackCmd(t, "stats", "--name", "ustack25"); !regexp.MustCompile(`passive`).MatchString(out) {
				t.Errorf("ustack stats as root: %s", out)
			}
			if !strings.Contains(p.stderr.String(), "running as nobody (uid 65534), without capabilities") {
				t.Errorf("no log line about the drop:\n%s", p.stderr.String())
			}
			if how == "SIGINT" {
				if code := p.stop(t, syscall.SIGINT); code != 0 {
					t.Errorf("exit %d\n%s", code, p.stderr.String())
				}
			} else {
				p.stop(t, syscall.SIGKILL)
			}
			waitFor(t, "the interface and the control socket to go", func() bool {
				_, err := os.Lstat(sock)
				return os.IsNotExist(err) && !linkExists("ustack25")
			})
		})
	}
}
