package fault

import (
	"math"
	"testing"
	"time"
)

func TestDirStringAndParse(t *testing.T) {
	for _, d := range []Dir{In, Out, Both} {
		got, err := ParseDir(d.String())
		if err != nil || got != d {
			t.Errorf("ParseDir(%q) = %v, %v; want %v", d.String(), got, err, d)
		}
	}
	if s := Dir(0).String(); s != "Dir(0)" {
		t.Errorf("Dir(0).String() = %q", s)
	}
	for _, s := range []string{"x", "", "IN", "in "} {
		want := `--fault-dir "` + s + `": want in, out or both`
		if _, err := ParseDir(s); err == nil || err.Error() != want {
			t.Errorf("ParseDir(%q) error %v; want %s", s, err, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, ""},
		{Config{Loss: 1, Corrupt: 0, Reorder: 0.5, Duplicate: 1e-9, Delay: MaxDelay, Jitter: MaxJitter, Rate: MinRate, QueueLimit: MaxHeldPackets, Dir: Both, Seed: 1}, ""},
		{Config{Loss: 1.5}, "loss must be between 0% and 100% (got 150%)"},
		{Config{Corrupt: -0.01}, "corrupt must be between 0% and 100% (got -1%)"},
		{Config{Reorder: math.NaN()}, "reorder must be between 0% and 100% (got NaN)"},
		{Config{Duplicate: math.Inf(1)}, "duplicate must be between 0% and 100% (got +Inf)"},
		{Config{Delay: -time.Millisecond}, "delay must not be negative (got -1ms)"},
		{Config{Delay: 11 * time.Second}, "delay 11s is larger than the maximum of 10s"},
		{Config{Jitter: -time.Nanosecond}, "jitter must not be negative (got -1ns)"},
		{Config{Jitter: 30 * time.Second}, "jitter 30s is larger than the maximum of 10s"},
		{Config{Rate: 100}, "rate 100 bit/s is below the minimum of 8 kbit/s (0 is unlimited)"},
		{Config{Rate: MinRate - 1}, "rate 7.999 kbit/s is below the minimum of 8 kbit/s (0 is unlimited)"},
		{Config{QueueLimit: -1}, "queue limit must not be negative (got -1)"},
		{Config{QueueLimit: 70000}, "queue limit 70000 is larger than the maximum of 65536"},
		{Config{Dir: 4}, "fault direction must be in, out or both (got Dir(4))"},
		{Config{Loss: 2, Delay: -time.Second}, "loss must be between 0% and 100% (got 200%)\ndelay must not be negative (got -1s)"},
	} {
		err := tc.cfg.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%+v: Validate() = %q; want %q", tc.cfg, got, tc.want)
		}
	}
}

func TestConfigActiveAndString(t *testing.T) {
	for _, tc := range []struct {
		cfg    Config
		active bool
		want   string
	}{
		{Config{}, false, "no faults"},
		{Config{Dir: In, Seed: 42, QueueLimit: 5}, false, "no faults"},
		{Config{Loss: 0.05, Corrupt: 0.001, Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond,
			Reorder: 0.01, Duplicate: 0.01, Rate: 10_000_000, Seed: 42}, true,
			"loss 5% · corrupt 0.1% · delay 20ms ±5ms · reorder 1% · duplicate 1% · rate 10 Mbit/s (queue 1000) · both directions · seed 42"},
		{Config{Loss: 0.07, Dir: In}, true, "loss 7% · in only"},
		{Config{Jitter: 5 * time.Millisecond, Dir: Out}, true, "delay 0..5ms · out only"},
		{Config{Delay: time.Second}, true, "delay 1s · both directions"},
		{Config{Rate: 1_500_000, QueueLimit: 50}, true, "rate 1.5 Mbit/s (queue 50) · both directions"},
		{Config{Rate: 64_000}, true, "rate 64 kbit/s (queue 1000) · both directions"},
		{Config{Rate: 1 << 20}, true, "rate 1.048576 Mbit/s (queue 1000) · both directions"},
		{Config{Rate: 2e12}, true, "rate 2 Tbit/s (queue 1000) · both directions"},
		{Config{Corrupt: 1e-7}, true, "corrupt 0.00001% · both directions"},
	} {
		if got := tc.cfg.Active(); got != tc.active {
			t.Errorf("%+v: Active() = %v", tc.cfg, got)
		}
		if got := tc.cfg.String(); got != tc.want {
			t.Errorf("%+v: String() =\n\t%q; want\n\t%q", tc.cfg, got, tc.want)
		}
	}
}

func TestParsePercent(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		err  string
	}{
		{"5%", 0.05, ""},
		{"0.1%", 0.001, ""},
		{"100%", 1, ""},
		{"0%", 0, ""},
		{"0", 0, ""},
		{" 2.5% ", 0.025, ""},
		{"5", 0, `"5": add a % sign, like 5%: a bare number could be a fraction or a percentage`},
		{"0.05", 0, `"0.05": add a % sign, like 0.05%: a bare number could be a fraction or a percentage`},
		{"101%", 0, `"101%": must be between 0% and 100%`},
		{"-1%", 0, `"-1%": must be between 0% and 100%`},
		{"NaN%", 0, `"NaN%": must be between 0% and 100%`},
		{"%", 0, `"%": want a percentage, like 5% or 0.1%`},
		{"five%", 0, `"five%": want a percentage, like 5% or 0.1%`},
		{"", 0, `"": want a percentage, like 5% or 0.1%`},
		{"5%%", 0, `"5%%": want a percentage, like 5% or 0.1%`},
	} {
		got, err := ParsePercent(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParsePercent(%q) = %v, %v; want error %s", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("ParsePercent(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRate(t *testing.T) {
	const units = "units are bit, kbit, mbit, gbit (or kibit, mibit, gibit)"
	for _, tc := range []struct {
		in   string
		want uint64
		err  string
	}{
		{"10mbit", 10_000_000, ""},
		{"1gbit", 1_000_000_000, ""},
		{"500kbit", 500_000, ""},
		{"64000bit", 64_000, ""},
		{"1.5mbit", 1_500_000, ""},
		{"10Mbit/s", 10_000_000, ""},
		{"10 Mbit/s", 10_000_000, ""},
		{"2TBIT", 2_000_000_000_000, ""},
		{"1mibit", 1 << 20, ""},
		{"8kibit", 8 << 10, ""},
		{"0", 0, ""},
		{"0mbit", 0, ""},
		{"8kbit", MinRate, ""},
		{"10", 0, `"10": add a unit, like 10mbit; ` + units},
		{"10mbps", 0, `"10mbps": byte units are ambiguous (tc reads mbps as megabytes per second): write bits, like 10mbit or 80mbit`},
		{"1MB/s", 0, `"1MB/s": byte units are ambiguous (tc reads mbps as megabytes per second): write bits, like 10mbit or 80mbit`},
		{"5mbyte", 0, `"5mbyte": byte units are ambiguous (tc reads mbps as megabytes per second): write bits, like 10mbit or 80mbit`},
		{"10xbit", 0, `"10xbit": want a number and a unit, like 10mbit; ` + units},
		{"mbit", 0, `"mbit": want a number and a unit, like 10mbit; ` + units},
		{"-5mbit", 0, `"-5mbit": want a number and a unit, like 10mbit; ` + units},
		{"1.2.3mbit", 0, `"1.2.3mbit": want a number and a unit, like 10mbit; ` + units},
		{"", 0, `"": want a number and a unit, like 10mbit; ` + units},
		{"100bit", 0, `"100bit": must be at least 8 kbit/s, or 0 for unlimited`},
		{"0.4bit", 0, `"0.4bit": must be at least 8 kbit/s, or 0 for unlimited`},
		{"99999999999tbit", 0, `"99999999999tbit": too large`},
	} {
		got, err := ParseRate(tc.in)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseRate(%q) = %v, %v; want error %s", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
