package auth_test

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/internal/auth"
)

// The config block for an external server, pasted into a config file with
// a listen address and JetStream, makes the server accept role creds and
// enforce their permissions.
func TestServerConfigForExternalServer(t *testing.T) {
	k, err := auth.LoadOrCreateKeys(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	block := auth.ServerConfig(k)
	// An nkey seed is 58 characters of base32 (A-Z, 2-7) starting with S
	// and its type (O operator, A account, U user); JWTs are base64url,
	// whose lower-case letters end any such run (a plain substring check
	// for "SAA" hit a JWT by chance).
	if seed := regexp.MustCompile(`S[OAU][A-Z2-7]{56}`).FindString(block); seed != "" {
		t.Fatalf("server config contains a seed: %s…", seed[:4])
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	text := "listen: 127.0.0.1:-1\njetstream { store_dir: " + `"` + t.TempDir() + `"` + " }\n" + block
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server rejects the config: %v\n%s", err, text)
	}
	o.NoLog, o.NoSigs = true, true
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if _, err := nats.Connect(s.ClientURL()); err == nil {
		t.Fatal("an anonymous connection was accepted")
	}
	u := connect(t, s, k, auth.RoleClient, auth.Scope{Name: "bob"})
	if _, err := u.nc.Subscribe("muster.svc.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	u.refused(t, "subscription", "muster.svc.>")
	adm := connect(t, s, k, auth.RoleAdmin, auth.Scope{})
	js, _ := adm.nc.JetStream()
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("JetStream not enabled for the MUSTER account: %v", err)
	}
}
