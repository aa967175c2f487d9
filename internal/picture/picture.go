// Package picture gathers one picture of a Muster system from NATS: every
// broker's figures, every attach manager's (host's) registration and every
// replica's, combined per service. Any admin command on any host, and any
// daemon's HTTP endpoint, sees the same picture, because it is read from
// the system itself, not from the process that asks.
//
// It reads the registration buckets (muster_attach, muster_replicas) and
// asks the brokers (muster.broker.stats). Liveness is not decided here:
// a record older than three heartbeats is shown as offline (hosts) or left
// out (replicas), as the brokers and managers themselves treat it.
package picture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
)

// Picture is the system at one moment. Its JSON field names are stable
// (docs/OPERATIONS.md "Figures").
type Picture struct {
	At       int64     `json:"at"` // Unix ms
	Brokers  []Broker  `json:"brokers"`
	Hosts    []Host    `json:"hosts"`
	Services []Service `json:"services"`
	Replicas []Replica `json:"replicas"`
	// Problems lists what could not be read (the picture is then partial).
	Problems []string `json:"problems,omitempty"`
}

// Broker is one broker that answered.
type Broker struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	Version string `json:"version"`
	Started int64  `json:"started"`
}

// Host is an attach manager's registration with what the picture derives.
type Host struct {
	proto.AttachInfo
	// Configured: the host is in the pool (muster_pool); Disabled there:
	// it gets no placements. Pool overrides of its limits, if any.
	Configured   bool   `json:"configured"`
	Disabled     bool   `json:"disabled"`
	PoolMaxRepl  int    `json:"pool_max_replicas,omitempty"`
	PoolMaxUsers int    `json:"pool_max_users,omitempty"`
	Online       bool   `json:"online"` // its registration is younger than three heartbeats
	AgeMS        int64  `json:"age_ms"` // age of its registration
	Status       string `json:"status"` // active, isolated, failing or offline
	Events       int64  `json:"events"` // messages its replicas received, live and retired
	// Registered counts its replicas that have a live registration.
	Registered int `json:"registered"`
}

// Service is one service's figures, combined over every broker, replica
// and host.
type Service struct {
	Service string `json:"service"`
	// The attach figures (ATMCB) as the brokers see them: replicas and
	// their capacity and open conversations, requests pending in the
	// queue, and requests queued but not yet notified (missing, summed
	// over brokers).
	Replicas  int `json:"replicas"`
	Quiescing int `json:"quiescing"`
	Standby   int `json:"standby"`
	Capacity  int `json:"capacity"`
	Active    int `json:"active"`
	Pending   int `json:"pending"`
	Missing   int `json:"missing"`
	// High-water marks: the largest any broker saw.
	ActiveHigh  int `json:"active_high"`
	PendingHigh int `json:"pending_high"`
	// Requests is every request: Queued (through a broker, summed over
	// brokers) plus Warm (taken by a replica straight from the warm
	// subject, summed over live replicas and the retired ones that hosts
	// remember).
	Requests       int64 `json:"requests"`
	Queued         int64 `json:"queued"`
	Warm           int64 `json:"warm"`
	ServerOccupied int64 `json:"server_occupied"` // requests that found no free replica (waits)
	Failed         int64 `json:"failed"`          // queued requests answered 0900/0004
	Notifications  int64 `json:"notifications"`
	// Traffic of its replicas, live and retired.
	Events       int64 `json:"events"`
	Errors       int64 `json:"errors"`
	BytesIn      int64 `json:"bytes_in"`
	BytesOut     int64 `json:"bytes_out"`
	ProcessingNS int64 `json:"processing_ns"`
	// Failing maps a host to why the service fails to start there.
	Failing map[string]string `json:"failing,omitempty"`
	// Hosts are the online attach managers able to start it.
	Hosts []string `json:"hosts"`
	// Placement is the scheme that places its replicas (as the brokers
	// report it).
	Placement string `json:"placement,omitempty"`
}

// Replica is a live replica's registration with its process figures (from
// the host that started it, when one did).
type Replica struct {
	proto.ReplicaInfo
	CPUPercent float64 `json:"cpu_percent"`
	RSS        uint64  `json:"rss"`
	AgeMS      int64   `json:"age_ms"` // age of its registration
	// Placement is why its host started it (the broker's scheme and
	// reason, or min, restart, probe).
	Placement string `json:"placement,omitempty"`
}

// Options tune Gather.
type Options struct {
	// Quiet is how long Gather waits for more brokers after the last one
	// answered (default 150ms). There is no registry of brokers: every
	// broker answers, and the picture takes those that answer in time.
	Quiet time.Duration
}

// Gather reads the picture. It fails only when ctx ends before anything
// could be read; a part that cannot be read is named in Problems.
func Gather(ctx context.Context, nc *nats.Conn, o Options) (*Picture, error) {
	if o.Quiet <= 0 {
		o.Quiet = 150 * time.Millisecond
	}
	now := time.Now()
	p := &Picture{At: now.UnixMilli(), Brokers: []Broker{}, Hosts: []Host{}, Services: []Service{}, Replicas: []Replica{}}
	type brokersResult struct {
		stats []proto.BrokerStats
		err   error
	}
	bch := make(chan brokersResult, 1)
	go func() {
		st, err := askBrokers(ctx, nc, o.Quiet)
		bch <- brokersResult{st, err}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	var hosts []proto.AttachInfo
	var reps []proto.ReplicaInfo
	pool := map[string]proto.HostSetting{}
	if err := readBucketKV(ctx, js, proto.PoolBucket, func(key string, b []byte) {
		if !strings.HasPrefix(key, proto.PoolHostPrefix) {
			return
		}
		if h, err := proto.DecodeHostSetting(b); err == nil {
			pool[h.ID] = h
		}
	}); err != nil {
		p.Problems = append(p.Problems, err.Error())
	}
	if err := readBucket(ctx, js, proto.AttachBucket, func(b []byte) {
		if ai, err := proto.DecodeAttachInfo(b); err == nil {
			hosts = append(hosts, ai)
		}
	}); err != nil {
		p.Problems = append(p.Problems, err.Error())
	}
	if err := readBucket(ctx, js, proto.ReplicaBucket, func(b []byte) {
		if ri, err := proto.DecodeReplicaInfo(b); err == nil && !ri.Expired(now) {
			reps = append(reps, ri)
		}
	}); err != nil {
		p.Problems = append(p.Problems, err.Error())
	}
	br := <-bch
	if br.err != nil {
		p.Problems = append(p.Problems, br.err.Error())
	}
	if len(p.Problems) >= 3 {
		return nil, errors.Join(errors.New("cannot read the system"), errors.New(p.Problems[0]))
	}
	p.build(now, br.stats, hosts, reps, pool)
	return p, nil
}

// build combines the parts.
func (p *Picture) build(now time.Time, brokers []proto.BrokerStats, hosts []proto.AttachInfo, reps []proto.ReplicaInfo, pool map[string]proto.HostSetting) {
	svcs := map[string]*Service{}
	svc := func(name string) *Service {
		s := svcs[name]
		if s == nil {
			s = &Service{Service: name, Hosts: []string{}}
			svcs[name] = s
		}
		return s
	}
	for _, b := range brokers {
		p.Brokers = append(p.Brokers, Broker{ID: b.Broker, Host: b.Host, Version: b.Version, Started: b.Started})
		for _, st := range b.Services {
			s := svc(st.Service)
			// Replicas, capacity, active and pending come from shared state
			// (the buckets, the queue stream): every broker sees the same,
			// so take the latest view (the largest), not the sum.
			s.Replicas, s.Quiescing, s.Standby = max(s.Replicas, st.Replicas), max(s.Quiescing, st.Quiescing), max(s.Standby, st.Standby)
			s.Capacity, s.Active, s.Pending = max(s.Capacity, st.Capacity), max(s.Active, st.Active), max(s.Pending, st.Pending)
			s.ActiveHigh, s.PendingHigh = max(s.ActiveHigh, st.ActiveHigh), max(s.PendingHigh, st.PendingHigh)
			s.Missing += st.Missing
			s.Queued += st.TotalRequests
			s.ServerOccupied += st.ServerOccupied
			s.Failed += st.Failed
			s.Notifications += st.Notifications
			if st.Placement != "" {
				s.Placement = st.Placement
			}
		}
	}
	procs := map[string]proto.ProcInfo{}
	for _, ai := range hosts {
		h := Host{AttachInfo: ai, AgeMS: now.UnixMilli() - ai.Updated, Online: !ai.Expired(now)}
		if ps, ok := pool[ai.ID]; ok {
			h.Configured, h.Disabled, h.PoolMaxRepl, h.PoolMaxUsers = true, ps.Disabled, ps.MaxReplicas, ps.MaxUsers
			delete(pool, ai.ID)
		}
		switch {
		case !h.Online:
			h.Status = "offline"
		case ai.Isolated:
			h.Status = "isolated"
		case h.Disabled:
			h.Status = "disabled"
		case len(ai.Failing) > 0:
			h.Status = "failing"
		default:
			h.Status = "active"
		}
		for name, st := range ai.Retired {
			s := svc(name)
			s.Warm += st.Warm()
			s.addTraffic(st)
			h.Events += st.Messages
		}
		if h.Online {
			for _, name := range ai.Services {
				s := svc(name)
				s.Hosts = append(s.Hosts, ai.ID)
				if why := ai.Failing[name]; why != "" {
					if s.Failing == nil {
						s.Failing = map[string]string{}
					}
					s.Failing[ai.ID] = why
				}
			}
			for _, pi := range ai.Procs {
				procs[pi.ID] = pi
			}
		}
		p.Hosts = append(p.Hosts, h)
	}
	// Configured hosts that have no registration (never started, or gone
	// for longer than the registrations' TTL).
	for id, ps := range pool {
		p.Hosts = append(p.Hosts, Host{AttachInfo: proto.AttachInfo{ID: id}, Configured: true, Disabled: ps.Disabled,
			PoolMaxRepl: ps.MaxReplicas, PoolMaxUsers: ps.MaxUsers, Status: "offline", AgeMS: -1})
	}
	hostIdx := map[string]int{}
	for i, h := range p.Hosts {
		hostIdx[h.ID] = i
	}
	for _, ri := range reps {
		r := Replica{ReplicaInfo: ri, AgeMS: now.UnixMilli() - ri.Updated}
		if pi, ok := procs[ri.ID]; ok {
			r.CPUPercent, r.RSS, r.Placement = pi.CPUPercent, pi.RSS, pi.Placement
		}
		s := svc(ri.Service)
		s.Warm += ri.Stats.Warm()
		s.addTraffic(ri.Stats)
		if i, ok := hostIdx[ri.Attach]; ok {
			p.Hosts[i].Events += ri.Stats.Messages
			p.Hosts[i].Registered++
		}
		p.Replicas = append(p.Replicas, r)
	}
	for _, s := range svcs {
		s.Requests = s.Queued + s.Warm
		sort.Strings(s.Hosts)
		p.Services = append(p.Services, *s)
	}
	sort.Slice(p.Brokers, func(i, j int) bool { return p.Brokers[i].ID < p.Brokers[j].ID })
	sort.Slice(p.Hosts, func(i, j int) bool { return p.Hosts[i].ID < p.Hosts[j].ID })
	sort.Slice(p.Services, func(i, j int) bool { return p.Services[i].Service < p.Services[j].Service })
	sort.Slice(p.Replicas, func(i, j int) bool {
		if p.Replicas[i].Service != p.Replicas[j].Service {
			return p.Replicas[i].Service < p.Replicas[j].Service
		}
		return p.Replicas[i].ID < p.Replicas[j].ID
	})
}

func (s *Service) addTraffic(st proto.Stats) {
	s.Events += st.Messages
	s.Errors += st.Errors
	s.BytesIn += st.BytesIn
	s.BytesOut += st.BytesOut
	s.ProcessingNS += st.ProcessingNS
}

// askBrokers asks every broker for its figures: the first answer may take
// until ctx ends, the others are taken until quiet passes without one.
func askBrokers(ctx context.Context, nc *nats.Conn, quiet time.Duration) ([]proto.BrokerStats, error) {
	inbox := nc.NewRespInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("ask the brokers: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(proto.BrokerStatsSubject, inbox, nil); err != nil {
		return nil, fmt.Errorf("ask the brokers: %w", err)
	}
	var out []proto.BrokerStats
	var timer <-chan time.Time
	for {
		select {
		case m := <-ch:
			if m.Header.Get(proto.HdrNATSStatus) == "503" {
				return nil, errors.New("no broker running (start one with `muster up` or `muster broker`)")
			}
			var st proto.BrokerStats
			if err := json.Unmarshal(m.Data, &st); err == nil {
				out = append(out, st)
			}
			timer = time.After(quiet)
		case <-timer:
			return out, nil
		case <-ctx.Done():
			if len(out) > 0 {
				return out, nil
			}
			return nil, fmt.Errorf("no broker answered: %w", ctx.Err())
		}
	}
}

// readBucket calls f with every current value of bucket. No bucket means
// nothing registered yet.
func readBucket(ctx context.Context, js jetstream.JetStream, bucket string, f func([]byte)) error {
	return readBucketKV(ctx, js, bucket, func(_ string, b []byte) { f(b) })
}

// readBucketKV is readBucket with the keys.
func readBucketKV(ctx context.Context, js jetstream.JetStream, bucket string, f func(string, []byte)) error {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read bucket %s: %w", bucket, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return nil
			}
			f(e.Key(), e.Value())
		case <-ctx.Done():
			return fmt.Errorf("read bucket %s: %w", bucket, ctx.Err())
		}
	}
}
