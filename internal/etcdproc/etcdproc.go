package etcdproc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

var (
	toolMu    sync.Mutex
	toolPaths = map[string]string{}
)

// ToolPath returns the path of a go.mod tool's binary ("server",
// "etcdctl"), building it into Go's build cache the first time.
func ToolPath(name string) (string, error) {
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolPaths[name]; ok {
		return p, nil
	}
	out, err := exec.Command("go", "tool", "-n", name).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("etcdproc: go tool -n %s: %v: %s", name, err, ee.Stderr)
		}
		return "", fmt.Errorf("etcdproc: go tool -n %s: %w", name, err)
	}
	p := strings.TrimSpace(string(out))
	toolPaths[name] = p
	return p, nil
}

// Options configures an etcd server.
type Options struct {
	// Binary is the etcd server; empty means go.mod's tool.
	Binary string
	// Dir holds the data directory; it must exist.
	Dir string
	// ClientAddr and PeerAddr are loopback host:port pairs.
	ClientAddr, PeerAddr string
	// Name defaults to "default".
	Name string
	// InitialCluster is etcd's --initial-cluster; empty means this member
	// alone. The members of a new cluster must start together (Start each
	// in its own goroutine).
	InitialCluster string
	// Extra flags, e.g. "--max-txn-ops=64".
	Extra []string
	// Stdout and Stderr receive the server's output; nil discards it.
	Stdout, Stderr *os.File
}

// Server is a running etcd.
type Server struct {
	cmd  *exec.Cmd
	done chan struct{}
	// ClientURL is the URL clients reach it at.
	ClientURL string
}

// Start starts etcd with durable settings (fsync on, as Basalt) and waits
// until it answers /health.
func Start(ctx context.Context, o Options) (*Server, error) {
	bin := o.Binary
	if bin == "" {
		var err error
		if bin, err = ToolPath("server"); err != nil {
			return nil, err
		}
	}
	if o.Name == "" {
		o.Name = "default"
	}
	client := "http://" + o.ClientAddr
	peer := "http://" + o.PeerAddr
	args := []string{
		"--name=" + o.Name,
		"--data-dir=" + filepath.Join(o.Dir, o.Name+".etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=" + cmp.Or(o.InitialCluster, o.Name+"="+peer),
		"--log-level=error",
	}
	args = append(args, o.Extra...)
	cmd := exec.Command(bin, args...)
	if o.Stdout != nil {
		cmd.Stdout = o.Stdout
	}
	if o.Stderr != nil {
		cmd.Stderr = o.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("etcdproc: start etcd: %w", err)
	}
	s := &Server{cmd: cmd, done: make(chan struct{}), ClientURL: client}
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	if err := WaitHealthy(ctx, client, s.done); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// WaitHealthy waits until the server at url answers /health with 200, or
// exited is closed, or ctx ends. Basalt answers /health as etcd does.
func WaitHealthy(ctx context.Context, url string, exited <-chan struct{}) error {
	for {
		resp, err := http.Get(url + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("etcdproc: the server exited before it was healthy")
		case <-ctx.Done():
			return fmt.Errorf("etcdproc: %s not healthy: %w", url, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Pid returns the process id of the etcd process.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Stop kills etcd and waits for it to exit.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

// FreeAddr returns a loopback host:port that was free a moment ago. The
// port after it is kept free of other FreeAddr answers too: a Basalt node
// gossips there by default.
func FreeAddr() (string, error) {
	for range 1000 {
		port := freePortLow + rand.IntN(freePortHigh-freePortLow)
		if !portsHandedOut.claim(port) {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken
		}
		l.Close()
		return addr, nil
	}
	return "", errors.New("etcdproc: no free port found")
}

// Ports come from below the kernel's ephemeral range (32768 and up on
// Linux), where the outgoing connections of other processes (tests of
// other packages run alongside) take theirs: a port free when chosen then
// stays free until the server listens on it. A process never hands out a
// port twice.
const (
	freePortLow  = 20000
	freePortHigh = 32000
)

var portsHandedOut = &portSet{taken: map[int]bool{}}

type portSet struct {
	mu    sync.Mutex
	taken map[int]bool
}

// claim takes port and the one after it, unless either is taken.
func (s *portSet) claim(port int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.taken[port] || s.taken[port+1] {
		return false
	}
	s.taken[port], s.taken[port+1] = true, true
	return true
}
