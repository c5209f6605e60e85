package tunif

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzConfigValidate runs Config.Validate on arbitrary names, MTUs and
// addresses (a comma-separated list, each parsed with netip.ParsePrefix; one
// that does not parse is the zero, invalid, Prefix) and checks it against
// configProblem, a slower reference written from the rules as Config's doc
// states them. It checks: no panic; Validate accepts exactly what the
// reference accepts, so an accepted name is 1..15 bytes without '/', ':',
// NUL or other control bytes, or white space, and an accepted MTU is in
// MinMTU..MaxMTU (MinMTUv6.. with an IPv6 address); a refusal is one
// non-empty line that starts with what is wrong first, in the order name,
// MTU, addresses.
func FuzzConfigValidate(f *testing.F) {
	for _, c := range []struct {
		name  string
		mtu   int
		addrs string
	}{
		{DefaultName, DefaultMTU, "198.18.0.1/24,fd75:7374:6163:6b::1/64"},
		{"u", MinMTU, "10.0.0.1/8"},
		{"abcdefghijklmno", MaxMTU, ""},
		{"abcdefghijklmnop", 1500, ""},
		{"ustack%d", 1500, "198.18.0.1/24"},
		{"u%d%d", 1500, ""},
		{"u%s", 1500, ""},
		{"", 1500, ""},
		{".", 1500, ""},
		{"..", 1500, ""},
		{"a/b", 1500, ""},
		{"eth0:1", 1500, ""},
		{"a b", 1500, ""},
		{"a\x00b", 1500, ""},
		{"\xc3\xa0", 1500, ""},
		{"a\x7f", 1500, ""},
		{"mtu", MinMTU - 1, ""},
		{"mtu", MaxMTU + 1, ""},
		{"mtu", -1, ""},
		{"v6", MinMTUv6 - 1, "fd00::1/64"},
		{"v6", MinMTUv6, "fd00::1/64"},
		{"addrs", 1500, "198.18.0.1/24,198.18.0.1/16"},
		{"addrs", 1500, "0.1.2.3/8"},
		{"addrs", 1500, "::/0"},
		{"addrs", 1500, "::1/128"},
		{"addrs", 1500, "127.0.0.2/8"},
		{"addrs", 1500, "224.0.0.1/24"},
		{"addrs", 1500, "::ffff:198.18.0.1/120"},
		{"addrs", 1500, "not an address"},
		{"addrs", 1500, "198.18.0.1/33"},
	} {
		f.Add(c.name, c.mtu, c.addrs)
	}
	f.Fuzz(func(t *testing.T, name string, mtu int, addrs string) {
		c := Config{Name: name, MTU: mtu}
		if addrs != "" {
			for _, s := range strings.Split(addrs, ",") {
				p, _ := netip.ParsePrefix(s) // the zero Prefix when it does not parse
				c.Addrs = append(c.Addrs, p)
			}
		}
		err := c.Validate()
		want := configProblem(c)
		switch {
		case err == nil && want != "":
			t.Fatalf("Validate(%+v) accepted it, but its %s is wrong", c, want)
		case err != nil && want == "":
			t.Fatalf("Validate(%+v) = %q, but the reference finds nothing wrong", c, err)
		case err != nil:
			msg := err.Error()
			if strings.TrimSpace(msg) == "" || strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("Validate(%+v) = %q: not one non-empty line", c, msg)
			}
			if !strings.HasPrefix(msg, want) {
				t.Fatalf("Validate(%+v) = %q: want it to start with %q, the first thing wrong", c, msg, want)
			}
		}
	})
}

// configProblem is the reference for Validate: the first part of c that is
// wrong ("interface name", "MTU" or "address"), or "" when c is valid. It
// spells out the rules of the Config doc one by one, without Validate's
// helpers.
func configProblem(c Config) string {
	if !nameOK(c.Name) {
		return "interface name"
	}
	if c.MTU < 576 || c.MTU > 65535 {
		return "MTU"
	}
	seen := map[netip.Addr]bool{}
	for _, p := range c.Addrs {
		a := p.Addr()
		switch {
		case !p.IsValid(),
			a.Is4In6(),
			a.IsUnspecified(),
			a.Is4() && a.As4()[0] == 0, // 0.0.0.0/8
			a.IsLoopback(),
			a.IsMulticast(),
			a.Is6() && c.MTU < 1280, // RFC 8200 §5
			seen[a]:
			return "address"
		}
		seen[a] = true
	}
	return ""
}

// nameOK is the kernel's rule for an interface name (dev_valid_name), and
// dev_alloc_name's for a pattern: 1..15 bytes; not "." or ".."; no '/' or
// ':'; no byte the kernel's isspace calls white space (ASCII's, and 0xa0); no
// control byte (NUL included); '%' only once, as "%d".
func nameOK(name string) bool {
	if len(name) < 1 || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	for _, b := range []byte("/: \t\n\v\f\r\xa0\x7f") {
		if strings.IndexByte(name, b) >= 0 {
			return false
		}
	}
	for b := range byte(0x20) {
		if strings.IndexByte(name, b) >= 0 {
			return false
		}
	}
	switch strings.Count(name, "%") {
	case 0:
		return true
	case 1:
		return strings.Contains(name, "%d")
	}
	return false
}
