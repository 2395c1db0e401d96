package bench

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestStatCPUTicks(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want int64
	}{
		// utime 1234 and stime 56, the 14th and 15th fields.
		{"4242 (basalt) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 12 0 100 0 0", 1290},
		// A command name may hold spaces and parentheses.
		{"7 (a b) c)) R 1 7 7 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0 100 0 0", 15},
	} {
		got, err := statCPUTicks([]byte(tc.stat))
		if err != nil || got != tc.want {
			t.Errorf("statCPUTicks(%q) = %d, %v; want %d", tc.stat, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "4242 basalt S 1", "4242 (basalt) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 5 0"} {
		if _, err := statCPUTicks([]byte(bad)); err == nil {
			t.Errorf("statCPUTicks(%q) must fail", bad)
		}
	}
}

// TestProcessCPU burns CPU on this process and checks that /proc reports
// about as much, in the right unit.
func TestProcessCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	self := []int{os.Getpid()}
	before, ok := processCPU(self)
	if !ok {
		t.Fatal("no CPU time for this process")
	}
	// Spin one goroutine for 300 ms of wall time: at most 300 ms of CPU,
	// and on a loaded machine at least some of it.
	start := time.Now()
	for x := 0; time.Since(start) < 300*time.Millisecond; x++ {
		_ = x * x
	}
	after, _ := processCPU(self)
	if used := after - before; used < 20*time.Millisecond || used > time.Duration(runtime.NumCPU())*400*time.Millisecond {
		t.Fatalf("spinning for 300 ms used %v of CPU by /proc", used)
	}
	if _, ok := processCPU([]int{os.Getpid(), 1 << 30}); ok {
		t.Fatal("a process that does not exist must make the figure unknown")
	}
}
