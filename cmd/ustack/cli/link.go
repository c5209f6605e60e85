package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/tunif"
)

// prefixesFlag is a repeatable flag of addresses with prefix lengths
// (198.18.0.1/24). The first --flag on the command line replaces the defaults.
type prefixesFlag struct {
	vals []netip.Prefix
	set  bool
}

func (f *prefixesFlag) String() string { return joinStrings(f.vals) }

func (f *prefixesFlag) Set(s string) error {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not an address with a prefix length, like 198.18.0.1/24 or fd75:7374:6163:6b::1/64", s)
	}
	if p.Addr().Zone() != "" {
		return fmt.Errorf("%q: an address zone is not allowed here", s)
	}
	if p.Addr().Is4In6() {
		return fmt.Errorf("%q is an IPv4-mapped IPv6 address: give the IPv4 address, like 198.18.0.1/24", s)
	}
	if !f.set {
		f.vals, f.set = nil, true
	}
	f.vals = append(f.vals, p)
	return nil
}

// addrsFlag is a repeatable flag of plain addresses; the first --flag replaces
// the defaults.
type addrsFlag struct {
	vals []netip.Addr
	set  bool
}

func (f *addrsFlag) String() string { return joinStrings(f.vals) }

func (f *addrsFlag) Set(s string) error {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		hint := ""
		if strings.Contains(s, "/") {
			hint = " (without a prefix length: the stack takes the host side's)"
		}
		return fmt.Errorf("%q is not an IP address%s", s, hint)
	}
	if a.Zone() != "" {
		return fmt.Errorf("%q: an address zone is not allowed here", s)
	}
	if a.Is4In6() {
		return fmt.Errorf("%q is an IPv4-mapped IPv6 address: give the IPv4 address, like 198.18.0.2", s)
	}
	for _, v := range f.vals {
		if f.set && v == a {
			return fmt.Errorf("%s is given twice", a)
		}
	}
	if !f.set {
		f.vals, f.set = nil, true
	}
	f.vals = append(f.vals, a)
	return nil
}

func joinStrings[T fmt.Stringer](vals []T) string {
	s := make([]string, len(vals))
	for i, v := range vals {
		s[i] = v.String()
	}
	return strings.Join(s, ",")
}

// linkFlags are the flags that describe a TUN link with a userspace stack on
// its far end: `up` uses them as they are, `client` with a "via-" prefix.
type linkFlags struct {
	prefix    string // "" or "via-"
	name      string
	hostAddrs prefixesFlag
	stackAddr addrsFlag
	mtu       int
	noIPv6    bool
	netns     string
	offload   bool
}

// defaultStackAddr is the stack's address on a host prefix: the address after
// the host's (198.18.0.1/24 → 198.18.0.2), or the one before it when the host
// has the last usable address.
func defaultStackAddr(host netip.Prefix) netip.Addr {
	if next := host.Addr().Next(); next.IsValid() && host.Contains(next) && !isBroadcast4(host, next) {
		return next
	}
	return host.Addr().Prev()
}

func (l *linkFlags) register(fs *flagSet, name string, hosts []netip.Prefix) {
	l.name = name
	l.hostAddrs.vals = hosts
	for _, h := range hosts {
		l.stackAddr.vals = append(l.stackAddr.vals, defaultStackAddr(h))
	}
	p := l.prefix
	fs.StringVar(&l.name, p+"name", name, "`name` of the TUN interface (at most 15 bytes)")
	fs.Var(&l.hostAddrs, p+"addr", "host-side `CIDR`: the kernel's address on the link; repeat for IPv4 and IPv6")
	fs.Var(&l.stackAddr, p+"stack-addr", "the userspace stack's `address`, inside a host prefix; repeat for IPv4 and IPv6 (with only --"+p+"addr given: the address after each)")
	fs.IntVar(&l.mtu, p+"mtu", tunif.DefaultMTU, "link MTU in bytes, 576..65535 (at least 1280 with IPv6)")
	fs.BoolVar(&l.noIPv6, p+"no-ipv6", false, "IPv4 only: no IPv6 address on either side")
	l.offload = true
	fs.Var(onOff{&l.offload}, p+"offload", "the TUN's fast path (`on|off`): TCP superpackets of up to 64 KiB cross the device whole both ways "+
		"(the kernel's TSO packets are read uncut, netstack's are written with a virtio-net GSO header for the kernel to cut) and checksums the kernel "+
		"vouches for are not verified again; off, or where the kernel cannot, every packet crosses one MTU at a time through wireguard's tun.Device. "+
		"While a fault (--loss, --corrupt, …) applies to a direction, that direction's superpackets are cut into wire-sized segments with full checksums "+
		"first, so the faults and their counters are per segment, as on a wire; --trace and --pcap show a superpacket as one packet, noted TSO N×MSS")
	fs.StringVar(&l.netns, "netns", "", "create the interface in this network `NAMESPACE`: a name made with ip netns add (then: ip netns exec NAME nc ...), or a path like /proc/PID/ns/net; ustack itself stays where it is")
}

// linkPlan is a validated link: what tunif creates and what the stack takes.
type linkPlan struct {
	iface tunif.Config
	stack stack.Config
	// offload asks for the fast path (stack.Config.Frames), where the
	// device can do it.
	offload bool
}

// plan validates the flags and works out both ends' addresses.
func (l *linkFlags) plan() (linkPlan, error) {
	p := "--" + l.prefix
	hosts := l.hostAddrs.vals
	stacks := l.stackAddr.vals
	if l.hostAddrs.set && !l.stackAddr.set {
		stacks = nil
		for _, h := range hosts {
			stacks = append(stacks, defaultStackAddr(h))
		}
	}
	if l.noIPv6 {
		hosts, stacks = only4(hosts), only4(stacks)
		for _, h := range l.hostAddrs.vals {
			if h.Addr().Is6() && l.hostAddrs.set {
				return linkPlan{}, usageErrorf("%sno-ipv6 conflicts with %saddr %s", p, p, h)
			}
		}
		for _, a := range l.stackAddr.vals {
			if a.Is6() && l.stackAddr.set {
				return linkPlan{}, usageErrorf("%sno-ipv6 conflicts with %sstack-addr %s", p, p, a)
			}
		}
	}
	if len(hosts) == 0 {
		return linkPlan{}, usageErrorf("no host-side address: give %saddr", p)
	}
	has6 := false
	for _, h := range hosts {
		has6 = has6 || h.Addr().Is6()
		if h.Addr().Is4() && h.Bits() < 31 && (h.Addr() == h.Masked().Addr() || isBroadcast4(h, h.Addr())) {
			return linkPlan{}, usageErrorf("%saddr %s is the network or broadcast address of %s: give the host an address inside it, like %s/%d",
				p, h, h.Masked(), h.Masked().Addr().Next(), h.Bits())
		}
	}
	if has6 && l.mtu >= tunif.MinMTU && l.mtu < tunif.MinMTUv6 {
		return linkPlan{}, usageErrorf("%smtu %d is below IPv6's minimum link MTU of %d: raise %smtu or pass %sno-ipv6",
			p, l.mtu, tunif.MinMTUv6, p, p)
	}
	var stackPrefixes []netip.Prefix
	for _, a := range stacks {
		host, err := hostPrefixFor(a, hosts, p)
		if err != nil {
			return linkPlan{}, err
		}
		stackPrefixes = append(stackPrefixes, netip.PrefixFrom(a, host.Bits()))
	}
	for _, h := range hosts {
		if !servedBy(h, stackPrefixes) {
			return linkPlan{}, usageErrorf("%saddr %s has no userspace-stack address inside it: add %sstack-addr %s",
				p, h, p, defaultStackAddr(h))
		}
	}
	if l.netns != "" {
		if err := tunif.CheckNetns(l.netns); err != nil {
			return linkPlan{}, netnsError(err)
		}
	}
	plan := linkPlan{
		iface:   tunif.Config{Name: l.name, MTU: l.mtu, Addrs: hosts, Netns: l.netns},
		stack:   stack.Config{Addrs: stackPrefixes, MTU: l.mtu},
		offload: l.offload,
	}
	if err := plan.iface.Validate(); err != nil {
		return linkPlan{}, usageErrorf("%v", err)
	}
	return plan, nil
}

func only4[T netip.Addr | netip.Prefix](vals []T) []T {
	var out []T
	for _, v := range vals {
		if addrOf(v).Is4() {
			out = append(out, v)
		}
	}
	return out
}

func addrOf[T netip.Addr | netip.Prefix](v T) netip.Addr {
	switch v := any(v).(type) {
	case netip.Prefix:
		return v.Addr()
	default:
		return v.(netip.Addr)
	}
}

// hostPrefixFor finds the host prefix a stack address sits in, and refuses
// addresses the kernel would not route into the interface or that clash.
func hostPrefixFor(a netip.Addr, hosts []netip.Prefix, p string) (netip.Prefix, error) {
	for _, h := range hosts {
		if !h.Contains(a) {
			continue
		}
		switch {
		case a == h.Addr():
			return h, usageErrorf("%sstack-addr %s is the host side's own address: pick another address in %s, like %s",
				p, a, h.Masked(), defaultStackAddr(h))
		case a == h.Masked().Addr() && h.Bits() < a.BitLen()-1:
			return h, usageErrorf("%sstack-addr %s is the network address of %s: pick a host address, like %s",
				p, a, h.Masked(), defaultStackAddr(h))
		case isBroadcast4(h, a):
			return h, usageErrorf("%sstack-addr %s is the broadcast address of %s: pick a host address, like %s",
				p, a, h.Masked(), defaultStackAddr(h))
		}
		return h, nil
	}
	return netip.Prefix{}, usageErrorf("%sstack-addr %s is not inside any host prefix (%saddr %s): the kernel would not route it into the interface",
		p, a, p, joinStrings(hosts))
}

func servedBy(h netip.Prefix, stacks []netip.Prefix) bool {
	for _, s := range stacks {
		if h.Contains(s.Addr()) {
			return true
		}
	}
	return false
}

// isBroadcast4 tells whether a is the directed broadcast address of the IPv4
// prefix h (all host bits set; none on /31 and /32, RFC 3021).
func isBroadcast4(h netip.Prefix, a netip.Addr) bool {
	if !a.Is4() || !h.Addr().Is4() || h.Bits() >= 31 {
		return false
	}
	b := h.Masked().Addr().As4()
	for i := h.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b) == a
}

// userspaceLink is a TUN interface with a userspace stack on its far end,
// and the taps that watch it.
type userspaceLink struct {
	iface *tunif.Interface
	stack *stack.Stack
	obs   *observers
}

// bringUp opens the files the observe flags ask for, creates the interface of
// plan, opens the control socket and metrics listener, and starts the stack
// on the interface with its taps. On failure it leaves nothing behind.
func bringUp(cmd string, plan linkPlan, obsf *observeFlags, env *Env, log *slog.Logger, as *runAs) (*userspaceLink, error) {
	obs, err := obsf.open(env, log)
	if err != nil {
		return nil, err
	}
	iface, err := createInterface(cmd, plan.iface)
	if err != nil {
		obs.close()
		return nil, err
	}
	if err := obs.listen(); err != nil {
		iface.Close()
		obs.close()
		return nil, err
	}
	if as != nil {
		// Everything that needs root exists: drop to the user before the
		// first packet is read.
		if err := dropPrivileges(as, obsf); err != nil {
			iface.Close()
			obs.close()
			return nil, err
		}
		log.Info(fmt.Sprintf("running as %s (uid %d), without capabilities", as.name, as.uid))
	}
	cfg := plan.stack
	cfg.TCPProbe = obsf.probe != "" || obsf.ui != "" // the web view draws cwnd and RTT
	if plan.offload {
		frames, err := iface.Frames()
		if err != nil {
			log.Warn(fmt.Sprintf("offloads are not available, every packet crosses %s one MTU at a time: %v", iface.Name(), err))
		} else {
			cfg.Frames = frames
		}
	}
	st, err := stack.New(iface.Device(), cfg)
	if err != nil {
		iface.Close()
		obs.close()
		return nil, err
	}
	obs.attach(st)
	return &userspaceLink{iface: iface, stack: st, obs: obs}, nil
}

// summary is the line that says what is up.
func (l *userspaceLink) summary() string {
	return fmt.Sprintf("%s up: host %s  ·  userspace stack %s", l.iface.Name(),
		joinWithSpace(l.iface.Addrs()), joinWithSpace(stackAddrs(l.stack.Addrs())))
}

// tearDown prints the counters on summary (unless nil), closes the stack
// (connections are reset), lets the taps write their last packets, then
// removes the interface and waits until the kernel has.
func (l *userspaceLink) tearDown(summary io.Writer) error {
	// The counters are read while the stack still has its NIC, and printed
	// once the taps have written their last lines.
	var snap *stack.Snapshot
	if summary != nil {
		snap, _ = l.obs.snapshot()
	}
	l.stack.Close()
	tapErr := l.obs.close()
	if snap != nil {
		writeSnapshot(summary, l.iface.Name(), snap, false)
	}
	if err := l.iface.Close(); err != nil {
		return err
	}
	return tapErr
}

func stackAddrs(ps []netip.Prefix) []netip.Addr {
	out := make([]netip.Addr, len(ps))
	for i, p := range ps {
		out[i] = p.Addr()
	}
	return out
}

func joinWithSpace[T fmt.Stringer](vals []T) string {
	return strings.ReplaceAll(joinStrings(vals), ",", ", ")
}

// createInterface creates the TUN interface, turning tunif's errors into the
// remedy a person needs.
func createInterface(cmd string, cfg tunif.Config) (*tunif.Interface, error) {
	iface, err := tunif.Create(cfg)
	switch {
	case err == nil:
		return iface, nil
	case errors.Is(err, tunif.ErrPermission):
		return nil, usageErrorf("ustack %s needs CAP_NET_ADMIN: run it with sudo (%v)", cmd, err)
	case errors.Is(err, tunif.ErrNoTUN):
		return nil, usageErrorf("ustack %s cannot open /dev/net/tun: load the tun module: sudo modprobe tun (%v)", cmd, err)
	case errors.Is(err, tunif.ErrNameInUse):
		if cfg.Netns != "" {
			return nil, usageErrorf("an interface named %q already exists in network namespace %s: pick another --name, or remove it with: sudo ip -n %s link del %s", cfg.Name, cfg.Netns, cfg.Netns, cfg.Name)
		}
		return nil, usageErrorf("an interface named %q already exists: pick another --name, or remove it with: sudo ip link del %s", cfg.Name, cfg.Name)
	case errors.Is(err, tunif.ErrNoNetns):
		return nil, netnsError(err)
	}
	return nil, &usageError{err}
}

// dropPrivileges gives the files that stay in use to the user, leaves a
// janitor behind for the control socket, and drops.
func dropPrivileges(as *runAs, obsf *observeFlags) error {
	control := ""
	if obsf.control != "off" {
		control = obsf.control
	}
	pcap := obsf.pcap
	if err := as.chown(control, pcap, obsf.probe); err != nil {
		return err
	}
	if control != "" {
		if err := startJanitor(control); err != nil {
			return err
		}
	}
	return as.drop()
}

// netnsError turns a namespace that cannot be opened into what to do.
func netnsError(err error) error {
	switch {
	case errors.Is(err, tunif.ErrNoNetns):
		return usageErrorf("--netns: %v", strings.TrimPrefix(err.Error(), "tunif: "))
	case errors.Is(err, tunif.ErrPermission):
		return usageErrorf("--netns: %v: entering another network namespace needs CAP_SYS_ADMIN: run it with sudo", err)
	}
	return usageErrorf("--netns: %v", err)
}
