package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/embedded"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/xdg"
)

// defaultClusterName is --cluster's default.
const defaultClusterName = "muster"

// nodeFlags are the flags of the embedded NATS node that `muster up` and
// `muster nats` run.
func nodeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "nats-listen", Value: "127.0.0.1:4222", Usage: "`HOST:PORT` the embedded NATS server listens on for clients"},
		&cli.StringFlag{Name: "data", Usage: "`DIR` of the embedded server's JetStream store, one per node (default: $XDG_STATE_HOME/muster or ~/.local/state/muster)"},
		&cli.BoolFlag{Name: "insecure", Usage: "run the embedded NATS server WITHOUT credentials: anyone who can reach it can serve, snoop on or stop Muster's work (default: credentials per role in DATA/creds, created on first start)"},
		&cli.StringFlag{Name: "keys", Usage: "signing keys `DIR` the server trusts (DIR/keys of `muster auth init --dir DIR`; it must exist); every node of a cluster needs the same (default: DATA/keys, created on first start)"},
		&cli.StringFlag{Name: "name", Usage: "this node's `NAME`, unique in its cluster; with the demo config also the attach manager's host name (default: the host name in a cluster, else \"muster\")"},
		&cli.StringFlag{Name: "cluster", Value: defaultClusterName, Usage: "`NAME` of the NATS cluster this node joins (with --cluster-listen); every node gives the same"},
		&cli.StringFlag{Name: "cluster-listen", Usage: "`HOST:PORT` this node takes routes from the other nodes on: makes it a node of a NATS cluster"},
		&cli.StringFlag{Name: "routes", Usage: "the cluster's route addresses, comma-separated `HOST:PORT,...` (nats-route://HOST:PORT too); this node's own may be among them, so every node can get the same list"},
	}
}

// nodeFlagNames are the nodeFlags that configure the embedded server.
var nodeFlagNames = []string{"nats-listen", "data", "insecure", "keys", "name", "cluster", "cluster-listen", "routes"}

// node is an embedded NATS server (a cluster node or a single server),
// or with --server an external one (server nil), and how to reach it.
type node struct {
	server *server.Server
	cfg    embedded.Config
	// conn connects to the server, without credentials.
	conn  natsconn.Config
	where string // "embedded, with credentials", …
	// dataDir holds the JetStream store; credsDir one .creds per role
	// ("" without credentials); keysDir the signing keys the server
	// trusts, loaded as keys.
	dataDir, credsDir, keysDir string
	keys                       *auth.Keys
}

// clustered reports whether n is an embedded node of a NATS cluster.
func (n *node) clustered() bool { return n.server != nil && n.cfg.ClusterName != "" }

// status is what n knows of its cluster now.
func (n *node) status() embedded.ClusterStatus { return embedded.Status(n.server, n.cfg) }

// clusterLines are the start banner's lines on the node and its cluster
// (none outside a cluster), as writeWhere prints them.
func (n *node) clusterLines() [][2]string {
	if !n.clustered() {
		return nil
	}
	routes := "none: the other nodes route to this one"
	if len(n.cfg.Routes) > 0 {
		routes = strings.Join(n.cfg.Routes, ", ")
	}
	return [][2]string{
		{"node", n.cfg.ServerName + " of NATS cluster " + n.cfg.ClusterName},
		{"cluster", "routes on " + n.server.ClusterAddr().String() + " (no user credentials: keep them on a private network); routes to " + routes},
	}
}

// upNATS starts the embedded NATS node, or with --server uses that
// server.
func upNATS(c *cli.Context, log *slog.Logger, cleanup *stack) (*node, error) {
	if c.String(FlagServer) != "" {
		for _, f := range nodeFlagNames {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s configures the embedded server: not with --server", f)
			}
		}
		return &node{conn: connConfigFromCLI(c), where: "external"}, nil
	}
	return startNode(c, log, cleanup)
}

// startNode starts the embedded NATS node of the nodeFlags: a single
// server, or a node of a NATS cluster with --cluster-listen. With
// credentials (no --insecure) the server runs in operator mode, trusting
// the keys of --keys (default DATA/keys, made on first start), and
// DATA/creds gets one .creds file per role.
func startNode(c *cli.Context, log *slog.Logger, cleanup *stack) (*node, error) {
	secure := !c.Bool("insecure")
	ecfg, err := clusterConfig(c, secure)
	if err != nil {
		return nil, err
	}
	dir, err := dataDir(c.String("data"), log)
	if err != nil {
		return nil, err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	cleanup.push(unlock)
	listen := c.String("nats-listen")
	if !secure {
		log.Warn("INSECURE: the embedded NATS server runs without credentials; anyone who can reach it can serve, snoop on or stop Muster's work", "listen", listen)
	}
	if err := checkListen(listen, secure, log); err != nil {
		return nil, err
	}
	ecfg.Listen, ecfg.StoreDir = listen, dir
	n := &node{dataDir: dir}
	if _, err := os.Stat(filepath.Join(dir, "jetstream", "$G")); err == nil && secure {
		log.Warn("this data directory holds queued work and registrations from a run without credentials; with credentials they belong to another account and are not seen (run with --insecure to serve them)", "dir", dir)
	}
	if secure {
		if n.keys, n.keysDir, err = nodeKeys(c, dir); err != nil {
			return nil, err
		}
		warnOtherAccounts(log, dir, n.keys)
		n.credsDir = filepath.Join(dir, "creds")
		for _, role := range auth.Roles {
			if _, err := auth.WriteCreds(n.keys, n.credsDir, role); err != nil {
				return nil, err
			}
		}
		ecfg.Configure = func(o *server.Options) error { return auth.ServerOptions(n.keys, o) }
	}
	if ecfg.ClusterName != "" {
		// The server's complaints (a route it cannot reach, a clashing
		// node name, another cluster's node) are what the operator of
		// a cluster needs to see.
		ecfg.Logger = log.With("nats", ecfg.ServerName)
	}
	s, err := embedded.Start(ecfg)
	if err != nil {
		return nil, err
	}
	cleanup.push(func() {
		bounded(log, "NATS shutdown", stopTimeout, func() { s.Shutdown(); s.WaitForShutdown() })
	})
	n.server, n.cfg = s, ecfg
	if n.keys != nil {
		// Register the MUSTER account (and its JetStream) now, not on
		// its first use: a cluster's meta leader answers for it even
		// when none of the account's clients is connected to it.
		if _, err := s.LookupAccount(n.keys.AccountKey()); err != nil {
			log.Warn("the embedded NATS server did not load the MUSTER account", "account", n.keys.AccountKey(), "err", err)
		}
	}
	n.conn = natsconn.Config{URL: s.ClientURL()}
	n.where = "embedded, with credentials"
	if !secure {
		n.where = "embedded, INSECURE: no credentials"
	}
	if n.clustered() {
		n.where = "embedded node " + ecfg.ServerName + " of cluster " + ecfg.ClusterName + strings.TrimPrefix(n.where, "embedded")
	}
	return n, nil
}

// clusterConfig checks the cluster flags and returns the embedded config
// they make: ServerName and, with --cluster-listen, the cluster.
func clusterConfig(c *cli.Context, secure bool) (embedded.Config, error) {
	var ecfg embedded.Config
	if !secure && c.IsSet("keys") {
		return ecfg, errors.New("--keys gives the keys of a server with credentials: not with --insecure")
	}
	name := c.String("name")
	if name != "" {
		if err := proto.CheckToken(name, proto.MaxIDLen); err != nil {
			return ecfg, fmt.Errorf("--name %q %v", name, err)
		}
	}
	listen := c.String("cluster-listen")
	var routes []string
	for _, r := range strings.Split(c.String("routes"), ",") {
		if r = strings.TrimSpace(r); r != "" {
			routes = append(routes, r)
		}
	}
	if listen == "" {
		if len(routes) > 0 || c.IsSet("cluster") {
			return ecfg, errors.New("--routes and --cluster need --cluster-listen HOST:PORT, the address this node takes routes from the other nodes on")
		}
		ecfg.ServerName = name
		return ecfg, nil
	}
	if c.String("cluster") == "" {
		return ecfg, errors.New("--cluster: a NATS cluster needs a name, the same on every node")
	}
	if name == "" {
		if name = hostNodeName(); name == "" {
			return ecfg, errors.New("a node of a NATS cluster needs a name: give --name NAME, unique in the cluster")
		}
	}
	if secure && !c.IsSet("keys") {
		return ecfg, errors.New("the nodes of a NATS cluster with credentials must trust the same keys: " +
			"create them once with `muster auth init --dir DIR`, give every node a copy of DIR/keys (secret: keep it mode 0700), " +
			"and start each node with --keys DIR/keys (or run the whole cluster with --insecure, without credentials)")
	}
	ecfg.ServerName, ecfg.ClusterName, ecfg.ClusterListen, ecfg.Routes = name, c.String("cluster"), listen, routes
	return ecfg, nil
}

// hostNodeName is the OS host name made a valid node name ("" if none).
func hostNodeName() string {
	h, _ := os.Hostname()
	h, _, _ = strings.Cut(h, ".")
	var b strings.Builder
	for i := 0; i < len(h) && b.Len() < proto.MaxIDLen; i++ {
		if proto.IsTokenByte(h[i]) {
			b.WriteByte(h[i])
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// nodeKeys loads the signing keys of --keys, which must exist, or those
// of dataDir/keys, created on first start.
func nodeKeys(c *cli.Context, dataDir string) (*auth.Keys, string, error) {
	dir := c.String("keys")
	if dir == "" {
		dir = filepath.Join(dataDir, "keys")
		k, err := auth.LoadOrCreateKeys(dir)
		return k, dir, err
	}
	k, err := auth.LoadKeys(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(filepath.Join(dir, "keys")); serr == nil {
			return nil, "", fmt.Errorf("--keys %s holds no keys but a keys/ directory: give --keys %s", dir, filepath.Join(dir, "keys"))
		}
		return nil, "", fmt.Errorf("--keys %s holds no keys: create them with `muster auth init --dir DIR` and give --keys DIR/keys", dir)
	}
	return k, dir, err
}

// warnOtherAccounts warns when dataDir's JetStream store holds data of
// accounts k does not have: a store made with other keys, whose queue
// and registrations (and, in a cluster, whose JetStream membership) this
// server will not see.
func warnOtherAccounts(log *slog.Logger, dataDir string, k *auth.Keys) {
	ents, err := os.ReadDir(filepath.Join(dataDir, "jetstream"))
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || len(name) != 56 || name[0] != 'A' || name == k.AccountKey() || name == k.SystemAccountKey() {
			continue
		}
		log.Warn("this data directory holds JetStream data of an account these keys do not have: it was made with other keys, and its queued work and registrations are not seen (start with the keys it was made with)",
			"dir", dataDir, "account", name, "keys_account", k.AccountKey())
		return
	}
}

// roleConn is cfg with the .creds file of role in credsDir ("": cfg).
func roleConn(cfg natsconn.Config, credsDir string, role auth.Role) natsconn.Config {
	if credsDir != "" {
		cfg.CredsFile = filepath.Join(credsDir, string(role)+".creds")
	}
	return cfg
}

// dataDir returns the JetStream store directory, created 0700: dir, else
// $XDG_STATE_HOME/muster, else ~/.local/state/muster.
func dataDir(dir string, log *slog.Logger) (string, error) {
	if dir == "" {
		var err error
		if dir, err = xdg.StateDir(); err != nil {
			return "", fmt.Errorf("no --data given: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("data directory: %w", err)
	}
	if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o077 != 0 {
		log.Warn("data directory is accessible to other users", "dir", dir, "mode", st.Mode().Perm())
	}
	return dir, nil
}

// checkListen fails at once if listen is taken (StartEmbedded would only
// time out) and warns if it is reachable from other hosts.
func checkListen(listen string, secure bool, log *slog.Logger) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--nats-listen %q: %w", listen, err)
	}
	if !isLoopback(host) && !secure {
		log.Warn("the embedded NATS server has no authentication and listens beyond loopback", "listen", listen)
	}
	if port == "0" || port == "-1" {
		return nil
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--nats-listen %s: %w", listen, err)
	}
	return l.Close()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
