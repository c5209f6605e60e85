package tunif

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"
)

// Defaults: a person types `sudo ustack up` and nothing else.
const (
	DefaultName = "ustack0"
	DefaultMTU  = 1500
)

// DefaultAddrs are the host-side addresses of the default interface: the
// kernel's end of the link. 198.18.0.0/15 is reserved for benchmarking (RFC
// 2544) and rarely collides with real networks; fd75:7374:6163:6b::/64 is a
// unique local prefix (RFC 4193) that spells "ustack" in hex. The userspace
// stack takes ::2 and .2 of the same prefixes.
var DefaultAddrs = []netip.Prefix{
	netip.MustParsePrefix("198.18.0.1/24"),
	netip.MustParsePrefix("fd75:7374:6163:6b::1/64"),
}

// Limits checked by Validate.
const (
	// MaxNameLen is the longest interface name the kernel accepts: IFNAMSIZ
	// (16) bytes including the terminating NUL.
	MaxNameLen = unix.IFNAMSIZ - 1
	// MinMTU is the smallest datagram every IPv4 host must accept (RFC 791,
	// RFC 1122 §3.3.2).
	MinMTU = 576
	// MinMTUv6 is IPv6's minimum link MTU (RFC 8200 §5). Below it the kernel
	// turns IPv6 off on the interface and drops its addresses.
	MinMTUv6 = 1280
	// MaxMTU is the largest MTU of a Linux TUN device (and of an IPv4
	// datagram).
	MaxMTU = 65535
)

// Config describes the TUN interface to create.
type Config struct {
	// Name is the requested interface name, e.g. "ustack0": 1..15 bytes, no
	// '/', ':' or whitespace, not "." or "..". It may contain one "%d",
	// which the kernel replaces with the lowest free number ("ustack%d" →
	// "ustack0"); Interface.Name reports the result.
	Name string
	// MTU is the link MTU, MinMTU..MaxMTU; at least MinMTUv6 when Addrs has
	// an IPv6 address.
	MTU int
	// Addrs are the host-side addresses, IPv4 and/or IPv6, each with the
	// prefix length of the link (198.18.0.1/24). The kernel adds a route for
	// each prefix through the interface. None is valid too: the interface
	// is then only up.
	Addrs []netip.Prefix
	// Routes are more destinations to route through the interface, on top
	// of the prefixes of Addrs: 0.0.0.0/0 and ::/0 make it the default
	// route. Each needs an address of its family in Addrs.
	Routes []netip.Prefix
	// Netns is the network namespace to create the interface in: "" for
	// this process's, a name made with `ip netns add NAME` (a file under
	// /run/netns), or the path of a namespace file such as
	// /proc/PID/ns/net. Only the interface goes there: the process stays
	// where it is, and reads and writes the device from here.
	Netns string
}

// DefaultConfig returns the configuration of `ustack up` without flags.
func DefaultConfig() Config {
	return Config{
		Name:  DefaultName,
		MTU:   DefaultMTU,
		Addrs: append([]netip.Prefix(nil), DefaultAddrs...),
	}
}

// Validate reports the first problem with c, or nil. It checks, before
// anything is created, what the kernel would reject and a few addresses that
// cannot work on a TUN link (loopback, 0.0.0.0/8, IPv4-mapped), and says why.
func (c Config) Validate() error {
	if err := validateName(c.Name); err != nil {
		return err
	}
	if c.MTU < MinMTU || c.MTU > MaxMTU {
		return fmt.Errorf("MTU %d is out of range: it must be %d..%d", c.MTU, MinMTU, MaxMTU)
	}
	seen := make(map[netip.Addr]netip.Prefix, len(c.Addrs))
	for _, p := range c.Addrs {
		a := p.Addr()
		switch {
		case !p.IsValid():
			return fmt.Errorf("address %v is not a valid prefix (want e.g. 198.18.0.1/24)", p)
		case a.Is4In6():
			return fmt.Errorf("address %v is IPv4-mapped IPv6: give the IPv4 address %v/%d instead", p, a.Unmap(), p.Bits()-96)
		case a.IsUnspecified():
			return fmt.Errorf("address %v is unspecified", p)
		case a.Is4() && a.As4()[0] == 0:
			return fmt.Errorf("address %v is in 0.0.0.0/8, which means \"this network\" and is no host's address (RFC 1122 §3.2.1.3)", p)
		case a.IsLoopback():
			// The kernel refuses ::1 on any device but lo (EADDRNOTAVAIL),
			// and 127.0.0.0/8 is routed to lo whatever else claims it.
			return fmt.Errorf("address %v is a loopback address", p)
		case a.IsMulticast():
			return fmt.Errorf("address %v is multicast; an interface address must be unicast", p)
		case a.Is6() && c.MTU < MinMTUv6:
			return fmt.Errorf("address %v needs IPv6, and IPv6 needs an MTU of at least %d (RFC 8200 §5); the MTU is %d", p, MinMTUv6, c.MTU)
		}
		if prev, ok := seen[a]; ok {
			return fmt.Errorf("address %v is given twice (%v and %v)", a, prev, p)
		}
		seen[a] = p
	}
	for _, r := range c.Routes {
		if !r.IsValid() || r.Addr().Is4In6() {
			return fmt.Errorf("route %v is not a valid prefix (want e.g. 0.0.0.0/0)", r)
		}
		has := false
		for _, p := range c.Addrs {
			has = has || p.Addr().Is4() == r.Addr().Is4()
		}
		if !has {
			return fmt.Errorf("route %v needs an IPv%d address on the interface", r, map[bool]int{true: 4, false: 6}[r.Addr().Is4()])
		}
	}
	return nil
}

// validateName applies the kernel's dev_valid_name (net/core/dev.c) and, for
// a name with '%', dev_alloc_name's single "%d".
func validateName(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("interface name %q is %d bytes; the limit is %d", name, len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is not allowed", name)
	}
	for i := 0; i < len(name); i++ {
		switch b := name[i]; {
		case b == '/' || b == ':':
			return fmt.Errorf("interface name %q contains %q", name, b)
		case isSpace(b):
			return fmt.Errorf("interface name %q contains white space (byte %d is %#02x)", name, i, b)
		case b < 0x20 || b == 0x7f:
			return fmt.Errorf("interface name %q contains a control character (byte %d is %#02x)", name, i, b)
		}
	}
	if n := strings.Count(name, "%"); n > 0 {
		if n != 1 || strings.Count(name, "%d") != 1 {
			return fmt.Errorf("interface name %q: '%%' may appear only once, as \"%%d\" (the kernel puts a number there)", name)
		}
	}
	return nil
}

// isSpace is the kernel's isspace: ASCII white space and Latin-1 NBSP
// (lib/ctype.c marks 0xa0 as space).
func isSpace(b byte) bool {
	switch b {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0xa0:
		return true
	}
	return false
}
