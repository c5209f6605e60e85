// Package netnstest runs a package's tests inside a private network
// namespace, so that tests which create TUN devices, addresses and routes
// never touch the host's network.
//
// It belongs to the network-access layer (tunif/) but is used by the tests of
// every package that needs a real TUN device: tunif/, stack/ and the
// end-to-end tests. Use it from TestMain:
//
//	func TestMain(m *testing.M) { netnstest.Main(m) }
//
// and start every test that needs the namespace with netnstest.Require(t).
//
// Main re-executes the test binary (same arguments, so -test.run, -test.v,
// -test.count, -test.coverprofile, -test.fuzz… reach the child unchanged) in a
// new network namespace, adding a user namespace that maps uid/gid 0 to the
// caller when the caller is not root. The namespace holds only the devices the
// kernel creates in every namespace (lo, and the fallback tunnels of loaded
// modules); Main brings lo up and runs the tests there. The namespace and
// everything in it vanish with the child process. This is the pattern of the
// standard library's syscall/exec_linux_test.go: re-exec rather than
// unshare(2) in a running Go process, whose threads would end up in different
// namespaces.
//
// Where no namespace can be made (no root, user namespaces disabled, a
// seccomp filter), Main runs the tests in place and Require skips them with
// the reason. With USTACK_REQUIRE_NETNS=1 in the environment (CI) Require
// fails them instead, so that CI never silently skips them.
package netnstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

const (
	// ChildEnv is set to "1" in the environment of the re-executed test
	// binary. Processes the child starts (fuzz workers) inherit it and, being
	// in the child's namespace already, run their tests in place.
	ChildEnv = "USTACK_NETNS_CHILD"
	// parentNetnsEnv carries the identity (device:inode of /proc/self/ns/net)
	// of the parent's network namespace, so that the child can check it really
	// is somewhere else: a stray USTACK_NETNS_CHILD=1 in a developer's shell
	// must not make the tests run in the root namespace.
	parentNetnsEnv = "USTACK_NETNS_PARENT"
	// RequireEnv, set to "1", turns Require's skip into a failure.
	RequireEnv = "USTACK_REQUIRE_NETNS"
)

var (
	inNamespace bool   // this process runs in the private namespace
	reason      string // why not, when !inNamespace
)

// Main runs the tests of m in a private network namespace and exits with
// their status. Call it from TestMain; it does not return.
//
// In the parent it re-executes the test binary in a new network namespace,
// passes stdin, stdout and stderr through, forwards SIGINT, SIGTERM and
// SIGQUIT (go test's timeout signal) to the child and exits with the child's
// status. In the child it brings lo up and runs the tests. If the namespace
// cannot be made it runs the tests in place; Require then skips (or fails)
// the tests that need the namespace.
func Main(m *testing.M) {
	if os.Getenv(ChildEnv) == "1" {
		os.Exit(child(m))
	}
	code, err := parent()
	if err == nil {
		os.Exit(code)
	}
	reason = err.Error()
	os.Exit(m.Run())
}

// child sets up the namespace and runs the tests.
func child(m *testing.M) int {
	self, err := netnsID()
	if err != nil {
		fmt.Fprintf(os.Stderr, "netnstest: %v\n", err)
		return 2
	}
	if parent := os.Getenv(parentNetnsEnv); parent == "" || parent == self {
		// Not started by Main, or in the parent's namespace: run in place,
		// and let Require skip what needs a namespace.
		reason = fmt.Sprintf("%s=1 is set, but this process is not in a network namespace of its own (namespace %s, parent's %q)", ChildEnv, self, parent)
		return m.Run()
	}
	if err := loUp(); err != nil {
		fmt.Fprintf(os.Stderr, "netnstest: in the private network namespace: %v\n", err)
		return 2
	}
	inNamespace = true
	// The control sockets of the ustacks these tests start belong to this
	// namespace: keep them out of /run/ustack, where the root namespace's
	// ustack (or another test package's) has its own.
	if os.Getenv(RunDirEnv) == "" {
		dir, err := os.MkdirTemp("", "ustack-run-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "netnstest: %v\n", err)
			return 2
		}
		defer os.RemoveAll(dir)
		// Others may pass through (not list it): a test runs a program
		// kept in there as an unprivileged user; the sockets in it are
		// 0600 anyway.
		if err := os.Chmod(dir, 0o711); err != nil {
			fmt.Fprintf(os.Stderr, "netnstest: %v\n", err)
			return 2
		}
		os.Setenv(RunDirEnv, dir)
	}
	return m.Run()
}

// RunDirEnv names the directory of ustack's control sockets; the tests in a
// namespace get a private one.
const RunDirEnv = "USTACK_RUN_DIR"

// loUp brings the loopback interface up; a new namespace starts with it down.
func loUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil // a fuzz worker, or a test binary started by a test
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}

// parent re-executes the test binary in a new network namespace, waits for it
// and returns its exit status. It returns an error only if the child could not
// be started; the tests have not run then.
func parent() (int, error) {
	self, err := netnsID()
	if err != nil {
		return 0, err
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("re-execute the test binary: %w", err)
	}

	// Pdeathsig is delivered when the thread that started the child exits,
	// not the process: keep this goroutine on its thread for good.
	runtime.LockOSThread()

	// Catch the signals before the child exists, so none is lost.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	var cmd *exec.Cmd
	var errs []error
	for _, attr := range sysProcAttrs() {
		cmd = exec.Command(exe, os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), ChildEnv+"=1", parentNetnsEnv+"="+self)
		cmd.SysProcAttr = attr.attr
		err := cmd.Start()
		if err == nil {
			errs = nil
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", attr.what, err))
	}
	if errs != nil {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return 0, errors.New(strings.Join(msgs, "; "))
	}

	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				_ = cmd.Process.Signal(sig) // fails only once the child is gone
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)

	if err == nil {
		return 0, nil
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		fmt.Fprintf(os.Stderr, "netnstest: wait for the test process: %v\n", err)
		return 2, nil
	}
	if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		fmt.Fprintf(os.Stderr, "netnstest: the test process was killed by %v\n", ws.Signal())
		return 128 + int(ws.Signal()), nil
	}
	return exitErr.ExitCode(), nil
}

type procAttr struct {
	what string
	attr *syscall.SysProcAttr
}

// sysProcAttrs lists the ways to start the child, in order of preference.
func sysProcAttrs() []procAttr {
	netOnly := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	}
	uid, gid := os.Getuid(), os.Getgid()
	withUser := &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWNET | syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
		// An unprivileged process may write a gid map only with setgroups
		// denied (user_namespaces(7)).
		GidMappingsEnableSetgroups: false,
		Pdeathsig:                  syscall.SIGKILL,
	}
	netWhat := "new network namespace"
	userWhat := fmt.Sprintf("new user and network namespace (uid %d as 0)", uid)
	if uid == 0 {
		// Root may still lack CAP_SYS_ADMIN (a container); a user namespace
		// can stand in for it.
		return []procAttr{{netWhat, netOnly}, {userWhat, withUser}}
	}
	return []procAttr{{userWhat, withUser}}
}

// netnsID identifies the calling thread's network namespace (all threads of a
// test process share one).
func netnsID() (string, error) {
	fi, err := os.Stat("/proc/thread-self/ns/net")
	if err != nil {
		return "", fmt.Errorf("identify the network namespace: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("identify the network namespace: no stat_t for %s", fi.Name())
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino), nil
}

// InNamespace reports whether the tests run in the private network namespace
// that Main made.
func InNamespace() bool { return inNamespace }

// Require skips the test unless it runs in the private network namespace, or
// fails it if USTACK_REQUIRE_NETNS=1. Call it first in every test that creates
// devices, addresses or routes. In the namespace it does nothing.
func Require(t testing.TB) {
	t.Helper()
	if inNamespace {
		return
	}
	why := reason
	if why == "" {
		why = "netnstest.Main was not called from TestMain"
	}
	Skipf(t, "needs a private network namespace: %s", why)
}

// Skipf skips the test with the formatted reason, or fails it with the same
// reason if USTACK_REQUIRE_NETNS=1. Use it for other missing prerequisites of
// tests that CI must run, e.g. a TUN device that cannot be opened.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf(format+" (and %s=1)", append(args, RequireEnv)...)
	}
	t.Skipf(format, args...)
}
