package panel

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/nats-io/nkeys"
)

// Token returns the panel token of secret: the first 32 characters of
// base64url(HMAC-SHA256(secret, "muster panel token v1")). Anyone holding
// the secret (the admin credentials) can compute it; the token does not
// reveal the secret.
func Token(secret []byte) string { return derive(secret, "muster panel token v1") }

// csrfToken is the token an action made with the cookie must carry in
// the X-Muster-CSRF header: it is written only into pages served to a
// signed-in browser, which another site cannot read.
func csrfToken(secret []byte) string { return derive(secret, "muster panel csrf v1") }

func derive(secret []byte, what string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(what))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))[:32]
}

// SecretFromCreds returns the secret in a NATS .creds file: its nkey seed.
func SecretFromCreds(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("panel credentials: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("panel credentials %s: not a .creds file: %w", path, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("panel credentials %s: no seed: %w", path, err)
	}
	return seed, nil
}

// cookieName is the panel's session cookie: it holds the token.
const cookieName = "muster_panel"

// csrfHeader carries the CSRF token of an action.
const csrfHeader = "X-Muster-CSRF"

// access is what a request may do.
type access struct {
	read   bool   // see the views and the picture
	signed bool   // holds the token: logs, and actions (with CSRF or bearer)
	bearer bool   // the token came as Authorization: Bearer (no CSRF needed)
	bad    string // a token was given and is wrong
}

// accessOf checks a request's token (bearer or cookie).
func (p *Panel) accessOf(r *http.Request) access {
	var a access
	tok, bearer := "", false
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			tok, bearer = strings.TrimSpace(t), true
		} else {
			a.bad = "the Authorization header is not a Bearer token"
		}
	} else if c, err := r.Cookie(cookieName); err == nil {
		tok = c.Value
	}
	if tok != "" {
		if p.checkToken(tok) {
			a.signed, a.read, a.bearer = true, true, bearer
		} else {
			a.bad = "wrong panel token"
		}
	}
	if p.cfg.OpenReads && loopbackHost(r.Host) {
		a.read = true
	}
	return a
}

func (p *Panel) checkToken(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(p.token)) == 1
}

// loopbackHost reports whether the Host header names this machine by a
// loopback name, so open reads do not reach a page that another site
// made the browser load under its own name (DNS rebinding).
func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameOrigin reports whether a state-changing request comes from the
// panel's own pages: an Origin header, when the browser sends one, must
// name the host the request was sent to.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	o = strings.TrimPrefix(strings.TrimPrefix(o, "http://"), "https://")
	return o == r.Host
}

// setSession sets the cookie holding the token.
func (p *Panel) setSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: p.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func hmacEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
