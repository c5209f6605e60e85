package cli

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// serviceKinds are the apps --serve can run on the userspace stack, with what
// each is.
var serviceKinds = map[string]string{
	"ack":     "the article's ACK server: each line (TCP) or datagram (UDP) answered with ACK: <it>",
	"echo":    "RFC 862: every byte sent back",
	"discard": "RFC 863: every byte read and thrown away",
	"chargen": "RFC 864: lines of characters until the client closes",
	"http":    "a small web server: / describes your connection, /bytes?n=N sends N bytes",
}

// serviceSpec is one app of --serve and its port.
type serviceSpec struct {
	kind string
	port uint16
}

func (s serviceSpec) String() string { return fmt.Sprintf("%s:%d", s.kind, s.port) }

// parseServe parses --serve: KIND:PORT pairs separated by commas, like
// ack:5000,echo:7,http:80.
func parseServe(v string) ([]serviceSpec, error) {
	var specs []serviceSpec
	seen := map[uint16]string{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		kind, portStr, ok := strings.Cut(item, ":")
		if !ok || kind == "" || portStr == "" {
			return nil, fmt.Errorf("%q: give KIND:PORT, like ack:5000 or http:80 (kinds: %s)", item, kindList())
		}
		kind = strings.ToLower(kind)
		if _, known := serviceKinds[kind]; !known {
			return nil, fmt.Errorf("%q: unknown app %q: the apps are %s", item, kind, kindList())
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			return nil, fmt.Errorf("%q: the port must be 1..65535", item)
		}
		if other, dup := seen[uint16(port)]; dup {
			return nil, fmt.Errorf("port %d is given to both %s and %s", port, other, kind)
		}
		seen[uint16(port)] = kind
		specs = append(specs, serviceSpec{kind, uint16(port)})
	}
	return specs, nil
}

func kindList() string {
	kinds := make([]string, 0, len(serviceKinds))
	for k := range serviceKinds {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	return strings.Join(kinds, ", ")
}
