package cli

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/ustack/ustack/stack/reference"
	"github.com/ustack/ustack/tunif"
)

// benchRefArg runs ustack as ustack bench's reference peer (never typed by a
// person): the apps of --serve on gVisor's netstack with gVisor's own
// fdbased link endpoint on a TUN (package stack/reference), in the bench's
// namespace, until SIGTERM. Its flags are ustack up's link flags and --serve.
const benchRefArg = "__bench-fdbased"

// The reference peer's link in ustack bench, and the defaults of its flags.
const (
	benchRefTUN  = "ubench2"
	benchRefHost = "198.18.2.1/24"
	benchRefAddr = "198.18.2.2"
)

const benchRefAbout = `
The reference peer of ustack bench: gVisor's netstack on gVisor's fdbased
link endpoint over a TUN, with netstack's defaults, running TCP apps.
SIGINT or SIGTERM stops it and removes the interface.`

func runBenchRef(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(benchRefArg, "ustack "+benchRefArg+" [link flags] --serve KIND:PORT,...", benchRefAbout)
	var (
		link linkFlags
		logs logFlags
		srvf serverFlags
		serv string
	)
	link.register(fs, benchRefTUN, []netip.Prefix{netip.MustParsePrefix(benchRefHost)})
	logs.register(fs)
	srvf.register(fs)
	fs.StringVar(&serv, "serve", "", "the TCP apps to run, `KIND:PORT,...`: echo, discard, chargen, http")
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	specs, err := parseServe(serv)
	if err != nil {
		return usageErrorf("--serve %v", err)
	}
	for _, s := range specs {
		if s.kind == "ack" {
			return usageErrorf("--serve %s: the reference peer runs TCP apps only (ack serves UDP too)", s)
		}
	}
	plan, err := link.plan()
	if err != nil {
		return err
	}
	if plan.iface.Netns != "" {
		return usageErrorf("--netns: the reference peer makes its TUN in the namespace it runs in")
	}
	opts, err := srvf.options(logs, env)
	if err != nil {
		return err
	}

	st, err := reference.New(plan.iface.Name, plan.stack.Addrs, plan.iface.MTU)
	if err != nil {
		return err
	}
	// The kernel removes the interface, with its addresses and routes,
	// when Close closes the TUN.
	defer st.Close()
	if err := tunif.Configure(plan.iface); err != nil {
		return err
	}
	addrs := plan.stack.Addrs
	srv, err := startApps(specs, appStack{
		name: "gVisor netstack on gVisor's fdbased endpoint (reference)",
		listen: func(port uint16) ([]net.Listener, error) {
			return listenOnEach(addrs, port, st.Listen)
		},
	}, opts)
	if err != nil {
		return err
	}
	for _, line := range readyLines(specs, "gVisor fdbased reference", addrs[0].Addr()) {
		fmt.Fprintln(env.Stdout, line)
	}

	var failure error
	select {
	case <-ctx.Done():
	case <-st.Done():
		failure = st.Err()
	case err := <-srv.errc:
		srv.n--
		failure = fmt.Errorf("an app stopped: %v", err)
	}
	if err := srv.stop(); err != nil && failure == nil {
		failure = err
	}
	return failure
}
