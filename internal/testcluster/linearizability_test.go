package testcluster

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// registerInput is one operation on a register (a key).
type registerInput struct {
	op     string // "get", "put" or "cas"
	key    string
	value  string // put, cas: the new value
	expect string // cas
}

// registerOutput is what the operation returned. unknown marks a write
// whose client got an error: it may or may not have taken effect.
type registerOutput struct {
	value   string // get
	ok      bool   // cas
	unknown bool
}

// registerModel is a set of registers, checked key by key.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(registerInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "0" },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(string), input.(registerInput), output.(registerOutput)
		switch in.op {
		case "get":
			return out.value == st, st
		case "put":
			return true, in.value
		default: // cas
			if out.unknown {
				if st == in.expect {
					return true, in.value
				}
				return true, st
			}
			if out.ok {
				return st == in.expect, in.value
			}
			return st != in.expect, st
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(registerInput), output.(registerOutput)
		switch {
		case out.unknown:
			return fmt.Sprintf("%s(%s, %s) -> ?", in.op, in.key, in.value)
		case in.op == "get":
			return fmt.Sprintf("get(%s) -> %s", in.key, out.value)
		case in.op == "put":
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		return fmt.Sprintf("cas(%s, %s -> %s) -> %v", in.key, in.expect, in.value, out.ok)
	},
}

// TestLinearizableUnderLeaderKills runs a register workload (gets, puts and
// compare-and-swap transactions) from several clients, each talking to
// every node, while the leaders are stopped and restarted, and checks the
// history with porcupine.
func TestLinearizableUnderLeaderKills(t *testing.T) {
	c := Start(t, 3)
	history := registerWorkload(t, c, []string{"r0", "r1", "r2"}, func() {
		// Stop the data shard's leader, then the meta group's, restarting
		// each.
		for round := range 4 {
			time.Sleep(1500 * time.Millisecond)
			victim := c.Leader()
			if round%2 == 1 {
				victim = c.MetaLeader()
			}
			c.Stop(victim)
			time.Sleep(time.Second)
			c.Restart(victim)
		}
	})
	checkRegisters(t, history)
}

// TestLinearizableAcrossSplits runs the register workload on keys that
// end up in different shards while the shards split under it.
func TestLinearizableAcrossSplits(t *testing.T) {
	c := Start(t, 3)
	keys := []string{"r0", "r1", "r2", "r3", "r4", "r5"}
	history := registerWorkload(t, c, keys, func() {
		for i, at := range []string{"r3", "r1", "r5", "r2"} {
			time.Sleep(700 * time.Millisecond)
			split(t, c, i%len(c.Nodes), at)
		}
		time.Sleep(700 * time.Millisecond)
	})
	checkRegisters(t, history)
	if n := len(shards(t, c, 0)); n != 5 {
		t.Fatalf("%d shards after 4 splits, want 5", n)
	}
}

// registerWorkload runs the register workload from four clients on keys
// (set to "0" first) while during runs, and returns the history.
func registerWorkload(t *testing.T, c *Cluster, keys []string, during func()) []porcupine.Operation {
	ctx := ctxT(t, 2*time.Minute)
	setup := c.Client(t)
	for _, k := range keys {
		if _, err := setup.Put(ctx, k, "0"); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var (
		mu      sync.Mutex
		history []porcupine.Operation
		wg      sync.WaitGroup
	)
	wctx, stop := context.WithCancel(ctx)
	for id := range 4 {
		cl := c.Client(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(id), 1))
			last := map[string]string{}
			for seq := 0; wctx.Err() == nil; seq++ {
				in := registerInput{key: keys[rnd.IntN(len(keys))], value: fmt.Sprintf("%d-%d", id, seq)}
				var out registerOutput
				call := now()
				octx, cancel := context.WithTimeout(wctx, 2*time.Second)
				var err error
				switch r := rnd.IntN(10); {
				case r < 5:
					in.op = "get"
					var resp *clientv3.GetResponse
					if resp, err = cl.Get(octx, in.key); err == nil && len(resp.Kvs) == 1 {
						out.value = string(resp.Kvs[0].Value)
						last[in.key] = out.value
					}
				case r < 7:
					in.op = "put"
					_, err = cl.Put(octx, in.key, in.value)
				default:
					in.op, in.expect = "cas", last[in.key]
					if in.expect == "" {
						in.expect = "0"
					}
					var resp *clientv3.TxnResponse
					resp, err = cl.Txn(octx).If(clientv3.Compare(clientv3.Value(in.key), "=", in.expect)).
						Then(clientv3.OpPut(in.key, in.value)).Commit()
					if err == nil {
						out.ok = resp.Succeeded
					}
				}
				cancel()
				ret := now()
				if err != nil {
					if in.op == "get" {
						continue // a failed read observed nothing
					}
					out.unknown, ret = true, math.MaxInt64 // may take effect any time later
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		}()
	}
	during()
	time.Sleep(time.Second)
	stop()
	wg.Wait()
	return history
}

// checkRegisters requires a register history to be linearizable (an
// Unknown answer fails too).
func checkRegisters(t *testing.T, history []porcupine.Operation) {
	t.Helper()
	checkHistory(t, registerModel, history, 200, func(out any) bool { return out.(registerOutput).unknown })
}

// checkHistory requires a history of at least minCompleted completed
// operations to be linearizable under model (an Unknown answer fails too).
func checkHistory(t *testing.T, model porcupine.Model, history []porcupine.Operation, minCompleted int, unknown func(output any) bool) {
	t.Helper()
	ok, unsure := 0, 0
	for _, op := range history {
		if unknown(op.Output) {
			unsure++
		} else {
			ok++
		}
	}
	if ok < minCompleted {
		t.Fatalf("only %d operations completed", ok)
	}
	res, info := porcupine.CheckOperationsVerbose(model, history, time.Minute)
	if res != porcupine.Ok {
		// Kept after the test (not in t.TempDir) for a look in a browser.
		f, err := os.CreateTemp("", "history-*.html")
		if err != nil {
			t.Fatal(err)
		}
		path := f.Name()
		_ = f.Close()
		_ = porcupine.VisualizePath(model, info, path)
		t.Fatalf("history of %d operations is %s (visualization: %s)", len(history), res, path)
	}
	t.Logf("%d operations linearizable (%d with unknown outcome)", len(history), unsure)
}
