package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/embedded"
	"github.com/musterhq/muster/internal/health"
)

// defaultClusterWait is --cluster-wait's default: time to start the other
// nodes of a cluster by hand.
const defaultClusterWait = 5 * time.Minute

// fullClusterWait bounds how long a node whose cluster has a quorum waits
// for the rest of its nodes: assets created before they join get fewer
// copies (until the next start of a broker or attach manager).
const fullClusterWait = 15 * time.Second

// clusterWaitFlag is --cluster-wait.
func clusterWaitFlag() cli.Flag {
	return &cli.DurationFlag{Name: "cluster-wait", Value: defaultClusterWait,
		Usage: "how long to wait at start for JetStream: a NATS cluster has none until a majority of its nodes run"}
}

// clusterHint says what to check when a cluster does not form.
const clusterHint = "start the other nodes (a majority of them must run), and check that every node has the same --cluster name, " +
	"routes to the others (--routes) and a name of its own (--name)"

// waitCluster waits until n's cluster has a JetStream quorum, for at most
// quorumWait (0: until ctx ends), then for at most fullClusterWait until
// every node is connected, saying on w (as who) what it waits for. It
// returns at once for a node outside a cluster.
func waitCluster(ctx context.Context, n *node, w io.Writer, who string, quorumWait time.Duration, log *slog.Logger) error {
	if !n.clustered() {
		return nil
	}
	start := time.Now()
	name := n.cfg.ClusterName
	waiting := false
	report := func(st embedded.ClusterStatus) {
		waiting = true
		fmt.Fprintf(w, "%s: waiting for NATS cluster %s: %s\n", who, name, st)
	}
	qctx, cancel := ctx, context.CancelFunc(func() {})
	if quorumWait > 0 {
		qctx, cancel = context.WithTimeout(ctx, quorumWait)
	}
	st, err := embedded.WaitCluster(qctx, n.server, n.cfg, embedded.ClusterStatus.Quorum, report)
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("NATS cluster %s has no JetStream after %v: %s; %s", name, quorumWait, st, clusterHint)
	}
	if !st.Complete() {
		fctx, cancel := context.WithTimeout(ctx, fullClusterWait)
		st, err = embedded.WaitCluster(fctx, n.server, n.cfg, embedded.ClusterStatus.Complete, report)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			log.Warn("going on without every node of the NATS cluster: Muster's JetStream assets made now get fewer copies (the next start of a broker or attach manager raises them)",
				"cluster", name, "connected", len(st.Connected), "expected", st.Expected)
		}
	}
	took := ""
	if waiting {
		took = fmt.Sprintf(" after %v", time.Since(start).Round(time.Millisecond))
	}
	fmt.Fprintf(w, "%s: NATS cluster %s ready%s: %s\n", who, name, took, st)
	return nil
}

// jetStreamCheck is the health check, named "nats.jetstream", that n's
// server has JetStream: in a cluster, a meta leader this node has caught
// up with.
func jetStreamCheck(n *node) health.Check {
	return health.Check{Name: "nats.jetstream", Run: func(context.Context) (string, error) {
		if !n.clustered() {
			if !n.server.JetStreamEnabled() {
				return "", errors.New("JetStream is not enabled")
			}
			return "JetStream enabled", nil
		}
		st := n.status()
		if !st.Quorum() {
			return "", fmt.Errorf("NATS cluster %s: %s", st.Cluster, st)
		}
		return "NATS cluster " + st.Cluster + ": " + st.String(), nil
	}}
}

// jetStreamTry bounds one probe of waitJetStream.
const jetStreamTry = 2 * time.Second

// accountWait bounds how long waitJetStream takes "JetStream not enabled
// for account" from a cluster node for "not yet": seen once in 20 starts of
// a new cluster, from a meta leader that had not enabled the account yet.
const accountWait = 10 * time.Second

// waitJetStream waits, for at most wait, until JetStream answers on nc:
// a NATS cluster without a quorum leaves its requests unanswered, which a
// starting broker or attach manager would report as a bare timeout. It
// says on w (as who) that it waits. Any other answer, even an error, ends
// the wait (the caller's start reports it), except that a cluster node
// saying JetStream is not enabled for the account gets accountWait to
// change its mind.
func waitJetStream(ctx context.Context, nc *nats.Conn, w io.Writer, who string, wait time.Duration) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	waiting := false
	for {
		tctx, tcancel := context.WithTimeout(wctx, jetStreamTry)
		_, err := js.Stream(tctx, proto.QueueStream)
		tcancel()
		noAnswer := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		notYet := nc.ConnectedClusterName() != "" && time.Since(start) < accountWait &&
			(errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) || errors.Is(err, jetstream.ErrJetStreamNotEnabled))
		if !noAnswer && !notYet {
			if waiting {
				fmt.Fprintf(w, "%s: JetStream answers after %v\n", who, time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		where := "NATS server " + nc.ConnectedUrlRedacted()
		if cl := nc.ConnectedClusterName(); cl != "" {
			where = "NATS cluster " + cl + " (via " + nc.ConnectedUrlRedacted() + ")"
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case wctx.Err() != nil:
			return fmt.Errorf("JetStream of %s did not answer within %v: a cluster has JetStream once a majority of its nodes run and have found each other (%s); a single server needs JetStream enabled", where, wait, clusterHint)
		case !waiting && noAnswer:
			waiting = true
			fmt.Fprintf(w, "%s: waiting up to %v for JetStream of %s: no answer yet (a NATS cluster has none until a majority of its nodes run)\n", who, wait, where)
		}
		if notYet {
			select {
			case <-wctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}
