package main

import (
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/urfave/cli/v2"
)

// Flag names accepted by every muster command that talks to NATS.
const (
	FlagServer   = "server"
	FlagUser     = "user"
	FlagPassword = "password"
	FlagToken    = "token"
	FlagCreds    = "creds"
	FlagNKey     = "nkey"
	FlagTLSCA    = "tlsca"
	FlagTLSCert  = "tlscert"
	FlagTLSKey   = "tlskey"
)

// natsFlags returns the flags every muster command that talks to NATS
// accepts: --server (env MUSTER_URL), --user (MUSTER_USER), --password
// (MUSTER_PASSWORD), --token (MUSTER_TOKEN), --creds (MUSTER_CREDS),
// --nkey (MUSTER_NKEY, a seed file path), --tlsca (MUSTER_TLS_CA),
// --tlscert (MUSTER_TLS_CERT) and --tlskey (MUSTER_TLS_KEY).
//
// --server defaults to empty: the caller decides what that means, such as
// starting an embedded server or using DefaultURL. Each call returns new
// flag values, since urfave/cli records parse state in them.
func natsFlags() []cli.Flag {
	f := func(name, env, usage string) cli.Flag {
		return &cli.StringFlag{Name: name, EnvVars: []string{env}, Usage: usage}
	}
	return []cli.Flag{
		f(FlagServer, proto.EnvURL, "NATS server URL(s), comma-separated (default: command specific)"),
		f(FlagUser, proto.EnvUser, "NATS user name"),
		f(FlagPassword, proto.EnvPassword, "NATS password (prefer the environment variable)"),
		f(FlagToken, proto.EnvToken, "NATS auth token (prefer the environment variable)"),
		f(FlagCreds, proto.EnvCreds, "NATS JWT user credentials `FILE`"),
		f(FlagNKey, proto.EnvNKey, "NATS user nkey seed `FILE`"),
		f(FlagTLSCA, proto.EnvTLSCA, "CA certificate `FILE` to trust for TLS"),
		f(FlagTLSCert, proto.EnvTLSCert, "client certificate `FILE` for mutual TLS (needs --tlskey)"),
		f(FlagTLSKey, proto.EnvTLSKey, "client key `FILE` for mutual TLS (needs --tlscert)"),
	}
}

// connConfigFromCLI reads the connFlags values from c. Name is left empty
// for the caller to set.
func connConfigFromCLI(c *cli.Context) natsconn.Config {
	return natsconn.Config{
		URL:          c.String(FlagServer),
		User:         c.String(FlagUser),
		Password:     c.String(FlagPassword),
		Token:        c.String(FlagToken),
		CredsFile:    c.String(FlagCreds),
		NKeySeedFile: c.String(FlagNKey),
		TLSCA:        c.String(FlagTLSCA),
		TLSCert:      c.String(FlagTLSCert),
		TLSKey:       c.String(FlagTLSKey),
	}
}
