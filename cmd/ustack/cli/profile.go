package cli

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// profileFlags are up's Go profiles, for finding where the stack spends its
// time and memory (go tool pprof FILE).
type profileFlags struct {
	cpu, mem string
	cpuFile  *os.File
	memFile  *os.File
}

func (p *profileFlags) register(fs *flagSet) {
	fs.StringVar(&p.cpu, "cpuprofile", "", "write a CPU profile of the whole run to `FILE`, for go tool pprof")
	fs.StringVar(&p.mem, "memprofile", "", "write a heap profile to `FILE` when ustack is asked to stop, before it closes the connections (what the live connections hold), for go tool pprof")
}

// start creates the files, before any privilege is dropped, and starts the
// CPU profile.
func (p *profileFlags) start() error {
	if p.cpu != "" && p.cpu == p.mem {
		return usageErrorf("--cpuprofile and --memprofile name the same file %q: give each its own", p.cpu)
	}
	if p.mem != "" {
		f, err := os.Create(p.mem)
		if err != nil {
			return usageErrorf("--memprofile: %v", err)
		}
		p.memFile = f
	}
	if p.cpu != "" {
		f, err := os.Create(p.cpu)
		if err != nil {
			p.close()
			return usageErrorf("--cpuprofile: %v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			p.close()
			return usageErrorf("--cpuprofile: %v", err)
		}
		p.cpuFile = f
	}
	return nil
}

// writeHeap writes the heap profile, after a collection so that it shows
// what is live.
func (p *profileFlags) writeHeap() error {
	if p.memFile == nil {
		return nil
	}
	runtime.GC()
	err := pprof.Lookup("heap").WriteTo(p.memFile, 0)
	err = errors.Join(err, p.memFile.Close())
	p.memFile = nil
	if err != nil {
		return fmt.Errorf("--memprofile: %v", err)
	}
	return nil
}

// close stops the CPU profile and closes the files.
func (p *profileFlags) close() error {
	var err error
	if p.cpuFile != nil {
		pprof.StopCPUProfile()
		err = p.cpuFile.Close()
		p.cpuFile = nil
	}
	if p.memFile != nil {
		err = errors.Join(err, p.memFile.Close())
		p.memFile = nil
	}
	if err != nil {
		return fmt.Errorf("profile: %v", err)
	}
	return nil
}
