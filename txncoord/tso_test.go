package txncoord

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memMeta is a meta group that applies proposals in memory: enough to check
// what the TSO persists and when.
type memMeta struct {
	mu       sync.Mutex
	state    *basaltpb.MetaState
	reads    int
	failNext error
	// confirmErr is what ConfirmLeader answers (nil: leadership confirmed).
	confirmErr error
}

func (m *memMeta) ReadState(context.Context) (*basaltpb.MetaState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if m.state == nil {
		m.state = &basaltpb.MetaState{}
	}
	return proto.Clone(m.state).(*basaltpb.MetaState), nil
}

func (m *memMeta) ConfirmLeader(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	return m.confirmErr
}

func (m *memMeta) Sync(ctx context.Context) error { return m.ConfirmLeader(ctx) }

func (m *memMeta) Propose(_ context.Context, c *basaltpb.MetaCommand) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.failNext; err != nil {
		m.failNext = nil
		return err
	}
	if m.state == nil {
		m.state = &basaltpb.MetaState{}
	}
	if s := c.GetSetTsoCeiling(); s != nil {
		m.state.TsoCeiling = s.Ceiling
	}
	return nil
}

func (m *memMeta) ceiling() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.GetTsoCeiling()
}

func TestTSOAllocatesBelowPersistedCeiling(t *testing.T) {
	ctx := context.Background()
	meta := &memMeta{}
	tso := NewTSO(meta, 100)
	if _, err := tso.Allocate(ctx, 1); !errors.Is(err, ErrTSONotReady) {
		t.Fatalf("allocate before Start: %v", err)
	}
	if err := tso.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if cur, _ := tso.Current(ctx); cur != 1 {
		t.Fatalf("an empty cluster is at revision 1, got %d", cur)
	}
	next := int64(2)
	for _, n := range []int{1, 5, 50, 200, 1} {
		first, err := tso.Allocate(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if first != next {
			t.Fatalf("Allocate(%d) = %d, want %d", n, first, next)
		}
		next += int64(n)
		if c := meta.ceiling(); c < next {
			t.Fatalf("handed out up to %d with the persisted ceiling at %d", next-1, c)
		}
		if cur, _ := tso.Current(ctx); cur != next-1 {
			t.Fatalf("Current = %d, want %d", cur, next-1)
		}
	}

	// Starting a TSO that serves changes nothing: the next revision
	// follows the last one handed out.
	if err := tso.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if first, _ := tso.Allocate(ctx, 1); first != next {
		t.Fatalf("after a second Start the next revision is %d, want %d", first, next)
	}
	next++

	// A new TSO (restart, or another leader) starts at the ceiling: never
	// below anything handed out.
	ceiling := meta.ceiling()
	tso2 := NewTSO(meta, 100)
	if err := tso2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if first, _ := tso2.Allocate(ctx, 1); first != ceiling {
		t.Fatalf("new TSO starts at %d, want the ceiling %d", first, ceiling)
	}

	// Release lowers the ceiling to the next revision: no gap for the next.
	if err := tso2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if meta.ceiling() != ceiling+1 {
		t.Fatalf("ceiling after release %d, want %d", meta.ceiling(), ceiling+1)
	}
	if _, err := tso2.Allocate(ctx, 1); !errors.Is(err, ErrTSONotReady) {
		t.Fatalf("allocate after Release: %v", err)
	}
	tso3 := NewTSO(meta, 100)
	_ = tso3.Start(ctx)
	if first, _ := tso3.Allocate(ctx, 1); first != ceiling+1 {
		t.Fatalf("after a release the next TSO continues at %d, got %d", ceiling+1, first)
	}
}

func TestTSOFailedCeilingHandsOutNothing(t *testing.T) {
	ctx := context.Background()
	meta := &memMeta{}
	tso := NewTSO(meta, 10)
	_ = tso.Start(ctx)
	meta.failNext = errors.New("no quorum")
	if _, err := tso.Allocate(ctx, 1); err == nil {
		t.Fatal("allocation must fail when the ceiling cannot be persisted")
	}
	if first, err := tso.Allocate(ctx, 1); err != nil || first != 2 {
		t.Fatalf("after the failure: %d %v, want 2", first, err)
	}
}

func TestTSOCurrentConfirmsLeadership(t *testing.T) {
	ctx := context.Background()
	meta := &memMeta{}
	tso := NewTSO(meta, 10)
	_ = tso.Start(ctx)
	before := meta.reads
	if _, err := tso.Current(ctx); err != nil {
		t.Fatal(err)
	}
	if meta.reads != before+1 {
		t.Fatal("Current must confirm leadership of the meta group")
	}
	tso.Stop()
	if _, err := tso.Current(ctx); !errors.Is(err, ErrTSONotReady) {
		t.Fatalf("Current after Stop: %v", err)
	}
}

// slowServer counts calls and takes a while per call, so that requests
// pile up behind the one in flight.
type slowServer struct {
	next      atomic.Int64
	allocs    atomic.Int64
	currents  atomic.Int64
	inflight  atomic.Int64
	overlap   atomic.Bool
	callDelay time.Duration
}

func (s *slowServer) enter() {
	if s.inflight.Add(1) > 1 {
		s.overlap.Store(true)
	}
	time.Sleep(s.callDelay)
}

func (s *slowServer) Allocate(_ context.Context, n int) (int64, error) {
	s.enter()
	defer s.inflight.Add(-1)
	s.allocs.Add(1)
	return s.next.Add(int64(n)) - int64(n), nil
}

func (s *slowServer) Current(context.Context) (int64, error) {
	s.enter()
	defer s.inflight.Add(-1)
	s.currents.Add(1)
	return s.next.Load() - 1, nil
}

func TestTSOClientMergesRequests(t *testing.T) {
	srv := &slowServer{callDelay: 2 * time.Millisecond}
	srv.next.Store(2)
	c := NewTSOClient(srv)
	defer c.Close()
	const callers = 200
	var wg sync.WaitGroup
	firsts := make([]int64, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 1 + i%3
			first, err := c.Allocate(context.Background(), n)
			if err != nil {
				t.Error(err)
			}
			firsts[i] = first
			if cur, err := c.Current(context.Background()); err != nil || cur < first+int64(n)-1 {
				t.Errorf("Current %d (err %v) below a revision already handed out (%d)", cur, err, first+int64(n)-1)
			}
		}()
	}
	wg.Wait()
	// Every revision handed out once.
	seen := map[int64]bool{}
	for i, f := range firsts {
		for r := f; r < f+int64(1+i%3); r++ {
			if seen[r] {
				t.Fatalf("revision %d handed out twice", r)
			}
			seen[r] = true
		}
	}
	if srv.overlap.Load() {
		t.Fatal("more than one call in flight to the server")
	}
	if a, cur := srv.allocs.Load(), srv.currents.Load(); a >= callers || cur >= callers {
		t.Fatalf("%d Allocate and %d Current calls for %d callers each: requests were not merged", a, cur, callers)
	}
	t.Logf("%d callers: %d Allocate calls, %d Current calls", callers, srv.allocs.Load(), srv.currents.Load())
}

func TestTSOClientCloseFailsCallers(t *testing.T) {
	c := NewTSOClient(&slowServer{})
	c.Close()
	if _, err := c.Allocate(context.Background(), 1); !errors.Is(err, ErrTSOClientClosed) {
		t.Fatalf("allocate after close: %v", err)
	}
}
