package tunif

import (
	"net/netip"
	"strings"
	"testing"
)

// TestValidate needs no namespace: it runs everywhere.
func TestValidate(t *testing.T) {
	v4 := netip.MustParsePrefix("198.18.0.1/24")
	v6 := netip.MustParsePrefix("fd75:7374:6163:6b::1/64")
	ok := DefaultConfig()
	with := func(f func(*Config)) Config {
		c := DefaultConfig()
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"defaults", ok, ""},
		{"no addresses", with(func(c *Config) { c.Addrs = nil }), ""},
		{"v4 only", with(func(c *Config) { c.Addrs = []netip.Prefix{v4} }), ""},
		{"v6 only", with(func(c *Config) { c.Addrs = []netip.Prefix{v6} }), ""},
		{"host routes", with(func(c *Config) {
			c.Addrs = []netip.Prefix{netip.MustParsePrefix("10.9.8.7/32"), netip.MustParsePrefix("fd00::7/128")}
		}), ""},
		{"15-byte name", with(func(c *Config) { c.Name = "abcdefghijklmno" }), ""},
		{"1-byte name", with(func(c *Config) { c.Name = "u" }), ""},
		{"name pattern", with(func(c *Config) { c.Name = "ustack%d" }), ""},
		{"dotted name", with(func(c *Config) { c.Name = "us.tack-0_1" }), ""},

		{"empty name", with(func(c *Config) { c.Name = "" }), "interface name is empty"},
		{"16-byte name", with(func(c *Config) { c.Name = "abcdefghijklmnop" }), `interface name "abcdefghijklmnop" is 16 bytes; the limit is 15`},
		{"slash", with(func(c *Config) { c.Name = "a/b" }), `contains '/'`},
		{"colon", with(func(c *Config) { c.Name = "eth0:1" }), `contains ':'`},
		{"space", with(func(c *Config) { c.Name = "a b" }), "white space"},
		{"tab", with(func(c *Config) { c.Name = "a\tb" }), "white space"},
		{"NBSP in UTF-8", with(func(c *Config) { c.Name = "à" }), "white space"},
		{"control", with(func(c *Config) { c.Name = "a\x01" }), "control character"},
		{"dot", with(func(c *Config) { c.Name = "." }), `"." is not allowed`},
		{"dotdot", with(func(c *Config) { c.Name = ".." }), `".." is not allowed`},
		{"two patterns", with(func(c *Config) { c.Name = "u%d%d" }), `'%' may appear only once`},
		{"bad pattern", with(func(c *Config) { c.Name = "u%s" }), `'%' may appear only once`},

		{"MTU 575", with(func(c *Config) { c.MTU = 575; c.Addrs = []netip.Prefix{v4} }), "MTU 575 is out of range: it must be 576..65535"},
		{"MTU 576 v4", with(func(c *Config) { c.MTU = 576; c.Addrs = []netip.Prefix{v4} }), ""},
		{"MTU 65535", with(func(c *Config) { c.MTU = 65535 }), ""},
		{"MTU 65536", with(func(c *Config) { c.MTU = 65536 }), "MTU 65536 is out of range"},
		{"MTU 0", with(func(c *Config) { c.MTU = 0 }), "MTU 0 is out of range"},
		{"MTU 1279 with v6", with(func(c *Config) { c.MTU = 1279 }), "IPv6 needs an MTU of at least 1280"},
		{"MTU 1280 with v6", with(func(c *Config) { c.MTU = 1280 }), ""},

		{"invalid prefix", with(func(c *Config) { c.Addrs = []netip.Prefix{{}} }), "not a valid prefix"},
		{"bits too long", with(func(c *Config) { c.Addrs = []netip.Prefix{netip.PrefixFrom(v4.Addr(), 33)} }), "not a valid prefix"},
		{"unspecified v4", with(func(c *Config) { c.Addrs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")} }), "unspecified"},
		{"unspecified v6", with(func(c *Config) { c.Addrs = []netip.Prefix{netip.MustParsePrefix("::/0")} }), "unspecified"},
		{"this network", with(func(c *Config) { c.Addrs = []netip.Prefix{netip.MustParsePrefix("0.1.2.3/8")} }), "0.0.0.0/8"},
		{"multicast", with(func(c *Config) { c.Addrs = []netip.Prefix{netip.MustParsePrefix("224.0.0.1/24")} }), "multicast"},
		{"loopback v6", with(func(c *Config) { c.Addrs = []netip.Prefix{netip.MustParsePrefix("::1/128")} }), "loopback"},
		{"loopback v4", with(func(c *Config) { c.Addrs = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/8")} }), "loopback"},
		{"4in6", with(func(c *Config) { c.Addrs = []netip.Prefix{netip.MustParsePrefix("::ffff:198.18.0.1/120")} }), "give the IPv4 address 198.18.0.1/24 instead"},
		{"duplicate", with(func(c *Config) {
			c.Addrs = []netip.Prefix{v4, netip.MustParsePrefix("198.18.0.1/16")}
		}), "198.18.0.1 is given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate(%+v) = %v, want nil", tt.cfg, err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("Validate(%+v) = nil, want an error containing %q", tt.cfg, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Validate(%+v) = %q, want it to contain %q", tt.cfg, err, tt.wantErr)
			}
		})
	}
}

// TestCreateInvalid checks that Create validates before it touches the
// kernel, and says which interface it was creating.
func TestCreateInvalid(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MTU = 100
	_, err := Create(cfg)
	const want = `tunif: create TUN "ustack0": MTU 100 is out of range`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Create(MTU 100) = %v, want %q…", err, want)
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	c.Addrs[0] = netip.Prefix{}
	if !DefaultAddrs[0].IsValid() {
		t.Fatal("DefaultConfig shares its Addrs with DefaultAddrs")
	}
}
