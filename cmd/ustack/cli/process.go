package cli

import (
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"

	"github.com/ustack/ustack/stack"
)

// processInfo reads this process's goroutines, open file descriptors, resident
// memory (from /proc/self) and live heap.
func processInfo() *stack.ProcessInfo {
	p := &stack.ProcessInfo{PID: os.Getpid(), Goroutines: runtime.NumGoroutine()}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		p.FDs = len(fds) - 1 // less the one ReadDir had open
	}
	if rss, err := processRSS(os.Getpid()); err == nil {
		p.RSSBytes = uint64(rss)
	}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		p.HeapBytes = sample[0].Value.Uint64()
	}
	return p
}

// processRSS reads a process's resident memory, in bytes, from
// /proc/PID/status.
func processRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
