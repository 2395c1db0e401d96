// Package combine merges concurrent requests into batched calls: one call
// runs at a time, and every request that arrives while it runs is served by
// the next call. The request that finds no call running makes the call in
// its own goroutine, so an uncontended request costs no goroutine switch;
// what queues up behind it is served by a goroutine started for as long as
// requests keep arriving. The TSO client and the shard read barrier use it.
package combine
