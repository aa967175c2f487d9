package panel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/picture"
)

//go:embed assets
var assets embed.FS

// Config is a panel's setting.
type Config struct {
	// Conn is the NATS connection the panel reads the system and acts
	// with; its user needs the admin role.
	Conn *nats.Conn
	// Secret is what the panel token derives from (Token): the seed of
	// the admin credentials, or any secret the daemon prints the token of.
	Secret []byte
	// OpenReads lets requests without the token read the views when they
	// name a loopback host (`muster up` on a loopback address).
	OpenReads bool
	// Daemon names the serving daemon in the footer ("muster up").
	Daemon  string
	Version string
	// Logger receives the actions taken and the failures (default:
	// discarded).
	Logger *slog.Logger
	// Gather reads the picture (default: picture.Gather on Conn).
	Gather func(context.Context) (*picture.Picture, error)
}

// Panel is the control panel's HTTP handler. Close it before closing the
// HTTP server: its event streams last until then.
type Panel struct {
	cfg   Config
	token string
	csrf  string
	tmpl  *template.Template
	mux   *http.ServeMux
	samp  *sampler
	log   *slog.Logger
	stop  chan struct{}
	once  sync.Once
	// assetVersion changes with the assets, so browsers never run a
	// stale script against a new page.
	assetVersion string
}

// New makes a panel. It fails without a connection or a secret.
func New(cfg Config) (*Panel, error) {
	if cfg.Conn == nil && cfg.Gather == nil {
		return nil, errors.New("control panel: no NATS connection")
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("control panel: no secret to derive its token from (give the admin credentials)")
	}
	if cfg.Gather == nil {
		nc := cfg.Conn
		cfg.Gather = func(ctx context.Context) (*picture.Picture, error) {
			return picture.Gather(ctx, nc, picture.Options{Quiet: 50 * time.Millisecond})
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template.New("panel").Funcs(template.FuncMap{"dict": dict}).ParseFS(assets, "assets/panel.html")
	if err != nil {
		return nil, fmt.Errorf("control panel templates: %w", err)
	}
	p := &Panel{cfg: cfg, token: Token(cfg.Secret), csrf: csrfToken(cfg.Secret), tmpl: tmpl, samp: newSampler(cfg.Gather),
		log: log, stop: make(chan struct{}), assetVersion: assetsHash()}
	if cfg.Conn != nil {
		p.samp.follow = followReplicas(cfg.Conn)
	}
	p.routes()
	return p, nil
}

// followReplicas follows the writes to the replica registrations (the
// KV bucket's subject, a plain subscription: no consumer), so a replica
// that starts or exits shows at once.
func followReplicas(nc *nats.Conn) func(func(string, bool)) (func(), error) {
	prefix := "$KV." + proto.ReplicaBucket + "."
	return func(changed func(string, bool)) (func(), error) {
		sub, err := nc.Subscribe(prefix+">", func(m *nats.Msg) {
			op := m.Header.Get("KV-Operation") // DEL or PURGE; none for a put
			changed(strings.TrimPrefix(m.Subject, prefix), op != "")
		})
		if err != nil {
			return nil, err
		}
		return func() { _ = sub.Unsubscribe() }, nil
	}
}

// Token is the panel's token (for the URL a daemon prints).
func (p *Panel) Token() string { return p.token }

// ServeHTTP serves the panel.
func (p *Panel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	p.mux.ServeHTTP(w, r)
}

// Close ends the event streams and the sampling. It is safe to call more
// than once.
func (p *Panel) Close() {
	p.once.Do(func() { close(p.stop) })
	p.samp.close()
}

func (p *Panel) routes() {
	m := http.NewServeMux()
	for _, v := range views {
		m.HandleFunc("GET "+pathPattern(v.Path), p.page(v))
	}
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	m.Handle("GET /static/{file}", http.StripPrefix("/static/", noListing(files)))
	m.HandleFunc("GET /api/picture", p.apiPicture)
	m.HandleFunc("GET /api/events", p.events)
	m.HandleFunc("POST /api/actions/{op}", p.action)
	m.HandleFunc("GET /api/log", p.apiLog)
	m.HandleFunc("GET /logs/{host}", p.download)
	m.HandleFunc("GET /replicas/{id}/log", p.logPage)
	m.HandleFunc("GET /login", p.loginForm)
	m.HandleFunc("POST /login", p.login)
	m.HandleFunc("POST /logout", p.logout)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	p.mux = m
}

func pathPattern(path string) string {
	if path == "/" {
		return "/{$}"
	}
	return path
}

// noListing serves files, not directory listings.
func noListing(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") || strings.HasSuffix(r.URL.Path, ".html") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// pageData is the layout's data.
type pageData struct {
	Title, View, Path string
	Section           string // the nav entry to mark (default: View)
	Nav               []view
	Signed, Live      bool
	CSRF              string
	Daemon, Version   string
	AssetVersion      string
	Content           template.HTML
}

func (p *Panel) render(w http.ResponseWriter, r *http.Request, status int, d pageData) {
	d.Nav, d.Daemon, d.Version, d.AssetVersion, d.Path = views, p.cfg.Daemon, p.cfg.Version, p.assetVersion, r.URL.Path
	if d.Section == "" {
		d.Section = d.View
	}
	if d.Section == "" {
		d.Section = d.View
	}
	if d.Signed {
		d.CSRF = p.csrf
	}
	var b bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&b, "page", d); err != nil {
		p.log.Error("control panel: render", "err", err)
		http.Error(w, "the page could not be rendered: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

func (p *Panel) fragment(v view, st state, signed bool) (string, error) {
	var b bytes.Buffer
	err := p.tmpl.ExecuteTemplate(&b, "fragment", buildFrame(v, st, signed, time.Now()))
	return b.String(), err
}

// tokenInURL signs a browser in with ?token=T and sends it on to the same
// page without it (so the token leaves the address bar and the history).
// It reports whether it answered.
func (p *Panel) tokenInURL(w http.ResponseWriter, r *http.Request) bool {
	tok := r.URL.Query().Get("token")
	if tok == "" {
		return false
	}
	if !p.checkToken(tok) {
		w.Header().Set("Cache-Control", "no-store")
		p.render(w, r, http.StatusForbidden, pageData{Title: "Sign in", Content: p.loginHTML("That panel token is wrong (it changes when the admin credentials do).", r.URL.Path)})
		return true
	}
	p.setSession(w)
	q := r.URL.Query()
	q.Del("token")
	u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
	return true
}

// page serves a view: the whole page, the view's fragment inside.
func (p *Panel) page(v view) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if p.tokenInURL(w, r) {
			return
		}
		a := p.accessOf(r)
		if !a.read {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), gatherLimit)
		defer cancel()
		st := p.samp.fresh(ctx, watchEvery)
		frag, err := p.fragment(v, st, a.signed)
		if err != nil {
			p.log.Error("control panel: render", "view", v.Name, "err", err)
			http.Error(w, "the view could not be rendered: "+err.Error(), http.StatusInternalServerError)
			return
		}
		p.render(w, r, http.StatusOK, pageData{Title: v.Title, View: v.Name, Signed: a.signed, Live: true, Content: template.HTML(frag)})
	}
}

// apiPicture serves the latest picture as JSON.
func (p *Panel) apiPicture(w http.ResponseWriter, r *http.Request) {
	if !p.accessOf(r).read {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "sign in: the panel token is needed to read"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), gatherLimit)
	defer cancel()
	st := p.samp.fresh(ctx, watchEvery)
	if st.pic == nil {
		msg := "no picture of the system yet"
		if st.err != nil {
			msg = st.err.Error()
		}
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": msg})
		return
	}
	writeJSON(w, http.StatusOK, st.pic)
}

// events streams a view's fragment (Server-Sent Events, event "view") at
// each sample that changes it, at most once a second.
func (p *Panel) events(w http.ResponseWriter, r *http.Request) {
	a := p.accessOf(r)
	if !a.read {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "sign in: the panel token is needed to read"})
		return
	}
	v, ok := viewNamed(r.URL.Query().Get("view"))
	if !ok {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "?view= wants overview, hosts, services or replicas"})
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	done := p.samp.watch()
	defer done()
	last, lastSent := "", time.Time{}
	for {
		st, next := p.samp.current()
		if st.pic != nil || st.err != nil {
			frag, err := p.fragment(v, st, a.signed)
			if err != nil {
				p.log.Error("control panel: render", "view", v.Name, "err", err)
				return
			}
			if frag != last {
				if wait := time.Second - time.Since(lastSent); wait > 0 {
					select {
					case <-time.After(wait):
						continue // and send the picture of then, not this one
					case <-r.Context().Done():
						return
					case <-p.stop:
						return
					}
				}
				if err := writeEvent(w, "view", frag); err != nil {
					return
				}
				fl.Flush()
				last, lastSent = frag, time.Now()
			}
		}
		select {
		case <-next:
		case <-r.Context().Done():
			return
		case <-p.stop:
			return
		}
	}
}

// writeEvent writes one Server-Sent Event.
func writeEvent(w http.ResponseWriter, event, data string) error {
	var b strings.Builder
	b.WriteString("event: " + event + "\n")
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: " + strings.TrimSuffix(line, "\r") + "\n")
	}
	b.WriteString("\n")
	_, err := w.Write([]byte(b.String()))
	return err
}

// loginForm shows the sign-in form.
func (p *Panel) loginForm(w http.ResponseWriter, r *http.Request) {
	if p.tokenInURL(w, r) {
		return
	}
	p.render(w, r, http.StatusOK, pageData{Title: "Sign in", Signed: p.accessOf(r).signed, Content: p.loginHTML("", r.URL.Query().Get("next"))})
}

func (p *Panel) loginHTML(msg, next string) template.HTML {
	var b bytes.Buffer
	_ = p.tmpl.ExecuteTemplate(&b, "login", map[string]string{"Error": msg, "Next": safeNext(next)})
	return template.HTML(b.String())
}

// safeNext keeps a redirect target on this panel.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") || strings.HasPrefix(next, "/login") {
		return "/"
	}
	return next
}

// login checks the posted token and sets the cookie.
func (p *Panel) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "sign-in from another site refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if !p.checkToken(strings.TrimSpace(r.PostForm.Get("token"))) {
		p.log.Warn("control panel: sign-in with a wrong token", "remote", r.RemoteAddr)
		p.render(w, r, http.StatusForbidden, pageData{Title: "Sign in", Content: p.loginHTML("That panel token is wrong (it changes when the admin credentials do).", next)})
		return
	}
	p.setSession(w)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (p *Panel) logout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "sign-out from another site refused", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// dict makes a map for a sub-template: dict "k1" v1 "k2" v2.
func dict(kv ...any) map[string]any {
	m := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		k, _ := kv[i].(string)
		m[k] = kv[i+1]
	}
	return m
}

func assetsHash() string {
	h := sha256.New()
	_ = fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := assets.ReadFile(path)
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}
