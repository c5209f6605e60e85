package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/ustack/ustack/stack/fault"
	"github.com/ustack/ustack/tunif"
)

// percentFlag is a probability flag written as a percentage: 5%, 0.1%.
type percentFlag struct {
	name string
	v    *float64
}

func (f percentFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return strconv.FormatFloat(*f.v*100, 'g', -1, 64) + "%"
}

func (f percentFlag) Set(s string) error {
	p, err := fault.ParsePercent(s)
	if err != nil {
		// "--loss 150%" → "loss must be between 0% and 100%"; the
		// flag package has already quoted the value.
		msg := strings.TrimPrefix(err.Error(), strconv.Quote(s)+": ")
		if strings.HasPrefix(msg, "must ") {
			return fmt.Errorf("%s %s", f.name, msg)
		}
		return errors.New(msg)
	}
	*f.v = p
	return nil
}

// rateFlag is a link rate in bits per second: 10mbit, 1gbit.
type rateFlag struct{ v *uint64 }

func (f rateFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return ""
	}
	return strconv.FormatUint(*f.v, 10) + "bit"
}

func (f rateFlag) Set(s string) error {
	r, err := fault.ParseRate(s)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), strconv.Quote(s)+": "))
	}
	*f.v = r
	return nil
}

// dirFlag is --fault-dir.
type dirFlag struct{ v *fault.Dir }

func (f dirFlag) String() string {
	if f.v == nil || *f.v == 0 {
		return "both"
	}
	return f.v.String()
}

func (f dirFlag) Set(s string) error {
	d, err := fault.ParseDir(s)
	if err != nil {
		return errors.New("want in, out or both")
	}
	*f.v = d
	return nil
}

// seedFlag is --seed: a number 0..2^64-1.
type seedFlag struct{ v *uint64 }

func (f seedFlag) String() string {
	if f.v == nil {
		return "0"
	}
	return strconv.FormatUint(*f.v, 10)
}

func (f seedFlag) Set(s string) error {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return errors.New("give a whole number from 0 to 18446744073709551615 (0: a random seed)")
	}
	*f.v = n
	return nil
}

// faultFlags are the fault injection flags of up, client and set.
type faultFlags struct {
	cfg fault.Config
}

// faultFlagNames are the flags register adds, for `ustack set` to tell
// which were given.
var faultFlagNames = []string{"loss", "corrupt", "delay", "jitter", "reorder", "duplicate", "rate", "queue-limit", "fault-dir", "seed"}

func (f *faultFlags) register(fs *flagSet) {
	c := &f.cfg
	fs.Var(percentFlag{"loss", &c.Loss}, "loss", "drop this `PERCENT` of packets, like 5% (IP does not guarantee delivery: watch TCP retransmit)")
	fs.Var(percentFlag{"corrupt", &c.Corrupt}, "corrupt", "flip one bit in this `PERCENT` of packets, after the checksum was computed: the receiver's checksum check drops them")
	fs.DurationVar(&c.Delay, "delay", 0, "hold every packet back this `DURATION`, like 20ms (at most 10s)")
	fs.DurationVar(&c.Jitter, "jitter", 0, "vary the delay by up to ± this `DURATION`; packets may then overtake each other")
	fs.Var(percentFlag{"reorder", &c.Reorder}, "reorder", "hold this `PERCENT` of packets back until the next two went by (or 5ms)")
	fs.Var(percentFlag{"duplicate", &c.Duplicate}, "duplicate", "send this `PERCENT` of packets twice")
	fs.Var(rateFlag{&c.Rate}, "rate", "limit the link to `RATE` bits per second, like 10mbit or 1gbit (a token bucket: packets queue, and are tail-dropped beyond --queue-limit)")
	fs.IntVar(&c.QueueLimit, "queue-limit", 0, "`PACKETS` that may wait for --rate before it drops (0: 1000, like a Linux txqueuelen)")
	fs.Var(dirFlag{&c.Dir}, "fault-dir", "which way the faults apply: in (kernel → stack), out (stack → kernel) or both (`in|out|both`)")
	fs.Var(seedFlag{&c.Seed}, "seed", "seed of the fault decisions: the same `N` and the same packets give the same decisions (0: a random one, shown by ustack stats)")
}

// config returns the faults, checked.
func (f *faultFlags) config() (fault.Config, error) {
	if err := f.cfg.Validate(); err != nil {
		return f.cfg, usageErrorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return f.cfg, nil
}

const setAbout = `
Changes the fault injection of a running ustack (up or client) at once, over
its control socket: only the flags given change, the others keep their values.
A lab can so turn loss up in the middle of a transfer:
  sudo ustack set --loss 10%        sudo ustack set --loss 0%        sudo ustack set --clear
ustack stats shows the faults in force and what they did. The socket is
root's (and, with up --user, that user's): run it with sudo.`

func runSet(ctx context.Context, env *Env, args []string) error {
	var (
		name, control string
		nsName        string
		clear         bool
		ff            faultFlags
	)
	// setFlags makes the command's flag set, its fault flags writing into
	// ff: parsed twice, first to learn which stack and check the values,
	// then over the faults in force, so that only the flags given change.
	setFlags := func() *flagSet {
		fs := newFlagSet("set", "sudo ustack set [--name ustack0] [--loss 5%] [--delay 20ms] ... [--clear]", setAbout)
		fs.StringVar(&name, "name", tunif.DefaultName, "`name` of the running ustack's interface")
		fs.StringVar(&nsName, "netns", "", "the network `NAMESPACE` the running ustack's interface is in, as its --netns said")
		fs.StringVar(&control, "control", "", "the control `SOCKET` (default $USTACK_RUN_DIR/NAME.sock, $USTACK_RUN_DIR defaulting to "+defaultRunDir+")")
		fs.BoolVar(&clear, "clear", false, "turn every fault off first")
		ff.register(fs)
		return fs
	}
	fs := setFlags()
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	given := slices.ContainsFunc(faultFlagNames, fs.isSet)
	if !given && !clear {
		return usageErrorf("nothing to set: give a fault flag, like --loss 5%%, or --clear (run ustack set --help)")
	}
	// The values given must be good on their own, before asking anyone.
	if err := ff.cfg.Validate(); err != nil {
		return usageErrorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	socket := control
	if socket == "" {
		if err := (tunif.Config{Name: name, MTU: tunif.DefaultMTU}).Validate(); err != nil {
			return usageErrorf("--name: %v", err)
		}
		socket = controlPath(name, nsName)
	}
	resp, err := askControl(ctx, socket, controlRequest{Op: "stats"})
	if err != nil {
		return err
	}
	var base fault.Config
	if f := resp.Stats.Faults; f != nil {
		base = f.Config
		if clear {
			base = fault.Config{Seed: f.Config.Seed}
		}
	}
	// Registering a flag sets its variable to the default: register
	// first, then put the faults in force under the flags.
	fs = setFlags()
	ff.cfg = base
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	cfg := ff.cfg
	if err := cfg.Validate(); err != nil {
		return usageErrorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	resp, err = askControl(ctx, socket, controlRequest{Op: "set", Faults: &cfg})
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s: %s\n", name, resp.Faults)
	return nil
}
