package main

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/panel"
)

// The control panel (internal/panel) on a daemon's --http endpoint, at /.
//
//   - muster up: always (with --http). It acts with the admin credentials
//     of its data dir (DATA/creds/admin.creds); its token derives from
//     their seed and is printed in the banner's URL. On a loopback
//     address anyone on this machine may read the views; actions and logs
//     need the token.
//   - muster broker, muster attach: only with --panel-creds FILE (admin
//     credentials), and every request needs the token (muster auth
//     panel-token --creds FILE): these daemons usually listen beyond
//     loopback. Without the flag, / says how to turn the panel on.

// panelCredsFlag is --panel-creds of broker and attach.
func panelCredsFlag() cli.Flag {
	return &cli.StringFlag{Name: "panel-creds", Usage: "serve the control panel at / on --http, acting with these admin credentials `FILE`; " +
		"every request needs its token (muster auth panel-token --creds FILE)"}
}

// mountPanel serves p at / of the endpoint, until the endpoint closes.
func (w *webEndpoint) mountPanel(p *panel.Panel) {
	w.panel = p
	w.srv.Handle("/", p)
}

// upPanel serves the control panel of `muster up` and returns its URL,
// token included ("" with --http ""). It connects with the admin
// credentials of up's data dir when there are some; else (--insecure, or
// --server) it uses nc, and the token derives from --creds' seed or, with
// none, from a secret made for this run.
func upPanel(c *cli.Context, web *webEndpoint, connCfg natsconn.Config, credsDir string, nc *nats.Conn, log *slog.Logger, cleanup *stack) (string, error) {
	if web.srv == nil {
		return "", nil
	}
	pnc := nc
	var secret []byte
	var err error
	switch {
	case credsDir != "":
		acfg := roleConn(connCfg, credsDir, auth.RoleAdmin)
		acfg.Name = "muster up panel"
		if pnc, err = acfg.Connect(); err != nil {
			return "", connectHint(err, auth.RoleAdmin)
		}
		cleanup.push(pnc.Close)
		if secret, err = panel.SecretFromCreds(acfg.CredsFile); err != nil {
			return "", err
		}
	case connCfg.CredsFile != "":
		if secret, err = panel.SecretFromCreds(connCfg.CredsFile); err != nil {
			return "", err
		}
	default:
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	host, _, _ := net.SplitHostPort(c.String("http"))
	p, err := panel.New(panel.Config{Conn: pnc, Secret: secret, OpenReads: isLoopback(host), Daemon: "muster up", Version: versionString(), Logger: log})
	if err != nil {
		return "", err
	}
	cleanup.push(p.Close) // before its connection closes
	web.mountPanel(p)
	return browserURL(web.srv.URL()) + "/?token=" + p.Token(), nil
}

// browserURL is u (http://HOST:PORT) with a wildcard host (0.0.0.0, ::)
// replaced by 127.0.0.1, which a browser on this machine can open.
func browserURL(u string) string {
	hostport := strings.TrimPrefix(u, "http://")
	host, port, err := net.SplitHostPort(hostport)
	if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsUnspecified() {
		return "http://" + net.JoinHostPort("127.0.0.1", port)
	}
	return u
}

// daemonPanel serves the control panel of `muster broker` or `muster
// attach` when --panel-creds names admin credentials; without them, /
// says how. The returned function stops the panel and closes its
// connection.
func daemonPanel(c *cli.Context, web *webEndpoint, who string, log *slog.Logger) (func(), error) {
	file := c.String("panel-creds")
	if web.srv == nil {
		if file != "" {
			return nil, fmt.Errorf("--panel-creds needs --http HOST:PORT (the panel is served there)")
		}
		return func() {}, nil
	}
	if file == "" {
		web.srv.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, "%s serves no control panel: start it with --panel-creds ADMIN.creds (see docs/OPERATIONS.md \"Control panel\")\n", who)
		}))
		return func() {}, nil
	}
	secret, err := panel.SecretFromCreds(file)
	if err != nil {
		return nil, err
	}
	cfg := connConfigFromCLI(c)
	cfg.User, cfg.Password, cfg.Token, cfg.NKeySeedFile = "", "", "", ""
	cfg.CredsFile, cfg.Name = file, who+" panel"
	nc, err := cfg.Connect()
	if err != nil {
		return nil, connectHint(err, auth.RoleAdmin)
	}
	p, err := panel.New(panel.Config{Conn: nc, Secret: secret, Daemon: who, Version: versionString(), Logger: log})
	if err != nil {
		nc.Close()
		return nil, err
	}
	web.mountPanel(p)
	fmt.Fprintf(c.App.ErrWriter, "%s: control panel %s/ (its token: muster auth panel-token --creds %s)\n", who, web.srv.URL(), file)
	return func() { p.Close(); nc.Close() }, nil
}
