// Package streams declares the JetStream assets Muster keeps its state in
// (the durable request queue and the registration buckets) and creates
// them idempotently, so brokers and replicas can start in any order.
//
// Brokers and attach managers own the assets: at start they check that the
// server can expire queued requests (per-message TTL), create what is
// missing with min(3, cluster size) copies (or Config.Replicas), and bring
// existing assets up to date (allow_msg_ttl, replicas), or refuse to start
// saying what to change. Replicas only find the assets, creating them if
// they are missing, and never change them.
package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/proto"
)

// EnvReplicas overrides how many copies a JetStream cluster keeps of each
// asset (1..5; empty or 0: automatic, min(3, cluster size)). It is read by
// EnsureQueue and EnsureBucket; a command that has a flag for it passes
// Config.Replicas instead.
const EnvReplicas = "MUSTER_JS_REPLICAS"

// maxReplicas is JetStream's limit on copies of a stream.
const maxReplicas = 5

// autoReplicas is how many copies an asset gets on a cluster of at least
// that many nodes: one node can be lost (or restarted) without losing a
// message or the asset's availability.
const autoReplicas = 3

// Config says how the assets are kept.
type Config struct {
	// Replicas is how many copies of each asset a JetStream cluster keeps:
	// 0 means automatic, min(3, cluster size); 1..5 is exact. Existing
	// assets are updated to it at start.
	Replicas int
	// FindOnly finds the assets and creates the missing ones, but never
	// updates an existing one and skips the server version check: for
	// replicas, so that only the owners (brokers, attach managers) decide.
	FindOnly bool
	// Logger gets the warnings (default slog.Default()).
	Logger *slog.Logger
}

// ConfigFromEnv reads EnvReplicas through lookup (os.LookupEnv when nil).
func ConfigFromEnv(lookup func(string) (string, bool)) (Config, error) {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var c Config
	if v, ok := lookup(EnvReplicas); ok && strings.TrimSpace(v) != "" {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > maxReplicas {
			return c, fmt.Errorf("%s=%q: want 1..%d copies of each JetStream asset (0 or empty: min(3, cluster size))", EnvReplicas, v, maxReplicas)
		}
		c.Replicas = n
	}
	return c, nil
}

func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// queueConfig is the work-queue stream that holds requests no replica
// could take at once. Per-message TTLs (Nats-TTL) drop requests whose
// caller's deadline passed even if no replica ever pulls them.
func queueConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        proto.QueueStream,
		Description: "Muster: requests waiting for a free replica",
		Subjects:    []string{proto.QueuePrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      24 * time.Hour,
		AllowMsgTTL: true,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    1 << 30,
		Duplicates:  proto.DedupWindow, // requests sent with Muster-Once are queued once per reply subject
	}
}

// EnsureQueue creates (or finds and updates) the queue stream, with the
// settings of EnvReplicas.
func EnsureQueue(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	c, err := ConfigFromEnv(nil)
	if err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	return c.EnsureQueue(ctx, js)
}

// EnsureQueue creates (or finds) the queue stream. Unless FindOnly, it
// first checks the server version (CheckServerVersion), and brings an
// existing stream up to date: allow_msg_ttl, replicas.
func (c Config) EnsureQueue(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	if !c.FindOnly {
		if err := CheckServerVersion(js.Conn().ConnectedServerVersion()); err != nil {
			return nil, err
		}
	}
	name := proto.QueueStream
	if c.FindOnly {
		if s, err := c.find(ctx, js, name); err == nil || !errors.Is(err, jetstream.ErrStreamNotFound) {
			return s, err
		}
	}
	create := func(ctx context.Context, r int) error {
		cfg := queueConfig()
		cfg.Replicas = r
		_, err := js.CreateStream(ctx, cfg)
		return err
	}
	if err := c.ensure(ctx, js, name, create, true); err != nil {
		return nil, err
	}
	var s jetstream.Stream
	err := retryMade(ctx, func(ctx context.Context) (err error) {
		s, err = js.Stream(ctx, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("streams: look up %s: %w", name, err)
	}
	if !c.FindOnly && !s.CachedInfo().Config.AllowMsgTTL {
		// A server that does not know the field ignores it (below 2.11).
		return nil, fmt.Errorf("streams: the NATS server ignored allow_msg_ttl on stream %s: %s", name, whyTTL)
	}
	return s, nil
}

// AckWait is how long a queued request delivered to a replica stays
// out of the queue without an ack: a delivery lost in a NATS restart or a
// node loss goes to a replica again after it. Replicas ack at once, with
// a confirmed ("double") ack, before they run the request.
const AckWait = 5 * time.Second

// QueueConsumer creates (or finds) the durable pull consumer that all
// replicas of svc share; queued requests leave it oldest first. It has as
// many copies as the stream (a work-queue stream requires it), and follows
// the stream's when they change.
func QueueConsumer(ctx context.Context, s jetstream.Stream, svc proto.Service) (jetstream.Consumer, error) {
	return upsertConsumer(ctx, svc, s.CreateOrUpdateConsumer)
}

// EnsureQueueConsumer is QueueConsumer without a handle on the stream: it
// names the queue stream, so while the stream exists it costs one round
// trip, not a look-up of the stream first. With FindOnly it looks the
// consumer up (queueConsumerExists) and creates it only when it is
// missing, never updating it: a look-up costs the server much less than a
// create or update. A missing stream is found or created as c says
// (EnsureQueue), and the consumer made then.
func (c Config) EnsureQueueConsumer(ctx context.Context, js jetstream.JetStream, svc proto.Service) error {
	if c.FindOnly {
		var found bool
		err := retry(ctx, func(ctx context.Context) (err error) {
			found, err = queueConsumerExists(ctx, js.Conn(), svc)
			return err
		})
		if err != nil {
			return fmt.Errorf("streams: consumer for %s: %w", svc, err)
		}
		if found {
			return nil
		}
	}
	upsert := func(ctx context.Context, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
		return js.CreateOrUpdateConsumer(ctx, proto.QueueStream, cfg)
	}
	_, err := upsertConsumer(ctx, svc, upsert)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	if _, err := c.EnsureQueue(ctx, js); err != nil {
		return err
	}
	_, err = upsertConsumer(ctx, svc, upsert)
	return err
}

// JetStream API error codes of a consumer or stream that does not exist.
const (
	errCodeConsumerNotFound = 10014
	errCodeStreamNotFound   = 10059
)

// queueConsumerExists asks the server for svc's queue consumer
// (CONSUMER.INFO) and reads of the answer no more than whether it is an
// error: decoding the whole consumer info into nats.go's types costs a
// process that just started (a replica on its way to its first call)
// about a millisecond of CPU, more than the round trip itself.
func queueConsumerExists(ctx context.Context, nc *nats.Conn, svc proto.Service) (bool, error) {
	resp, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.INFO."+proto.QueueStream+"."+proto.ConsumerName(svc), nil)
	if err != nil {
		return false, err
	}
	var answer struct {
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &answer); err != nil {
		return false, fmt.Errorf("consumer info: %w", err)
	}
	switch {
	case answer.Error == nil:
		return true, nil
	case answer.Error.ErrorCode == errCodeConsumerNotFound, answer.Error.ErrorCode == errCodeStreamNotFound:
		return false, nil
	}
	return false, answer.Error
}

// upsertConsumer creates or updates svc's queue consumer through upsert.
func upsertConsumer(ctx context.Context, svc proto.Service,
	upsert func(context.Context, jetstream.ConsumerConfig) (jetstream.Consumer, error)) (jetstream.Consumer, error) {
	var c jetstream.Consumer
	err := retry(ctx, func(ctx context.Context) (err error) {
		c, err = upsert(ctx, jetstream.ConsumerConfig{
			Durable:       proto.ConsumerName(svc),
			Description:   "Muster queue of " + svc.String(),
			FilterSubject: proto.QueueSubject(svc),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       AckWait,
			MaxWaiting:    4096,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("streams: consumer for %s: %w", svc, err)
	}
	return c, nil
}

// RegistrationTTL is how long a registration record stays stored without a
// rewrite. Readers judge liveness sooner, by the record's own heartbeat
// (proto.ReplicaInfo.Expired); the TTL only keeps dead records from piling up.
const RegistrationTTL = 2 * time.Minute

// EnsureBucket creates (or finds and updates) a registration bucket, with
// the settings of EnvReplicas.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	c, err := ConfigFromEnv(nil)
	if err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	return c.EnsureBucket(ctx, js, name)
}

// EnsureConfigBucket is EnsureBucket for a configuration bucket: its
// records stay until deleted (no TTL).
func EnsureConfigBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	c, err := ConfigFromEnv(nil)
	if err != nil {
		return nil, fmt.Errorf("streams: %w", err)
	}
	return c.ensureBucket(ctx, js, name, "Muster configuration", 0)
}

// EnsureBucket creates (or finds) a registration bucket. Unless FindOnly,
// an existing bucket gets the replicas of c.
func (c Config) EnsureBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	return c.ensureBucket(ctx, js, name, "Muster registrations", RegistrationTTL)
}

func (c Config) ensureBucket(ctx context.Context, js jetstream.JetStream, name, desc string, ttl time.Duration) (jetstream.KeyValue, error) {
	if c.FindOnly {
		// One look-up while the bucket exists, as it nearly always does.
		var kv jetstream.KeyValue
		err := retry(ctx, func(ctx context.Context) (err error) {
			kv, err = js.KeyValue(ctx, name)
			return err
		})
		if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
			return kv, wrapLookup("bucket "+name, err)
		}
	}
	create := func(ctx context.Context, r int) error {
		_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      name,
			Description: desc,
			History:     1,
			TTL:         ttl,
			Storage:     jetstream.FileStorage,
			Replicas:    r,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			return jetstream.ErrStreamNameAlreadyInUse
		}
		return err
	}
	if err := c.ensure(ctx, js, "KV_"+name, create, false); err != nil {
		return nil, err
	}
	var kv jetstream.KeyValue
	err := retryMade(ctx, func(ctx context.Context) (err error) {
		kv, err = js.KeyValue(ctx, name)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("streams: look up bucket %s: %w", name, err)
	}
	return kv, nil
}

// find looks stream name up once (retrying while unanswered): FindOnly's
// fast path, one round trip while the stream exists.
func (c Config) find(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	var s jetstream.Stream
	err := retry(ctx, func(ctx context.Context) (err error) {
		s, err = js.Stream(ctx, name)
		return err
	})
	return s, wrapLookup(name, err)
}

// wrapLookup says which look-up failed; nil stays nil.
func wrapLookup(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("streams: look up %s: %w", what, err)
}

// whyTTL says why Muster needs per-message TTL.
const whyTTL = "Muster needs per-message TTL (stream setting allow_msg_ttl, nats-server " + MinServerVersion +
	" or newer) so that queued requests expire at their caller's deadline"

// ensure creates the stream name (through create, which gets the number
// of copies) if it is missing, and otherwise, unless FindOnly, updates its
// replicas and, if ttl, allow_msg_ttl.
func (c Config) ensure(ctx context.Context, js jetstream.JetStream, name string, create func(context.Context, int) error, ttl bool) error {
	var s jetstream.Stream
	err := retry(ctx, func(ctx context.Context) (err error) {
		s, err = js.Stream(ctx, name)
		return err
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return c.create(ctx, js, name, create)
	}
	if err != nil {
		return fmt.Errorf("streams: look up %s: %w", name, err)
	}
	if c.FindOnly {
		return nil
	}
	return c.update(ctx, js, s.CachedInfo().Config, ttl)
}

// create creates the missing stream name with the first number of copies
// the cluster can place.
func (c Config) create(ctx context.Context, js jetstream.JetStream, name string, create func(context.Context, int) error) error {
	var err error
	for _, r := range c.candidates(js, 0) {
		err = retry(ctx, func(ctx context.Context) error { return create(ctx, r) })
		switch {
		case err == nil:
			if c.Replicas == 0 && r < autoReplicas && clustered(js) {
				c.logger().Warn("JetStream asset created with fewer copies than wanted: the cluster could not place more (it has fewer nodes, or one is down)",
					"asset", name, "replicas", r, "want", autoReplicas)
			}
			return nil
		case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			return nil // lost a creation race
		case !placementError(err):
			return fmt.Errorf("streams: create %s: %w", name, err)
		}
	}
	return fmt.Errorf("streams: create %s: %w%s", name, err, c.hint())
}

// update brings an existing stream's copies (and allow_msg_ttl, if ttl)
// to what c wants. Failing to add copies in automatic mode (a node is
// down) is a warning; anything else that cannot be done is an error
// saying what to change.
func (c Config) update(ctx context.Context, js jetstream.JetStream, cur jetstream.StreamConfig, ttl bool) error {
	name := cur.Name
	needTTL := ttl && !cur.AllowMsgTTL
	have := max(cur.Replicas, 1)
	tries := c.candidates(js, have)
	if len(tries) == 0 && !needTTL {
		return nil
	}
	var err error
	for _, r := range tries {
		cfg := cur
		cfg.Replicas = r
		cfg.AllowMsgTTL = cfg.AllowMsgTTL || needTTL
		if err = retry(ctx, func(ctx context.Context) error { _, err := js.UpdateStream(ctx, cfg); return err }); err == nil {
			c.logger().Info("JetStream asset updated", "asset", name, "replicas", r, "was", have)
			if r < tries[0] {
				c.logger().Warn("JetStream asset has fewer copies than wanted: the cluster could not place more (it has fewer nodes, or one is down)",
					"asset", name, "replicas", r, "want", tries[0])
			}
			return nil
		}
		if !placementError(err) {
			break
		}
	}
	if len(tries) > 0 {
		switch {
		case c.Replicas > 0:
			return fmt.Errorf("streams: %s has %d copies, %s asks for %d, and the update failed: %w%s",
				name, have, EnvReplicas, c.Replicas, err, c.hint())
		case !placementError(err):
			return fmt.Errorf("streams: update %s to more copies (it has %d): %w", name, have, err)
		}
		c.logger().Warn("JetStream asset keeps fewer copies than wanted: the cluster cannot place more now",
			"asset", name, "replicas", have, "want", tries[0], "err", err)
	}
	if needTTL {
		cfg := cur
		cfg.AllowMsgTTL = true
		if err := retry(ctx, func(ctx context.Context) error { _, err := js.UpdateStream(ctx, cfg); return err }); err != nil {
			return fmt.Errorf("streams: stream %s does not allow per-message TTL and could not be updated (%v). %s. "+
				"Update it (nats stream edit %s --allow-msg-ttl) or, when it holds nothing, delete it (nats stream rm %s)",
				name, err, whyTTL, name, name)
		}
		c.logger().Info("JetStream asset updated", "asset", name, "allow_msg_ttl", true)
	}
	return nil
}

// candidates lists the numbers of copies to try, best first: exactly
// Replicas when set (unless the asset has that many: none), else 3, 2, 1
// on a cluster and 1 on a single server, keeping only those above have
// (automatic mode never takes copies away).
func (c Config) candidates(js jetstream.JetStream, have int) []int {
	if c.Replicas > 0 {
		if c.Replicas == have {
			return nil
		}
		return []int{c.Replicas}
	}
	all := []int{1}
	if clustered(js) {
		all = []int{autoReplicas, 2, 1}
	}
	var out []int
	for _, r := range all {
		if r > have {
			out = append(out, r)
		}
	}
	return out
}

// clustered reports whether the connected server is a node of a cluster.
func clustered(js jetstream.JetStream) bool { return js.Conn().ConnectedClusterName() != "" }

// hint says how to change the number of copies.
func (c Config) hint() string {
	if c.Replicas > 0 {
		return fmt.Sprintf(" (set %s to what the cluster can hold, or to 0 for automatic)", EnvReplicas)
	}
	return ""
}

// JetStream API error codes of a stream the server cannot place.
const (
	errCodeNoPeers               = 10005 // no suitable peers for placement
	errCodeInsufficientResources = 10023
	errCodeReplicasNotSupported  = 10074 // replicas > 1 not supported in non-clustered mode
)

// placementError reports whether err says the server cannot place that
// many copies.
func placementError(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case errCodeNoPeers, errCodeInsufficientResources, errCodeReplicasNotSupported:
		return true
	}
	return false
}

// apiTry bounds one JetStream API request. On a cluster a request can go
// unanswered (the leader it went to changed under it, or the meta group
// is still settling); it is sent again while the caller's context allows.
// Every request here may be repeated: a create that finds the asset made
// counts as done, an update sets the same values again.
const apiTry = 5 * time.Second

// apiRetryWait is the pause between tries.
const apiRetryWait = 100 * time.Millisecond

// retry runs f with a context bounded by apiTry until it returns anything
// other than a timeout or a no-responders error, or ctx ends.
func retry(ctx context.Context, f func(context.Context) error) error {
	return retryIf(ctx, f, transient)
}

// retryMade is retry for looking up an asset that was just made, by this
// process or by another that won the race to make it: on a cluster the
// node that answers may not have applied the creation yet (seen on a
// freshly formed cluster whose nodes' brokers all start at once), so "not
// found" is tried again too.
func retryMade(ctx context.Context, f func(context.Context) error) error {
	return retryIf(ctx, f, func(err error) bool {
		return transient(err) || errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
	})
}

// retryIf runs f with a context bounded by apiTry until it returns nil or
// an error again does not hold for, or ctx ends.
func retryIf(ctx context.Context, f func(context.Context) error, again func(error) bool) error {
	for {
		tctx, cancel := context.WithTimeout(ctx, apiTry)
		err := f(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || !again(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(apiRetryWait):
		}
	}
}

// transient reports whether err says only that no answer came in time.
func transient(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders)
}
