// Package broker is Muster's broker service: it queues requests no replica
// could take, keeps the ATMCB figures and EntireX-style counters per
// service, and sends attach notifications when work waits and no replica
// is free. The wire contract it speaks is in package proto; the Go client
// SDK is package client.
package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
)

// Config configures a broker.
type Config struct {
	// ID names this broker in notifications (default: generated).
	ID string
	// DefaultTimeout is the deadline given to requests that carry none
	// (plain NATS clients that set neither Muster-Deadline nor
	// Muster-Timeout). Default 30s.
	DefaultTimeout time.Duration
	// NotifyDelay gathers the requests of a burst into one notification
	// (default 0: the first request of a burst is notified at once; the
	// rest follow RenotifyInterval later).
	NotifyDelay time.Duration
	// RenotifyInterval is the least time between two notifications for one
	// service while work keeps waiting (default 25ms).
	RenotifyInterval time.Duration
	// Logger receives the broker's logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.ID == "" {
		c.ID = nuid.Next()
	}
	if c.DefaultTimeout <= 0 {
		c.DefaultTimeout = 30 * time.Second
	}
	if c.NotifyDelay < 0 {
		c.NotifyDelay = 0
	}
	if c.RenotifyInterval <= 0 {
		c.RenotifyInterval = 25 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Broker is a running broker. Several may run against one NATS system;
// they share the call subjects in a queue group.
type Broker struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	queue jetstream.Stream
	log   *slog.Logger

	reg  *registry
	turn atomic.Uint64 // round-robin among equally loaded attach managers

	mu   sync.Mutex
	svcs map[proto.Service]*svcState

	subs   []*nats.Subscription
	runCtx context.Context // done at Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// svcState is the broker's figures for one service.
type svcState struct {
	stats     proto.ServiceStats
	missing   int
	scheduled bool // a notification is scheduled
	followUp  bool // a re-check while work waits is scheduled
	lastSent  time.Time
}

// Start starts a broker on nc (which the caller keeps and closes).
func Start(ctx context.Context, nc *nats.Conn, cfg Config) (_ *Broker, retErr error) {
	cfg.setDefaults()
	ctx, cancelStart := context.WithTimeout(ctx, 30*time.Second) // every startup step is bounded
	defer cancelStart()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("broker: jetstream: %w", err)
	}
	q, err := streams.EnsureQueue(ctx, js)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	b := &Broker{cfg: cfg, nc: nc, js: js, queue: q, log: cfg.Logger.With("broker", cfg.ID), svcs: map[proto.Service]*svcState{}, runCtx: runCtx, cancel: cancel}
	defer func() {
		if retErr != nil {
			b.Shutdown()
		}
	}()
	if b.reg, err = startRegistry(ctx, runCtx, js, b.log, &b.wg); err != nil {
		return nil, err
	}
	for _, s := range []struct {
		subj, queue string
		cb          nats.MsgHandler
	}{
		{proto.CallPrefix + ">", proto.BrokerQueue, b.onCall},
		{proto.BrokerStatsSubject, "", b.onStats},
		{proto.BrokerStatsSubject + ".>", "", b.onStats},
	} {
		sub, err := nc.QueueSubscribe(s.subj, s.queue, s.cb)
		if err != nil {
			return nil, fmt.Errorf("broker: subscribe %s: %w", s.subj, err)
		}
		b.subs = append(b.subs, sub)
	}
	b.wg.Add(1)
	go b.loop(runCtx)
	if err := nc.FlushWithContext(ctx); err != nil {
		return nil, fmt.Errorf("broker: flush: %w", err)
	}
	b.log.Info("broker started")
	return b, nil
}

// Shutdown stops the broker; it is idempotent. Queued requests stay in
// the stream for the next broker and the replicas.
func (b *Broker) Shutdown() {
	b.once.Do(func() {
		for _, s := range b.subs {
			_ = s.Drain()
		}
		b.cancel()
		b.wg.Wait()
	})
}

// ID returns the broker's id.
func (b *Broker) ID() string { return b.cfg.ID }

// loop sweeps expired registrations and re-sends notifications for
// services whose work still waits.
func (b *Broker) loop(ctx context.Context) {
	defer b.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b.reg.sweep(ctx, time.Now())
		pending, err := b.pendingAll(ctx)
		if err != nil {
			continue
		}
		now := time.Now()
		for svc, n := range pending {
			if n == 0 {
				continue
			}
			if live, _ := b.reg.known(svc.String(), now); live == 0 {
				if why, failing := b.reg.failing(svc.String(), now); failing {
					b.failQueued(ctx, svc, proto.Errorf(proto.CodeServiceFailing, "service %s cannot start: %s", svc, why))
				}
			}
		}
		b.mu.Lock()
		for svc, n := range pending {
			st := b.stateLocked(svc)
			if n > 0 && time.Since(st.lastSent) >= b.cfg.RenotifyInterval {
				st.missing = max(st.missing, 1)
				b.scheduleLocked(svc, st)
			}
		}
		b.mu.Unlock()
	}
}

func (b *Broker) stateLocked(svc proto.Service) *svcState {
	st := b.svcs[svc]
	if st == nil {
		st = &svcState{stats: proto.ServiceStats{Service: svc.String()}}
		b.svcs[svc] = st
	}
	return st
}

// onCall queues one request (see proto.CallPrefix). A request forwarded by
// a full replica carries the caller's reply subject in Muster-Reply; the
// broker then acknowledges the forward itself, so the replica learns if no
// broker took it.
func (b *Broker) onCall(m *nats.Msg) {
	replyTo := m.Reply
	if fwd := m.Header.Get(proto.HdrReply); fwd != "" {
		replyTo = fwd
		defer func() { _ = m.Respond(nil) }()
	}
	if replyTo == "" {
		b.log.Warn("request without reply subject dropped", "subject", m.Subject)
		return
	}
	svc, err := proto.ServiceFromTokens(m.Subject)
	if err != nil || m.Subject != proto.CallSubject(svc) {
		b.replyError(replyTo, proto.Errorf(proto.CodeBadRequest, "subject %q: want %sCLASS.NAME.SERVICE", m.Subject, proto.CallPrefix))
		return
	}
	op, err := proto.ParseOp(m.Header)
	if err == nil && op != proto.OpCall && op != proto.OpNew {
		err = fmt.Errorf("%s %s is sent to the replica subject, not queued", proto.HdrOp, op)
	}
	now := time.Now()
	dl := time.Time{}
	if err == nil {
		dl, err = proto.ParseDeadline(m.Header, now)
	}
	if err != nil {
		b.replyError(replyTo, proto.Errorf(proto.CodeBadRequest, "%v", err))
		return
	}
	if dl.IsZero() {
		dl = now.Add(b.cfg.DefaultTimeout)
	}
	if !dl.After(now) {
		b.replyError(replyTo, proto.Errorf(proto.CodeWaitTimeout, "deadline passed before the request was queued"))
		return
	}
	live, attachable := b.reg.known(svc.String(), now)
	if live == 0 && !attachable {
		// Maybe a replica registered a moment ago: make sure before saying
		// no, off this callback so other calls do not wait for it.
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			b.reg.sync(ctx)
			cancel()
			b.decide(m, svc, replyTo, dl)
		}()
		return
	}
	b.decide(m, svc, replyTo, dl)
}

// decide answers 0007/0007 or 0900/0004 when nothing can serve svc, and
// queues the request otherwise.
func (b *Broker) decide(m *nats.Msg, svc proto.Service, replyTo string, dl time.Time) {
	now := time.Now()
	live, attachable := b.reg.known(svc.String(), now)
	if live == 0 && !attachable {
		b.replyError(replyTo, proto.Errorf(proto.CodeNotRegistered, "service %s: no replica registered and no attach manager offers it", svc))
		return
	}
	if live == 0 {
		if why, failing := b.reg.failing(svc.String(), now); failing {
			b.replyError(replyTo, proto.Errorf(proto.CodeServiceFailing, "service %s cannot start: %s", svc, why))
			return
		}
	}
	q := nats.NewMsg(proto.QueueSubject(svc))
	q.Data = m.Data
	for k, v := range m.Header {
		if !strings.HasPrefix(k, "Nats-") { // JetStream would act on Nats-Msg-Id, Nats-Expected-…
			q.Header[k] = v
		}
	}
	q.Header.Set(proto.HdrReply, replyTo)
	q.Header.Set(proto.HdrDeadline, proto.FormatDeadline(dl))
	q.Header.Del(proto.HdrTimeout)
	q.Header.Set(proto.HdrEnqueued, proto.FormatDeadline(now))
	ttl := time.Until(dl).Truncate(time.Second) + time.Second // expire with the caller, never before
	q.Header.Set(jetstream.MsgTTLHeader, ttl.String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.js.PublishMsg(ctx, q); err != nil {
		b.replyError(replyTo, proto.Errorf(proto.CodeBrokerNotActive, "cannot queue the request: %v", err))
		return
	}
	if m.Header.Get(proto.HdrProgress) == "1" {
		st := nats.NewMsg(replyTo)
		st.Header.Set(proto.HdrStatus, proto.StatusQueued)
		_ = b.nc.PublishMsg(st)
	}
	b.mu.Lock()
	st := b.stateLocked(svc)
	st.stats.TotalRequests++
	if live > 0 {
		st.stats.ServerOccupied++
	}
	st.missing++
	b.scheduleLocked(svc, st)
	b.mu.Unlock()
}

// scheduleLocked arranges one notification for svc: soon after the first
// request of a burst, then at most once per RenotifyInterval.
func (b *Broker) scheduleLocked(svc proto.Service, st *svcState) {
	if st.scheduled {
		return
	}
	st.scheduled = true
	delay := b.cfg.NotifyDelay
	// The interval limits re-sending while the same work keeps waiting; once
	// a replica has registered since the last notification, that one was
	// answered and new waiting work is news.
	if b.reg.registeredSince(svc.String()).Before(st.lastSent) {
		if next := time.Until(st.lastSent.Add(b.cfg.RenotifyInterval)); next > delay {
			delay = next
		}
	}
	if delay <= 0 {
		go b.notify(svc)
		return
	}
	time.AfterFunc(delay, func() { b.notify(svc) })
}

// followUp re-sends the notification while svc's work waits.
func (b *Broker) followUp(svc proto.Service) {
	b.mu.Lock()
	st := b.stateLocked(svc)
	st.followUp = false
	skip := st.scheduled // a notification is on its way anyway
	b.mu.Unlock()
	if !skip {
		b.notify(svc)
	}
}

// notify sends the attach notification for svc if its work still waits.
func (b *Broker) notify(svc proto.Service) {
	if b.runCtx.Err() != nil {
		return // shut down
	}
	ctx, cancel := context.WithTimeout(b.runCtx, 5*time.Second)
	defer cancel()
	pending, err := b.pending(ctx, svc)
	b.mu.Lock()
	st := b.stateLocked(svc)
	st.scheduled = false
	missing := st.missing
	if err != nil || pending == 0 {
		st.missing = 0 // a replica took it: nothing to start
		b.mu.Unlock()
		return
	}
	st.missing = 0
	st.lastSent = time.Now()
	st.stats.Notifications++
	st.stats.LastNotifiedMS = st.lastSent.UnixMilli()
	// Look again soon while the work waits: a burst that arrived after this
	// count still gets its replicas without waiting for the next request.
	if !st.followUp {
		st.followUp = true
		time.AfterFunc(4*b.cfg.RenotifyInterval, func() { b.followUp(svc) })
	}
	b.mu.Unlock()

	now := time.Now()
	fig := b.reg.figures(svc.String(), now)
	n := proto.Notification{
		Version: proto.NotificationVersion, Service: svc.String(),
		Missing: max(missing, 1), Replicas: fig.Replicas, Pending: pending, Active: fig.Active,
		Broker: b.cfg.ID, Time: now.UnixMilli(),
	}
	target, ok := b.reg.chooseAttach(svc.String(), now, b.turn.Add(1))
	if ok {
		n.Target = target.ID
	}
	body, _ := json.Marshal(n)
	if ok {
		if err := b.nc.Publish(proto.AttachSubject(target.ID), body); err != nil {
			b.log.Warn("notification not sent", "service", svc.String(), "target", target.ID, "err", err)
		}
	}
	_ = b.nc.Publish(proto.NotifySubject(svc), body) // for observers
}

// pending counts the queued requests of svc.
func (b *Broker) pending(ctx context.Context, svc proto.Service) (int, error) {
	all, err := b.pendingFiltered(ctx, proto.QueueSubject(svc))
	if err != nil {
		return 0, err
	}
	return all[svc], nil
}

// pendingAll counts queued requests per service.
func (b *Broker) pendingAll(ctx context.Context) (map[proto.Service]int, error) {
	return b.pendingFiltered(ctx, proto.QueuePrefix+">")
}

func (b *Broker) pendingFiltered(ctx context.Context, filter string) (map[proto.Service]int, error) {
	info, err := b.queue.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("broker: queue info: %w", err)
	}
	out := map[proto.Service]int{}
	for subj, n := range info.State.Subjects {
		if svc, err := proto.ServiceFromTokens(subj); err == nil {
			out[svc] = int(n)
		}
	}
	return out, nil
}

// failQueued answers every queued request of svc with e and removes it:
// the service cannot start, so waiting to the deadline helps nobody.
func (b *Broker) failQueued(ctx context.Context, svc proto.Service, e *proto.Error) {
	cons, err := streams.QueueConsumer(ctx, b.queue, svc) // replicas that never started never made it
	if err != nil {
		return
	}
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return
		}
		n := 0
		for m := range batch.Messages() {
			n++
			b.replyError(m.Headers().Get(proto.HdrReply), e)
			_ = m.Term()
			b.mu.Lock()
			b.stateLocked(svc).stats.Failed++
			b.mu.Unlock()
		}
		if n == 0 {
			return
		}
	}
}

// Stats returns the figures of every service the broker knows of.
func (b *Broker) Stats(ctx context.Context) []proto.ServiceStats {
	pending, _ := b.pendingAll(ctx)
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
		s.Replicas, s.Quiescing, s.Capacity, s.Active = fig.Replicas, fig.Quiescing, fig.Capacity, fig.Active
		s.Pending, s.Missing = pending[svc], st.missing
		s.ActiveHigh = max(s.ActiveHigh, s.Active)
		s.PendingHigh = max(s.PendingHigh, s.Pending)
		out = append(out, *s)
	}
	b.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

func (b *Broker) onStats(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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
	body, _ := json.Marshal(proto.BrokerStats{Broker: b.cfg.ID, Services: all})
	_ = m.Respond(body)
}

func (b *Broker) replyError(to string, e *proto.Error) {
	if to == "" {
		return
	}
	m := nats.NewMsg(to)
	proto.SetError(m.Header, e)
	_ = b.nc.PublishMsg(m)
}

// ChooseAttach returns the attach manager the broker would notify next for
// service, as it decides for a real notification (used by `muster bench
// scale` and for operators' questions).
func (b *Broker) ChooseAttach(service string) (string, bool) {
	ai, ok := b.reg.chooseAttach(service, time.Now(), b.turn.Add(1))
	return ai.ID, ok
}
