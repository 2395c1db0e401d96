package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/basaltdb/basalt/proto/basaltpb"
)

// adminFlags are the flags of the commands that talk to a Basalt node's
// Internal service (shards, shard split).
type adminFlags struct {
	endpoint string
	timeout  time.Duration
}

func newAdminFlags(name string, stderr io.Writer) (*flag.FlagSet, *adminFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	a := &adminFlags{}
	fs.StringVar(&a.endpoint, "endpoint", "127.0.0.1:2379", "a Basalt member's client address (host:port)")
	fs.DurationVar(&a.timeout, "timeout", 30*time.Second, "give up after this long")
	return fs, a
}

// call runs f with the Internal service of the endpoint.
func (a *adminFlags) call(ctx context.Context, f func(ctx context.Context, c basaltpb.InternalClient) error) error {
	conn, err := grpc.NewClient(strings.TrimPrefix(strings.TrimPrefix(a.endpoint, "http://"), "https://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	if err := f(ctx, basaltpb.NewInternalClient(conn)); err != nil {
		if st, ok := status.FromError(err); ok {
			return errors.New(st.Message())
		}
		return err
	}
	return nil
}

// parseArgs parses flags that may come before, between or after the
// positional arguments, and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// runShards lists the shards: basaltctl shards [--endpoint host:port].
func runShards(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, a := newAdminFlags("shards", stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return errors.New("usage: basaltctl shards [--endpoint host:port]")
	}
	return a.call(ctx, func(ctx context.Context, c basaltpb.InternalClient) error {
		resp, err := c.Shards(ctx, &basaltpb.ShardsRequest{})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SHARD\tSTART\tEND\tEPOCH\tSIZE\tKEYS\tREVISION\tLEADER\tREPLICAS")
		for _, s := range resp.Shards {
			d := s.Descriptor_
			replicas := make([]string, 0, len(d.Replicas))
			for id := range d.Replicas {
				replicas = append(replicas, fmt.Sprintf("%x", id))
			}
			slices.Sort(replicas)
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%d\t%d\t%x\t%s\n", d.ShardId, showKey(d.Start, "-inf"), showKey(d.End, "+inf"),
				d.Epoch, s.Size, s.Keys, s.Revision, s.Leader, strings.Join(replicas, ","))
		}
		return tw.Flush()
	})
}

// runShard runs shard subcommands: basaltctl shard split KEY.
func runShard(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "split" {
		return errors.New("usage: basaltctl shard split KEY [--endpoint host:port]")
	}
	fs, a := newAdminFlags("shard split", stderr)
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: basaltctl shard split KEY [--endpoint host:port]")
	}
	key := pos[0]
	return a.call(ctx, func(ctx context.Context, c basaltpb.InternalClient) error {
		resp, err := c.Split(ctx, &basaltpb.SplitRequest{Key: []byte(key)})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "split at %q: shard %d [%s, %s), shard %d [%s, %s)\n", key,
			resp.Left.ShardId, showKey(resp.Left.Start, "-inf"), showKey(resp.Left.End, "+inf"),
			resp.Right.ShardId, showKey(resp.Right.Start, "-inf"), showKey(resp.Right.End, "+inf"))
		return nil
	})
}

// showKey prints a span bound; empty is unbounded.
func showKey(k []byte, empty string) string {
	if len(k) == 0 {
		return empty
	}
	return fmt.Sprintf("%q", k)
}
