package tunif

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ustack/ustack/tunif/netnstest"
)

// The permission test runs the test binary again as an unprivileged user,
// with an environment variable that selects helperMain instead of the tests.
const (
	helperEnv     = "TUNIF_TEST_HELPER"      // "create": run helperMain
	helperTUNPath = "TUNIF_TEST_HELPER_PATH" // the TUN clone device to open
	nobody        = 65534
)

// helperMain tries Create and prints what happened, one "key=value" a line.
// It runs in the test's private namespace (it inherits it), so even a Create
// that wrongly succeeded would touch nothing outside.
func helperMain(mode string) int {
	if mode != "create" {
		fmt.Printf("error=unknown helper mode %q\n", mode)
		return 2
	}
	if p := os.Getenv(helperTUNPath); p != "" {
		tunClonePath = p
	}
	fds := func() int {
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	// Start the runtime's netpoller (an epoll and an eventfd) before
	// counting.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := fds()
	cfg := DefaultConfig()
	cfg.Name = "ustackperm"
	i, err := Create(cfg)
	if err == nil {
		i.Close()
	}
	fmt.Printf("uid=%d\n", os.Getuid())
	fmt.Printf("permission=%t\n", errors.Is(err, ErrPermission))
	fmt.Printf("eperm=%t\neacces=%t\n", errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES))
	fmt.Printf("leaked_fds=%d\n", fds()-before)
	if fds() != before {
		ents, _ := os.ReadDir("/proc/self/fd")
		for _, e := range ents {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			fmt.Printf("fd%s=%s\n", e.Name(), l)
		}
	}
	fmt.Printf("error=%v\n", err)
	return 0
}

// TestPermission: as an unprivileged user, Create fails with ErrPermission,
// whether the TUN clone device cannot be opened (EACCES, the usual mode 0600)
// or TUNSETIFF refuses (EPERM, a mode 0666 clone device), and leaks no
// descriptor.
func TestPermission(t *testing.T) {
	netnstest.Require(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skipf("setpriv (util-linux) is needed to drop privileges: %v", err)
	}
	if !uidMapped(t, nobody) {
		t.Skipf("uid %d is not mapped in this user namespace", nobody)
	}

	// The go test work directory is private (0700): copy the binary where
	// the unprivileged user can run it.
	dir, err := os.MkdirTemp("", "tunif-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tunif.test")
	if err := copyExecutable(bin); err != nil {
		t.Fatal(err)
	}

	// A clone device node of our own, mode 0666, so that the open succeeds
	// and the kernel's capability check in TUNSETIFF is what refuses.
	openNode := filepath.Join(dir, "tun")
	if err := unix.Mknod(openNode, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		t.Fatalf("mknod %s: %v", openNode, err)
	}
	if err := os.Chmod(openNode, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, path string
	}{
		{"open", ""}, // the real /dev/net/tun
		{"TUNSETIFF", openNode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path == "" {
				if fi, err := os.Stat(tunClonePath); err != nil {
					t.Skipf("no %s: %v", tunClonePath, err)
				} else if fi.Mode().Perm()&0o006 == 0o006 {
					t.Skipf("%s is world-accessible (%v): the open succeeds; the TUNSETIFF case covers this", tunClonePath, fi.Mode())
				}
			}
			cmd := exec.Command(setpriv,
				"--reuid="+strconv.Itoa(nobody), "--regid="+strconv.Itoa(nobody), "--clear-groups",
				"--inh-caps=-all", "--bounding-set=-all", "--", bin)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), helperEnv+"=create", helperTUNPath+"="+tc.path)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			got := parseKV(string(out))
			t.Logf("helper: %s", got["error"])
			if got["uid"] != strconv.Itoa(nobody) {
				t.Fatalf("the helper ran as uid %q, want %d; output:\n%s", got["uid"], nobody, out)
			}
			if got["permission"] != "true" {
				t.Errorf("errors.Is(err, ErrPermission) is false; err = %s", got["error"])
			}
			errno := map[string]string{"open": "eacces", "TUNSETIFF": "eperm"}[tc.name]
			if got[errno] != "true" {
				t.Errorf("the error does not wrap %s: %s", strings.ToUpper(errno), got["error"])
			}
			if got["leaked_fds"] != "0" {
				t.Errorf("the failed Create leaked %s file descriptors; helper output:\n%s", got["leaked_fds"], out)
			}
			const prefix = `tunif: create TUN "ustackperm": needs CAP_NET_ADMIN: `
			if !strings.HasPrefix(got["error"], prefix) {
				t.Errorf("error %q, want %q…", got["error"], prefix)
			}
		})
	}
}

func copyExecutable(dst string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(exe)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// uidMapped reports whether uid exists in the current user namespace.
func uidMapped(t *testing.T, uid int) bool {
	f, err := os.Open("/proc/self/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var inside, outside, n int
		if _, err := fmt.Sscan(sc.Text(), &inside, &outside, &n); err == nil && uid >= inside && uid < inside+n {
			return true
		}
	}
	return false
}

func parseKV(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}
