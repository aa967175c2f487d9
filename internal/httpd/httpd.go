// Package httpd is the HTTP endpoint of every Muster daemon (`muster
// broker`, `muster attach`, `muster up` with --http): GET /healthz (200 or
// 503, see package health), GET /metrics (Prometheus text format, read
// from the daemon's collectors at scrape time) and, only when asked for,
// /debug/pprof/. A daemon may add more (Handle: the control panel, at /);
// other paths are 404.
//
// A daemon binds its port first (Listen), so a busy one fails before
// anything else starts, and serves at once: /healthz answers 503
// "starting" until the daemon calls Ready, its components adding their
// checks and collectors (Add) as they start.
//
// The handlers are registered on a mux of their own: importing
// net/http/pprof also registers them on http.DefaultServeMux, which no
// Muster daemon serves.
package httpd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/musterhq/muster/internal/health"
)

// Options are an endpoint's optional settings.
type Options struct {
	// Pprof serves net/http/pprof under /debug/pprof/ (404 without it).
	Pprof bool
	// Logger receives errors of the server and of gathering metrics
	// (default: discarded).
	Logger *slog.Logger
}

// Server is a daemon's running HTTP endpoint.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	mux  *http.ServeMux
	reg  *prometheus.Registry
	done chan struct{} // closed when the serving goroutine has returned

	mu     sync.Mutex
	checks []health.Check // guarded by mu
	ready  bool           // guarded by mu
}

// Listen binds addr (HOST:PORT; port 0 picks a free one) and serves on it
// until Close. The metrics start with the Go runtime and process
// collectors; /healthz answers 503 until Ready.
func Listen(addr string, opts Options) (*Server, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("--http %q: want HOST:PORT: %w", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w (choose another address with --http HOST:PORT, or turn the endpoint off with --http \"\")", addr, err)
	}
	s := &Server{ln: ln, reg: prometheus.NewRegistry(), done: make(chan struct{})}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.srv = &http.Server{Handler: s.handler(opts), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	if opts.Logger != nil {
		s.srv.ErrorLog = slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn)
	}
	go func() {
		defer close(s.done)
		err := s.srv.Serve(ln)
		if err != nil && !errors.Is(err, http.ErrServerClosed) && opts.Logger != nil {
			opts.Logger.Warn("HTTP endpoint stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return s, nil
}

// URL is the endpoint's base URL, http://HOST:PORT, with the port it got.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Add adds a component's health checks and metrics (metrics may be nil).
// It fails when metrics describes a metric already served.
func (s *Server) Add(checks []health.Check, metrics prometheus.Collector) error {
	if metrics != nil {
		if err := s.reg.Register(metrics); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, checks...)
	return nil
}

// Handle serves h for pattern (http.ServeMux patterns) beside the
// endpoint's own paths, which stay theirs: pattern "/" gets every path
// they do not match.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Ready ends the start: from now on /healthz is the components' checks.
func (s *Server) Ready() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = true
}

// Close stops the endpoint: it lets requests in flight finish until ctx
// ends, then closes their connections, and waits for the serving
// goroutine. Close is safe to call more than once.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}

func (s *Server) handler(opts Options) http.Handler {
	popts := promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Timeout: 10 * time.Second, MaxRequestsInFlight: 4}
	if opts.Logger != nil {
		popts.ErrorLog = slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn)
	}
	mux := http.NewServeMux()
	s.mux = mux
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, popts))
	mux.HandleFunc("GET /healthz", s.healthz)
	if opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// healthz answers 200 "ok\n" when every check passes, else 503 and the
// failed checks in one line. With ?debug=true the body is the whole
// health.Report as JSON (same status codes).
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ready := s.ready
	checks := append([]health.Check{{Name: "started", Run: func(context.Context) (string, error) {
		if !ready {
			return "", errors.New("starting")
		}
		return "started", nil
	}}}, s.checks...)
	s.mu.Unlock()
	rep := health.Run(r.Context(), checks, health.MaxTimeout)
	code := http.StatusOK
	if !rep.OK() {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	if debug, _ := strconv.ParseBool(r.URL.Query().Get("debug")); debug {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, rep.Reason())
}
