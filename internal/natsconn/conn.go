// Package natsconn turns Muster's connection settings (flags, MUSTER_*
// environment) into a nats.go connection. It imports nothing but nats.go
// and the wire contract, so worker and client binaries stay small.
package natsconn

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/nats-io/nats.go"
)

// DefaultURL is the NATS server a command uses when none is given and it
// does not start an embedded server.
const DefaultURL = "nats://127.0.0.1:4222"

// Config is how a component reaches NATS.
type Config struct {
	// URL is nats://host:port; comma-separated cluster URLs are allowed.
	// Empty means DefaultURL.
	URL string
	// User and Password authenticate with a user name and password.
	User, Password string
	// Token authenticates with a token.
	Token string
	// CredsFile is a JWT user credentials file.
	CredsFile string
	// NKeySeedFile is a file holding a user nkey seed.
	NKeySeedFile string
	// TLSCA, TLSCert and TLSKey are PEM file paths: the CA to trust and
	// the client certificate and key for mutual TLS.
	TLSCA, TLSCert, TLSKey string
	// Name is the connection name shown in server monitoring.
	Name string
	// Timeout bounds the first connection attempt (0: nats.go's default,
	// 2s).
	Timeout time.Duration
}

// Options validates c and returns the nats.go options it describes, plus
// muster's defaults: reconnect forever every 250ms, but fail at once if
// the first connect fails. Errors name the offending flag or file, never
// a secret.
func (c Config) Options() ([]nats.Option, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
	}
	if c.Name != "" {
		opts = append(opts, nats.Name(c.Name))
	}
	if c.Timeout > 0 {
		opts = append(opts, nats.Timeout(c.Timeout))
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
		// With Muster's permissions a user may read replies only under
		// its own inbox prefix, named after the user in the JWT.
		if name := credsUserName(c.CredsFile); name != "" {
			opts = append(opts, nats.CustomInboxPrefix(proto.InboxPrefix(name)))
		}
	}
	if c.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("--nkey file %q: not a valid user nkey seed", c.NKeySeedFile)
		}
		opts = append(opts, o)
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, nil
}

// validate checks flag combinations and that every named file is readable.
func (c Config) validate() error {
	switch {
	case c.Password != "" && c.User == "":
		return errors.New("--password requires --user")
	case c.User != "" && c.Token != "":
		return errors.New("--user and --token are mutually exclusive")
	case c.CredsFile != "" && c.NKeySeedFile != "":
		return errors.New("--creds and --nkey are mutually exclusive")
	case c.TLSCert != "" && c.TLSKey == "":
		return errors.New("--tlscert requires --tlskey")
	case c.TLSKey != "" && c.TLSCert == "":
		return errors.New("--tlskey requires --tlscert")
	}
	files := []struct{ flag, path string }{
		{"--creds", c.CredsFile},
		{"--nkey", c.NKeySeedFile},
		{"--tlsca", c.TLSCA},
		{"--tlscert", c.TLSCert},
		{"--tlskey", c.TLSKey},
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if err := readable(f.path); err != nil {
			return fmt.Errorf("%s file %q: %w", f.flag, f.path, err)
		}
	}
	return nil
}

// readable reports why path cannot be opened for reading, if it cannot.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return pe.Err // the caller already names the file
		}
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.IsDir() {
		return errors.New("is a directory")
	}
	return nil
}

// Connect validates c and connects to NATS. Connection errors are wrapped
// as "connect <url>: ..." with any password in the URL redacted.
func (c Config) Connect() (*nats.Conn, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	u := c.URL
	if u == "" {
		u = DefaultURL
	}
	nc, err := nats.Connect(u, opts...)
	if err != nil {
		msg := fmt.Sprintf("connect %s: %v", redactURLs(u), err)
		for _, s := range c.secrets() {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
		return nil, &connectError{msg: msg, err: err}
	}
	return nc, nil
}

// connectError carries a connect failure whose message has been scrubbed
// of secrets, while still unwrapping to the nats.go error.
type connectError struct {
	msg string
	err error
}

func (e *connectError) Error() string { return e.msg }
func (e *connectError) Unwrap() error { return e.err }

// secrets lists the secret strings in c, including user info in its URLs,
// so that they can be scrubbed from error messages.
func (c Config) secrets() []string {
	var out []string
	for _, s := range []string{c.Password, c.Token} {
		if s != "" {
			out = append(out, s)
		}
	}
	for _, p := range strings.Split(c.URL, ",") {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil {
			if i := strings.LastIndex(p, "@"); i > 0 {
				out = append(out, p[:i]) // scheme and user info
			}
			continue
		}
		if u.User == nil {
			continue
		}
		if pw, ok := u.User.Password(); ok && pw != "" {
			out = append(out, pw)
		} else if name := u.User.Username(); name != "" {
			out = append(out, name) // a bare user info is a token
		}
	}
	return out
}

// redactURLs hides user info in each comma-separated URL of s.
func redactURLs(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		switch {
		case err != nil && strings.Contains(p, "@"):
			parts[i] = "<unparsable URL>"
		case err != nil || u.User == nil:
			parts[i] = p
		default:
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// credsUserName returns the user name ("name" claim) of the user JWT in a
// .creds file, if it is a valid token ([A-Za-z0-9_-]), else "". It
// decodes the JWT's payload only: the server verifies the signature.
func credsUserName(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	const begin = "-----BEGIN NATS USER JWT-----"
	i := bytes.Index(b, []byte(begin))
	if i < 0 {
		return ""
	}
	rest := bytes.TrimSpace(b[i+len(begin):])
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	parts := strings.Split(strings.TrimSpace(string(rest)), ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(payload, &claims) != nil || proto.CheckToken(claims.Name, proto.MaxIDLen) != nil {
		return ""
	}
	return claims.Name
}
