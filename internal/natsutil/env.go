package natsutil

import "os"

// Environment variables that carry a ConnConfig; the ConnFlags read them too.
const (
	EnvURL      = "MUSTER_URL"
	EnvUser     = "MUSTER_USER"
	EnvPassword = "MUSTER_PASSWORD"
	EnvToken    = "MUSTER_TOKEN"
	EnvCreds    = "MUSTER_CREDS"
	EnvNKey     = "MUSTER_NKEY"
	EnvTLSCA    = "MUSTER_TLS_CA"
	EnvTLSCert  = "MUSTER_TLS_CERT"
	EnvTLSKey   = "MUSTER_TLS_KEY"
)

// envFields pairs each environment variable with its ConnConfig field.
func (c *ConnConfig) envFields() []struct {
	key string
	val *string
} {
	return []struct {
		key string
		val *string
	}{
		{EnvURL, &c.URL},
		{EnvUser, &c.User},
		{EnvPassword, &c.Password},
		{EnvToken, &c.Token},
		{EnvCreds, &c.CredsFile},
		{EnvNKey, &c.NKeySeedFile},
		{EnvTLSCA, &c.TLSCA},
		{EnvTLSCert, &c.TLSCert},
		{EnvTLSKey, &c.TLSKey},
	}
}

// Env returns the environment variables (KEY=VALUE) that pass this config
// to a child process using the same MUSTER_* names as the flags. Secrets
// pass only as file paths or environment, never argv. Every variable is
// listed, empty when unset, so appending the result to os.Environ()
// overrides any inherited value (os/exec keeps the last duplicate).
// Name is not passed: the child names its own connection.
func (c ConnConfig) Env() []string {
	fields := c.envFields()
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		out = append(out, f.key+"="+*f.val)
	}
	return out
}

// ConnConfigFromEnv reads MUSTER_URL, MUSTER_USER, ... through lookup
// (os.LookupEnv when nil). Empty values count as unset.
func ConnConfigFromEnv(lookup func(string) (string, bool)) ConnConfig {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var c ConnConfig
	for _, f := range c.envFields() {
		if v, ok := lookup(f.key); ok {
			*f.val = v
		}
	}
	return c
}
