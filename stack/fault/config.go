package fault

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Dir is a direction, or a set of them, as seen from the userspace stack.
type Dir uint8

const (
	// In is a packet the kernel routed into the TUN interface, on its way to
	// the userspace stack.
	In Dir = 1 << iota
	// Out is a packet the userspace stack sent, on its way to the kernel.
	Out
	// Both is In and Out.
	Both = In | Out
)

// String returns "in", "out" or "both"; anything else as "Dir(N)".
func (d Dir) String() string {
	switch d {
	case In:
		return "in"
	case Out:
		return "out"
	case Both:
		return "both"
	}
	return "Dir(" + strconv.Itoa(int(d)) + ")"
}

// ParseDir parses the value of --fault-dir: "in", "out" or "both".
func ParseDir(s string) (Dir, error) {
	switch s {
	case "in":
		return In, nil
	case "out":
		return Out, nil
	case "both":
		return Both, nil
	}
	return 0, fmt.Errorf("--fault-dir %q: want in, out or both", s)
}

// DefaultQueueLimit is the number of packets that may wait for the rate
// limiter when Config.QueueLimit is 0: 1000, the default transmit queue
// length (txqueuelen) of a Linux interface and the default limit of netem.
const DefaultQueueLimit = 1000

// MaxDelay bounds Config.Delay and Config.Jitter, so that no packet is held
// for longer than MaxDelay+MaxJitter plus the time it waits for the rate
// limiter.
const (
	MaxDelay  = 10 * time.Second
	MaxJitter = 10 * time.Second
)

// MinRate is the slowest rate limit, in bits per second: 8 kbit/s, a
// kilobyte a second. With a full queue of 1000 MTU-sized packets a slower
// link would hold packets for hours.
const MinRate = 8000

// Hold caps: delayed, reordered and rate-limited packets of both directions
// together. A packet that would be held beyond either cap is dropped (Drop
// "hold queue full") and counted as Lost. They are far above what a lab
// needs: 65536 packets is 1.5 s of a 1 Gbit/s link's full-sized packets.
const (
	MaxHeldPackets = 65536
	MaxHeldBytes   = 64 << 20
)

// Config says which faults to inject. The zero value injects none.
type Config struct {
	// Probabilities, 0..1, drawn for each packet independently.
	Loss      float64 // the packet is dropped
	Corrupt   float64 // one bit of the packet is flipped
	Reorder   float64 // the packet is held back until the next two overtook it
	Duplicate float64 // the packet is passed on twice

	// Delay holds every packet for Delay. Jitter varies that per packet,
	// uniformly over [max(0, Delay−Jitter), Delay+Jitter]: ±Jitter around
	// Delay, never below 0, and 0..Jitter without a Delay. Both are at most
	// MaxDelay and MaxJitter.
	Delay, Jitter time.Duration

	// Rate limits each direction to Rate bits per second (a token bucket
	// without burst: a packet departs when the link would have finished
	// sending the ones before it); 0 is unlimited. At least MinRate.
	Rate uint64
	// QueueLimit is the number of packets of a direction that may wait for
	// the rate limiter; a packet beyond it is tail-dropped (Drop "queue
	// full"). 0 is DefaultQueueLimit; at most MaxHeldPackets.
	QueueLimit int

	// Dir is the directions the faults apply to; 0 is Both.
	Dir Dir
	// Seed seeds the random decisions: the same seed and the same packets
	// give the same decisions. 0 lets New pick a random seed, which
	// Injector.Seed reports.
	Seed uint64
}

// Validate reports every field that is out of its range, one line each.
func (c Config) Validate() error {
	var errs []error
	prob := func(name string, p float64) {
		if !(p >= 0 && p <= 1) { // also catches NaN
			errs = append(errs, fmt.Errorf("%s must be between 0%% and 100%% (got %s)", name, formatPercent(p)))
		}
	}
	prob("loss", c.Loss)
	prob("corrupt", c.Corrupt)
	prob("reorder", c.Reorder)
	prob("duplicate", c.Duplicate)
	duration := func(name string, d, max time.Duration) {
		switch {
		case d < 0:
			errs = append(errs, fmt.Errorf("%s must not be negative (got %v)", name, d))
		case d > max:
			errs = append(errs, fmt.Errorf("%s %v is larger than the maximum of %v", name, d, max))
		}
	}
	duration("delay", c.Delay, MaxDelay)
	duration("jitter", c.Jitter, MaxJitter)
	if c.Rate != 0 && c.Rate < MinRate {
		errs = append(errs, fmt.Errorf("rate %s is below the minimum of %s (0 is unlimited)", formatRate(c.Rate), formatRate(MinRate)))
	}
	switch {
	case c.QueueLimit < 0:
		errs = append(errs, fmt.Errorf("queue limit must not be negative (got %d)", c.QueueLimit))
	case c.QueueLimit > MaxHeldPackets:
		errs = append(errs, fmt.Errorf("queue limit %d is larger than the maximum of %d", c.QueueLimit, MaxHeldPackets))
	}
	if c.Dir > Both {
		errs = append(errs, fmt.Errorf("fault direction must be in, out or both (got %v)", c.Dir))
	}
	return errors.Join(errs...)
}

// Active reports whether any fault is set.
func (c Config) Active() bool {
	return c.Loss > 0 || c.Corrupt > 0 || c.Reorder > 0 || c.Duplicate > 0 ||
		c.Delay > 0 || c.Jitter > 0 || c.Rate > 0
}

// normalized returns c with its defaults filled in: Dir Both for 0,
// DefaultQueueLimit for 0. The seed is left alone.
func (c Config) normalized() Config {
	if c.Dir == 0 {
		c.Dir = Both
	}
	if c.QueueLimit == 0 {
		c.QueueLimit = DefaultQueueLimit
	}
	return c
}

// String describes c in one line, like
//
//	loss 5% · corrupt 0.1% · delay 20ms ±5ms · reorder 1% · duplicate 1% · rate 10 Mbit/s (queue 1000) · both directions · seed 42
//
// or "no faults". Fields at zero are left out; a seed of 0 (random) too.
func (c Config) String() string {
	if !c.Active() {
		return "no faults"
	}
	c = c.normalized()
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	if c.Loss > 0 {
		add("loss %s", formatPercent(c.Loss))
	}
	if c.Corrupt > 0 {
		add("corrupt %s", formatPercent(c.Corrupt))
	}
	switch {
	case c.Delay > 0 && c.Jitter > 0:
		add("delay %v ±%v", c.Delay, c.Jitter)
	case c.Delay > 0:
		add("delay %v", c.Delay)
	case c.Jitter > 0:
		add("delay 0..%v", c.Jitter)
	}
	if c.Reorder > 0 {
		add("reorder %s", formatPercent(c.Reorder))
	}
	if c.Duplicate > 0 {
		add("duplicate %s", formatPercent(c.Duplicate))
	}
	if c.Rate > 0 {
		add("rate %s (queue %d)", formatRate(c.Rate), c.QueueLimit)
	}
	switch c.Dir {
	case Both:
		add("both directions")
	default:
		add("%v only", c.Dir)
	}
	if c.Seed != 0 {
		add("seed %d", c.Seed)
	}
	return strings.Join(parts, " · ")
}

// formatPercent writes probability p as a percentage with at most six
// significant digits, so that 0.07 is "7%", not "7.000000000000001%".
func formatPercent(p float64) string {
	if math.IsNaN(p) || math.IsInf(p, 0) {
		return strconv.FormatFloat(p, 'g', -1, 64)
	}
	v, _ := strconv.ParseFloat(strconv.FormatFloat(p*100, 'g', 6, 64), 64)
	return strconv.FormatFloat(v, 'f', -1, 64) + "%"
}

// formatRate writes a rate in bits per second with the largest SI unit that
// keeps it at 1 or more: "10 Mbit/s", "1.5 Gbit/s", "64 kbit/s".
func formatRate(bps uint64) string {
	units := []struct {
		name string
		size uint64
	}{{"Tbit/s", 1e12}, {"Gbit/s", 1e9}, {"Mbit/s", 1e6}, {"kbit/s", 1e3}}
	for _, u := range units {
		if bps >= u.size {
			return strconv.FormatFloat(float64(bps)/float64(u.size), 'f', -1, 64) + " " + u.name
		}
	}
	return strconv.FormatUint(bps, 10) + " bit/s"
}

// ParsePercent parses a probability written as a percentage: "5%", "0.1%",
// "100%"; "0" alone is 0. A bare number is an error, so that --loss 5 cannot
// mean 500% or 5% by accident. The result is a fraction, 0.05 for "5%".
func ParsePercent(s string) (float64, error) {
	t := strings.TrimSpace(s)
	if t == "0" {
		return 0, nil
	}
	num, ok := strings.CutSuffix(t, "%")
	if !ok {
		if _, err := strconv.ParseFloat(t, 64); err == nil {
			return 0, fmt.Errorf("%q: add a %% sign, like %s%%: a bare number could be a fraction or a percentage", s, t)
		}
		return 0, fmt.Errorf("%q: want a percentage, like 5%% or 0.1%%", s)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil {
		return 0, fmt.Errorf("%q: want a percentage, like 5%% or 0.1%%", s)
	}
	if !(v >= 0 && v <= 100) {
		return 0, fmt.Errorf("%q: must be between 0%% and 100%%", s)
	}
	return v / 100, nil
}

// rateUnitList names the units ParseRate accepts, for its errors.
const rateUnitList = "units are bit, kbit, mbit, gbit (or kibit, mibit, gibit)"

// rateUnits are the units ParseRate accepts, in bits per second each.
var rateUnits = map[string]uint64{
	"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
	"kibit": 1 << 10, "mibit": 1 << 20, "gibit": 1 << 30, "tibit": 1 << 40,
}

// ParseRate parses a rate limit in tc's bit units, case-insensitively, with
// an optional "/s": "10mbit", "1gbit", "500kbit", "64000bit", "1.5mbit",
// "10Mbit/s". The SI units bit, kbit, mbit, gbit, tbit count in powers of
// 1000, the IEC units kibit, mibit, gibit, tibit in powers of 1024. "0" alone
// is 0, unlimited.
//
// Byte units are refused: tc reads "mbps" as megabytes per second where most
// people read megabits, and a bare number is refused too (tc reads it as bits
// per second, easily taken for megabits). A rate other than 0 must be at least
// MinRate.
func ParseRate(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	if t == "0" {
		return 0, nil
	}
	lower := strings.ToLower(t)
	i := strings.IndexFunc(lower, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
	if i < 0 {
		if _, err := strconv.ParseFloat(t, 64); err == nil {
			return 0, fmt.Errorf("%q: add a unit, like %smbit; %s", s, t, rateUnitList)
		}
		return 0, fmt.Errorf("%q: want a number and a unit, like 10mbit; %s", s, rateUnitList)
	}
	num, unit := lower[:i], strings.TrimSpace(lower[i:])
	unit = strings.TrimSuffix(unit, "/s")
	if strings.HasSuffix(unit, "bps") || strings.HasSuffix(unit, "byte") || strings.HasSuffix(unit, "b") && !strings.HasSuffix(unit, "bit") {
		return 0, fmt.Errorf("%q: byte units are ambiguous (tc reads mbps as megabytes per second): write bits, like 10mbit or 80mbit", s)
	}
	mult, ok := rateUnits[unit]
	if !ok || num == "" {
		return 0, fmt.Errorf("%q: want a number and a unit, like 10mbit; %s", s, rateUnitList)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: want a number and a unit, like 10mbit; %s", s, rateUnitList)
	}
	bps := math.Round(v * float64(mult))
	if bps >= math.MaxUint64 {
		return 0, fmt.Errorf("%q: too large", s)
	}
	if r := uint64(bps); r != 0 || v != 0 {
		if r < MinRate {
			return 0, fmt.Errorf("%q: must be at least %s, or 0 for unlimited", s, formatRate(MinRate))
		}
		return r, nil
	}
	return 0, nil
}
