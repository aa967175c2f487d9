package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/nats-io/nats.go"
)

// svcState is the broker's state for one service: its figures, and the
// notification scheduling of notify.go. Guarded by Broker.mu.
type svcState struct {
	stats     proto.ServiceStats
	missing   int       // requests queued since the last notification
	waitSince time.Time // when the first of them was queued (or its hint came); zero if none
	consumer  bool      // its queue consumer was brought up to date in this run, or is being, or that failed (syncConsumer)
	scheduled bool      // a notification is scheduled (a routine or timer of b.routines)
	followUp  bool      // a re-check while work waits is scheduled (a timer of b.routines)
	lastSent  time.Time // when the last notification went out
	lastProbe time.Time // when the last probe notification for a failing service went out
}

// stateLocked returns svc's state, creating it. The caller holds b.mu.
func (b *Broker) stateLocked(svc proto.Service) *svcState {
	st := b.svcs[svc]
	if st == nil {
		st = &svcState{stats: proto.ServiceStats{Service: svc.String()}}
		b.svcs[svc] = st
	}
	return st
}

// Stats returns the figures of every service the broker knows of.
func (b *Broker) Stats(ctx context.Context) []proto.ServiceStats {
	out, _ := b.stats(ctx)
	return out
}

// stats is Stats, and the error of reading the queue stream (the
// Pending figures are then 0: unknown).
func (b *Broker) stats(ctx context.Context) ([]proto.ServiceStats, error) {
	pending, perr := b.pendingAll(ctx)
	now := time.Now()
	b.mu.Lock()
	for svc := range pending {
		b.stateLocked(svc)
	}
	for _, name := range b.reg.services(now) {
		if svc, err := proto.ParseService(name); err == nil {
			b.stateLocked(svc)
		}
	}
	out := make([]proto.ServiceStats, 0, len(b.svcs))
	for svc, st := range b.svcs {
		fig := b.reg.figures(svc.String(), now)
		s := &st.stats
		s.Replicas, s.Quiescing, s.Standby, s.Capacity, s.Active = fig.Replicas, fig.Quiescing, fig.Standby, fig.Capacity, fig.Active
		s.Pending, s.Missing = pending[svc], st.missing
		s.ActiveHigh = max(s.ActiveHigh, s.Active)
		s.PendingHigh = max(s.PendingHigh, s.Pending)
		s.Placement = string(b.Placement(svc.String()))
		out = append(out, *s)
	}
	b.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out, perr
}

// onStats answers proto.BrokerStatsSubject (every service) and
// proto.BrokerStatsSubject.CLASS.NAME.SERVICE (one service).
func (b *Broker) onStats(m *nats.Msg) {
	if !b.routines.enter() {
		return // shutting down: the asker times out or hears another broker
	}
	defer b.routines.leave()
	ctx, cancel := context.WithTimeout(b.runCtx, 5*time.Second)
	defer cancel()
	all := b.Stats(ctx)
	if m.Subject != proto.BrokerStatsSubject {
		svc, err := proto.ServiceFromTokens(m.Subject)
		if err == nil && m.Subject != proto.BrokerStatsSubject+"."+svc.Tokens() {
			err = fmt.Errorf("subject %q: want %s.CLASS.NAME.SERVICE", m.Subject, proto.BrokerStatsSubject)
		}
		if err != nil {
			b.replyError(m.Reply, proto.Errorf(proto.CodeBadRequest, "%v", err))
			return
		}
		var one []proto.ServiceStats
		for _, s := range all {
			if s.Service == svc.String() {
				one = append(one, s)
			}
		}
		all = one
	}
	host, _ := os.Hostname()
	version := b.cfg.Version
	if version == "" {
		version = "dev"
	}
	body, _ := json.Marshal(proto.BrokerStats{Broker: b.cfg.ID, Host: host, Version: version, Started: b.started.UnixMilli(), Services: all})
	_ = m.Respond(body)
}
