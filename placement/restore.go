package placement

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/basaltdb/basalt/mvcc"
	"github.com/basaltdb/basalt/shard"
)

// Restore creates the data directory of a member of a new cluster from a
// snapshot file (what Maintenance.Snapshot streams, as `etcdctl snapshot
// save` writes it), as etcdutl snapshot restore does for etcd. The key
// space, at the snapshot's revision with its history since the compacted
// revision, becomes the new cluster's first data shard; its leases exist
// again with their whole TTL; the next write takes the revision after the
// snapshot's. Each member of the new cluster is restored from the same
// file, then started with --initial-cluster-state new.
func Restore(snapshotPath, dataDir string) (*mvcc.BackupInfo, error) {
	if entries, err := os.ReadDir(dataDir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("data-dir %q not empty or could not be read", dataDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("data-dir %q not empty or could not be read", dataDir)
	}
	f, err := os.Open(snapshotPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := mvcc.VerifyBackup(f, st.Size()); err != nil {
		return nil, fmt.Errorf("%s: %w", snapshotPath, err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		return nil, err
	}
	info, err := restoreStore(f, filepath.Join(dataDir, "data"))
	if err != nil {
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("%s: %w", snapshotPath, err)
	}
	return info, nil
}

// restoreStore loads a checked snapshot into a new store at dir.
func restoreStore(f *os.File, dir string) (*mvcc.BackupInfo, error) {
	store, err := mvcc.Open(dir, mvcc.Options{})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	info, err := mvcc.RestoreBackup(store, FirstDataShardID, f)
	if err != nil {
		return nil, err
	}
	return info, shard.RestoreMeta(store, info.Rev, info.Compacted, info.Leases)
}
