package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ustack/ustack/tunif"
)

const runAbout = `
Runs COMMAND in a fresh network namespace whose only route goes through a
ustack interface in forwarding mode: every TCP connection and UDP flow
COMMAND makes is terminated by the userspace stack and carried on to its
destination with ustack's own kernel sockets, from the namespace ustack runs
in. So --trace, --pcap, --tcp-probe and the fault flags apply to COMMAND's
traffic:
  sudo ustack run --trace -- curl http://10.0.0.5/
  sudo ustack run --loss 5% -- curl -o /dev/null http://10.0.0.5/big
Destinations are limited by --allow (default: the subnets directly connected
where ustack runs; --allow any opens it on purpose). COMMAND runs as root, with
ustack's environment; the namespace has no DNS server of its own (use
addresses, or a resolver in an allowed subnet). COMMAND's exit status is
ustack's. ustack's own lines go to stderr.`

// netnsHolderArg runs ustack as the holder of a fresh network namespace (never
// typed by a person).
const netnsHolderArg = "__netns"

func runRun(ctx context.Context, env *Env, args []string) error {
	upArgs, command := args, []string(nil)
	for i, a := range args {
		if a == "--" {
			upArgs, command = args[:i], args[i+1:]
			break
		}
	}
	fs := newFlagSet("run", "sudo ustack run [flags] -- COMMAND [ARG...]", runAbout)
	var (
		link = linkFlags{}
		logs logFlags
		obsf observeFlags
		tcpf tcpFlags
		ff   faultFlags
		fwd  forwardFlags
	)
	link.register(fs, tunif.DefaultName, []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("fd75:7374:6163:6b::1/64")})
	logs.register(fs)
	obsf.register(fs)
	tcpf.register(fs)
	ff.register(fs)
	fs.StringVar(&fwd.allow, "allow", "", "the destinations COMMAND may reach: `CIDR,...`, or any (everywhere: on purpose only); default: the subnets directly connected in the namespace where ustack runs")
	if err := parseFlagsOnly(fs, env, upArgs); err != nil {
		return err
	}
	if len(command) == 0 {
		return usageErrorf("missing COMMAND: ustack run [flags] -- COMMAND [ARG...], like ustack run -- curl http://10.0.0.5/")
	}
	if link.netns != "" {
		return usageErrorf("--netns: ustack run makes the namespace for COMMAND itself")
	}
	fwd.on = true
	log, err := logs.logger(env.Stderr)
	if err != nil {
		return err
	}

	// A namespace for COMMAND, held by a child that lives until we let go.
	holder, nsPath, err := holdNetns()
	if err != nil {
		return err
	}
	defer holder()
	link.netns = nsPath
	plan, err := link.plan()
	if err != nil {
		return err
	}
	for _, a := range plan.iface.Addrs {
		if a.Addr().Is4() {
			plan.iface.Routes = append(plan.iface.Routes, netip.MustParsePrefix("0.0.0.0/0"))
		} else {
			plan.iface.Routes = append(plan.iface.Routes, netip.MustParsePrefix("::/0"))
		}
	}
	if plan.stack.TCP, err = tcpf.config(plan.stack.MTU); err != nil {
		return err
	}
	if plan.stack.Faults, err = ff.config(); err != nil {
		return err
	}
	if plan.stack.Forward, err = fwd.config(plan.iface.Addrs); err != nil {
		return err
	}
	plan.stack.Forward.Logger = log
	if err := obsf.check(plan.iface.Name, "run-"+strconv.Itoa(os.Getpid())); err != nil {
		return err
	}
	// COMMAND owns stdout; ustack speaks on stderr (and --pcap - stays
	// COMMAND's too: refuse it).
	if obsf.pcap == "-" {
		return usageErrorf("--pcap -: COMMAND's output is on stdout; give --pcap a file")
	}
	uenv := &Env{Stdin: env.Stdin, Stdout: env.Stderr, Stderr: env.Stderr}
	ul, err := bringUp("run", plan, &obsf, uenv, log, nil)
	if err != nil {
		return err
	}
	if err := tunif.InNetns(nsPath, func() error {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		return err
	}); err != nil {
		ul.tearDown(nil)
		return fmt.Errorf("bring lo up in COMMAND's namespace: %v", err)
	}
	fmt.Fprintf(env.Stderr, "%s  ·  forwarding to %s\n", ul.summary(), joinWithSpace(plan.stack.Forward.Allow))

	cmd := exec.Command(command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Stdin, env.Stdout, env.Stderr
	// Ctrl-C is COMMAND's to handle; ustack waits for it to end.
	signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
	defer signal.Reset(syscall.SIGINT, syscall.SIGQUIT)
	// Started from a thread inside the namespace, COMMAND is born in it.
	runErr := tunif.InNetns(nsPath, cmd.Start)
	if runErr == nil {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case runErr = <-done:
		case <-ctx.Done(): // SIGTERM
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case runErr = <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				runErr = <-done
			}
		}
	}
	var summary io.Writer
	if !logs.quiet {
		summary = env.Stderr
	}
	if err := ul.tearDown(summary); err != nil {
		log.Error(err.Error())
	}
	var exit *exec.ExitError
	switch {
	case errors.As(runErr, &exit):
		return &exitStatus{exit.ExitCode()}
	case runErr != nil:
		return usageErrorf("run %s: %v", command[0], runErr)
	}
	return nil
}

// holdNetns starts a child of this program in a new network namespace, which
// it holds until the returned function ends it, and returns the namespace's
// path.
func holdNetns() (release func(), path string, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(self, netnsHolderArg)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		if errors.Is(err, syscall.EPERM) {
			return nil, "", usageErrorf("ustack run needs CAP_SYS_ADMIN to make a network namespace: run it with sudo")
		}
		return nil, "", fmt.Errorf("make a network namespace: %w", err)
	}
	r.Close()
	release = func() {
		w.Close() // the holder sees EOF and exits; the namespace goes with it
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	return release, "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net", nil
}

// runNetnsHolder holds its network namespace until stdin ends.
func runNetnsHolder() int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	io.Copy(io.Discard, os.Stdin)
	return exitOK
}
