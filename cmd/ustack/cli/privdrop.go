package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// runAs is the user a stack drops to once its device and sockets exist.
type runAs struct {
	name     string
	uid, gid int
	groups   []int
}

// lookupRunAs resolves --user: a name or a numeric uid. "" means the invoking
// SUDO_USER when ustack runs under sudo, else nobody to drop to; "root" means
// keep root.
func lookupRunAs(flagValue string) (*runAs, error) {
	name := flagValue
	if name == "" {
		name = os.Getenv("SUDO_USER")
		if name == "" || name == "root" || os.Geteuid() != 0 {
			return nil, nil
		}
	}
	if name == "root" || name == "0" {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if _, numErr := strconv.Atoi(name); numErr == nil {
			u, err = user.LookupId(name)
		}
		if err != nil {
			return nil, usageErrorf("--user %q: no such user (give a user name or uid, or --user root to keep root)", name)
		}
	}
	r := &runAs{name: u.Username}
	if r.uid, err = strconv.Atoi(u.Uid); err != nil {
		return nil, usageErrorf("--user %q: uid %q is not a number", name, u.Uid)
	}
	if r.gid, err = strconv.Atoi(u.Gid); err != nil {
		return nil, usageErrorf("--user %q: gid %q is not a number", name, u.Gid)
	}
	if r.uid == 0 {
		return nil, nil
	}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				r.groups = append(r.groups, n)
			}
		}
	}
	if os.Geteuid() != 0 {
		return nil, usageErrorf("--user %s: only root can switch users: run it with sudo", r.name)
	}
	return r, nil
}

// chown gives the files that must stay the user's (the control socket, the
// pcap and probe files) to it.
func (r *runAs) chown(paths ...string) error {
	for _, p := range paths {
		if p == "" || p == "-" {
			continue
		}
		if err := os.Lchown(p, r.uid, r.gid); err != nil {
			return fmt.Errorf("give %s to %s: %w", p, r.name, err)
		}
	}
	return nil
}

// drop switches every thread of the process to the user, for good: real,
// effective and saved ids. Leaving uid 0 this way clears every capability
// (capabilities(7), "Effect of user ID changes on capabilities"). It then
// checks, thread by thread, that no capability is left, and fails otherwise.
func (r *runAs) drop() error {
	groups := r.groups
	if len(groups) == 0 {
		groups = []int{r.gid}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("drop to %s: setgroups: %w", r.name, err)
	}
	if err := syscall.Setresgid(r.gid, r.gid, r.gid); err != nil {
		return fmt.Errorf("drop to %s: setresgid: %w", r.name, err)
	}
	if err := syscall.Setresuid(r.uid, r.uid, r.uid); err != nil {
		return fmt.Errorf("drop to %s: setresuid: %w", r.name, err)
	}
	return checkDropped(r.uid)
}

// checkDropped reads every thread's ids and capabilities from /proc.
func checkDropped(uid int) error {
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		return fmt.Errorf("check the privilege drop: cannot read /proc/self/task: %v", err)
	}
	want := strconv.Itoa(uid)
	for _, t := range tasks {
		status, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		sc := bufio.NewScanner(bytes.NewReader(status))
		for sc.Scan() {
			f := bytes.Fields(sc.Bytes())
			if len(f) < 2 {
				continue
			}
			switch string(f[0]) {
			case "Uid:":
				for _, id := range f[1:] {
					if string(id) != want {
						return fmt.Errorf("after the privilege drop, thread %s still has uid %s", t, id)
					}
				}
			case "CapEff:", "CapPrm:", "CapAmb:":
				if v, err := strconv.ParseUint(string(f[1]), 16, 64); err != nil || v != 0 {
					return fmt.Errorf("after the privilege drop, thread %s still has %s %s", t, f[0], f[1])
				}
			}
		}
	}
	return nil
}

// janitorArg runs ustack as the janitor of a control socket (never typed by
// a person: the program starts it so).
const janitorArg = "__janitor"

// startJanitor starts a small root process that removes the control socket
// once this process is gone, however it ends: after the drop, this process
// may no longer remove a file in root's /run/ustack. It handles no packet and
// reads nothing but the end of a pipe.
func startJanitor(socket string) error {
	st, err := os.Lstat(socket)
	if err != nil {
		return err
	}
	ino := st.Sys().(*syscall.Stat_t).Ino
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start the control socket's janitor: %w", err)
	}
	// A raw pipe: its write end stays open, unused, for as long as this
	// process lives (an *os.File would be closed by its finalizer), and
	// the kernel closes it when the process ends, however it ends.
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return fmt.Errorf("start the control socket's janitor: %w", err)
	}
	r := os.NewFile(uintptr(fds[0]), "janitor")
	cmd := exec.Command(self, janitorArg, socket, strconv.FormatUint(ino, 10))
	cmd.Stdin = r
	// Its own process group: a Ctrl-C for ustack must not end the janitor
	// first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		syscall.Close(fds[1])
		return fmt.Errorf("start the control socket's janitor: %w", err)
	}
	r.Close()
	go cmd.Wait()
	return nil
}

// runJanitor waits until stdin ends (the ustack that started it is gone),
// then removes the socket if it is still the one of that ustack.
func runJanitor(args []string) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	if len(args) != 2 {
		return exitUsage
	}
	io.Copy(io.Discard, os.Stdin)
	st, err := os.Lstat(args[0])
	if err != nil {
		return exitOK
	}
	if st.Mode()&os.ModeSocket != 0 && strconv.FormatUint(st.Sys().(*syscall.Stat_t).Ino, 10) == args[1] {
		if err := os.Remove(args[0]); err != nil && !errors.Is(err, os.ErrNotExist) {
			return exitFailure
		}
	}
	return exitOK
}
