package cli

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/ustack/ustack/stack/tap"
)

// readPcap returns the packets of a pcap file, failing on a malformed one.
func readPcap(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.LinkType() != layers.LinkTypeRaw {
		t.Errorf("%s: link type %v, want raw IP", path, r.LinkType())
	}
	var pkts [][]byte
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return pkts
		}
		if err != nil {
			t.Fatalf("%s: packet %d: %v", path, len(pkts), err)
		}
		if ci.Length != ci.CaptureLength || ci.Timestamp.IsZero() {
			t.Errorf("%s: capture info %+v", path, ci)
		}
		pkts = append(pkts, data)
	}
}

func TestPcapRotatesAtItsLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pcap")
	const limit = 24 + 3*(16+60) // the file header and three 60-byte packets
	p, err := openPcap(path, nil, limit)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		data := make([]byte, 60)
		data[0], data[1] = 0x45, byte(i)
		if err := p.write(tap.Packet{Time: time.Now(), Data: data, Len: len(data)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	cur, old := readPcap(t, path), readPcap(t, path+".1")
	// Ten packets, three a file: the last file has the tenth, the one
	// before it the seventh to ninth; the older ones are gone.
	if len(cur) != 1 || len(old) != 3 || cur[0][1] != 9 || old[0][1] != 6 {
		t.Errorf("after rotation: %d packets in the file, %d in .1; want the newest 1 and the 3 before", len(cur), len(old))
	}
	for _, f := range []string{path, path + ".1"} {
		if st, err := os.Stat(f); err != nil || st.Size() > limit {
			t.Errorf("%s: %v bytes, limit %d (%v)", f, st.Size(), limit, err)
		}
	}
}

func TestPcapWriteErrorIsReported(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	p, err := openPcap("/dev/full", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	data := make([]byte, 1<<16)
	err = p.write(tap.Packet{Time: time.Now(), Data: data, Len: len(data)})
	if err == nil {
		err = p.flush()
	}
	if err == nil || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("writing to /dev/full: %v, want no space left on device", err)
	}
}
