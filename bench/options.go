package bench

import (
	"errors"
	"fmt"
	"time"
)

// Options configures one benchmark run.
type Options struct {
	// Endpoints are the client URLs of the cluster under test.
	Endpoints []string
	// Clients is the number of concurrent clients (goroutines).
	Clients int
	// Conns is the number of gRPC connections the clients share.
	Conns int
	// Total is the number of requests; 0 means run for Duration.
	Total int
	// Duration bounds the run when Total is 0.
	Duration time.Duration
	// Rate caps requests per second across all clients; 0 is unlimited.
	Rate float64
	// Warmup is run (and not measured) before the measured part.
	Warmup time.Duration
	// Progress shows progress on stderr.
	Progress bool
	// Seed makes key and value choices reproducible.
	Seed uint64
	// ServerPIDs are the local processes of the cluster under test; when
	// set, the result reports their CPU time (Result.ServerCPU).
	ServerPIDs []int
}

// Validate checks the options and fills in defaults.
func (o *Options) Validate() error {
	if len(o.Endpoints) == 0 {
		return errors.New("bench: no endpoints")
	}
	if o.Clients <= 0 {
		o.Clients = 1
	}
	if o.Conns <= 0 {
		o.Conns = 1
	}
	if o.Conns > o.Clients {
		o.Conns = o.Clients
	}
	if o.Total < 0 || o.Duration < 0 || o.Rate < 0 {
		return errors.New("bench: --total, --duration and --rate must not be negative")
	}
	if o.Total == 0 && o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.Total > 0 && o.Total < o.Clients {
		return fmt.Errorf("bench: --total %d is less than --clients %d", o.Total, o.Clients)
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	return nil
}
