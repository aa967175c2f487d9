package broker

import (
	"context"
	"encoding/json"
	"time"

	"github.com/musterhq/muster/broker/proto"
)

// scheduleLocked arranges one notification for svc: soon after the first
// request of a burst, then at most once per RenotifyInterval. The caller
// holds b.mu.
func (b *Broker) scheduleLocked(svc proto.Service, st *svcState) {
	if st.scheduled {
		return
	}
	delay := b.cfg.NotifyDelay
	// The interval limits re-sending while the same work keeps waiting; once
	// a replica has registered since the last notification, that one was
	// answered and new waiting work is news.
	if b.reg.registeredSince(svc.String()).Before(st.lastSent) {
		if next := time.Until(st.lastSent.Add(b.cfg.RenotifyInterval)); next > delay {
			delay = next
		}
	}
	notify := func() { b.notify(svc) }
	if delay <= 0 {
		st.scheduled = b.routines.start(notify)
	} else {
		st.scheduled = b.routines.after(delay, notify)
	}
}

// waitingLocked counts one more request queued for the service of st (by
// this broker, or by another that hinted it) since its last notification.
// The caller holds b.mu.
func (b *Broker) waitingLocked(st *svcState, now time.Time) {
	st.missing++
	if st.waitSince.IsZero() {
		st.waitSince = now
	}
}

// recheckWaiting looks at every service whose work waits in the queue: it
// fails the queued requests of a service that cannot start, and schedules
// another notification for the others once RenotifyInterval has passed.
func (b *Broker) recheckWaiting(ctx context.Context) {
	pending, err := b.pendingAll(ctx)
	if err != nil {
		return
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
	defer b.mu.Unlock()
	for svc, n := range pending {
		st := b.stateLocked(svc)
		if n > 0 && time.Since(st.lastSent) >= b.cfg.RenotifyInterval {
			st.missing = max(st.missing, 1)
			b.scheduleLocked(svc, st)
		}
	}
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

// notify sends the attach notification for svc if its work still waits:
// to the one attach manager the registry chooses, and a copy for observers.
func (b *Broker) notify(svc proto.Service) {
	if b.runCtx.Err() != nil {
		return // shut down
	}
	if !b.Leading() {
		// Deposed since this was scheduled: the new leader notifies.
		b.mu.Lock()
		st := b.stateLocked(svc)
		st.scheduled, st.missing, st.waitSince = false, 0, time.Time{}
		b.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(b.runCtx, 5*time.Second)
	defer cancel()
	pending, err := b.pending(ctx, svc)
	b.mu.Lock()
	st := b.stateLocked(svc)
	st.scheduled = false
	missing, waitSince := st.missing, st.waitSince
	st.missing, st.waitSince = 0, time.Time{}
	if err != nil || pending == 0 {
		b.mu.Unlock() // a replica took it: nothing to start
		return
	}
	st.lastSent = time.Now()
	st.stats.Notifications++
	st.stats.LastNotifiedMS = st.lastSent.UnixMilli()
	// Look again soon while the work waits: a burst that arrived after this
	// count still gets its replicas without waiting for the next request.
	if !st.followUp {
		st.followUp = b.routines.after(4*b.cfg.RenotifyInterval, func() { b.followUp(svc) })
	}
	b.mu.Unlock()

	now := time.Now()
	fig := b.reg.figures(svc.String(), now)
	n := proto.Notification{
		Version: proto.NotificationVersion, Service: svc.String(),
		Missing: max(missing, 1), Replicas: fig.Replicas, Pending: pending, Active: fig.Active,
		Broker: b.cfg.ID, Time: now.UnixMilli(), Lease: b.lease.currentEpoch(),
	}
	ch, ok := b.reg.chooseAttach(svc.String(), now)
	n.Placement = ch.why
	if ok {
		n.Target = ch.attach.ID
	}
	body, _ := json.Marshal(n)
	if ok {
		if err := b.nc.Publish(proto.AttachSubject(ch.attach.ID), body); err != nil {
			b.log.Warn("notification not sent", "service", svc.String(), "target", ch.attach.ID, "err", err)
		} else if !waitSince.IsZero() {
			b.notifyDelay.WithLabelValues(svc.String()).Observe(time.Since(waitSince).Seconds())
		}
	}
	_ = b.nc.Publish(proto.NotifySubject(svc), body) // for observers
	if !ok && ch.offered && !ch.starting && fig.Replicas == 0 {
		// Hosts offer it but none can start a replica now (full, disabled)
		// and none runs: waiting would only end at the deadline.
		b.routines.start(func() {
			fctx, cancel := context.WithTimeout(b.runCtx, 5*time.Second)
			defer cancel()
			b.failQueued(fctx, svc, proto.Errorf(proto.CodeReplicaLimit, "service %s: %s", svc, ch.why))
		})
	}
}

// ProbeInterval is the least time between two probe notifications for a
// failing service (see probeFailing).
const ProbeInterval = 10 * time.Second

// probeFailing keeps asking for a failing service while its callers are
// turned away with 0900/0004: at most once per ProbeInterval it sends one
// notification (Missing 1, Pending 0) to one of the managers that offer
// it, failing or not, so a program fixed on disk is tried again even if
// no manager probes it by itself. Calls never queue meanwhile: nothing
// would start them.
func (b *Broker) probeFailing(svc proto.Service, now time.Time) {
	if !b.Leading() {
		return // the leader probes
	}
	b.mu.Lock()
	st := b.stateLocked(svc)
	due := now.Sub(st.lastProbe) >= ProbeInterval
	if due {
		st.lastProbe = now
		st.stats.Notifications++
		st.stats.LastNotifiedMS = now.UnixMilli()
	}
	b.mu.Unlock()
	if !due {
		return
	}
	b.routines.start(func() {
		ch, ok := b.reg.chooseProbe(svc.String(), now)
		if !ok {
			return
		}
		target := ch.attach
		fig := b.reg.figures(svc.String(), now)
		n := proto.Notification{
			Version: proto.NotificationVersion, Service: svc.String(), Missing: 1,
			Replicas: fig.Replicas, Active: fig.Active, Broker: b.cfg.ID, Time: now.UnixMilli(), Target: target.ID,
			Lease: b.lease.currentEpoch(), Placement: "probe of a failing service: " + ch.why,
		}
		body, _ := json.Marshal(n)
		if err := b.nc.Publish(proto.AttachSubject(target.ID), body); err != nil {
			b.log.Warn("probe notification not sent", "service", svc.String(), "target", target.ID, "err", err)
		}
		_ = b.nc.Publish(proto.NotifySubject(svc), body) // for observers
	})
}

// ChooseAttach returns the attach manager the broker would notify next for
// service, decided as for a real notification but not counted as a
// placement. `muster bench` uses it to time the decision and to
// wait until the broker sees an attach manager.
func (b *Broker) ChooseAttach(service string) (string, bool) {
	ch, ok := b.reg.choose(service, time.Now(), false, false) // a dry run: no placement counted
	return ch.attach.ID, ok
}
