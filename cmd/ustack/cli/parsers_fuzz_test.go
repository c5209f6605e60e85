package cli

import (
	"bytes"
	"context"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ustack/ustack/stack"
	"github.com/ustack/ustack/stack/fault"
	"github.com/ustack/ustack/stack/probe"
	"github.com/ustack/ustack/tunif"
)

// flagParser is one of the command line's value parsers, with what its
// successful results must satisfy.
type flagParser struct {
	name  string
	seeds []string
	// check parses s. On success it checks the value's range and that it
	// survives its own formatting; the error, if any, is returned for the
	// checks every parser's errors share.
	check func(t *testing.T, s string) error
	// rawEcho: an error may repeat the input unquoted, so a line break in
	// it reaches the message; only the one-line check is waived. (None
	// does now: lengthFlag's range error quotes its input since the fuzzer
	// found it did not.)
	rawEcho bool
}

// flagParsers are the parsers FuzzFlagParsers drives, by index.
var flagParsers = []flagParser{
	{"byteSize", []string{"1000", "64K", "100M", "2G", "1 KiB", "-1", "9223372036854775807", "4611686018427387904", "B", " 8 mb "}, checkByteSize, false},
	{"parseServe", []string{"ack:5000", "ack:5000,echo:7,http:80", "ACK:1", "ack:0", "ack:65536", "ack:5000,echo:5000", "gopher:70", ":80", "ack:", ",", " echo : 7 "}, checkServe, false},
	{"prefixesFlag", []string{"198.18.0.1/24", "fd75:7374:6163:6b::1/64", "::ffff:198.18.0.1/120", "fe80::1%eth0/64", "198.18.0.1", "198.18.0.1/33", " 10.0.0.1/8 "}, checkPrefixes, false},
	{"addrsFlag", []string{"198.18.0.2", "fd75:7374:6163:6b::2", "198.18.0.2/24", "::ffff:1.2.3.4", "fe80::1%eth0", "x", " 10.0.0.2 "}, checkAddrs, false},
	{"bufRangeFlag", []string{"4096,65535,65535", "64K", "1,2", "1,2,3,4", "0", "x,1,2", "1M,2M,4M", ",,"}, checkBufRange, false},
	{"onOff", []string{"on", "off", "ON", "yes", "0", "maybe", ""}, checkOnOff, false},
	{"percentFlag", []string{"5%", "0.1%", "0", "100%", "150%", "5", "x%", "NaN%", "1e-320%", "7%", " 3 % "}, checkPercent, false},
	{"rateFlag", []string{"10mbit", "1gbit", "1.5Mbit/s", "0", "1bit", "10mbps", "10", "1e30tbit", "7999bit"}, checkRate, false},
	{"dirFlag", []string{"in", "out", "both", "IN", ""}, checkDir, false},
	{"traceMode", []string{"on", "verbose", "off", "true", "VERBOSE", "x"}, checkTraceMode, false},
	{"parseTarget", []string{"198.18.0.2:5000", "[fd75:7374:6163:6b::2]:5000", "198.18.0.2", "host:80", "198.18.0.2:0", "198.18.0.2:65536", "[::ffff:1.2.3.4]:80", "[fe80::1%eth0]:22", "1.2.3.4:+80"}, checkTarget, false},
	{"lengthFlag", []string{"8in", "20cm", "800px", "576pt", "0.5in", "41in", "8", "NaNin", "Infin", " 3 in", "\n100in"}, checkLength, false},
}

// FuzzFlagParsers feeds arbitrary strings to the command line's value
// parsers (which picks one of flagParsers) and checks: no panic; an error is
// one non-empty line that quotes the input (or a part of it) or says what is
// wanted; a value that parses is in the parser's range and, where the type
// has a String method, parses back from it to the same value.
func FuzzFlagParsers(f *testing.F) {
	for i, p := range flagParsers {
		for _, s := range p.seeds {
			f.Add(i, s)
		}
	}
	f.Fuzz(func(t *testing.T, which int, s string) {
		p := flagParsers[uint(which)%uint(len(flagParsers))]
		if err := p.check(t, s); err != nil {
			checkParseError(t, p, s, err)
		}
	})
}

// checkParseError checks what every parser's error must be: one line, not
// empty, that names the input or says what is wanted.
func checkParseError(t *testing.T, p flagParser, s string, err error) {
	t.Helper()
	msg := err.Error()
	switch {
	case strings.TrimSpace(msg) == "":
		t.Fatalf("%s(%q): empty error", p.name, s)
	case strings.ContainsAny(msg, "\n\r") && !p.rawEcho:
		t.Fatalf("%s(%q): error of more than one line: %q", p.name, s, msg)
	case !mentionsInput(msg, s) && !saysWhatIsWanted(msg):
		t.Fatalf("%s(%q): the error neither names the input nor says what is wanted: %q", p.name, s, msg)
	}
}

func mentionsInput(msg, s string) bool {
	if strings.Contains(msg, strconv.Quote(s)) {
		return true
	}
	for _, part := range strings.Split(s, ",") { // the lists name the item at fault
		if strings.Contains(msg, strconv.Quote(part)) || strings.Contains(msg, strconv.Quote(strings.TrimSpace(part))) {
			return true
		}
	}
	return false
}

func saysWhatIsWanted(msg string) bool {
	for _, w := range []string{"give", "want", "must", "like", "at least"} {
		if strings.Contains(msg, w) {
			return true
		}
	}
	return false
}

func checkByteSize(t *testing.T, s string) error {
	var b byteSize
	if err := b.Set(s); err != nil {
		return err
	}
	if b < 0 || b > 1<<62 {
		t.Fatalf("byteSize(%q) = %d, outside 0..2^62", s, b)
	}
	var again byteSize
	if err := again.Set(b.String()); err != nil || again != b {
		t.Fatalf("byteSize(%q) = %d; its String %q parses as %d, %v", s, b, b.String(), again, err)
	}
	return nil
}

func checkServe(t *testing.T, s string) error {
	specs, err := parseServe(s)
	if err != nil {
		return err
	}
	if len(specs) != strings.Count(s, ",")+1 {
		t.Fatalf("parseServe(%q) = %v: not one app per item", s, specs)
	}
	ports := map[uint16]bool{}
	items := make([]string, len(specs))
	for i, sp := range specs {
		if _, ok := serviceKinds[sp.kind]; !ok || sp.port == 0 || ports[sp.port] {
			t.Fatalf("parseServe(%q) = %v: unknown app, port 0 or a port twice", s, specs)
		}
		ports[sp.port] = true
		items[i] = sp.String()
	}
	again, err := parseServe(strings.Join(items, ","))
	if err != nil || !slices.Equal(again, specs) {
		t.Fatalf("parseServe(%q) = %v; written back as %q it parses as %v, %v", s, specs, strings.Join(items, ","), again, err)
	}
	return nil
}

func checkPrefixes(t *testing.T, s string) error {
	f := prefixesFlag{vals: slices.Clone(tunif.DefaultAddrs)}
	if err := f.Set(s); err != nil {
		return err
	}
	if len(f.vals) != 1 || !f.set {
		t.Fatalf("prefixesFlag.Set(%q) on the defaults: %v, set %v; want the one value, replacing the defaults", s, f.vals, f.set)
	}
	p := f.vals[0]
	if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		t.Fatalf("prefixesFlag.Set(%q) accepted %v", s, p)
	}
	var again prefixesFlag
	if err := again.Set(f.String()); err != nil || !slices.Equal(again.vals, f.vals) {
		t.Fatalf("prefixesFlag.Set(%q) = %v; its String %q parses as %v, %v", s, f.vals, f.String(), again.vals, err)
	}
	return nil
}

func checkAddrs(t *testing.T, s string) error {
	f := addrsFlag{vals: []netip.Addr{netip.MustParseAddr("198.18.0.2")}}
	if err := f.Set(s); err != nil {
		return err
	}
	if len(f.vals) != 1 || !f.set {
		t.Fatalf("addrsFlag.Set(%q) on the defaults: %v, set %v; want the one value, replacing the defaults", s, f.vals, f.set)
	}
	a := f.vals[0]
	if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
		t.Fatalf("addrsFlag.Set(%q) accepted %v", s, a)
	}
	var again addrsFlag
	if err := again.Set(f.String()); err != nil || !slices.Equal(again.vals, f.vals) {
		t.Fatalf("addrsFlag.Set(%q) = %v; its String %q parses as %v, %v", s, f.vals, f.String(), again.vals, err)
	}
	if err := f.Set(s); err == nil {
		t.Fatalf("addrsFlag.Set(%q) twice: the second was accepted", s)
	}
	return nil
}

func checkBufRange(t *testing.T, s string) error {
	var r stack.BufRange
	f := bufRangeFlag{&r}
	if err := f.Set(s); err != nil {
		return err
	}
	if r.Min < 0 || r.Default < 0 || r.Max < 0 {
		t.Fatalf("bufRangeFlag.Set(%q) = %+v: a negative size", s, r)
	}
	if !strings.Contains(s, ",") && (r.Default != r.Min || r.Max != r.Min) {
		t.Fatalf("bufRangeFlag.Set(%q) = %+v: one size must be all three", s, r)
	}
	if f.String() == "" { // the zero value prints as unset
		return nil
	}
	var again stack.BufRange
	if err := (bufRangeFlag{&again}).Set(f.String()); err != nil || again != r {
		t.Fatalf("bufRangeFlag.Set(%q) = %+v; its String %q parses as %+v, %v", s, r, f.String(), again, err)
	}
	return nil
}

func checkOnOff(t *testing.T, s string) error {
	var v bool
	if err := (onOff{&v}).Set(s); err != nil {
		return err
	}
	var again bool
	if err := (onOff{&again}).Set(onOff{&v}.String()); err != nil || again != v {
		t.Fatalf("onOff.Set(%q) = %v; its String parses as %v, %v", s, v, again, err)
	}
	return nil
}

func checkPercent(t *testing.T, s string) error {
	var v float64
	f := percentFlag{"loss", &v}
	if err := f.Set(s); err != nil {
		return err
	}
	if !(v >= 0 && v <= 1) {
		t.Fatalf("percentFlag.Set(%q) = %v, outside 0..1", s, v)
	}
	if f.String() == "" { // 0 prints as unset
		return nil
	}
	var again float64
	if err := (percentFlag{"loss", &again}).Set(f.String()); err != nil || again != v {
		t.Fatalf("percentFlag.Set(%q) = %v; its String %q parses as %v, %v", s, v, f.String(), again, err)
	}
	return nil
}

func checkRate(t *testing.T, s string) error {
	var v uint64
	f := rateFlag{&v}
	if err := f.Set(s); err != nil {
		return err
	}
	if v != 0 && v < fault.MinRate {
		t.Fatalf("rateFlag.Set(%q) = %d, below the minimum of %d", s, v, fault.MinRate)
	}
	if f.String() == "" { // 0, unlimited, prints as unset
		return nil
	}
	var again uint64
	if err := (rateFlag{&again}).Set(f.String()); err != nil || again != v {
		t.Fatalf("rateFlag.Set(%q) = %d; its String %q parses as %d, %v", s, v, f.String(), again, err)
	}
	return nil
}

func checkDir(t *testing.T, s string) error {
	var d fault.Dir
	if err := (dirFlag{&d}).Set(s); err != nil {
		return err
	}
	if d != fault.In && d != fault.Out && d != fault.Both {
		t.Fatalf("dirFlag.Set(%q) = %v", s, d)
	}
	var again fault.Dir
	if err := (dirFlag{&again}).Set(dirFlag{&d}.String()); err != nil || again != d {
		t.Fatalf("dirFlag.Set(%q) = %v; its String parses as %v, %v", s, d, again, err)
	}
	return nil
}

func checkTraceMode(t *testing.T, s string) error {
	var m traceMode
	if err := m.Set(s); err != nil {
		return err
	}
	if m != traceOff && m != traceOn && m != traceVerbose {
		t.Fatalf("traceMode.Set(%q) = %q", s, m)
	}
	if m.String() == "" { // off prints as unset
		return nil
	}
	var again traceMode
	if err := again.Set(m.String()); err != nil || again != m {
		t.Fatalf("traceMode.Set(%q) = %q; its String parses as %q, %v", s, m, again, err)
	}
	return nil
}

func checkTarget(t *testing.T, s string) error {
	ap, err := parseTarget(s)
	if err != nil {
		return err
	}
	if !ap.Addr().IsValid() || ap.Addr().Is4In6() || ap.Port() == 0 {
		t.Fatalf("parseTarget(%q) = %v", s, ap)
	}
	if again, err := parseTarget(ap.String()); err != nil || again != ap {
		t.Fatalf("parseTarget(%q) = %v; its String parses as %v, %v", s, ap, again, err)
	}
	return nil
}

func checkLength(t *testing.T, s string) error {
	var l lengthFlag
	if err := l.Set(s); err != nil {
		return err
	}
	if !(l.l >= plotMinSide && l.l <= plotMaxSide) || math.IsNaN(float64(l.l)) {
		t.Fatalf("lengthFlag.Set(%q) = %v, outside %v..%v", s, l.l, plotMinSide, plotMaxSide)
	}
	var again lengthFlag
	if err := again.Set(l.String()); err != nil || again.l != l.l {
		t.Fatalf("lengthFlag.Set(%q) = %v; its String %q parses as %v, %v", s, l.l, l.String(), again.l, err)
	}
	return nil
}

// commandLineCommands are the commands FuzzParseCommandLine runs: the ones
// that touch no network and no device. up, client and serve are never run.
var commandLineCommands = []string{"version", "plot", "stats", "set"}

// FuzzParseCommandLine runs arbitrary argument lists (the fuzz string split
// at NUL bytes) through Run for the commands that touch neither the network
// nor a device: version; plot, on a CSV in a temporary directory holding the
// fuzz bytes, writing a 1-inch image (unless asked otherwise) into that
// directory; stats and set, with --control
// forced to a socket path in a temporary directory where nothing listens.
// Arguments that would point a command elsewhere (--output, -o, --control)
// are left out. canceled runs it with a context that is already canceled,
// as after Ctrl-C (stats --watch then ends at once). It checks: no panic;
// the exit status is 0, 1 or 2; a failure ends with one line on stderr that
// starts with "ustack ", and a usage error (2) prints exactly that one line;
// a plot that says it wrote its image did, and nothing else was written.
func FuzzParseCommandLine(f *testing.F) {
	var csv bytes.Buffer
	w := probe.NewWriter(&csv)
	for _, r := range synthProbe()[:4] {
		w.Write(r)
	}
	w.Flush()
	for _, c := range []struct {
		cmd  int
		args string
		csv  []byte
	}{
		{0, "", nil}, {0, "--help", nil}, {0, "extra", nil}, {0, "--bogus", nil},
		{1, "", csv.Bytes()},
		{1, "--width\x002in\x00--height\x001in\x00--title\x00T", csv.Bytes()},
		{1, "--conn\x00" + plotConnB, csv.Bytes()},
		{1, "--conn=nope", csv.Bytes()},
		{1, "--width\x0041in", csv.Bytes()},
		{1, "", []byte(probe.Header + "\n")},
		{1, "", []byte("not,a,probe\n1,2,3\n")},
		{1, "extra", csv.Bytes()},
		{5, "--output=x.png\x00-o\x00y.svg", csv.Bytes()},
		{2, "", nil}, {2, "--json", nil}, {2, "--watch\x001s", nil}, {2, "--watch\x001ms", nil},
		{2, "--name\x00has space", nil}, {2, "--watch", nil},
		{3, "", nil}, {3, "--loss\x005%", nil}, {3, "--clear", nil}, {3, "--loss\x00150%", nil},
		{3, "--rate\x001bit", nil}, {3, "--delay\x00-1s\x00--jitter\x0011s", nil}, {3, "--fault-dir\x00sideways", nil},
		{3, "--control=/elsewhere.sock\x00--clear", nil},
	} {
		f.Add(uint8(c.cmd), c.args, c.csv, false)
		f.Add(uint8(c.cmd), c.args, c.csv, true)
	}
	// One directory for the whole fuzz process, emptied after each input:
	// making and removing a directory per input costs more than the input.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, which uint8, argString string, csv []byte, canceled bool) {
		var args []string
		if argString != "" {
			args = strings.Split(argString, "\x00")
		}
		cmd := commandLineCommands[int(which)%len(commandLineCommands)]
		input := filepath.Join(dir, "probe.csv")
		output := filepath.Join(dir, "plot.png")
		if which&4 != 0 {
			output = filepath.Join(dir, "plot.svg")
		}
		full := []string{cmd}
		switch cmd {
		case "version":
			full = append(full, args...)
		case "plot":
			if err := os.WriteFile(input, csv, 0o600); err != nil {
				t.Fatal(err)
			}
			// After "--" the file is positional whatever came before;
			// another positional argument is an error before any file
			// is opened. A 1-inch image draws in a few milliseconds, not
			// twenty: the fuzzer runs an input thousands of times to
			// minimize it. The fuzz arguments may ask for another size.
			full = append(full, "--output", output, "--width", "1in", "--height", "1in")
			full = append(full, withoutFlags(args, "o", "output")...)
			full = append(full, "--", input)
		case "stats", "set":
			full = append(full, "--control", filepath.Join(dir, "nobody.sock"))
			full = append(full, withoutFlags(args, "control")...)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if canceled {
			cancel()
		}
		var stdout, stderr bytes.Buffer
		code := Run(ctx, full, &Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr})

		lines := strings.SplitAfter(stderr.String(), "\n")
		if lines[len(lines)-1] == "" {
			lines = lines[:len(lines)-1]
		}
		switch code {
		case exitOK:
		case exitFailure, exitUsage:
			if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "ustack ") || !strings.HasSuffix(lines[len(lines)-1], "\n") {
				t.Fatalf("%q: exit %d with stderr %q: want a last line that starts with \"ustack \"", full, code, stderr.String())
			}
			if code == exitUsage && len(lines) != 1 {
				t.Fatalf("%q: usage error with %d lines on stderr, want 1: %q", full, len(lines), stderr.String())
			}
		default:
			t.Fatalf("%q: exit status %d, want 0, 1 or 2", full, code)
		}

		if cmd == "plot" && strings.HasPrefix(stdout.String(), "wrote ") {
			if st, err := os.Stat(output); err != nil || st.Size() == 0 || code != exitOK {
				t.Fatalf("%q: exit %d, says %q, but the image is missing or empty: %v", full, code, stdout.String(), err)
			}
		}
		// Nothing but the CSV and the image asked for; then the directory
		// is emptied for the next input.
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			if p != input && p != output {
				t.Errorf("%q: left %s behind", full, e.Name())
			}
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// withoutFlags leaves out the arguments that set one of the flags names, in
// any of the flag package's spellings (-n, --n, -n=v, --n=v), so that the
// fuzzer cannot point a command at a file or socket of its choosing. A flag
// whose value is the next argument loses only its name: the value is then a
// positional argument, or the value of the flag before.
func withoutFlags(args []string, names ...string) []string {
	var kept []string
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && slices.Contains(names, name) {
			continue
		}
		kept = append(kept, a)
	}
	return kept
}
