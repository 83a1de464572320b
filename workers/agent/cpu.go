package agent

import (
	"math"
	"time"

	"github.com/skeinhq/skein/internal/container"
)

// cpuWindow is the time constant of the average of the CPU that the
// server's other containers use: a burst of a few seconds barely counts, a
// container busy for a minute counts in full.
const cpuWindow = 15 * time.Second

// cpuMeter averages the CPU that the containers that are no job's instance
// use, from the CPU time Incus counts for each one.
type cpuMeter struct {
	seen map[string]uint64 // each container's CPU time at the last sample
	at   time.Time         // when that was
	avg  float64           // millicores
	// primed: avg holds a rate (an agent that restarts starts from its
	// first one, not from zero for a minute).
	primed bool
}

// sample takes the containers as listed at now and returns the average, in
// millicores. A container seen for the first time, or restarted (its count
// went back), counts from this sample on.
func (m *cpuMeter) sample(list []container.Instance, now time.Time) int64 {
	seen := make(map[string]uint64, len(list))
	var used uint64
	for _, c := range list {
		if c.Job != "" || c.CPUUsage == 0 {
			continue
		}
		seen[c.Name] = c.CPUUsage
		if before, ok := m.seen[c.Name]; ok && c.CPUUsage >= before {
			used += c.CPUUsage - before
		}
	}
	if dt := now.Sub(m.at); !m.at.IsZero() && dt > 0 {
		rate := float64(used) / float64(dt.Nanoseconds()) * 1000
		alpha := 1 - math.Exp(-float64(dt)/float64(cpuWindow))
		if !m.primed {
			alpha, m.primed = 1, true
		}
		m.avg += alpha * (rate - m.avg)
	}
	m.seen, m.at = seen, now
	return int64(math.Round(m.avg))
}
