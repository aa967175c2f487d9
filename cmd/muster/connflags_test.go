package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/urfave/cli/v2"
)

func TestConnFlags(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want natsconn.Config
	}{
		{name: "defaults", want: natsconn.Config{}},
		{
			name: "flags",
			args: []string{"--server", "nats://h:1", "--user", "u", "--password", "p", "--token", "t",
				"--creds", "c", "--nkey", "n", "--tlsca", "ca", "--tlscert", "cert", "--tlskey", "key"},
			want: natsconn.Config{URL: "nats://h:1", User: "u", Password: "p", Token: "t", CredsFile: "c",
				NKeySeedFile: "n", TLSCA: "ca", TLSCert: "cert", TLSKey: "key"},
		},
		{
			name: "env",
			env: map[string]string{proto.EnvURL: "nats://e:2", proto.EnvUser: "eu", proto.EnvPassword: "ep", proto.EnvToken: "et",
				proto.EnvCreds: "ec", proto.EnvNKey: "en", proto.EnvTLSCA: "eca", proto.EnvTLSCert: "ecert", proto.EnvTLSKey: "ekey"},
			want: natsconn.Config{URL: "nats://e:2", User: "eu", Password: "ep", Token: "et", CredsFile: "ec",
				NKeySeedFile: "en", TLSCA: "eca", TLSCert: "ecert", TLSKey: "ekey"},
		},
		{
			name: "flag beats env",
			env:  map[string]string{proto.EnvURL: "nats://e:2", proto.EnvUser: "eu"},
			args: []string{"--server", "nats://f:3"},
			want: natsconn.Config{URL: "nats://f:3", User: "eu"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, k := range []string{proto.EnvURL, proto.EnvUser, proto.EnvPassword, proto.EnvToken, proto.EnvCreds, proto.EnvNKey, proto.EnvTLSCA, proto.EnvTLSCert, proto.EnvTLSKey} {
				t.Setenv(k, "")
				mustNil(t, os.Unsetenv(k)) // t.Setenv restores it afterwards
			}
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var got natsconn.Config
			app := &cli.App{Name: "muster", Flags: natsFlags(), Action: func(c *cli.Context) error {
				got = connConfigFromCLI(c)
				return nil
			}}
			mustNil(t, app.Run(append([]string{"muster"}, tt.args...)))
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestConnFlagsHelpHidesSecrets(t *testing.T) {
	t.Setenv(proto.EnvPassword, testPassword)
	t.Setenv(proto.EnvToken, testToken)
	var out bytes.Buffer
	app := &cli.App{Name: "muster", Flags: natsFlags(), Writer: &out, Action: func(*cli.Context) error { return nil }}
	mustNil(t, app.Run([]string{"muster", "--help"}))
	help := out.String()
	for _, want := range []string{"--server", "MUSTER_URL", "--nkey", "MUSTER_TLS_KEY"} {
		if !strings.Contains(help, want) {
			t.Errorf("help does not mention %s:\n%s", want, help)
		}
	}
	if strings.Contains(help, testPassword) || strings.Contains(help, testToken) {
		t.Errorf("help leaks a secret:\n%s", help)
	}
}

const (
	testPassword = "s3cret-pw"
	testToken    = "s3cret-token"
)

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
