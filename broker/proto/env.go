package proto

// The environment contract between an attach manager and the replicas it
// starts: every setting a replica gets, by name. A replica in another
// language reads the same variables (docs/PROTOCOL.md). Nothing in it
// comes from a message; secrets pass as file paths or variables, never
// argv.
const (
	// How to reach NATS (the same names the muster commands read).
	EnvURL      = "MUSTER_URL"      // nats://host:port[,nats://…]
	EnvUser     = "MUSTER_USER"     // user name
	EnvPassword = "MUSTER_PASSWORD" // password (with EnvUser)
	EnvToken    = "MUSTER_TOKEN"    // auth token
	EnvCreds    = "MUSTER_CREDS"    // path of a NATS JWT .creds file
	EnvNKey     = "MUSTER_NKEY"     // path of a user nkey seed file
	EnvTLSCA    = "MUSTER_TLS_CA"   // path of a PEM CA bundle
	EnvTLSCert  = "MUSTER_TLS_CERT" // path of a PEM client certificate
	EnvTLSKey   = "MUSTER_TLS_KEY"  // path of its PEM key

	// What to serve and how.
	EnvService      = "MUSTER_SERVICE"        // CLASS/NAME/SERVICE (required)
	EnvReplicaID    = "MUSTER_REPLICA_ID"     // replica id, [A-Za-z0-9_-]{1,64} (default: generated)
	EnvCapacity     = "MUSTER_CAPACITY"       // concurrent conversations, decimal ≥ 1 (default 1)
	EnvIdleTimeout  = "MUSTER_IDLE_TIMEOUT"   // exit after this long without a conversation (Go duration, "30s"; 0 = never)
	EnvMinReplicas  = "MUSTER_MIN_REPLICAS"   // replicas kept alive despite the idle timeout, decimal (default 0)
	EnvExitAfterEOC = "MUSTER_EXIT_AFTER_EOC" // "true"/"1": exit after the first conversation ends
	EnvConvTimeout  = "MUSTER_CONV_TIMEOUT"   // CONV-NONACT: end a conversation idle this long (Go duration, default 5m)
	EnvHeartbeat    = "MUSTER_HEARTBEAT"      // registration refresh interval (Go duration, default 2s)
	EnvGrace        = "MUSTER_GRACE"          // quiesce grace period before IMMED (Go duration, default 10s)
	EnvTempDir      = "MUSTER_TEMP_DIR"       // the replica's own temp dir (removed after it exits)
	EnvAttachID     = "MUSTER_ATTACH_ID"      // id of the attach manager that started it (recorded in its registration; empty when started by hand)
	EnvStandby      = "MUSTER_STANDBY"        // "1": start as a standby (parked on the standby subject until work or SIGUSR1 comes)
	EnvStandbyArm   = "MUSTER_STANDBY_ARM"    // path of the file a parked standby reads at SIGUSR2: "1" takes the warm subject too (armed), anything else leaves it
)

// EnvPrefix starts every variable of the contract; an attach config may
// not set variables with it.
const EnvPrefix = "MUSTER_"
