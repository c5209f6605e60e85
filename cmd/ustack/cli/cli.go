// Package cli is the ustack command line as a library: one file per
// subcommand, each a function of (context, environment, arguments), so the
// whole program can be run and tested without a process. cmd/ustack's main
// only wires it to os.Args, the standard streams and signals.
//
// It is the top of the tree: it wires tunif (the TUN interface), stack (the
// userspace TCP/IP stack) and app (the ACK server and client) together, and
// nothing imports it.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// Env is what a command reads and writes besides its arguments.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer // the ready lines and results a script may read
	Stderr io.Writer // logs and errors
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // it ran, then failed (the device went away, the server refused)
	exitUsage   = 2 // bad input or a set-up it cannot do: nothing was left behind
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
}

func commands() []command {
	return []command{
		{"up", "bring up the TUN interface, the userspace stack and the ACK server on it", runUp},
		{"serve", "run the same ACK server on kernel sockets (--kernel)", runServe},
		{"client", "the article's client, on its own userspace stack or on kernel sockets", runClient},
		{"run", "run a command whose every connection is carried by a userspace stack in forwarding mode", runRun},
		{"lab", "a lab without sudo: interface, stack and server in namespaces of their own, and a shell in them", runLab},
		{"stats", "print the counters and connections of a running ustack", runStats},
		{"set", "change the fault injection of a running ustack (--loss, --delay, ...)", runSet},
		{"bench", "measure the kernel, ustack and gVisor's own TUN endpoint side by side in private namespaces", runBench},
		{"plot", "draw cwnd and ssthresh over time from a --tcp-probe CSV", runPlot},
		{"version", "print the version", runVersion},
	}
}

// Run runs the ustack command line args (without the program name) and returns
// the exit status. ctx ends the long-running commands: cancel it on SIGINT or
// SIGTERM.
func Run(ctx context.Context, args []string, env *Env) int {
	if len(args) == 0 {
		usage(env.Stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case janitorArg:
		return runJanitor(args[1:])
	case netnsHolderArg:
		return runNetnsHolder()
	case benchRefArg:
		return report(env, benchRefArg, runBenchRef(ctx, env, args[1:]))
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && name == "help" {
			return Run(ctx, []string{args[1], "--help"}, env)
		}
		usage(env.Stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == name {
			return report(env, c.name, c.run(ctx, env, args[1:]))
		}
	}
	fmt.Fprintf(env.Stderr, "ustack: unknown command %q: run ustack --help for the list\n", name)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `ustack: a userspace TCP/IP stack on a Linux TUN device.

Usage:
  sudo ustack up [flags]                     interface, userspace stack and ACK server; Ctrl-C removes them
  ustack serve --kernel [flags]              the same ACK server on the kernel's TCP
  sudo ustack client [flags] HOST:PORT [MESSAGE...]   the article's client
  sudo ustack run [flags] -- COMMAND         COMMAND's every connection through a userspace stack
  ustack lab [flags] [-- COMMAND]            no sudo: all of it in namespaces of its own, and a shell
  sudo ustack stats | set | bench            watch a running stack, change its faults, measure

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run ustack COMMAND --help for its flags and their defaults.
`)
}

// usageError is bad input: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// errHelpShown: --help was asked for and printed.
var errHelpShown = errors.New("help shown")

// report prints err as one line on stderr and returns the exit status.
func report(env *Env, cmd string, err error) int {
	if err == nil || errors.Is(err, errHelpShown) {
		return exitOK
	}
	var status *exitStatus
	if errors.As(err, &status) {
		return status.code // a lab command's own status: it said why itself
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if !strings.HasPrefix(msg, "ustack ") {
		msg = "ustack " + cmd + ": " + msg
	}
	fmt.Fprintln(env.Stderr, msg)
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

// flagSet is a subcommand's flags with the text of its --help.
type flagSet struct {
	*flag.FlagSet
	synopsis, about string
	positional      bool // the command takes arguments besides flags
}

// newFlagSet returns a flag set that reports errors to the caller instead of
// printing them, and prints its help (every flag with its default) on --help.
func newFlagSet(name, synopsis, about string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, synopsis: synopsis, about: about}
}

// parse parses args, flags anywhere among them (until a "--"), and returns the
// positional arguments. --help prints the help and returns errHelpShown.
func parse(fs *flagSet, env *Env, args []string) ([]string, error) {
	var positional []string
	all := args
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.printHelp(env.Stdout)
				return nil, errHelpShown
			}
			hint := ""
			if fs.positional && strings.HasPrefix(err.Error(), "flag provided but not defined") {
				hint = "; put arguments that start with - after --"
			}
			// A flag that is boolean only in that it may stand alone
			// (--trace) gets the flag package's words for booleans.
			msg := strings.Replace(err.Error(), "invalid boolean value ", "invalid value ", 1)
			msg = invalidBoolFor.ReplaceAllString(msg, "${1}for flag -")
			return nil, usageErrorf("%s (run ustack %s --help%s)", spellAsTyped(msg, all), fs.Name(), hint)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		// Parse stopped at a positional argument, or after a "--" that
		// ends the flags (and is not the value of a flag, as in
		// --name --). After "--", everything is positional.
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" && (used < 2 || !fs.takesValue(args[used-2])) {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// isSet tells whether the flag name was given on the command line.
func (fs *flagSet) isSet(name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// takesValue tells whether arg is a flag that takes the next argument as its
// value: a known flag, not boolean, without "=value".
func (fs *flagSet) takesValue(arg string) bool {
	name, ok := strings.CutPrefix(arg, "-")
	if !ok || strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(strings.TrimPrefix(name, "-"))
	if f == nil {
		return false
	}
	b, isBool := f.Value.(interface{ IsBoolFlag() bool })
	return !isBool || !b.IsBoolFlag()
}

// flagInError finds the flag named in the flag package's error messages.
var flagInError = regexp.MustCompile(`(flag provided but not defined: |flag needs an argument: |flag )-([^\s:]+)`)

// invalidBoolFor finds "for -name" in the flag package's error for a bad
// boolean value.
var invalidBoolFor = regexp.MustCompile(`^(invalid value "[^"]*" )for -`)

// spellAsTyped rewrites the flag package's "-name" in msg the way it stands
// in args: "--name" when the user typed two dashes.
func spellAsTyped(msg string, args []string) string {
	return flagInError.ReplaceAllStringFunc(msg, func(m string) string {
		sub := flagInError.FindStringSubmatch(m)
		for _, a := range args {
			if a == "--"+sub[2] || strings.HasPrefix(a, "--"+sub[2]+"=") {
				return sub[1] + "--" + sub[2]
			}
		}
		return m
	})
}

// parseFlagsOnly parses the flags of a command that takes no other arguments.
func parseFlagsOnly(fs *flagSet, env *Env, args []string) error {
	rest, err := parse(fs, env, args)
	if err == nil && len(rest) > 0 {
		err = usageErrorf("unexpected argument %q: ustack %s takes only flags (run ustack %s --help)", rest[0], fs.Name(), fs.Name())
	}
	return err
}

func (fs *flagSet) printHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n", fs.synopsis, strings.TrimSpace(fs.about))
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, f := range flags {
		kind, help := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if kind != "" {
			line += " " + kind
		}
		fmt.Fprintf(w, "%s\n      %s", line, help)
		if f.DefValue != "" && f.DefValue != "false" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	}
}
