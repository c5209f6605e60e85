// Package tunif is ustack's network-access layer, the lowest of the four
// layers of the TCP/IP model: the kernel routes IP packets into a TUN
// interface, and we read them as bytes — and write bytes that the kernel
// receives as IP packets arriving on that interface.
//
// Create makes the interface and does everything the kernel needs to route
// through it: the TUN device itself (golang.zx2c4.com/wireguard/tun), its MTU,
// the host-side addresses (whose prefix routes the kernel adds), link state —
// all set through netlink (github.com/vishvananda/netlink), never by running
// ip(8). Close undoes it: the interface is not persistent, so the kernel
// removes it, with its addresses and routes, when the last file descriptor of
// the device is closed.
//
// Neighbours: stack/ (the internet and transport layers, gVisor's netstack)
// consumes the device through the tun.Device interface that Interface.Device
// returns — or, on the fast path, its frames with the virtio-net header
// through Interface.Frames (frames.go) — and never calls netlink; cmd/ustack creates the Interface and hands
// the device over. Nothing here imports gVisor (an import-graph test pins
// that): this package moves whole IP packets and does not look inside them.
//
// Tests that create interfaces run in a private network namespace; see the
// subpackage netnstest.
package tunif

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// WriteHeadroom is the number of bytes the device's Write needs free in front
// of every packet (the offset argument of tun.Device.Write must be at least
// this). The device is opened with IFF_VNET_HDR so that the kernel can hand us
// TSO superpackets and take coalesced ones (wireguard splits and coalesces
// them in user space); every packet then crosses the fd behind a
// virtio_net_hdr (struct virtio_net_hdr, 10 bytes, include/uapi/linux/
// virtio_net.h), which wireguard writes in place, just before the packet.
// Read's offset has no minimum.
const WriteHeadroom = 10

// tunClonePath is the TUN clone device; a variable so that a test can point
// it at a device node of its own.
var tunClonePath = "/dev/net/tun"

const (
	// closeTimeout bounds how long Close waits for the kernel to remove the
	// interface and for the device's goroutines to end.
	closeTimeout = 3 * time.Second
	closePoll    = 10 * time.Millisecond

	// readyTimeout bounds how long Create waits for the kernel to install
	// the routes of the addresses (see waitRoutes).
	readyTimeout = 3 * time.Second
	readyPoll    = time.Millisecond
)

// Interface is a TUN interface created by Create, with its addresses, up.
// Its methods other than Close only report what was set up; they are safe
// for concurrent use.
type Interface struct {
	dev   tun.Device
	name  string
	index int
	mtu   int
	addrs []netip.Prefix
	nl    *netlink.Handle // netlink in the interface's namespace
	ns    netns.NsHandle  // that namespace, or -1 for this process's
	netns string          // as Config.Netns said it

	eventsDone chan struct{} // closed when drainEvents returns

	closeOnce sync.Once
	closeErr  error
}

// Create creates the TUN interface cfg describes, gives it cfg.Addrs (IPv6
// ones without duplicate address detection), and sets it up. It returns once
// the kernel has installed the addresses' routes, so packets flow at once. On
// any failure it removes what it made and returns an error that wraps
// ErrPermission, ErrNoTUN or ErrNameInUse where one applies.
//
// It refuses a name that is in use rather than attach to an existing
// (persistent) TUN device: it checks with netlink first and opens the device
// with IFF_TUN_EXCL, so that the kernel says EBUSY if another process takes
// the name in between.
func Create(cfg Config) (*Interface, error) {
	if err := cfg.Validate(); err != nil {
		return nil, createError(cfg.Name, nil, err)
	}
	ns, err := openNetns(cfg.Netns)
	if err != nil {
		return nil, createError(cfg.Name, nil, err)
	}
	nl, err := netlinkAt(ns)
	if err != nil {
		ns.Close()
		return nil, createError(cfg.Name, permission(err), fmt.Errorf("open netlink in namespace %s: %w", cfg.Netns, err))
	}
	fail := func(err error) (*Interface, error) {
		nl.Close()
		ns.Close()
		return nil, err
	}
	if err := checkNameFree(nl, cfg.Name); err != nil {
		return fail(err)
	}
	var dev tun.Device
	err = inNetns(ns, func() error {
		file, err := openTUN(cfg.Name)
		if err != nil {
			return err
		}
		// CreateTUNFromFile reads back the flags, turns on the offloads,
		// sets the MTU and starts the device's goroutines (link-event
		// listeners), with sockets of the interface's namespace.
		dev, err = tun.CreateTUNFromFile(file, cfg.MTU)
		if err != nil {
			file.Close() // the kernel removes the interface with its last fd
			return createError(cfg.Name, permission(err), fmt.Errorf("set up the device: %w", err))
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	i := &Interface{
		dev:        dev,
		name:       cfg.Name,
		mtu:        cfg.MTU,
		addrs:      append([]netip.Prefix(nil), cfg.Addrs...),
		nl:         nl,
		ns:         ns,
		netns:      cfg.Netns,
		eventsDone: make(chan struct{}),
	}
	go i.drainEvents()

	if err := i.configure(cfg); err != nil {
		if cerr := i.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return i, nil
}

// checkNameFree returns an ErrNameInUse error if a link is called name.
func checkNameFree(nl *netlink.Handle, name string) error {
	if strings.Contains(name, "%") {
		return nil // a pattern: the kernel picks a free name
	}
	link, err := nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return nil
	case err != nil:
		return createError(name, permission(err), fmt.Errorf("look up link: %w", err))
	}
	return createError(name, ErrNameInUse, fmt.Errorf("a %s link of that name exists (index %d)", link.Type(), link.Attrs().Index))
}

// openTUN opens /dev/net/tun and attaches it to a new TUN interface called
// name, with the flags wireguard's tun.CreateTUN uses, plus IFF_TUN_EXCL.
// We do this part ourselves, and not through tun.CreateTUN, for three reasons:
// CreateTUN leaks the descriptor when TUNSETIFF fails, its error for a
// missing /dev/net/tun does not wrap the errno, and it cannot ask for
// IFF_TUN_EXCL.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open(tunClonePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		kind := permission(err)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			kind = ErrNoTUN
		}
		return nil, createError(name, kind, &fs.PathError{Op: "open", Path: tunClonePath, Err: err})
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, createError(name, nil, err)
	}
	// IFF_TUN: IP packets, no Ethernet header. IFF_NO_PI: no 4-byte
	// packet-information prefix. IFF_VNET_HDR: a virtio_net_hdr in front of
	// every packet, for offloads (see WriteHeadroom). IFF_TUN_EXCL: fail with
	// EBUSY if a device of that name exists, rather than attach to it.
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_TUN_EXCL)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		kind := permission(err)
		if errors.Is(err, unix.EBUSY) {
			kind = ErrNameInUse
		}
		return nil, createError(name, kind, fmt.Errorf("TUNSETIFF: %w", err))
	}
	// Non-blocking before the fd reaches os.NewFile, so that the runtime's
	// netpoller manages it (and Close unblocks a pending Read).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, createError(name, nil, fmt.Errorf("set non-blocking: %w", err))
	}
	return os.NewFile(uintptr(fd), tunClonePath), nil
}

// configure learns the kernel's name and index of the new interface, adds
// the addresses and sets the link up.
func (i *Interface) configure(cfg Config) error {
	name, err := i.dev.Name()
	if err != nil {
		return createError(cfg.Name, nil, fmt.Errorf("read the interface name: %w", err))
	}
	i.name = name
	link, err := i.nl.LinkByName(name)
	if err != nil {
		return createError(name, permission(err), fmt.Errorf("look up the new link: %w", err))
	}
	i.index = link.Attrs().Index
	if err := setUp(i.nl, i.ns, link, cfg); err != nil {
		return createError(name, permission(err), err)
	}
	if testHookConfigured != nil {
		return testHookConfigured(i)
	}
	return nil
}

// setUp gives link cfg's addresses (IPv6 ones without duplicate address
// detection) and routes, sets it up, and returns once the kernel has
// installed the addresses' routes. nl and ns are the link's namespace.
func setUp(nl *netlink.Handle, ns netns.NsHandle, link netlink.Link, cfg Config) error {
	name, index := link.Attrs().Name, link.Attrs().Index
	for _, p := range cfg.Addrs {
		if p.Addr().Is6() {
			if err := inNetns(ns, func() error { return enableIPv6(name) }); err != nil {
				return err
			}
			break
		}
	}
	for _, p := range cfg.Addrs {
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			// No duplicate address detection: nobody else is on this
			// link, and a tentative address (RFC 4862 §5.4) could not be
			// bound to for the second or so DAD takes.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := nl.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("add address %v: %w", p, err)
		}
	}
	if err := nl.LinkSetUp(link); err != nil {
		return fmt.Errorf("set link up: %w", err)
	}
	if err := waitRoutes(nl, index, cfg.Addrs); err != nil {
		return err
	}
	for _, r := range cfg.Routes {
		route := &netlink.Route{LinkIndex: index, Dst: ipNet(r.Masked()), Scope: netlink.SCOPE_LINK}
		if err := nl.RouteAdd(route); err != nil {
			return fmt.Errorf("add route %v: %w", r, err)
		}
	}
	return nil
}

// Configure does for a TUN interface that exists already, opened by other
// code, what Create does for the one it makes: it sets the link's MTU to
// cfg.MTU, gives it cfg.Addrs and cfg.Routes, sets it up, and returns once the
// kernel has installed the addresses' routes. cfg.Name names the interface
// (no "%d" pattern), in the namespace cfg.Netns. ustack bench uses it for
// the TUN of its reference peer, which gVisor's own code opens.
//
// On failure it leaves what it did: the interface goes, with its addresses
// and routes, when its owner closes the device.
func Configure(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return configureError(cfg.Name, nil, err)
	}
	if strings.Contains(cfg.Name, "%") {
		return configureError(cfg.Name, nil, errors.New("give the interface's name, not a pattern"))
	}
	ns, err := openNetns(cfg.Netns)
	if err != nil {
		return configureError(cfg.Name, nil, err)
	}
	defer ns.Close()
	nl, err := netlinkAt(ns)
	if err != nil {
		return configureError(cfg.Name, permission(err), fmt.Errorf("open netlink in namespace %s: %w", cfg.Netns, err))
	}
	defer nl.Close()
	link, err := nl.LinkByName(cfg.Name)
	if err != nil {
		return configureError(cfg.Name, permission(err), fmt.Errorf("look up link: %w", err))
	}
	if link.Attrs().MTU != cfg.MTU {
		if err := nl.LinkSetMTU(link, cfg.MTU); err != nil {
			return configureError(cfg.Name, permission(err), fmt.Errorf("set MTU %d: %w", cfg.MTU, err))
		}
	}
	if err := setUp(nl, ns, link, cfg); err != nil {
		return configureError(cfg.Name, permission(err), err)
	}
	return nil
}

// testHookConfigured, if set, runs at the end of configure; an error from
// it makes Create fail there, when everything has been made.
var testHookConfigured func(*Interface) error

// enableIPv6 turns IPv6 on for the interface if the namespace's default
// (net.ipv6.conf.default.disable_ipv6) turned it off. It touches only this
// interface, in the caller's network namespace.
func enableIPv6(name string) error {
	path := filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("IPv6 is not available in this kernel or namespace: %w", err)
	}
	if err != nil {
		return fmt.Errorf("read IPv6 state: %w", err)
	}
	if strings.TrimSpace(string(b)) == "0" {
		return nil
	}
	if err := os.WriteFile(path, []byte("0\n"), 0); err != nil {
		return fmt.Errorf("enable IPv6: %w", err)
	}
	return nil
}

// waitRoutes waits until the kernel has installed, through the interface,
// the local route of every address (table local: the address is ours, packets
// to it are delivered) and the prefix route (table main: the rest of the
// prefix is reached through the interface). For IPv4 the kernel adds both as
// the address is added. For an IPv6 address added while the link was down it
// adds them when the link comes up, from a workqueue (DAD completion, done at
// once with IFA_F_NODAD, but still deferred): a few milliseconds after
// LinkSetUp returns, in which packets to the address are dropped
// (Ip6InAddrErrors). Adding the addresses after LinkSetUp does not help: they
// go through the same deferred work.
func waitRoutes(nl *netlink.Handle, index int, addrs []netip.Prefix) error {
	if len(addrs) == 0 {
		return nil
	}
	filter := &netlink.Route{LinkIndex: index, Table: unix.RT_TABLE_UNSPEC} // all tables
	deadline := time.Now().Add(readyTimeout)
	for {
		routes, err := nl.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return fmt.Errorf("list routes: %w", err)
		}
		missing := missingRoutes(routes, addrs)
		if len(missing) == 0 && err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the kernel has not installed the routes %s after %v", strings.Join(missing, ", "), readyTimeout)
		}
		time.Sleep(readyPoll)
	}
}

// missingRoutes lists the local and prefix routes of addrs that are not
// among routes.
func missingRoutes(routes []netlink.Route, addrs []netip.Prefix) []string {
	have := make(map[string]bool, len(routes))
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		switch {
		case r.Table == unix.RT_TABLE_LOCAL && r.Type == unix.RTN_LOCAL:
			have["local "+r.Dst.String()] = true
		case r.Table == unix.RT_TABLE_MAIN:
			have[r.Dst.String()] = true
		}
	}
	var missing []string
	for _, p := range addrs {
		host := netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
		want := []string{"local " + host.String(), p.Masked().String()}
		if p.Addr().Is4() && p.Bits() == 32 {
			want = want[:1] // the kernel adds no prefix route for an IPv4 /32
		}
		for _, w := range want {
			if !have[w] {
				missing = append(missing, w)
			}
		}
	}
	return missing
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

// drainEvents consumes the device's link events (up, down, MTU changed),
// which nobody here needs: wireguard's listener goroutines block on a full
// channel otherwise. The device closes the channel once its listeners have
// stopped, after Close.
func (i *Interface) drainEvents() {
	defer close(i.eventsDone)
	for range i.dev.Events() {
	}
}

// Name returns the interface's name, as the kernel gave it (the device
// reports it): Config.Name, or with "%d" replaced by a number.
func (i *Interface) Name() string { return i.name }

// Index returns the interface index.
func (i *Interface) Index() int { return i.index }

// MTU returns the MTU the interface was created with.
func (i *Interface) MTU() int { return i.mtu }

// Addrs returns the host-side addresses given to the interface.
func (i *Interface) Addrs() []netip.Prefix { return append([]netip.Prefix(nil), i.addrs...) }

// Device returns the TUN device, for stack/: Read yields IP packets the
// kernel routed into the interface; Write hands IP packets to the kernel as
// if they had arrived on it. Write needs an offset of at least WriteHeadroom.
// Do not close the device; Close the Interface.
func (i *Interface) Device() tun.Device { return i.dev }

// Close closes the device; the kernel then removes the interface with its
// addresses and routes. A Read or Write blocked on the device returns an
// error. Close waits, at most about 3 s, until the device's goroutines have
// ended and the link is gone, and returns an error if it is not. Calling it
// again returns the first call's result.
func (i *Interface) Close() error {
	i.closeOnce.Do(func() {
		i.closeErr = i.close()
		i.nl.Close()
		i.ns.Close()
	})
	return i.closeErr
}

// Netns returns the namespace the interface is in, as Config.Netns said it
// ("" for this process's).
func (i *Interface) Netns() string { return i.netns }

func (i *Interface) close() error {
	deadline := time.Now().Add(closeTimeout)
	var errs []error
	if err := i.dev.Close(); err != nil {
		errs = append(errs, fmt.Errorf("tunif: close TUN %q: %w", i.name, err))
	}

	select {
	case <-i.eventsDone:
	case <-time.After(time.Until(deadline)):
		errs = append(errs, fmt.Errorf("tunif: close TUN %q: the device's event channel is still open after %v", i.name, closeTimeout))
	}

	// The kernel unregisters the link when the last reference to the file
	// goes, which may be a moment after Close returns: the runtime closes
	// the descriptor once a concurrent Read or Write has let go of it.
	if i.index == 0 {
		return errors.Join(errs...) // Create failed before it learnt the index
	}
	for {
		link, err := i.nl.LinkByIndex(i.index)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) || (err == nil && link.Attrs().Name != i.name) {
			break
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("the link (index %d) still exists after %v; does another process hold the device open?", i.index, closeTimeout)
			}
			errs = append(errs, fmt.Errorf("tunif: close TUN %q: %w", i.name, err))
			break
		}
		time.Sleep(closePoll)
	}
	return errors.Join(errs...)
}
