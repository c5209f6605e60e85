package tunif

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// ErrNoNetns: the network namespace asked for does not exist.
var ErrNoNetns = errors.New("no such network namespace")

// netnsDir is where `ip netns add NAME` keeps the namespace files.
const netnsDir = "/run/netns"

// NetnsPath returns the file of a namespace given as Config.Netns takes it: a
// name made with `ip netns add` (/run/netns/NAME) or a path.
func NetnsPath(nsName string) string {
	if strings.Contains(nsName, "/") {
		return nsName
	}
	return filepath.Join(netnsDir, nsName)
}

// openNetns opens the namespace nsName names, or returns the "none" handle
// (-1) for "": this process's namespace.
func openNetns(nsName string) (netns.NsHandle, error) {
	if nsName == "" {
		return netns.None(), nil
	}
	if nsName == "." || nsName == ".." {
		return netns.None(), fmt.Errorf("network namespace %q: give a name made with ip netns add, or a path like /proc/PID/ns/net", nsName)
	}
	path := NetnsPath(nsName)
	h, err := netns.GetFromPath(path)
	switch {
	case err == nil:
		return h, nil
	case errors.Is(err, fs.ErrNotExist):
		return netns.None(), fmt.Errorf("%w %q: %s does not exist (make one with: ip netns add NAME)", ErrNoNetns, nsName, path)
	case errors.Is(err, fs.ErrPermission):
		return netns.None(), fmt.Errorf("%w: open network namespace %s: %w", ErrPermission, path, err)
	}
	return netns.None(), fmt.Errorf("open network namespace %s: %w", path, err)
}

// netlinkAt returns a netlink handle whose sockets live in ns.
func netlinkAt(ns netns.NsHandle) (*netlink.Handle, error) {
	if !ns.IsOpen() {
		return netlink.NewHandle()
	}
	return netlink.NewHandleAt(ns)
}

// inNetns runs f on an OS thread switched into ns, so that the sockets and
// devices f opens belong to it; the rest of the process stays where it is.
// With the "none" handle, f runs here.
func inNetns(ns netns.NsHandle, f func() error) error {
	if !ns.IsOpen() {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		// A thread whose namespace could not be restored is never
		// unlocked: the runtime ends it with the goroutine.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("read this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			if p := permission(err); p != nil {
				err = fmt.Errorf("%w: %w", p, err)
			}
			errc <- fmt.Errorf("enter the network namespace: %w", err)
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave the network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// InNetns runs f with the calling goroutine's OS thread in the network
// namespace nsName names ("" for this process's): sockets f opens belong to
// that namespace, and keep working from any thread afterwards.
func InNetns(nsName string, f func() error) error {
	ns, err := openNetns(nsName)
	if err != nil {
		return err
	}
	defer ns.Close()
	return inNetns(ns, f)
}

// CheckNetns reports whether the namespace nsName names can be opened.
func CheckNetns(nsName string) error {
	ns, err := openNetns(nsName)
	if err == nil {
		ns.Close()
	}
	return err
}
