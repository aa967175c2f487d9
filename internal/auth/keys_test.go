package auth_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/internal/auth"
)

func TestKeysStableAcrossLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	k1, err := auth.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := auth.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	rs1, _ := k1.ReplicaSigner().Creds("r1", "DEMO/ECHO/ECHO")
	rs2, _ := k2.ReplicaSigner().Creds("r1", "DEMO/ECHO/ECHO")
	if issuer(t, rs1) != issuer(t, rs2) {
		t.Fatalf("replica signer changed across loads")
	}
	if k1.AccountKey() != k2.AccountKey() || k1.OperatorKey() != k2.OperatorKey() || k1.SystemAccountKey() != k2.SystemAccountKey() {
		t.Fatalf("keys changed across loads: %s/%s/%s vs %s/%s/%s", k1.OperatorKey(), k1.SystemAccountKey(), k1.AccountKey(), k2.OperatorKey(), k2.SystemAccountKey(), k2.AccountKey())
	}
	if !strings.HasPrefix(k1.AccountKey(), "A") || !strings.HasPrefix(k1.OperatorKey(), "O") {
		t.Fatalf("key kinds: operator %s account %s", k1.OperatorKey(), k1.AccountKey())
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("keys dir mode %v (%v), want 0700", st.Mode().Perm(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 4 {
		t.Fatalf("keys dir holds %d files, want 4 seeds", len(ents))
	}
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}
	// A server trusting the reloaded keys accepts creds made from the first.
	srv := startSecure(t, k2)
	u := connect(t, srv, k1, auth.RoleAdmin, auth.Scope{})
	if _, err := u.nc.JetStream(); err != nil {
		t.Fatal(err)
	}
}

func TestKeysRefuseBadPermissions(t *testing.T) {
	t.Run("open dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keys")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(dir, 0o755)
		_, err := auth.LoadOrCreateKeys(dir)
		if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "group or others") {
			t.Fatalf("LoadOrCreateKeys(0755 dir) = %v, want an error naming %s and the mode", err, dir)
		}
	})
	t.Run("open seed file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keys")
		if _, err := auth.LoadOrCreateKeys(dir); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "account.nk")
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := auth.LoadOrCreateKeys(dir)
		if err == nil || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "0644") {
			t.Fatalf("LoadOrCreateKeys(0644 seed) = %v, want an error naming %s and its mode", err, f)
		}
	})
	t.Run("incomplete", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keys")
		if _, err := auth.LoadOrCreateKeys(dir); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "account.nk")
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
		_, err := auth.LoadOrCreateKeys(dir)
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Fatalf("LoadOrCreateKeys(no account seed) = %v, want an error naming %s", err, f)
		}
		if _, serr := os.Stat(f); serr == nil {
			t.Fatal("an incomplete keys dir was silently completed with a new account key")
		}
	})
	t.Run("not a seed", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keys")
		if _, err := auth.LoadOrCreateKeys(dir); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, "operator.nk")
		sys, _ := os.ReadFile(filepath.Join(dir, "system.nk")) // an account seed where the operator's belongs
		if err := os.WriteFile(f, sys, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := auth.LoadOrCreateKeys(dir)
		if err == nil || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "operator") {
			t.Fatalf("LoadOrCreateKeys(wrong seed kind) = %v, want an error naming %s", err, f)
		}
	})
}

// issuer returns the key that signed the user JWT of creds.
func issuer(t *testing.T, creds []byte) string {
	t.Helper()
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	return uc.Issuer
}

// A keys dir made before the replica signer existed (three seeds) keeps
// its account and gets a signer on the next load.
func TestKeysDirWithoutSignerGetsOne(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	k1, err := auth.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, auth.ReplicaSignerFile)); err != nil {
		t.Fatal(err)
	}
	k2, err := auth.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if k1.AccountKey() != k2.AccountKey() {
		t.Fatal("account changed")
	}
	st, err := os.Stat(filepath.Join(dir, auth.ReplicaSignerFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("new signer seed: %v %v, want mode 0600", st, err)
	}
	// A signer loaded from that file, for the account named in an attach
	// manager's creds, signs replicas the server accepts.
	att, err := auth.UserCreds(k2, auth.RoleAttach, "host1")
	if err != nil {
		t.Fatal(err)
	}
	attPath, err := auth.WriteCredsFile(filepath.Join(t.TempDir(), "attach.creds"), att)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := auth.AccountOfCreds(attPath)
	if err != nil || acc != k2.AccountKey() {
		t.Fatalf("AccountOfCreds = %q, %v; want %s", acc, err, k2.AccountKey())
	}
	s, err := auth.LoadReplicaSigner(filepath.Join(dir, auth.ReplicaSignerFile), acc)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := s.Creds("r9", "DEMO/ECHO/ECHO")
	if err != nil {
		t.Fatal(err)
	}
	p, err := auth.WriteCredsFile(filepath.Join(t.TempDir(), "r9.creds"), creds)
	if err != nil {
		t.Fatal(err)
	}
	srv := startSecure(t, k2)
	nc, err := nats.Connect(srv.ClientURL(), nats.UserCredentials(p))
	if err != nil {
		t.Fatalf("replica signed by the reloaded signer: %v", err)
	}
	nc.Close()
	if _, err := auth.LoadReplicaSigner(filepath.Join(dir, "nope.nk"), acc); err == nil || !strings.Contains(err.Error(), "nope.nk") {
		t.Fatalf("LoadReplicaSigner(missing file) = %v, want an error naming it", err)
	}
}

// LoadKeys never starts a new trust chain: a dir without seeds is an
// error (fs.ErrNotExist) and stays empty; a dir with seeds loads.
func TestLoadKeysRefusesToCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if _, err := auth.LoadKeys(dir); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("LoadKeys of a missing dir: %v, want fs.ErrNotExist naming %s", err, dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadKeys made %s: %v", dir, err)
	}
	k1, err := auth.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := auth.LoadKeys(dir)
	if err != nil || k2.AccountKey() != k1.AccountKey() {
		t.Fatalf("LoadKeys: %v, account %s, want %s", err, k2.AccountKey(), k1.AccountKey())
	}
}
