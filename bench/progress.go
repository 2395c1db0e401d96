package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mattn/go-isatty"
)

// progress reports a run as it goes: a bar redrawn in place on a terminal,
// a plain line every few seconds otherwise.
type progress struct {
	w        io.Writer
	o        Options
	start    time.Time
	terminal bool
}

func newProgress(w io.Writer, o Options, start time.Time) *progress {
	p := &progress{w: w, o: o, start: start}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		p.terminal = true
	}
	return p
}

// run reports until the returned function is called.
func (p *progress) run(done, failed *atomic.Int64) (stop func()) {
	if p.w == io.Discard {
		return func() {}
	}
	every := 5 * time.Second
	if p.terminal {
		every = 200 * time.Millisecond
	}
	stopc, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.print(done.Load(), failed.Load(), false)
			case <-stopc:
				p.print(done.Load(), failed.Load(), true)
				return
			}
		}
	}()
	return func() {
		close(stopc)
		<-exited
	}
}

// fraction is how far the run is, from 0 to 1.
func (p *progress) fraction(done int64) float64 {
	if p.o.Total > 0 {
		return min(float64(done)/float64(p.o.Total), 1)
	}
	return min(time.Since(p.start).Seconds()/p.o.Duration.Seconds(), 1)
}

func (p *progress) print(done, failed int64, last bool) {
	elapsed := time.Since(p.start).Seconds()
	line := fmt.Sprintf("%d requests, %d errors, %.0f/s", done, failed, float64(done)/max(elapsed, 1e-9))
	if !p.terminal {
		fmt.Fprintf(p.w, "%5.1fs  %s\n", elapsed, line)
		return
	}
	const width = 30
	filled := int(p.fraction(done) * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	end := ""
	if last {
		end = "\n"
	}
	fmt.Fprintf(p.w, "\r[%s] %3.0f%%  %s   %s", bar, 100*p.fraction(done), line, end)
}
