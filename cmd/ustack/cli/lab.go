package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

const labAbout = `
A lab without sudo: makes a user namespace and a network namespace of its
own (unprivileged user namespaces must be allowed, as on most desktop
distributions), brings up the TUN interface, the userspace stack and the ACK
server inside them, and starts a shell there — or runs COMMAND — where
  nc 198.18.0.2 5000     ping 198.18.0.2     tcpdump -ni ustack0
work. Inside, you are root of that namespace only; the machine's own
interfaces are out of reach. When the shell (or COMMAND) exits, everything is
gone. Every flag of ustack up works here too (see ustack up --help), e.g.
  ustack lab --trace --loss 5%
  ustack lab -- sh -c 'echo hi | nc -N 198.18.0.2 5000'`

// labInsideEnv marks the process that runs inside the lab's namespaces.
const labInsideEnv = "USTACK_LAB_INSIDE"

func runLab(ctx context.Context, env *Env, args []string) error {
	upArgs, command := args, []string(nil)
	for i, a := range args {
		if a == "--" {
			upArgs, command = args[:i], args[i+1:]
			break
		}
	}
	for _, a := range upArgs {
		switch a {
		case "-h", "-help", "--help":
			fs := newFlagSet("lab", "ustack lab [flags of ustack up] [-- COMMAND [ARG...]]", labAbout)
			fs.printHelp(env.Stdout)
			return errHelpShown
		}
	}
	if os.Getenv(labInsideEnv) == "1" {
		return labInside(ctx, env, upArgs, command)
	}
	return labEnter(env, args)
}

// labEnter starts this program again in a new user and network namespace,
// mapping the caller to root inside, and waits for it.
func labEnter(env *Env, args []string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the ustack program: %w", err)
	}
	cmd := exec.Command(self, append([]string{"lab"}, args...)...)
	cmd.Env = append(os.Environ(), labInsideEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, env.Stdout, env.Stderr
	uid, gid := os.Getuid(), os.Getgid()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
		GidMappingsEnableSetgroups: false,
	}
	// The lab's shell gets the terminal's Ctrl-C; this process only waits.
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
	defer signal.Reset(syscall.SIGINT, syscall.SIGQUIT)
	if err := cmd.Start(); err != nil {
		return usernsError(err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return &exitStatus{exit.ExitCode()}
	}
	return err
}

// exitStatus passes the lab command's own exit status on.
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// usernsError says why a user namespace could not be made, and what to change.
func usernsError(err error) error {
	if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("start the lab: %w", err)
	}
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	switch {
	case read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
		return usageErrorf("unprivileged user namespaces are turned off (kernel.unprivileged_userns_clone = 0): turn them on with sudo sysctl -w kernel.unprivileged_userns_clone=1, or use sudo ustack up (%v)", err)
	case read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
		return usageErrorf("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1): allow them with sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or use sudo ustack up (%v)", err)
	case read("/proc/sys/user/max_user_namespaces") == "0":
		return usageErrorf("user namespaces are turned off (user.max_user_namespaces = 0): sudo sysctl -w user.max_user_namespaces=15000, or use sudo ustack up (%v)", err)
	}
	return usageErrorf("cannot make a user namespace (%v): unprivileged user namespaces may be forbidden here (in a container, by seccomp or a security module); use sudo ustack up", err)
}

// labInside runs in the lab's namespaces: ustack up in the background, then
// the command in the foreground.
func labInside(ctx context.Context, env *Env, upArgs, command []string) error {
	lo := exec.Command("ip", "link", "set", "lo", "up")
	if err := lo.Run(); err != nil {
		// Without ip: the stack works, only loopback stays down.
		fmt.Fprintf(env.Stderr, "ustack lab: bringing lo up: %v\n", err)
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		if errors.Is(err, os.ErrPermission) {
			mode := ""
			if st, err := os.Stat("/dev/net/tun"); err == nil {
				mode = " (it is " + st.Mode().String() + ")"
			}
			return usageErrorf("your user cannot open /dev/net/tun%s: a lab without sudo needs it readable and writable by everyone, as most distributions ship it: sudo chmod 0666 /dev/net/tun", mode)
		}
		return usageErrorf("cannot open /dev/net/tun (%v): load the tun module: sudo modprobe tun", err)
	} else {
		f.Close()
	}
	// The machine's /run/ustack is not ours in here: the control socket
	// goes to a directory of the lab's own, which the shell is told.
	dir, err := os.MkdirTemp("", "ustack-lab-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Setenv("USTACK_RUN_DIR", dir)

	upCtx, stopUp := context.WithCancel(context.Background())
	defer stopUp()
	ready := make(chan struct{})
	out := &readyWriter{w: env.Stdout, ready: ready, mark: "TCP Server running"}
	upDone := make(chan error, 1)
	go func() {
		upDone <- runUp(upCtx, &Env{Stdin: nil, Stdout: out, Stderr: env.Stderr}, append([]string{"--user", "root"}, upArgs...))
	}()
	select {
	case <-ready:
	case err := <-upDone:
		if err == nil {
			err = errors.New("ustack up ended before it was ready")
		}
		return err
	case <-time.After(20 * time.Second):
		stopUp()
		<-upDone
		return errors.New("ustack up was not ready within 20 s")
	}

	if len(command) == 0 {
		shell := os.Getenv("SHELL")
		if shell == "" {
			shell = "/bin/sh"
		}
		command = []string{shell, "-i"}
		fmt.Fprintf(env.Stdout, "A shell in the lab's namespaces: try nc 198.18.0.2 5000, ping 198.18.0.2, tcpdump -ni ustack0, ustack stats. exit leaves and removes everything.\n")
	}
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, env.Stdout, env.Stderr
	cmd.Env = append(os.Environ(), "PS1=(ustack lab) \\w\\$ ", "USTACK_RUN_DIR="+dir)
	cmd.Env = removeEnv(cmd.Env, labInsideEnv)
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT) // the shell's to handle
	runErr := cmd.Run()
	signal.Reset(syscall.SIGINT, syscall.SIGQUIT)

	stopUp()
	if err := <-upDone; err != nil {
		fmt.Fprintf(env.Stderr, "ustack lab: %v\n", err)
	}
	var exit *exec.ExitError
	switch {
	case errors.As(runErr, &exit):
		return &exitStatus{exit.ExitCode()}
	case runErr != nil:
		return usageErrorf("run %s: %v", command[0], runErr)
	}
	return nil
}

func removeEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	return out
}

// readyWriter passes writes on and closes ready once mark was written.
type readyWriter struct {
	w     io.Writer
	ready chan struct{}
	mark  string
	mu    sync.Mutex
	seen  strings.Builder
	done  bool
}

func (r *readyWriter) Write(p []byte) (int, error) {
	r.mu.Lock()
	if !r.done {
		r.seen.Write(p)
		if strings.Contains(r.seen.String(), r.mark) {
			r.done = true
			close(r.ready)
		}
	}
	r.mu.Unlock()
	return r.w.Write(p)
}
