package workers

import (
	"testing"
	"time"
)

// A result refused by a leaderless results stream is published again every
// 200 ms while an election may last, then less often as the outage goes
// on (a bus restarted after 10 s: within 1.2 s of its return), never more
// than 5 s apart, and never less often as time passes.
func TestResultRetryWaitsLittleDuringAnElection(t *testing.T) {
	for _, c := range []struct {
		elapsed, want time.Duration
	}{{0, 200 * time.Millisecond}, {4900 * time.Millisecond, 200 * time.Millisecond}, {10 * time.Second, 1200 * time.Millisecond}, {time.Minute, 5 * time.Second}} {
		if got := resultRetry(c.elapsed); got != c.want {
			t.Errorf("after %v of failures: wait %v, want %v", c.elapsed, got, c.want)
		}
	}
	last := time.Duration(0)
	for e := time.Duration(0); e < 2*time.Minute; e += 100 * time.Millisecond {
		if w := resultRetry(e); w < last {
			t.Fatalf("the wait shrinks: %v after %v, %v before", w, e, last)
		} else {
			last = w
		}
	}
}
