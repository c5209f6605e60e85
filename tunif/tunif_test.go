package tunif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ustack/ustack/tunif/netnstest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode)) // see permission_test.go
	}
	netnstest.Main(m)
}

// mustCreate creates an interface for a test that runs in the private
// namespace, and closes it when the test ends. A TUN device that cannot be
// made (no driver, no rights in a user namespace) skips the test, or fails
// it under USTACK_REQUIRE_NETNS=1.
func mustCreate(t *testing.T, cfg Config) *Interface {
	t.Helper()
	i, err := Create(cfg)
	if errors.Is(err, ErrNoTUN) || errors.Is(err, ErrPermission) {
		netnstest.Skipf(t, "cannot create a TUN device here: %v", err)
	}
	if err != nil {
		t.Fatalf("Create(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := i.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return i
}

// checkNoLeaks makes sure that when the test has ended (and its cleanups,
// registered after this call, have run) no goroutine and no file descriptor
// is left over.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	// Start the runtime's netpoller now, so its descriptors are counted
	// before.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()
	existing, fds := goleak.IgnoreCurrent(), countFDs(t)
	t.Cleanup(func() {
		goleak.VerifyNone(t, existing)
		deadline := time.Now().Add(2 * time.Second)
		for f := countFDs(t); f > fds; f = countFDs(t) {
			if time.Now().After(deadline) {
				t.Errorf("leak: %d file descriptors open, %d before", f, fds)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestCreateDefaults(t *testing.T) {
	netnstest.Require(t)
	checkNoLeaks(t)
	cfg := DefaultConfig()
	i := mustCreate(t, cfg)

	if got := i.Name(); got != "ustack0" {
		t.Errorf("Name() = %q, want ustack0", got)
	}
	if got := i.MTU(); got != 1500 {
		t.Errorf("MTU() = %d, want 1500", got)
	}
	if got := i.Addrs(); !slices.Equal(got, cfg.Addrs) {
		t.Errorf("Addrs() = %v, want %v", got, cfg.Addrs)
	}
	dev := i.Device()
	if name, err := dev.Name(); err != nil || name != "ustack0" {
		t.Errorf("Device().Name() = %q, %v; want ustack0", name, err)
	}
	if mtu, err := dev.MTU(); err != nil || mtu != 1500 {
		t.Errorf("Device().MTU() = %d, %v; want 1500", mtu, err)
	}
	if dev.BatchSize() < 1 {
		t.Errorf("Device().BatchSize() = %d", dev.BatchSize())
	}

	link, err := netlink.LinkByName("ustack0")
	if err != nil {
		t.Fatalf("LinkByName(ustack0): %v", err)
	}
	a := link.Attrs()
	if link.Type() != "tuntap" {
		t.Errorf("link type %q, want tuntap", link.Type())
	}
	if a.Index != i.Index() || a.Index <= 0 {
		t.Errorf("link index %d, Index() = %d", a.Index, i.Index())
	}
	if a.Flags&net.FlagUp == 0 || a.Flags&net.FlagRunning == 0 {
		t.Errorf("link flags %v, want up and running", a.Flags)
	}
	if a.MTU != 1500 {
		t.Errorf("link MTU %d, want 1500", a.MTU)
	}

	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("AddrList: %v", err)
	}
	for _, want := range cfg.Addrs {
		idx := slices.IndexFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == want.String() })
		if idx < 0 {
			t.Errorf("address %v missing; have %v", want, addrs)
			continue
		}
		if got := addrs[idx]; want.Addr().Is6() && got.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			t.Errorf("address %v has flags %#x: tentative or DAD failed, want usable at once", want, got.Flags)
		}
	}

	// The kernel made the prefix routes, through this interface.
	for _, want := range cfg.Addrs {
		fam := netlink.FAMILY_V4
		if want.Addr().Is6() {
			fam = netlink.FAMILY_V6
		}
		routes, err := netlink.RouteList(link, fam)
		if err != nil {
			t.Fatalf("RouteList: %v", err)
		}
		ok := slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return r.Dst != nil && r.Dst.String() == want.Masked().String() && r.LinkIndex == i.Index()
		})
		if !ok {
			t.Errorf("no route to %v through ustack0; routes: %v", want.Masked(), routes)
		}
	}

	if err := i.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var notFound netlink.LinkNotFoundError
	if l, err := netlink.LinkByName("ustack0"); !errors.As(err, &notFound) {
		t.Errorf("after Close, LinkByName(ustack0) = %v, %v; want LinkNotFoundError", l, err)
	}
	if err := i.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestCreateNamePattern: the kernel fills in "%d", and Name reports what it
// chose.
func TestCreateNamePattern(t *testing.T) {
	netnstest.Require(t)
	checkNoLeaks(t)
	cfg := Config{Name: "ut%d", MTU: 1280}
	a := mustCreate(t, cfg)
	b := mustCreate(t, cfg)
	if a.Name() != "ut0" || b.Name() != "ut1" {
		t.Errorf("names %q and %q, want ut0 and ut1", a.Name(), b.Name())
	}
	for _, i := range []*Interface{a, b} {
		if l, err := netlink.LinkByIndex(i.Index()); err != nil || l.Attrs().Name != i.Name() {
			t.Errorf("LinkByIndex(%d) = %v, %v; want %s", i.Index(), l, err, i.Name())
		}
	}
}

func linkNames(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("LinkList: %v", err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

// addOtherLink adds a link that is not a TUN called name, of the first kind
// the kernel supports (the dummy module is not always there), and deletes it
// when the test ends.
func addOtherLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	attrs := netlink.LinkAttrs{Name: name}
	var errs []error
	for _, l := range []netlink.Link{
		&netlink.Dummy{LinkAttrs: attrs},
		&netlink.Bridge{LinkAttrs: attrs},
		&netlink.Ifb{LinkAttrs: attrs},
	} {
		err := netlink.LinkAdd(l)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.Type(), err))
			continue
		}
		t.Cleanup(func() {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete %s link %s: %v", l.Type(), name, err)
			}
		})
		return l
	}
	t.Fatalf("add a link called %s: %v", name, errors.Join(errs...))
	return nil
}

func TestNameInUse(t *testing.T) {
	netnstest.Require(t)
	checkNoLeaks(t)

	t.Run("other link", func(t *testing.T) {
		other := addOtherLink(t, "ustack0")
		before := linkNames(t)
		i, err := Create(DefaultConfig())
		if err == nil {
			i.Close()
			t.Fatalf("Create succeeded with a %s link called ustack0", other.Type())
		}
		if !errors.Is(err, ErrNameInUse) {
			t.Fatalf("Create: %v; want ErrNameInUse", err)
		}
		want := `tunif: create TUN "ustack0": interface name in use: a ` + other.Type() + ` link of that name exists`
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("error %q, want %q…", err, want)
		}
		if after := linkNames(t); !slices.Equal(before, after) {
			t.Errorf("links changed: before %v, after %v", before, after)
		}

		// Were another process to take the name between the check and
		// TUNSETIFF, IFF_TUN_EXCL makes the kernel refuse (EBUSY).
		f, err := openTUN("ustack0")
		if errors.Is(err, ErrNoTUN) || errors.Is(err, ErrPermission) {
			netnstest.Skipf(t, "cannot open a TUN device here: %v", err)
		}
		if err == nil {
			f.Close()
			t.Fatalf("openTUN succeeded with a %s link called ustack0", other.Type())
		}
		if !errors.Is(err, ErrNameInUse) || !errors.Is(err, unix.EBUSY) {
			t.Errorf("openTUN: %v; want ErrNameInUse and EBUSY", err)
		}
	})

	t.Run("tun", func(t *testing.T) {
		first := mustCreate(t, DefaultConfig())
		_, err := Create(DefaultConfig())
		if !errors.Is(err, ErrNameInUse) {
			t.Fatalf("second Create: %v; want ErrNameInUse", err)
		}
		// The first one is untouched.
		if l, err := netlink.LinkByIndex(first.Index()); err != nil || l.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("first interface after the failed Create: %v, %v", l, err)
		}
	})
}

// TestCreateRollback: a failure after everything was made leaves nothing
// behind.
func TestCreateRollback(t *testing.T) {
	netnstest.Require(t)
	checkNoLeaks(t)
	before := linkNames(t)
	boom := errors.New("boom")
	var seen int
	testHookConfigured = func(i *Interface) error {
		seen = i.Index()
		return boom
	}
	t.Cleanup(func() { testHookConfigured = nil })

	i, err := Create(DefaultConfig())
	if errors.Is(err, ErrNoTUN) || errors.Is(err, ErrPermission) {
		netnstest.Skipf(t, "cannot create a TUN device here: %v", err)
	}
	if err == nil {
		i.Close()
		t.Fatal("Create succeeded despite the hook's error")
	}
	if !errors.Is(err, boom) {
		t.Errorf("Create: %v; want the hook's error", err)
	}
	if seen == 0 {
		t.Fatal("the hook did not run")
	}
	if l, err := netlink.LinkByIndex(seen); err == nil {
		t.Errorf("link %d (%s) still exists after the failed Create", seen, l.Attrs().Name)
	}
	if after := linkNames(t); !slices.Equal(before, after) {
		t.Errorf("links changed: before %v, after %v", before, after)
	}
}

// TestIPv6DisabledByDefault: Create turns IPv6 on for its interface when
// new interfaces start with it off.
func TestIPv6DisabledByDefault(t *testing.T) {
	netnstest.Require(t) // never write sysctls outside the private namespace
	const defaultPath = "/proc/sys/net/ipv6/conf/default/disable_ipv6"
	old, err := os.ReadFile(defaultPath)
	if err != nil {
		netnstest.Skipf(t, "IPv6 is not available: %v", err)
	}
	if err := os.WriteFile(defaultPath, []byte("1\n"), 0); err != nil {
		t.Fatalf("disable IPv6 on new interfaces: %v", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(defaultPath, old, 0); err != nil {
			t.Errorf("restore %s: %v", defaultPath, err)
		}
	})

	i := mustCreate(t, DefaultConfig())
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/ustack0/disable_ipv6")
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		t.Errorf("ustack0 disable_ipv6 = %q, %v; want 0", b, err)
	}
	link, err := netlink.LinkByIndex(i.Index())
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultAddrs[1].String()
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == want }) {
		t.Errorf("IPv6 address %s missing: %v", want, addrs)
	}
	// Bindable at once: not tentative.
	c, err := net.ListenUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(DefaultAddrs[1].Addr(), 0)))
	if err != nil {
		t.Fatalf("bind to %v: %v", DefaultAddrs[1].Addr(), err)
	}
	c.Close()
}

// TestCreateManyAddrs: /32 and /128 host addresses (no IPv4 prefix route),
// several addresses per family, no IPv6 at all, and MTUs at the limits.
func TestCreateManyAddrs(t *testing.T) {
	netnstest.Require(t)
	checkNoLeaks(t)
	for _, cfg := range []Config{
		{Name: "hosts", MTU: 9000, Addrs: []netip.Prefix{
			netip.MustParsePrefix("10.9.8.7/32"), netip.MustParsePrefix("fd00::7/128"),
			netip.MustParsePrefix("10.1.0.1/31"), netip.MustParsePrefix("fd00:1::1/127"),
			netip.MustParsePrefix("172.16.5.1/16"), netip.MustParsePrefix("172.16.5.2/16"), // the second one is secondary
		}},
		{Name: "v4only", MTU: MinMTU, Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24")}},
		{Name: "bare", MTU: MaxMTU},
	} {
		t.Run(cfg.Name, func(t *testing.T) {
			i := mustCreate(t, cfg)
			link, err := netlink.LinkByIndex(i.Index())
			if err != nil {
				t.Fatal(err)
			}
			if link.Attrs().MTU != cfg.MTU {
				t.Errorf("MTU %d, want %d", link.Attrs().MTU, cfg.MTU)
			}
			addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range cfg.Addrs {
				if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == want.String() }) {
					t.Errorf("address %v missing: %v", want, addrs)
				}
			}
		})
	}
}
