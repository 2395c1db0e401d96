package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/basaltdb/basalt/placement"
)

const snapshotUsage = "usage: basaltctl snapshot restore FILE --data-dir DIR"

// runSnapshot restores a snapshot that `etcdctl snapshot save` took of a
// Basalt cluster into a new member's data directory, as `etcdutl snapshot
// restore` does for etcd: basaltctl snapshot restore FILE --data-dir DIR.
func runSnapshot(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "restore" {
		return errors.New(snapshotUsage)
	}
	fs := flag.NewFlagSet("snapshot restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "the data directory to create (it must not exist or be empty)")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 || *dataDir == "" {
		return errors.New(snapshotUsage)
	}
	info, err := placement.Restore(pos[0], *dataDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s into %s: revision %d, compacted revision %d, %d leases\n",
		pos[0], *dataDir, info.Rev, max(info.Compacted, 0), len(info.Leases))
	fmt.Fprintln(stdout, "start each member of the new cluster on a copy of it with --initial-cluster-state new")
	return nil
}
