package embedded

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterStatus is what a node knows of its NATS cluster and of the
// cluster's JetStream.
type ClusterStatus struct {
	// Cluster is the cluster's name ("" for a server outside a cluster).
	Cluster string
	// Node is this node's name.
	Node string
	// Connected are the names of the nodes this one has routes to, this
	// one included, sorted.
	Connected []string
	// Expected is how many nodes the cluster has: by the routes given to
	// this node, or what the JetStream meta group knows if that is more.
	Expected int
	// Leader is the node leading the JetStream meta group ("" while none
	// does: the cluster has no quorum yet).
	Leader string
	// Current says this node has caught up with the meta leader.
	Current bool
	// Ready is how many nodes, this one included, the meta group counts
	// as online with JetStream and this node has a route to: where assets
	// can be placed.
	Ready int
}

// Quorum reports whether JetStream works on this node: the meta group
// has a leader and this node has caught up with it.
func (st ClusterStatus) Quorum() bool { return st.Leader != "" && st.Current }

// Complete reports whether JetStream works and every expected node is
// online in it: new assets can get as many copies as the cluster has
// nodes.
func (st ClusterStatus) Complete() bool {
	return st.Quorum() && st.Ready >= st.Expected
}

// String is the status in one line, for people: "3 of 3 nodes connected
// (N1, N2, N3), JetStream leader N2".
func (st ClusterStatus) String() string {
	s := fmt.Sprintf("%d of %d nodes connected (%s), ", len(st.Connected), st.Expected, strings.Join(st.Connected, ", "))
	switch {
	case st.Leader == "":
		// nats-server elects the first leader of a new cluster only
		// with every node's vote.
		s += fmt.Sprintf("no JetStream leader yet (a new cluster elects one once all %d nodes run, a formed one with %d)", st.Expected, st.Expected/2+1)
	case !st.Current:
		s += "JetStream leader " + st.Leader + ", this node still catching up"
	case st.Ready < st.Expected:
		s += fmt.Sprintf("JetStream leader %s, %d of %d nodes online in JetStream", st.Leader, st.Ready, st.Expected)
	default:
		s += "JetStream leader " + st.Leader
	}
	return s
}

// Status returns what s knows of its cluster now; cfg is the Config it
// was started with (its routes say how many nodes to expect).
func Status(s *server.Server, cfg Config) ClusterStatus {
	return status(s, cfg, expectedNodes(s, cfg))
}

// status is Status with the number of nodes cfg's routes name.
func status(s *server.Server, cfg Config, expected int) ClusterStatus {
	st := ClusterStatus{Cluster: s.ClusterName(), Node: s.Name(), Connected: []string{s.Name()}, Expected: 1}
	if !s.JetStreamIsClustered() && cfg.ClusterName == "" {
		st.Leader, st.Current, st.Ready = s.Name(), s.JetStreamEnabled(), 1
		return st
	}
	if rz, err := s.Routez(nil); err == nil {
		for _, r := range rz.Routes {
			if r.RemoteName != "" && !slices.Contains(st.Connected, r.RemoteName) {
				st.Connected = append(st.Connected, r.RemoteName)
			}
		}
	}
	slices.Sort(st.Connected)
	st.Expected = expected
	if jsz, err := s.Jsz(nil); err == nil && jsz.Meta != nil {
		st.Leader = jsz.Meta.Leader
		st.Expected = max(st.Expected, jsz.Meta.Size)
		if st.Leader != "" {
			// The meta group's peers other than this node (the
			// leader among them when it is another one).
			st.Ready = 1
			for _, p := range jsz.Meta.Replicas {
				// Offline comes from the stopped node's shutdown event or,
				// when that is lost, minutes later; a node this one has no
				// route to is not online from here either.
				if !p.Offline && slices.Contains(st.Connected, p.Name) {
					st.Ready++
				}
			}
		}
	}
	st.Current = s.JetStreamIsCurrent()
	return st
}

// WaitCluster polls s until want(status) holds, or ctx ends (then it
// returns ctx's error with the last status). report, if set, gets the
// first status and every change of it.
func WaitCluster(ctx context.Context, s *server.Server, cfg Config, want func(ClusterStatus) bool, report func(ClusterStatus)) (ClusterStatus, error) {
	const poll = 50 * time.Millisecond
	t := time.NewTicker(poll)
	defer t.Stop()
	var last string
	expected := expectedNodes(s, cfg)
	for {
		st := status(s, cfg, expected)
		if want(st) {
			return st, nil
		}
		if line := st.String(); line != last && report != nil {
			report(st)
			last = line
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-t.C:
		}
	}
}

// expectedNodes is how many nodes cfg's routes name: each distinct
// route, plus this node unless one of them is its own route address.
func expectedNodes(s *server.Server, cfg Config) int {
	own := s.ClusterAddr()
	routes := map[string]bool{}
	self := false
	for _, r := range cfg.Routes {
		r = strings.TrimSpace(r)
		if i := strings.Index(r, "://"); i >= 0 {
			r = r[i+3:]
		}
		host, port, err := net.SplitHostPort(r)
		if err != nil {
			continue
		}
		routes[net.JoinHostPort(strings.ToLower(host), port)] = true
		if own != nil && port == strconv.Itoa(own.Port) && isOwnHost(host, own.IP) {
			self = true
		}
	}
	n := len(routes)
	if !self {
		n++
	}
	return n
}

// isOwnHost reports whether host names this machine as the route
// listener at ip sees it: ip itself, or, for a listener on every
// address, any address of this machine.
func isOwnHost(host string, ip net.IP) bool {
	ips, err := lookupIPs(host)
	if err != nil {
		return false
	}
	var local []net.IP
	if ip.IsUnspecified() {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return false
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				local = append(local, n.IP)
			}
		}
	} else {
		local = []net.IP{ip}
	}
	for _, a := range ips {
		for _, b := range local {
			if a.Equal(b) {
				return true
			}
		}
	}
	return false
}

// lookupIPs resolves host (an IP address stays itself), bounded to a
// second: a route's name may not resolve yet.
func lookupIPs(host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	ips := make([]net.IP, len(addrs))
	for i, a := range addrs {
		ips[i] = a.IP
	}
	return ips, nil
}
