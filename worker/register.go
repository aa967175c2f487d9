package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
)

// The registration: a replica keeps a record of itself (proto.ReplicaInfo)
// in the proto.ReplicaBucket bucket. Brokers and attach managers read it
// to know who serves what. The heartbeat rewrites it, and soon after
// conversations end (freshRecord), and shutdown deletes it.
//
// Writes are what a KV put and delete are on the wire, a JetStream
// publish to the record's subject (PROTOCOL §9.2), so they need no handle
// on the bucket: none is looked up at start, the round trip a cold start
// would wait for. Reading the bucket (idle.go) binds it when first needed.

// freshRecord is how stale the registration may get while conversations
// come and go: listings and the broker's figures follow within it (the
// progress tick writes a changed record), at a cost of at most one extra
// write per interval. Each write is a JetStream KV put: at 250 ms, 200
// replicas taking a call every 200 ms each made 800 puts a second, which
// cost more than the calls (`muster bench host`); at 1 s, 200.
const freshRecord = time.Second

// register writes the registration record.
func (r *replica) register(ctx context.Context) error {
	r.lastWrite.Store(time.Now().UnixNano())
	r.dirty.Store(false)
	b, _ := json.Marshal(r.info())
	m := nats.NewMsg(r.recordSubject())
	m.Data = b
	if err := r.writeRecord(ctx, m); err != nil {
		return fmt.Errorf("worker: register %s: %w", r.cfg.replicaID, err)
	}
	return nil
}

// hdrKVOperation marks a KV delete: a record with it and no body (as
// nats.go's KeyValue.Delete writes).
const hdrKVOperation = "KV-Operation"

// deregister deletes the registration record.
func (r *replica) deregister(ctx context.Context) error {
	m := nats.NewMsg(r.recordSubject())
	m.Header.Set(hdrKVOperation, "DEL")
	return r.writeRecord(ctx, m)
}

// recordSubject is the subject of the replica's record in the bucket.
func (r *replica) recordSubject() string {
	return "$KV." + proto.ReplicaBucket + "." + r.cfg.replicaID
}

// writeRecord publishes m to the bucket and waits for the stream's
// acknowledgement. When no stream answers, the bucket is missing (or
// JetStream not ready): it is found or created, then m is sent again.
func (r *replica) writeRecord(ctx context.Context, m *nats.Msg) error {
	_, err := r.js.PublishMsg(ctx, m, jetstream.WithRetryAttempts(0))
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		return err
	}
	if _, err := r.assets().EnsureBucket(ctx, r.js, proto.ReplicaBucket); err != nil {
		return err
	}
	_, err = r.js.PublishMsg(ctx, m)
	return err
}

// bucket returns the registration bucket, looked up at the first call.
func (r *replica) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	r.mu.Lock()
	kv := r.kv
	r.mu.Unlock()
	if kv != nil {
		return kv, nil
	}
	kv, err := r.assets().EnsureBucket(ctx, r.js, proto.ReplicaBucket)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.kv = kv
	r.mu.Unlock()
	return kv, nil
}

func (r *replica) info() proto.ReplicaInfo {
	host, _ := os.Hostname()
	now := time.Now()
	msgs := r.stats.msgs.Load()
	r.mu.Lock()
	state, active, arm := proto.StateReady, r.active, ""
	switch r.state {
	case stateStandby:
		state = proto.StateStandby
		if r.cfg.signals && r.cfg.armFile != "" { // Run takes SIGUSR2
			arm = proto.ArmOff
			if r.armedWarm != nil {
				arm = proto.ArmOn
			}
		}
	case stateQuiescing:
		state = proto.StateQuiescing
	}
	if msgs != r.lastMsgs {
		r.lastMsgs, r.lastActive = msgs, now.UnixMilli()
	}
	lastActive := r.lastActive
	var convs []proto.ConvInfo
	omitted := 0
	r.eachLocked(func(c *Conv) bool {
		if c.released {
			return true // answered; its handler may still be finishing
		}
		if len(convs) == proto.MaxConvInfos {
			omitted++
			return true
		}
		c.mu.Lock() // lock order: replica.mu before Conv.mu
		n := max(c.seq, 1)
		c.mu.Unlock()
		convs = append(convs, proto.ConvInfo{Client: proto.ClientOfInbox(c.firstTo), Call: c.call, Queued: c.queued,
			Started: c.started.UnixMilli(), Messages: n})
		return true
	})
	r.mu.Unlock()
	sort.Slice(convs, func(i, j int) bool { return convs[i].Started < convs[j].Started })
	return proto.ReplicaInfo{
		ID: r.cfg.replicaID, Service: r.cfg.service.String(), Host: host, PID: os.Getpid(),
		Version: r.cfg.version, State: state, Capacity: r.cfg.capacity, Active: active,
		Started: r.started.UnixMilli(), HeartbeatMS: r.cfg.heartbeat.Milliseconds(),
		Updated: now.UnixMilli(),
		Stats: proto.Stats{
			Conversations: r.stats.convs.Load(), Messages: msgs, Errors: r.stats.errors.Load(),
			BytesIn: r.stats.bytesIn.Load(), BytesOut: r.stats.bytesOut.Load(),
			ProcessingNS: r.stats.procNS.Load(), Queued: r.stats.queued.Load(),
		},
		Attach: r.cfg.attachID, Arm: arm, LastActive: lastActive, Convs: convs, ConvsOmitted: omitted,
	}
}

// heartbeat rewrites the registration and recreates a deleted queue
// consumer. It also drives the progress tick and pullDue (retries and lost
// pulls, pull.go). It is a helper goroutine: it stops with the replica's
// base context, and each of its writes is bounded by the heartbeat.
func (r *replica) heartbeat() {
	t := time.NewTicker(r.cfg.heartbeat)
	defer t.Stop()
	// The progress tick runs only while the replica has something for it
	// (open calls or conversations, a pull to retry, a record to rewrite):
	// an idle replica, and a parked standby, wake only for the heartbeat.
	// accept and retryPullLocked restart it (kickTickLocked).
	tick := time.NewTicker(progressDelay / 2)
	tick.Stop()
	defer tick.Stop()
	var tickC <-chan time.Time
	r.tickParked.Store(true)
	activated := r.activated
	for {
		select {
		case <-activated:
			if r.cfg.standby {
				r.cfg.logger.Info("standby activated", "why", r.activatedWhy)
			}
			activated = nil
			r.tickParked.Store(false)
			tick.Reset(progressDelay / 2)
			tickC = tick.C
			continue
		case <-r.tickKick:
			if activated == nil && tickC == nil {
				tick.Reset(progressDelay / 2)
				tickC = tick.C
			}
			continue
		case <-r.baseCtx.Done():
			return
		case <-tickC:
			r.progressTick()
			r.pullDue()
			if r.parkTick() {
				tick.Stop()
				tickC = nil
			}
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

// parkTick reports whether the progress tick can stop: nothing open, no
// pull waiting to be sent (a retry after a refusal), the record written. It marks the tick parked first,
// so a concurrent accept or retry (which looks at the mark after changing
// what this looks at) kicks it again.
func (r *replica) parkTick() bool {
	r.tickParked.Store(true)
	r.mu.Lock()
	pullOwed := !r.pulling && r.state == stateReady && r.active < r.cfg.capacity && r.pullSubj != "" && !r.joinPending
	quiet := r.active == 0 && !pullOwed && !r.dirty.Load() && len(r.convs) == 0 && len(r.calls) == 0
	r.mu.Unlock()
	if !quiet {
		r.tickParked.Store(false)
	}
	return quiet
}

// kickTickLocked restarts a parked progress tick.
func (r *replica) kickTickLocked() {
	if r.tickParked.Load() {
		r.tickParked.Store(false)
		select {
		case r.tickKick <- struct{}{}:
		default:
		}
	}
}

// recreateConsumer creates the queue consumer again after the server said
// it was deleted.
func (r *replica) recreateConsumer() {
	ctx, cancel := context.WithTimeout(r.baseCtx, r.cfg.heartbeat)
	defer cancel()
	if err := r.assets().EnsureQueueConsumer(ctx, r.js, r.cfg.service); err != nil {
		r.cfg.logger.Warn("cannot recreate the queue consumer", "err", err)
		return
	}
	r.mu.Lock()
	r.lostCons = false
	r.mu.Unlock()
}
