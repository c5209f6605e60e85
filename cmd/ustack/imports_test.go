package main

import (
	"go/build"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportGraph pins the design's dependency direction (README, "The layers in the code"), so the layers stay
// visible in the folders: cmd/ustack → app, stack, tunif; stack reaches the
// device only through tun.Device and never configures it (no netlink); tunif
// knows nothing of gVisor; app knows no stack at all. It follows imports
// through the module's own packages, so a forbidden import by way of another
// ustack package is caught too.
func TestImportGraph(t *testing.T) {
	const mod = "github.com/ustack/ustack/"
	forbidden := map[string][]string{
		"app":   {mod + "stack", mod + "tunif", mod + "cmd", "gvisor.dev/", "golang.zx2c4.com/", "github.com/vishvananda/"},
		"stack": {mod + "tunif", mod + "app", mod + "cmd", "github.com/vishvananda/"},
		// ustack bench's reference peer: gVisor on its own, beside stack.
		"stack/reference": {mod + "tunif", mod + "app", mod + "cmd", mod + "stack/", "github.com/vishvananda/", "golang.zx2c4.com/"},
		"tunif":           {mod + "stack", mod + "app", mod + "cmd", "gvisor.dev/"},
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// imports returns every import reached from the package in dir, through
	// the module's own packages.
	var imports func(dir string, seen map[string]bool)
	imports = func(dir string, seen map[string]bool) {
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, imp := range pkg.Imports {
			if seen[imp] {
				continue
			}
			seen[imp] = true
			if rel, ok := strings.CutPrefix(imp, mod); ok {
				imports(filepath.Join(root, rel), seen)
			}
		}
	}
	for layer, bad := range forbidden {
		seen := map[string]bool{}
		imports(filepath.Join(root, layer), seen)
		if len(seen) == 0 {
			t.Fatalf("%s imports nothing: the test would pass vacuously", layer)
		}
		for imp := range seen {
			for _, b := range bad {
				if imp == strings.TrimSuffix(b, "/") || strings.HasPrefix(imp, b) || strings.HasPrefix(imp, b+"/") {
					t.Errorf("%s reaches %s: the layering forbids %s → %s", layer, imp, layer, b)
				}
			}
		}
	}
}
