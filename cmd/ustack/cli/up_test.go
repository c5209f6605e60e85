package cli

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ustack/ustack/tunif/netnstest"
)

func TestMain(m *testing.M) { netnstest.Main(m) }

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestUpStopsCleanlyInProcess runs `ustack up` in this process, stops it (as
// SIGTERM does, by cancelling its context) while clients are connected, and
// checks that it returns 0, removes the interface and leaves no goroutine.
func TestUpStopsCleanlyInProcess(t *testing.T) {
	netnstest.Require(t)
	defer goleak.VerifyNone(t)

	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, []string{"up", "--name", "ustackl", "--addr", "198.18.5.1/24", "--no-ipv6"},
			&Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr})
	}()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stdout.String(), "TCP Server running"); {
		if time.Now().After(deadline) {
			t.Fatalf("not ready in 10s: %s %s", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	var conns []net.Conn
	for i := range 3 {
		c, err := net.DialTimeout("tcp", "198.18.5.2:5000", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if i < 2 {
			c.Write([]byte("hi\n"))
			if r, err := bufio.NewReader(c).ReadString('\n'); r != "ACK: hi\n" {
				t.Fatalf("reply %q, %v", r, err)
			}
		}
		conns = append(conns, c)
	}
	// One client is mid-line when the stop comes.
	conns[2].Write([]byte("half a li"))

	began := time.Now()
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("Run returned %d; stderr:\n%s", c, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of the stop")
	}
	if took := time.Since(began); took > 4*time.Second { // 1s of grace, then teardown
		t.Errorf("stopping took %v", took)
	}
	if _, err := net.InterfaceByName("ustackl"); err == nil {
		t.Error("ustackl still exists")
	}
	if !strings.HasSuffix(stdout.String(), "ustackl removed\n") {
		t.Errorf("stdout does not end with the removal:\n%s", stdout.String())
	}
	for _, c := range conns {
		c.Close()
	}
}
