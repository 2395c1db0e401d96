package placement

import (
	"path/filepath"
	"strings"
	"sync"

	"github.com/basaltdb/basalt/shard"
)

// Dragonboat's Raft log store is a Pebble (of the version dragonboat pins,
// which only it uses here) that opens its files through that Pebble's
// default file system; dragonboat accepts no other file system outside its
// own tests. To tell the sequencers when the store syncs (shard.SyncGate),
// the default is wrapped once, before any store opens (on Linux, in
// logsync_linux.go), and each host registers the gate of its Raft
// directory. Files of unregistered directories, and every file but the
// write-ahead logs, pass through unchanged. Elsewhere no gate sees a sync,
// and sequencers propose every write at once. The wrapped logs also skip
// the syncs that only a commit index needs (logscan.go).

// logGates holds the gate of every watched Raft directory.
var logGates struct {
	sync.Mutex
	byDir map[string]*shard.SyncGate // absolute Raft directory -> its gate
}

// watchLogSyncs reports the syncs of the write-ahead logs of the Raft log
// store in dir to gate, until unwatchLogSyncs.
func watchLogSyncs(dir string, gate *shard.SyncGate) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	logGates.Lock()
	defer logGates.Unlock()
	if logGates.byDir == nil {
		logGates.byDir = make(map[string]*shard.SyncGate)
	}
	logGates.byDir[abs] = gate
	return nil
}

// unwatchLogSyncs ends watchLogSyncs(dir, gate); a later watch of dir with
// another gate stays.
func unwatchLogSyncs(dir string, gate *shard.SyncGate) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return
	}
	logGates.Lock()
	if logGates.byDir[abs] == gate {
		delete(logGates.byDir, abs)
	}
	logGates.Unlock()
}

// logGateOf returns the gate watching the directory that holds file name.
func logGateOf(name string) *shard.SyncGate {
	abs, err := filepath.Abs(name)
	if err != nil {
		return nil
	}
	logGates.Lock()
	defer logGates.Unlock()
	for dir, g := range logGates.byDir {
		if strings.HasPrefix(abs, dir+string(filepath.Separator)) {
			return g
		}
	}
	return nil
}

// isLogFile tells whether name is a write-ahead log of a Pebble.
func isLogFile(name string) bool { return strings.HasSuffix(name, ".log") }
