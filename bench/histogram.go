package bench

import (
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram records latencies in microseconds, from 1 µs to 5 minutes at
// three significant figures. It is safe for concurrent use.
type Histogram struct {
	mu sync.Mutex
	h  *hdr.Histogram
}

const maxLatencyMicros = int64(5 * time.Minute / time.Microsecond)

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdr.New(1, maxLatencyMicros, 3)}
}

// Record adds one latency; values beyond the range are clamped.
func (h *Histogram) Record(d time.Duration) {
	us := max(int64(d/time.Microsecond), 1)
	us = min(us, maxLatencyMicros)
	h.mu.Lock()
	_ = h.h.RecordValue(us)
	h.mu.Unlock()
}

// Count returns the number of recorded values.
func (h *Histogram) Count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.h.TotalCount()
}

// Merge adds every value of o.
func (h *Histogram) Merge(o *Histogram) {
	o.mu.Lock()
	snap := o.h.Export()
	o.mu.Unlock()
	h.mu.Lock()
	h.h.Merge(hdr.Import(snap))
	h.mu.Unlock()
}

// Percentiles summarises a latency distribution in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Percentiles returns the summary of the recorded values.
func (h *Histogram) Percentiles() Percentiles {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		Count: h.h.TotalCount(),
		Mean:  h.h.Mean() / 1000,
		P50:   ms(h.h.ValueAtQuantile(50)),
		P90:   ms(h.h.ValueAtQuantile(90)),
		P99:   ms(h.h.ValueAtQuantile(99)),
		P999:  ms(h.h.ValueAtQuantile(99.9)),
		Max:   ms(h.h.Max()),
	}
}

// MarshalText encodes the histogram (HdrHistogram's compressed form, in
// base64) so that results from several machines can be merged exactly.
func (h *Histogram) MarshalText() ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, err := h.h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		return nil, err
	}
	// Encode already base64-encodes.
	return b, nil
}

// UnmarshalText decodes what MarshalText produced.
func (h *Histogram) UnmarshalText(b []byte) (err error) {
	// The decoder indexes into its input without checking it all; a
	// malformed file must be an error, not a crash.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bench: malformed histogram: %v", r)
		}
	}()
	raw, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("bench: histogram is not base64: %w", err)
	}
	if len(raw) < 40 { // the encoding's header
		return fmt.Errorf("bench: histogram encoding too short (%d bytes)", len(raw))
	}
	d, err := hdr.Decode(b)
	if err != nil {
		return fmt.Errorf("bench: decode histogram: %w", err)
	}
	h.mu.Lock()
	h.h = d
	h.mu.Unlock()
	return nil
}
