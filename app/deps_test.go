package app

import (
	"go/build"
	"strings"
	"testing"
)

// The application layer knows nothing of the layers below it: it imports only
// the standard library, so neither stack, tunif nor gVisor (nor anything that
// pulls them in). Its tests may use golang.org/x/net/nettest and nothing of ustack.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("app imports %s; it may import only the standard library", imp)
		}
	}
	for _, imp := range append(pkg.TestImports, pkg.XTestImports...) {
		for _, bad := range []string{"github.com/ustack/ustack/", "gvisor.dev/", "golang.zx2c4.com/", "github.com/vishvananda/"} {
			if strings.HasPrefix(imp, bad) {
				t.Errorf("app's tests import %s", imp)
			}
		}
	}
}
