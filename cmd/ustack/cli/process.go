package cli

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"

	"github.com/ustack/ustack/stack"
)

// processInfo reads this process's goroutines, open file descriptors, resident
// memory (from /proc/self) and live heap.
func processInfo() *stack.ProcessInfo {
	p := &stack.ProcessInfo{PID: os.Getpid(), Goroutines: runtime.NumGoroutine()}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		p.FDs = len(fds) - 1 // less the one ReadDir had open
	}
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(status))
		for sc.Scan() {
			if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmRSS:")); ok {
				f := bytes.Fields(rest)
				if len(f) > 0 {
					if kb, err := strconv.ParseUint(string(f[0]), 10, 64); err == nil {
						p.RSSBytes = kb << 10
					}
				}
			}
		}
	}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		p.HeapBytes = sample[0].Value.Uint64()
	}
	return p
}
