package main

// End-to-end tests of the fast path (--offload): bulk data both ways through
// a real TUN, byte for byte.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ustack/ustack/tunif/netnstest"
)

// bulkSize is what TestBulkSHA256 moves each way.
const bulkSize = 64 << 20

// TestBulkSHA256 moves 64 MiB each way through the TUN — up to the discard
// server, which logs the SHA-256 of what it read, and down from chargen,
// whose bytes are RFC 864's pattern — at MTU 1500 and 65535, on the fast
// path, and at 1500 on the tun.Device path. On the fast path, superpackets
// must have crossed both ways at MTU 1500 (at 65535 a wire segment is as
// large as one).
func TestBulkSHA256(t *testing.T) {
	netnstest.Require(t)
	in := randomBytes(t, bulkSize)
	sum := sha256.Sum256(in)
	wantLog := fmt.Sprintf("received=%d sent=0 sha256=%s", len(in), hex.EncodeToString(sum[:]))
	down := sha256.Sum256(chargenPattern(bulkSize))
	for i, tc := range []struct {
		mtu     int
		offload string
	}{
		{1500, "on"},
		{65535, "on"},
		{1500, "off"},
	} {
		t.Run(fmt.Sprintf("mtu=%d offload=%s", tc.mtu, tc.offload), func(t *testing.T) {
			name := fmt.Sprintf("ustackb%d", i)
			host := fmt.Sprintf("198.18.%d.2", 20+i)
			p := start(t, "chargen on port 19", "up", "--name", name, "--addr", fmt.Sprintf("198.18.%d.1/24", 20+i), "--no-ipv6",
				"--mtu", strconv.Itoa(tc.mtu), "--offload", tc.offload, "--serve", "discard:9,chargen:19")
			defer p.stop(t, syscall.SIGINT)

			began := time.Now()
			c := dial(t, net.JoinHostPort(host, "9"))
			go func() { c.Write(in); c.(*net.TCPConn).CloseWrite() }()
			if got, err := io.ReadAll(c); err != nil || len(got) != 0 {
				t.Fatalf("discard answered %d bytes, %v", len(got), err)
			}
			waitFor(t, "the discard server's "+wantLog, func() bool { return strings.Contains(p.stderr.String(), wantLog) })
			up := time.Since(began)

			began = time.Now()
			c = dial(t, net.JoinHostPort(host, "19"))
			got := make([]byte, bulkSize)
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatalf("chargen: %v", err)
			}
			c.Close()
			if sha256.Sum256(got) != down {
				t.Fatal("the 64 MiB from chargen differ from RFC 864's pattern")
			}
			t.Logf("64 MiB up in %v, down in %v", up.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))

			l := statsJSON(t, "--name", name).Link
			if l.Offload != (tc.offload == "on") {
				t.Errorf("--offload %s, and the link says offload=%v", tc.offload, l.Offload)
			}
			if l.RxBadFrames != 0 {
				t.Errorf("%d frames from the kernel dropped as malformed", l.RxBadFrames)
			}
			if tc.offload == "on" && tc.mtu == 1500 && (l.RxSuperpackets == 0 || l.TxSuperpackets == 0) {
				t.Errorf("no superpackets crossed both ways: in %d, out %d", l.RxSuperpackets, l.TxSuperpackets)
			}
			if tc.offload == "off" && (l.RxSuperpackets != 0 || l.TxSuperpackets != 0) {
				t.Errorf("superpackets with --offload off: in %d, out %d", l.RxSuperpackets, l.TxSuperpackets)
			}
		})
	}
}
