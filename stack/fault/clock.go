package fault

import "time"

// clock is where the Injector reads the time and gets its one timer from;
// the tests put a clock in it that they move by hand.
type clock interface {
	now() time.Time
	// newTimer returns a stopped timer.
	newTimer() timer
}

// timer is the part of time.Timer the scheduler uses.
type timer interface {
	c() <-chan time.Time
	// reset arms the timer to fire d from now; a stale firing of the
	// previous arming is never received after it (Go 1.23 timers).
	reset(d time.Duration)
	stop()
}

type realClock struct{}

func (realClock) now() time.Time { return time.Now() }

func (realClock) newTimer() timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return realTimer{t}
}

type realTimer struct{ t *time.Timer }

func (t realTimer) c() <-chan time.Time   { return t.t.C }
func (t realTimer) reset(d time.Duration) { t.t.Reset(d) }
func (t realTimer) stop()                 { t.t.Stop() }
