package cli

import (
	"context"
	"fmt"
	"runtime/debug"
)

func runVersion(_ context.Context, env *Env, args []string) error {
	fs := newFlagSet("version", "ustack version", "Prints the version of ustack and of the libraries it is built on.")
	if err := parseFlagsOnly(fs, env, args); err != nil {
		return err
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(env.Stdout, "ustack (no build information)")
		return nil
	}
	fmt.Fprintf(env.Stdout, "ustack %s (%s)\n", buildVersion(), info.GoVersion)
	for _, d := range info.Deps {
		switch d.Path {
		case "gvisor.dev/gvisor", "golang.zx2c4.com/wireguard", "github.com/vishvananda/netlink":
			fmt.Fprintf(env.Stdout, "  %s %s\n", d.Path, d.Version)
		}
	}
	return nil
}

// buildVersion is the module version and the commit ustack was built from.
func buildVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(no build information)"
	}
	version := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			version += " " + s.Value
		}
	}
	return version
}
