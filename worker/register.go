package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
)

// The registration: a replica keeps a record of itself (proto.ReplicaInfo)
// in the proto.ReplicaBucket bucket. Brokers and attach managers read it
// to know who serves what. The heartbeat rewrites it, and soon after
// conversations end (freshRecord), and shutdown deletes it.

// freshRecord is how stale the registration may get while conversations
// come and go: listings and the broker's figures follow within it (the
// progress tick writes a changed record), at a cost of at most one extra
// write per interval.
const freshRecord = 250 * time.Millisecond

// register writes the registration record.
func (r *replica) register(ctx context.Context) error {
	r.lastWrite.Store(time.Now().UnixNano())
	r.dirty.Store(false)
	b, _ := json.Marshal(r.info())
	if _, err := r.kv.Put(ctx, r.cfg.replicaID, b); err != nil {
		return fmt.Errorf("worker: register %s: %w", r.cfg.replicaID, err)
	}
	return nil
}

func (r *replica) info() proto.ReplicaInfo {
	host, _ := os.Hostname()
	r.mu.Lock()
	state, active := proto.StateReady, r.active
	if r.state != stateReady {
		state = proto.StateQuiescing
	}
	r.mu.Unlock()
	return proto.ReplicaInfo{
		ID: r.cfg.replicaID, Service: r.cfg.service.String(), Host: host, PID: os.Getpid(),
		Version: r.cfg.version, State: state, Capacity: r.cfg.capacity, Active: active,
		Started: r.started.UnixMilli(), HeartbeatMS: r.cfg.heartbeat.Milliseconds(),
		Updated: time.Now().UnixMilli(),
		Stats: proto.Stats{
			Conversations: r.stats.convs.Load(), Messages: r.stats.msgs.Load(), Errors: r.stats.errors.Load(),
			BytesIn: r.stats.bytesIn.Load(), BytesOut: r.stats.bytesOut.Load(),
			ProcessingNS: r.stats.procNS.Load(), Queued: r.stats.queued.Load(),
		},
	}
}

// heartbeat rewrites the registration and recreates a deleted queue
// consumer. It also drives the progress tick and pullDue (retries and lost
// pulls, pull.go). It is a helper goroutine: it stops with the replica's
// base context, and each of its writes is bounded by the heartbeat.
func (r *replica) heartbeat() {
	t := time.NewTicker(r.cfg.heartbeat)
	defer t.Stop()
	tick := time.NewTicker(progressDelay / 2)
	defer tick.Stop()
	for {
		select {
		case <-r.baseCtx.Done():
			return
		case <-tick.C:
			r.progressTick()
			r.pullDue()
			if !r.dirty.Load() || time.Since(time.Unix(0, r.lastWrite.Load())) < freshRecord {
				continue
			}
		case <-r.hbKick:
		case <-t.C:
		}
		if !r.nc.IsConnected() {
			// A write cannot reach the server: it would only wait out its
			// timeout. The record is written as soon as the connection is
			// back (watchConn kicks this loop).
			r.dirty.Store(true)
			continue
		}
		r.maxPayload.Store(r.nc.MaxPayload())
		ctx, cancel := context.WithTimeout(r.baseCtx, r.cfg.heartbeat)
		if err := r.register(ctx); err != nil && r.baseCtx.Err() == nil {
			r.cfg.logger.Warn("heartbeat failed", "err", err)
		}
		cancel()
		r.mu.Lock()
		lost := r.lostCons
		r.mu.Unlock()
		if lost {
			r.recreateConsumer()
		}
		r.pullDue()
	}
}

// recreateConsumer creates the queue consumer again after the server said
// it was deleted.
func (r *replica) recreateConsumer() {
	ctx, cancel := context.WithTimeout(r.baseCtx, r.cfg.heartbeat)
	defer cancel()
	if _, err := streams.QueueConsumer(ctx, r.stream, r.cfg.service); err != nil {
		r.cfg.logger.Warn("cannot recreate the queue consumer", "err", err)
		return
	}
	r.mu.Lock()
	r.lostCons = false
	r.mu.Unlock()
}
