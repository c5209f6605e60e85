package cli

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/ustack/ustack/stack"
)

// forwardFlags are --forward and --allow.
type forwardFlags struct {
	on    bool
	allow string
}

func (f *forwardFlags) register(fs *flagSet) {
	fs.BoolVar(&f.on, "forward", false, "forwarding mode: connections and UDP flows the kernel routes into the interface for ANY address are terminated by the userspace stack and carried on to their destination with this process's kernel sockets (the tun2socks/slirp4netns pattern), within --allow")
	fs.StringVar(&f.allow, "allow", "", "with --forward, the destinations that may be reached: `CIDR,...`, or any (everywhere: on purpose only); default: the subnets directly connected in the namespace where ustack runs")
}

// config returns the forwarding configuration, or nil without --forward.
func (f *forwardFlags) config(tunPrefixes []netip.Prefix) (*stack.ForwardConfig, error) {
	if !f.on {
		if f.allow != "" {
			return nil, usageErrorf("--allow needs --forward")
		}
		return nil, nil
	}
	allow, err := parseAllow(f.allow)
	if err != nil {
		return nil, err
	}
	if f.allow == "" {
		if allow, err = connectedSubnets(tunPrefixes); err != nil {
			return nil, fmt.Errorf("--forward: read this namespace's routes for the default --allow: %v", err)
		}
	}
	return &stack.ForwardConfig{Allow: allow}, nil
}

// parseAllow parses --allow: prefixes separated by commas, or "any".
func parseAllow(v string) ([]netip.Prefix, error) {
	if v == "" {
		return nil, nil
	}
	if strings.EqualFold(v, "any") {
		return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, nil
	}
	var out []netip.Prefix
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		p, err := netip.ParsePrefix(item)
		if err != nil {
			a, aerr := netip.ParseAddr(item)
			if aerr != nil {
				return nil, usageErrorf("--allow %q: %q is not a CIDR like 198.18.0.0/15 or an address (or give any)", v, item)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// connectedSubnets lists the prefixes of this namespace's directly connected
// routes (scope link), but for the TUN's own.
func connectedSubnets(tun []netip.Prefix) ([]netip.Prefix, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Scope != netlink.SCOPE_LINK || r.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		p := netip.PrefixFrom(a.Unmap(), ones).Masked()
		own := false
		for _, t := range tun {
			own = own || t.Masked() == p
		}
		if !own && !p.Addr().IsLinkLocalUnicast() {
			out = append(out, p)
		}
	}
	return out, nil
}
