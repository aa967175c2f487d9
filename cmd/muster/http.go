package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/internal/health"
	"github.com/musterhq/muster/internal/httpd"
	"github.com/musterhq/muster/internal/panel"
)

// defaultUpHTTP is where `muster up` serves /healthz and /metrics unless
// --http says otherwise (not 8222: that is NATS monitoring's port).
const defaultUpHTTP = "127.0.0.1:7070"

// httpFlag is --http; def is its default ("": off).
func httpFlag(def string) cli.Flag {
	usage := "serve GET /healthz (200 or 503) and /metrics (Prometheus) on `HOST:PORT` (port 0: any free port)"
	if def != "" {
		usage += `; --http "" turns it off; a busy port fails the start`
	}
	return &cli.StringFlag{Name: "http", Value: def, Usage: usage}
}

// pprofFlag is --pprof.
func pprofFlag() cli.Flag {
	return &cli.BoolFlag{Name: "pprof", Usage: "also serve Go's profiler on --http under /debug/pprof/ (404 without it)"}
}

// webEndpoint is a daemon's HTTP endpoint (nil srv: --http ""). It is
// bound and serving before the daemon's components start, so a busy port
// fails at once; they add their checks and metrics as they start, and
// /healthz answers 503 "starting" until ready.
type webEndpoint struct {
	srv   *httpd.Server
	log   *slog.Logger
	panel *panel.Panel // the control panel at /, if any (panel.go)
}

// listenHTTP binds --http and serves on it (nothing with --http ""), and
// prints "<who>: http URL (paths)". Stop it with close.
func listenHTTP(c *cli.Context, log *slog.Logger, who string) (*webEndpoint, error) {
	w := &webEndpoint{log: log}
	addr, pprof := c.String("http"), c.Bool("pprof")
	if addr == "" {
		if pprof {
			return nil, fmt.Errorf("--pprof needs --http HOST:PORT")
		}
		return w, nil
	}
	srv, err := httpd.Listen(addr, httpd.Options{Pprof: pprof, Logger: log})
	if err != nil {
		return nil, err
	}
	if host, _, _ := net.SplitHostPort(addr); !isLoopback(host) {
		log.Warn("the HTTP endpoint listens beyond loopback: whoever reaches it reads this daemon's health and metrics", "http", addr, "pprof", pprof)
	}
	w.srv = srv
	paths := []string{"/healthz", "/metrics"}
	if pprof {
		paths = append(paths, "/debug/pprof/")
	}
	fmt.Fprintf(c.App.ErrWriter, "%s: http %s (%s)\n", who, srv.URL(), strings.Join(paths, ", "))
	return w, nil
}

// add serves a component's health checks and metrics. A metrics problem
// is logged, not fatal: the daemon's work matters more than its figures.
func (w *webEndpoint) add(checks []health.Check, metrics prometheus.Collector) {
	if w.srv == nil {
		return
	}
	if err := w.srv.Add(checks, metrics); err != nil {
		w.log.Warn("some metrics are not served", "err", err)
	}
}

// ready ends the start: /healthz reports the components' checks.
func (w *webEndpoint) ready() {
	if w.srv != nil {
		w.srv.Ready()
	}
}

// close stops the endpoint, letting requests in flight finish for up to
// stopTimeout.
func (w *webEndpoint) close() {
	if w.srv == nil {
		return
	}
	if w.panel != nil {
		w.panel.Close() // ends its event streams, which never go idle
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := w.srv.Close(ctx); err != nil {
		w.log.Warn("HTTP endpoint shutdown did not finish", "err", err)
	}
}
