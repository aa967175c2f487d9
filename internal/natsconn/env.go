package natsconn

import (
	"os"

	"github.com/musterhq/muster/broker/proto"
)

// envFields pairs each environment variable with its Config field.
func (c *Config) envFields() []struct {
	key string
	val *string
} {
	return []struct {
		key string
		val *string
	}{
		{proto.EnvURL, &c.URL},
		{proto.EnvUser, &c.User},
		{proto.EnvPassword, &c.Password},
		{proto.EnvToken, &c.Token},
		{proto.EnvCreds, &c.CredsFile},
		{proto.EnvNKey, &c.NKeySeedFile},
		{proto.EnvTLSCA, &c.TLSCA},
		{proto.EnvTLSCert, &c.TLSCert},
		{proto.EnvTLSKey, &c.TLSKey},
	}
}

// Env returns the environment variables (KEY=VALUE) that pass this config
// to a child process using the same MUSTER_* names as the flags. Secrets
// pass only as file paths or environment, never argv. Every variable is
// listed, empty when unset, so appending the result to os.Environ()
// overrides any inherited value (os/exec keeps the last duplicate).
// Name is not passed: the child names its own connection.
func (c Config) Env() []string {
	fields := c.envFields()
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		out = append(out, f.key+"="+*f.val)
	}
	return out
}

// FromEnv reads MUSTER_URL, MUSTER_USER, ... through lookup
// (os.LookupEnv when nil). Empty values count as unset.
func FromEnv(lookup func(string) (string, bool)) Config {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	var c Config
	for _, f := range c.envFields() {
		if v, ok := lookup(f.key); ok {
			*f.val = v
		}
	}
	return c
}
