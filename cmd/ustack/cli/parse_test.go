package cli

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		positional []string
		name       string
		quiet      bool
	}{
		{[]string{"a", "b"}, []string{"a", "b"}, "", false},
		{[]string{"a", "--name", "n", "b", "--quiet"}, []string{"a", "b"}, "n", true},
		{[]string{"--quiet", "a", "--", "--name", "x"}, []string{"a", "--name", "x"}, "", true},
		{[]string{"--name", "--", "a", "--quiet"}, []string{"a"}, "--", true},
		{[]string{"--name", "--", "--", "--quiet"}, []string{"--quiet"}, "--", false},
		{[]string{"--quiet", "--", "-"}, []string{"-"}, "", true},
		{[]string{"-"}, []string{"-"}, "", false},
		{[]string{"--name=--", "a"}, []string{"a"}, "--", false},
	} {
		fs := newFlagSet("t", "t", "t")
		name := fs.String("name", "", "")
		quiet := fs.Bool("quiet", false, "")
		got, err := parse(fs, &Env{Stdout: io.Discard}, tc.args)
		if err != nil || !slices.Equal(got, tc.positional) || *name != tc.name || *quiet != tc.quiet {
			t.Errorf("parse(%q) = %q, %v, name %q, quiet %v; want %q, name %q, quiet %v",
				tc.args, got, err, *name, *quiet, tc.positional, tc.name, tc.quiet)
		}
	}
}

func TestParseErrorsSpellFlagsAsTyped(t *testing.T) {
	for args, want := range map[string]string{
		"--bogus":      "flag provided but not defined: --bogus",
		"-bogus":       "flag provided but not defined: -bogus",
		"--mtu=x":      `invalid value "x" for flag --mtu`,
		"a --mtu x":    `invalid value "x" for flag --mtu`,
		"-mtu x":       `invalid value "x" for flag -mtu`,
		"--mtu":        "flag needs an argument: --mtu",
		"-mtu":         "flag needs an argument: -mtu",
		"a -x --mtu 1": "flag provided but not defined: -x",
	} {
		fs := newFlagSet("t", "t", "t")
		fs.Int("mtu", 0, "")
		_, err := parse(fs, &Env{Stdout: io.Discard}, strings.Fields(args))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parse(%q): %v; want %q", args, err, want)
		}
	}
}
