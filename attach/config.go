package attach

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/xdg"
)

// Config is an attach manager's configuration file.
//
// It is the only source of the programs an attach manager starts: a start
// request from the broker names a service, and the program, arguments,
// environment and working directory all come from that service's entry here.
// Nothing received from the network reaches a command line.
type Config struct {
	File     string // absolute path it was loaded from ("" for built-in)
	Host     HostConfig
	Services []ServiceConfig

	dirsSet struct{ state, log, temp bool } // the file set state_dir, log_dir, temp_dir
}

// HostConfig is the "host" section: settings of the attach manager itself.
// Loaded configs have every field filled in (defaults resolved).
type HostConfig struct {
	Name          string        // "name"; default: OS host name sanitised to [A-Za-z0-9_-], at most 64 characters
	MaxReplicas   int           // "max_replicas"; total replicas on this host; default 64; at least the sum of the services' min
	MaxUsers      int           // "max_users"; open calls and conversations this host allows ("users", reported as allowed users); 0 (default): what its limits allow, min(Σ max × capacity, max_replicas × the largest capacity)
	StateDir      string        // "state_dir"; default $XDG_STATE_HOME/muster/attach-<name> or ~/.local/state/muster/attach-<name> (UseDataDir: <data>/attach-<name>); one manager at a time (a lock)
	LogDir        string        // "log_dir"; default <state_dir>/logs
	TempDir       string        // "temp_dir"; default <os.TempDir()>/muster-<name>-<hash of state_dir>, so each state dir has its own
	LogMaxBytes   int64         // "log_max_bytes"; per replica log file before rotation; default 10 MiB
	LogKeep       int           // "log_keep"; rotated files kept per replica; default 3
	LogTotalBytes int64         // "log_total_bytes"; cap for the whole log dir; default 1 GiB
	Heartbeat     time.Duration // "heartbeat"; registration refresh interval; default 2s
	Grace         time.Duration // "grace"; a stopping replica's grace for open conversations (MUSTER_GRACE); SIGKILL follows 2s later; default 10s
}

// ServiceConfig is one entry of the "services" list: a service this host
// can start replicas of, and how.
type ServiceConfig struct {
	Service               string            // "service": CLASS/NAME/SERVICE (required, unique)
	Program               string            // "program" (required): absolute path of an existing executable regular file
	Args                  []string          // "args": arguments after the program name
	Env                   map[string]string // "env": extra environment; no MUSTER_* names (the manager sets those)
	Dir                   string            // "dir": absolute working directory; "" means the replica's temp dir
	Min                   int               // "min": replicas kept running; default 0
	Max                   int               // "max": replicas at most; default 1, >= min
	Standby               int               // "standby": replicas kept started but parked (not serving); default 0, min + standby <= max
	Capacity              int               // "capacity": concurrent conversations per replica; default 1
	IdleTimeout           time.Duration     // "idle_timeout": a replica exits after this long unused; default 60s, 0 = never
	StartTimeout          time.Duration     // "start_timeout": how long a replica may take to register; default 30s
	ConvTimeout           time.Duration     // "conv_timeout": a conversation idle this long is ended; default 5m
	Restart               string            // "restart": RestartOnFailure (default), RestartAlways or RestartNever
	ExitAfterConversation bool              // "exit_after_conversation": a replica serves one conversation, then exits
	Line                  int               // line of this entry in the file (0 for built-in)
}

// Restart policies of ServiceConfig.Restart.
const (
	RestartOnFailure = "on-failure" // restart a replica that exits with an error, while it is still wanted
	RestartAlways    = "always"     // restart a replica whenever it exits, even after its idle timeout (pair it with idle_timeout: 0)
	RestartNever     = "never"      // never restart; the broker asks again if it needs one
)

// service returns the entry for service name ("CLASS/NAME/SERVICE").
func (c *Config) service(name string) (*ServiceConfig, bool) {
	for i := range c.Services {
		if c.Services[i].Service == name {
			return &c.Services[i], true
		}
	}
	return nil, false
}

// Defaults and limits.
const (
	defaultMaxReplicas   = 64
	defaultLogMaxBytes   = 10 << 20
	defaultLogKeep       = 3
	defaultLogTotalBytes = 1 << 30
	defaultHeartbeat     = 2 * time.Second
	defaultGrace         = 10 * time.Second

	defaultMax          = 1
	defaultCapacity     = 1
	defaultIdleTimeout  = 60 * time.Second
	defaultStartTimeout = 30 * time.Second
	defaultConvTimeout  = 5 * time.Minute

	maxHostName    = proto.MaxIDLen // a host name is the manager's id
	maxCount       = 1_000_000      // upper bound of replica counts and capacity
	maxLogKeep     = 1000
	maxConfigBytes = 4 << 20
)

// defaultHost is the host section before the file (or DemoConfig) sets
// anything; fillDerived completes it afterwards.
func defaultHost() HostConfig {
	return HostConfig{
		MaxReplicas:   defaultMaxReplicas,
		LogMaxBytes:   defaultLogMaxBytes,
		LogKeep:       defaultLogKeep,
		LogTotalBytes: defaultLogTotalBytes,
		Heartbeat:     defaultHeartbeat,
		Grace:         defaultGrace,
	}
}

// defaultService is a service entry before the file (or DemoConfig) sets
// anything.
func defaultService() ServiceConfig {
	return ServiceConfig{
		Max:          defaultMax,
		Capacity:     defaultCapacity,
		IdleTimeout:  defaultIdleTimeout,
		StartTimeout: defaultStartTimeout,
		ConvTimeout:  defaultConvTimeout,
		Restart:      RestartOnFailure,
	}
}

// fillDerived fills in the host settings whose defaults depend on others:
// the name, then the directories named after it.
func (h *HostConfig) fillDerived() {
	if h.Name == "" {
		h.Name = defaultHostName()
	}
	if h.StateDir == "" {
		h.StateDir = defaultStateDir(h.Name)
	}
	if h.LogDir == "" {
		h.LogDir = filepath.Join(h.StateDir, "logs")
	}
	if h.TempDir == "" {
		h.TempDir = defaultTempDir(h.Name, h.StateDir)
	}
}

// defaultTempDir is <os.TempDir()>/muster-<name>-<8 hex digits of the
// state dir's hash>: the temp root belongs to one instance (one state dir,
// which one manager holds at a time), even when several instances with
// the same host name run on one host.
func defaultTempDir(name, stateDir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(stateDir)))
	return filepath.Join(os.TempDir(), fmt.Sprintf("muster-%s-%x", name, sum[:4]))
}

// UseDataDir places the manager's state under dataDir, the data dir of the
// instance it belongs to (muster up --data DIR): the state dir becomes
// <dataDir>/attach-<name>, and the log and temp dirs follow it, except
// those the config file set itself.
func (c *Config) UseDataDir(dataDir string) {
	if dataDir == "" || c.dirsSet.state {
		return
	}
	c.Host.StateDir = filepath.Join(dataDir, "attach-"+c.Host.Name)
	if !c.dirsSet.log {
		c.Host.LogDir = filepath.Join(c.Host.StateDir, "logs")
	}
	if !c.dirsSet.temp {
		c.Host.TempDir = defaultTempDir(c.Host.Name, c.Host.StateDir)
	}
}

// newConfig returns a config with every host default resolved except those
// set by set, which runs before the derived defaults are filled in. Both
// parseConfig and DemoConfig build their configs through it.
func newConfig(file string, set func(*HostConfig)) *Config {
	c := &Config{File: file, Host: defaultHost()}
	if set != nil {
		set(&c.Host)
	}
	c.Host.fillDerived()
	return c
}

// defaultHostName is the OS host name made safe for subjects and paths.
func defaultHostName() string {
	h, _ := os.Hostname()
	return sanitiseName(h)
}

// sanitiseName replaces every character outside [A-Za-z0-9_-] with '-' and
// cuts the result to maxHostName bytes ("localhost" if nothing is left).
func sanitiseName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() == maxHostName {
			break
		}
		if r < utf8.RuneSelf && proto.IsTokenByte(byte(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "localhost"
	}
	return b.String()
}

// validHostName reports whether s may name an attach manager: the token
// rule of every Muster name (proto.CheckToken), at most maxHostName long.
func validHostName(s string) bool {
	return proto.CheckToken(s, maxHostName) == nil
}

// defaultStateDir is $XDG_STATE_HOME/muster/attach-<name> (see package
// xdg), or a directory under the temp dir when there is no home.
func defaultStateDir(name string) string {
	dir, err := xdg.StateDir("attach-" + name)
	if err != nil {
		return filepath.Join(os.TempDir(), "muster-state", "muster", "attach-"+name)
	}
	return dir
}

// DemoConfig is the built-in config: the demo echo and sleep services served
// by executable (normally the muster binary itself, via `muster example`).
func DemoConfig(executable string) *Config {
	c := newConfig("", nil)
	for _, d := range []struct{ service, example string }{
		{"DEMO/ECHO/ECHO", "echo"},
		{"DEMO/SLEEP/SLEEP", "sleep"},
	} {
		s := defaultService()
		s.Service = d.service
		s.Program = executable
		s.Args = []string{"example", d.example}
		s.Min = 0
		s.Max = 4
		s.Capacity = 1
		s.IdleTimeout = 30 * time.Second
		c.Services = append(c.Services, s)
	}
	return c
}
