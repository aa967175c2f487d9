package natsconn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/musterhq/muster/broker/proto"
)

// Secrets used by the tests; no error message may contain them.
const (
	testPassword = "s3cret-Passw0rd"
	testToken    = "t0ken-Value-42"
)

// fixture holds credentials and certificates generated for one test.
type fixture struct {
	dir string

	nkeyPub, nkeySeedFile string

	operatorPub, accountPub, accountJWT, credsFile string

	caFile, serverCert, serverKey, clientCert, clientKey string
}

// newFixture generates keys, a JWT creds file and a small PKI in a temp dir.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}

	// User nkey.
	ukp, err := nkeys.CreateUser()
	must(t, err)
	f.nkeyPub, err = ukp.PublicKey()
	must(t, err)
	seed, err := ukp.Seed()
	must(t, err)
	f.nkeySeedFile = f.write(t, "user.nk", seed)

	// Operator, account and user for JWT (decentralised) auth.
	okp, err := nkeys.CreateOperator()
	must(t, err)
	f.operatorPub, err = okp.PublicKey()
	must(t, err)
	akp, err := nkeys.CreateAccount()
	must(t, err)
	f.accountPub, err = akp.PublicKey()
	must(t, err)
	f.accountJWT, err = jwt.NewAccountClaims(f.accountPub).Encode(okp)
	must(t, err)
	jkp, err := nkeys.CreateUser()
	must(t, err)
	jpub, err := jkp.PublicKey()
	must(t, err)
	userJWT, err := jwt.NewUserClaims(jpub).Encode(akp)
	must(t, err)
	jseed, err := jkp.Seed()
	must(t, err)
	creds, err := jwt.FormatUserConfig(userJWT, jseed)
	must(t, err)
	f.credsFile = f.write(t, "user.creds", creds)

	// PKI: a CA, a server certificate for 127.0.0.1 and a client certificate.
	caKey, caTmpl := newKey(t), &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "muster test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	must(t, err)
	f.caFile = f.write(t, "ca.pem", pemBlock("CERTIFICATE", caDER))
	f.serverCert, f.serverKey = f.leaf(t, caCert, caKey, "server", 2, x509.ExtKeyUsageServerAuth)
	f.clientCert, f.clientKey = f.leaf(t, caCert, caKey, "client", 3, x509.ExtKeyUsageClientAuth)
	return f
}

// leaf issues a certificate for 127.0.0.1 signed by the CA and writes the
// certificate and key files.
func (f *fixture) leaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	must(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	return f.write(t, name+"-cert.pem", pemBlock("CERTIFICATE", der)),
		f.write(t, name+"-key.pem", pemBlock("PRIVATE KEY", keyDER))
}

// write stores data in the fixture directory and returns its path.
func (f *fixture) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	must(t, os.WriteFile(p, data, 0o600))
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// baseOpts are quiet in-process server options on a random local port.
func baseOpts() *server.Options {
	return &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true}
}

// startServer runs a nats-server until the test ends.
func startServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	must(t, err)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("server not ready within 10s")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// tlsOpts returns server options serving TLS, verifying client certificates
// when verify is set.
func tlsOpts(t *testing.T, f *fixture, verify bool) *server.Options {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: f.serverCert, KeyFile: f.serverKey, CaFile: f.caFile, Verify: verify,
	})
	must(t, err)
	o := baseOpts()
	o.TLSConfig, o.TLS, o.TLSVerify, o.TLSTimeout = tc, true, verify, 5
	return o
}

func TestConnect(t *testing.T) {
	f := newFixture(t)
	userOpts := func(*testing.T) *server.Options {
		o := baseOpts()
		o.Username, o.Password = "alice", testPassword
		return o
	}
	tokenOpts := func(*testing.T) *server.Options {
		o := baseOpts()
		o.Authorization = testToken
		return o
	}
	nkeyOpts := func(*testing.T) *server.Options {
		o := baseOpts()
		o.Nkeys = []*server.NkeyUser{{Nkey: f.nkeyPub}}
		return o
	}
	tests := []struct {
		name    string
		server  func(*testing.T) *server.Options
		cfg     Config // URL is filled in from the server
		natsURL bool   // use nats:// even for a TLS server
		wantErr bool
	}{
		{name: "plain", server: func(*testing.T) *server.Options { return baseOpts() }},
		{name: "user password", server: userOpts, cfg: Config{User: "alice", Password: testPassword}},
		{name: "user bad password", server: userOpts, cfg: Config{User: "alice", Password: testPassword + "x"}, wantErr: true},
		{name: "user no credentials", server: userOpts, wantErr: true},
		{name: "token", server: tokenOpts, cfg: Config{Token: testToken}},
		{name: "bad token", server: tokenOpts, cfg: Config{Token: testToken + "x"}, wantErr: true},
		{name: "nkey", server: nkeyOpts, cfg: Config{NKeySeedFile: f.nkeySeedFile}},
		{name: "nkey unknown to server", server: func(t *testing.T) *server.Options {
			o := baseOpts()
			kp, err := nkeys.CreateUser()
			must(t, err)
			pub, err := kp.PublicKey()
			must(t, err)
			o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
			return o
		}, cfg: Config{NKeySeedFile: f.nkeySeedFile}, wantErr: true},
		{name: "jwt creds", server: func(t *testing.T) *server.Options {
			o := baseOpts()
			r := &server.MemAccResolver{}
			must(t, r.Store(f.accountPub, f.accountJWT))
			o.TrustedKeys, o.AccountResolver = []string{f.operatorPub}, r
			return o
		}, cfg: Config{CredsFile: f.credsFile}},
		{name: "tls with ca", server: func(t *testing.T) *server.Options { return tlsOpts(t, f, false) },
			cfg: Config{TLSCA: f.caFile}},
		{name: "tls upgrade from nats url", server: func(t *testing.T) *server.Options { return tlsOpts(t, f, false) },
			cfg: Config{TLSCA: f.caFile}, natsURL: true},
		{name: "tls without ca", server: func(t *testing.T) *server.Options { return tlsOpts(t, f, false) },
			wantErr: true},
		{name: "mutual tls", server: func(t *testing.T) *server.Options { return tlsOpts(t, f, true) },
			cfg: Config{TLSCA: f.caFile, TLSCert: f.clientCert, TLSKey: f.clientKey}},
		{name: "mutual tls without client cert", server: func(t *testing.T) *server.Options { return tlsOpts(t, f, true) },
			cfg: Config{TLSCA: f.caFile}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, tt.server(t))
			cfg := tt.cfg
			cfg.URL = s.ClientURL()
			if tt.natsURL {
				cfg.URL = "nats://" + s.Addr().String()
			}
			cfg.Name = "natsconn-test"
			nc, err := cfg.Connect()
			if tt.wantErr {
				if err == nil {
					nc.Close()
					t.Fatal("Connect succeeded, want error")
				}
				checkErr(t, err, "connect ")
				t.Logf("error (as expected): %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			defer nc.Close()
			if err := nc.FlushTimeout(5 * time.Second); err != nil {
				t.Fatalf("flush: %v", err)
			}
			if got := nc.Opts.Name; got != "natsconn-test" {
				t.Errorf("connection name %q, want natsconn-test", got)
			}
		})
	}
}

// checkErr fails unless err contains want and no test secret.
func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	msg := err.Error()
	if !strings.Contains(msg, want) {
		t.Errorf("error %q does not contain %q", msg, want)
	}
	for _, s := range []string{testPassword, testToken} {
		if strings.Contains(msg, s) {
			t.Errorf("error %q leaks a secret", msg)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	f := newFixture(t)
	missing := filepath.Join(f.dir, "no-such-file.pem")
	garbage := f.write(t, "garbage.nk", []byte("not a seed "+testPassword))
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means no error
	}{
		{name: "empty ok", cfg: Config{}},
		{name: "all files ok", cfg: Config{CredsFile: f.credsFile, TLSCA: f.caFile, TLSCert: f.clientCert, TLSKey: f.clientKey}},
		{name: "cert without key", cfg: Config{TLSCert: f.clientCert}, want: []string{"--tlscert", "--tlskey"}},
		{name: "key without cert", cfg: Config{TLSKey: f.clientKey}, want: []string{"--tlscert", "--tlskey"}},
		{name: "password without user", cfg: Config{Password: testPassword}, want: []string{"--password", "--user"}},
		{name: "user and token", cfg: Config{User: "u", Token: testToken}, want: []string{"--user", "--token"}},
		{name: "creds and nkey", cfg: Config{CredsFile: f.credsFile, NKeySeedFile: f.nkeySeedFile}, want: []string{"--creds", "--nkey"}},
		{name: "missing ca", cfg: Config{TLSCA: missing}, want: []string{"--tlsca", missing}},
		{name: "missing creds", cfg: Config{CredsFile: missing}, want: []string{"--creds", missing}},
		{name: "missing nkey", cfg: Config{NKeySeedFile: missing}, want: []string{"--nkey", missing}},
		{name: "missing key", cfg: Config{TLSCert: f.clientCert, TLSKey: missing}, want: []string{"--tlskey", missing}},
		{name: "directory as cert", cfg: Config{TLSCert: f.dir, TLSKey: f.clientKey}, want: []string{"--tlscert", f.dir}},
		{name: "bad nkey seed", cfg: Config{NKeySeedFile: garbage}, want: []string{"--nkey", garbage}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := tt.cfg.Options()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Options: %v", err)
				}
				if len(opts) < 3 {
					t.Errorf("got %d options, want at least the 3 defaults", len(opts))
				}
				return
			}
			if err == nil {
				t.Fatal("Options succeeded, want error")
			}
			for _, w := range tt.want {
				checkErr(t, err, w)
			}
			t.Logf("error (as expected): %v", err)
			if _, cerr := tt.cfg.Connect(); cerr == nil || cerr.Error() != err.Error() {
				t.Errorf("Connect error %v, want the validation error %v", cerr, err)
			}
		})
	}
}

func TestConnectErrorRedactsURL(t *testing.T) {
	// A port that was free a moment ago: the dial fails at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	must(t, l.Close())
	tests := []struct{ name, url string }{
		{"password in url", "nats://alice:" + testPassword + "@" + addr},
		{"token in url", "nats://" + testToken + "@" + addr},
		{"cluster urls", "nats://" + addr + ",nats://bob:" + testPassword + "@" + addr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := Config{URL: tt.url}.Connect()
			if err == nil {
				nc.Close()
				t.Fatal("Connect succeeded, want error")
			}
			checkErr(t, err, "connect nats://")
			t.Logf("error (as expected): %v", err)
			if !strings.Contains(err.Error(), addr) {
				t.Errorf("error %q does not name the address %s", err, addr)
			}
			if errors.Unwrap(err) == nil {
				t.Error("error does not wrap the nats.go error")
			}
		})
	}
}

func TestEnvRoundTrip(t *testing.T) {
	full := Config{
		URL: "nats://a:4222,nats://b:4222", User: "alice", Password: testPassword,
		Token: testToken, CredsFile: "/c.creds", NKeySeedFile: "/u.nk",
		TLSCA: "/ca.pem", TLSCert: "/cert.pem", TLSKey: "/key.pem", Name: "parent",
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"full", full},
		{"url only", Config{URL: DefaultURL}},
		{"empty", Config{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.cfg.Env()
			if len(env) != 9 {
				t.Fatalf("Env returned %d variables, want all 9: %q", len(env), env)
			}
			m := map[string]string{}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || !strings.HasPrefix(k, "MUSTER_") {
					t.Fatalf("bad env entry %q", kv)
				}
				m[k] = v
			}
			got := FromEnv(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
			want := tt.cfg
			want.Name = "" // the child names its own connection
			if got != want {
				t.Errorf("round trip: got %+v, want %+v", got, want)
			}
		})
	}
}

func TestEnvOverridesInherited(t *testing.T) {
	t.Setenv(proto.EnvPassword, "inherited")
	t.Setenv(proto.EnvURL, "nats://inherited:1")
	env := append(os.Environ(), Config{URL: DefaultURL}.Env()...)
	// os/exec keeps the last value of a duplicated key; emulate that.
	last := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		last[k] = v
	}
	got := FromEnv(func(k string) (string, bool) { v, ok := last[k]; return v, ok })
	if got != (Config{URL: DefaultURL}) {
		t.Errorf("child sees %+v, want only URL %s", got, DefaultURL)
	}
	if got := FromEnv(nil); got.URL != "nats://inherited:1" || got.Password != "inherited" {
		t.Errorf("FromEnv(nil) = %+v, want values from os environment", got)
	}
}
