package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat: Linux reports
// them in clock ticks of 1/100 s on every architecture (USER_HZ).
const userHZ = 100

// processCPU returns the CPU time, user and system, that the processes
// have used so far, from /proc. ok is false where /proc cannot tell (not
// Linux, or a process is gone).
func processCPU(pids []int) (total time.Duration, ok bool) {
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, false
		}
		ticks, err := statCPUTicks(data)
		if err != nil {
			return 0, false
		}
		total += time.Duration(ticks) * time.Second / userHZ
	}
	return total, true
}

// statCPUTicks returns utime + stime from the text of /proc/PID/stat. The
// command name (field 2) is in parentheses and may hold spaces, so the
// fields are counted from the last ')'.
func statCPUTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: /proc stat without a command name: %q", stat)
	}
	// After ')': state is field 3; utime and stime are fields 14 and 15.
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("bench: short /proc stat: %q", stat)
	}
	utime, err := strconv.ParseInt(string(fields[11]), 10, 64)
	if err != nil {
		return 0, err
	}
	stime, err := strconv.ParseInt(string(fields[12]), 10, 64)
	if err != nil {
		return 0, err
	}
	return utime + stime, nil
}

// cpuMeter measures the CPU time the servers and this client use over
// one stretch of a run.
type cpuMeter struct {
	pids               []int
	server0, client0   time.Duration
	serverOK, clientOK bool
}

func startCPUMeter(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids}
	if len(pids) > 0 {
		m.server0, m.serverOK = processCPU(pids)
	}
	m.client0, m.clientOK = processCPU([]int{os.Getpid()})
	return m
}

// stop records the CPU seconds used since start into r; what could not be
// measured stays 0.
func (m *cpuMeter) stop(r *Result) {
	if m.serverOK {
		if t, ok := processCPU(m.pids); ok {
			r.ServerCPU = (t - m.server0).Seconds()
		}
	}
	if m.clientOK {
		if t, ok := processCPU([]int{os.Getpid()}); ok {
			r.ClientCPU = (t - m.client0).Seconds()
		}
	}
}
