package tunif

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/ustack/ustack/tunif/netnstest"
)

// TestConfigure gives a TUN that other code opened (here openTUN, as gVisor's
// tun.Open would) its MTU, addresses and a route, and checks what the kernel
// then has; the interface goes when the file is closed.
func TestConfigure(t *testing.T) {
	netnstest.Require(t)
	checkNoLeaks(t)
	const name = "configured0"
	file, err := openTUN(name)
	if errors.Is(err, ErrNoTUN) || errors.Is(err, ErrPermission) {
		netnstest.Skipf(t, "cannot create a TUN device here: %v", err)
	}
	if err != nil {
		t.Fatalf("openTUN: %v", err)
	}
	defer file.Close()
	cfg := Config{
		Name: name,
		MTU:  1400,
		Addrs: []netip.Prefix{
			netip.MustParsePrefix("198.18.7.1/24"),
			netip.MustParsePrefix("fd75:7374:6163:7::1/64"),
		},
		Routes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	}
	if err := Configure(cfg); err != nil {
		t.Fatalf("Configure(%+v): %v", cfg, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("LinkByName(%s): %v", name, err)
	}
	if a := link.Attrs(); a.MTU != cfg.MTU || a.Flags&net.FlagUp == 0 {
		t.Errorf("MTU %d, flags %v: want %d, up", a.MTU, a.Flags, cfg.MTU)
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
	routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"198.18.7.0/24", "192.0.2.0/24"} {
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return r.Dst != nil && r.Dst.String() == want }) {
			t.Errorf("no route to %s through %s: %v", want, name, routes)
		}
	}

	// A second Configure of the same addresses fails, and says which.
	if err := Configure(cfg); err == nil || !strings.Contains(err.Error(), `tunif: configure "configured0": add address 198.18.7.1/24`) {
		t.Errorf("second Configure: %v, want the address already there", err)
	}
}

// TestConfigureRefuses: a link that does not exist, and a name pattern.
func TestConfigureRefuses(t *testing.T) {
	netnstest.Require(t)
	for _, c := range []struct {
		name, want string
	}{
		{"absent0", `tunif: configure "absent0": look up link: Link not found`},
		{"absent%d", `tunif: configure "absent%d": give the interface's name, not a pattern`},
	} {
		err := Configure(Config{Name: c.name, MTU: DefaultMTU})
		if err == nil || err.Error() != c.want {
			t.Errorf("Configure(%s) = %v, want %q", c.name, err, c.want)
		}
	}
}
