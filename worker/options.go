package worker

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/natsconn"
)

// config is the resolved settings of one replica.
type config struct {
	service      proto.Service
	replicaID    string
	attachID     string // MUSTER_ATTACH_ID: the manager that started it (only recorded)
	capacity     int
	idleTimeout  time.Duration
	minReplicas  int
	exitAfterEOC bool
	standby      bool   // MUSTER_STANDBY: start parked on the standby subject (standby.go)
	armFile      string // MUSTER_STANDBY_ARM: read at SIGUSR2, whether a parked standby takes the warm subject too
	convTimeout  time.Duration
	heartbeat    time.Duration
	grace        time.Duration
	conn         *nats.Conn
	connCfg      natsconn.Config
	logger       *slog.Logger
	signals      bool
	version      string
	ready        func()
	overridden   map[string]bool // env keys an option sets (their env value is not even parsed)
}

// Option sets one optional knob of Run.
type Option func(*config) error

// An option's error says what is wrong with its value; resolve adds
// ErrConfig (and, for a value from the environment, the variable) once.

// WithService sets the service ("CLASS/NAME/SERVICE") the replica serves.
func WithService(s string) Option {
	return overrides(proto.EnvService, func(c *config) error {
		svc, err := proto.ParseService(s)
		c.service = svc
		return err
	})
}

// WithConn uses an existing connection (Run does not close it).
func WithConn(nc *nats.Conn) Option { return func(c *config) error { c.conn = nc; return nil } }

// WithURL sets the NATS URL when Run opens its own connection.
func WithURL(url string) Option { return func(c *config) error { c.connCfg.URL = url; return nil } }

// WithReplicaID sets the replica id (one subject token).
func WithReplicaID(id string) Option {
	return overrides(proto.EnvReplicaID, func(c *config) error { c.replicaID = id; return proto.ValidID(id) })
}

// WithCapacity sets how many conversations the replica serves at once.
func WithCapacity(n int) Option {
	return overrides(proto.EnvCapacity, func(c *config) error {
		if n < 1 {
			return fmt.Errorf("capacity %d < 1", n)
		}
		c.capacity = n
		return nil
	})
}

// WithIdleTimeout makes the replica exit after d without any conversation
// (0: never).
func WithIdleTimeout(d time.Duration) Option {
	return overrides(proto.EnvIdleTimeout, func(c *config) error { c.idleTimeout = d; return nonNegative("idle timeout", d) })
}

// WithMinReplicas keeps the n longest-running replicas of the service alive
// despite the idle timeout.
func WithMinReplicas(n int) Option {
	return overrides(proto.EnvMinReplicas, func(c *config) error {
		if n < 0 {
			return fmt.Errorf("min replicas %d < 0", n)
		}
		c.minReplicas = n
		return nil
	})
}

// WithStandby starts the replica as a standby: connected and parked on the
// service's standby subject, serving nothing and counting in no figure
// until a call or NEW arrives there or the process gets SIGUSR1 (from the
// attach manager that started it); then it serves as any replica.
func WithStandby(on bool) Option {
	return overrides(proto.EnvStandby, func(c *config) error { c.standby = on; return nil })
}

// WithStandbyArmFile names the file a parked standby reads when it gets
// SIGUSR2 (from the attach manager that started it): "1" arms it (it takes
// the warm subject too, and the first call there activates it), anything
// else, or no file, disarms it.
func WithStandbyArmFile(path string) Option {
	return overrides(proto.EnvStandbyArm, func(c *config) error { c.armFile = path; return nil })
}

// WithExitAfterConversation makes the replica exit when its first
// conversation ends: one replica per conversation, as EntireX replicas do.
func WithExitAfterConversation(on bool) Option {
	return overrides(proto.EnvExitAfterEOC, func(c *config) error { c.exitAfterEOC = on; return nil })
}

// WithConvTimeout sets CONV-NONACT: a conversation whose client sends
// nothing for d is ended with 0003/0073 on both sides.
func WithConvTimeout(d time.Duration) Option {
	return overrides(proto.EnvConvTimeout, func(c *config) error { c.convTimeout = d; return positive("conversation timeout", d) })
}

// WithHeartbeat sets how often the registration is refreshed.
func WithHeartbeat(d time.Duration) Option {
	return overrides(proto.EnvHeartbeat, func(c *config) error {
		c.heartbeat = d
		if d < 10*time.Millisecond || d > 30*time.Second {
			return fmt.Errorf("heartbeat %v: want 10ms to 30s (registrations are kept 2m)", d)
		}
		return nil
	})
}

// WithGrace sets how long a quiescing replica lets open conversations run
// before it ends them (IMMED).
func WithGrace(d time.Duration) Option {
	return overrides(proto.EnvGrace, func(c *config) error { c.grace = d; return nonNegative("grace", d) })
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *config) error { c.logger = l; return nil } }

// WithSignals makes Run quiesce on SIGTERM and SIGINT (default true).
func WithSignals(on bool) Option { return func(c *config) error { c.signals = on; return nil } }

// WithReadyFunc calls f once the replica is registered and serving.
func WithReadyFunc(f func()) Option { return func(c *config) error { c.ready = f; return nil } }

// WithVersion sets the version the replica reports (default "0.1.0").
func WithVersion(v string) Option { return func(c *config) error { c.version = v; return nil } }

// overrides marks an option that sets what env key would: with it, the
// environment's value is neither used nor checked.
func overrides(key string, f Option) Option {
	return func(c *config) error {
		if c.overridden != nil {
			c.overridden[key] = true
		}
		return f(c)
	}
}

func positive(what string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s %v must be > 0", what, d)
	}
	return nil
}

func nonNegative(what string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s %v must be >= 0", what, d)
	}
	return nil
}

// resolve builds the config: defaults, then the environment, then opts.
func resolve(lookup func(string) (string, bool), opts []Option) (*config, error) {
	c := &config{
		capacity:    1,
		convTimeout: 5 * time.Minute,
		heartbeat:   2 * time.Second,
		grace:       10 * time.Second,
		signals:     true,
		version:     "0.1.0",
		connCfg:     natsconn.FromEnv(lookup),
	}
	if v, ok := lookup(proto.EnvAttachID); ok && proto.ValidID(v) == nil {
		c.attachID = v
	}
	probe := &config{overridden: map[string]bool{}}
	for _, o := range opts {
		_ = o(probe) // only to learn which settings the options make
	}
	env := func(k string, set func(string) Option) error {
		v, ok := lookup(k)
		if !ok || v == "" || probe.overridden[k] {
			return nil
		}
		if err := set(v)(c); err != nil {
			return fmt.Errorf("%w: environment %s=%q: %w", ErrConfig, k, v, err)
		}
		return nil
	}
	dur := func(f func(time.Duration) Option) func(string) Option {
		return func(v string) Option {
			d, err := time.ParseDuration(v)
			if err != nil {
				return func(*config) error { return err }
			}
			return f(d)
		}
	}
	num := func(f func(int) Option) func(string) Option {
		return func(v string) Option {
			n, err := strconv.Atoi(v)
			if err != nil {
				return func(*config) error { return err }
			}
			return f(n)
		}
	}
	for _, e := range []struct {
		key string
		set func(string) Option
	}{
		{proto.EnvService, WithService},
		{proto.EnvReplicaID, WithReplicaID},
		{proto.EnvCapacity, num(WithCapacity)},
		{proto.EnvIdleTimeout, dur(WithIdleTimeout)},
		{proto.EnvMinReplicas, num(WithMinReplicas)},
		{proto.EnvExitAfterEOC, func(v string) Option { return WithExitAfterConversation(v == "1" || v == "true") }},
		{proto.EnvStandby, func(v string) Option { return WithStandby(v == "1" || v == "true") }},
		{proto.EnvStandbyArm, WithStandbyArmFile},
		{proto.EnvConvTimeout, dur(WithConvTimeout)},
		{proto.EnvHeartbeat, dur(WithHeartbeat)},
		{proto.EnvGrace, dur(WithGrace)},
	} {
		if err := env(e.key, e.set); err != nil {
			return nil, err
		}
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	if c.service == (proto.Service{}) {
		return nil, fmt.Errorf("%w: no service: set %s or use WithService", ErrConfig, proto.EnvService)
	}
	if c.replicaID == "" {
		c.replicaID = nats.NewInbox()[len(nats.InboxPrefix):]
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	c.logger = c.logger.With("service", c.service.String(), "replica", c.replicaID)
	return c, nil
}

func osLookup(k string) (string, bool) { return os.LookupEnv(k) }
