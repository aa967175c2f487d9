package panel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"time"

	"github.com/musterhq/muster/internal/adminops"
)

// actionTimeout bounds one action.
const actionTimeout = 10 * time.Second

// actionRequest is an action's JSON body.
type actionRequest struct {
	Target string `json:"target"` // a host id, replica id or service name
	Scheme string `json:"scheme"` // placement: the scheme ("": follow the default)
}

// action runs POST /api/actions/{op}: isolate, restore (a host), quiesce,
// stop (a replica), reset, placement (a service). It needs the token
// (cookie plus CSRF header, or bearer), a JSON body and, from a browser,
// the panel's own origin.
func (p *Panel) action(w http.ResponseWriter, r *http.Request) {
	a := p.accessOf(r)
	switch {
	case a.bad != "":
		writeJSON(w, http.StatusForbidden, map[string]string{"error": a.bad + ": action refused"})
		return
	case !a.signed:
		w.Header().Set("WWW-Authenticate", `Bearer realm="muster panel"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "action refused: sign in with the panel token first"})
		return
	case !sameOrigin(r):
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "action refused: it comes from another site"})
		return
	case !a.bearer && !p.checkCSRF(r.Header.Get(csrfHeader)):
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "action refused: missing or wrong CSRF token (reload the page)"})
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "an action's body is JSON (Content-Type: application/json)"})
		return
	}
	var req actionRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad action body: " + err.Error()})
		return
	}
	if p.cfg.Conn == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "this panel has no NATS connection to act with"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	op := r.PathValue("op")
	msg, err := p.run(ctx, op, req)
	if err != nil {
		p.log.Warn("control panel: action failed", "op", op, "target", req.Target, "remote", r.RemoteAddr, "err", err)
		writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
		return
	}
	p.log.Info("control panel: action", "op", op, "target", req.Target, "scheme", req.Scheme, "remote", r.RemoteAddr)
	p.samp.refresh()
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": msg})
}

func (p *Panel) checkCSRF(got string) bool {
	return got != "" && len(got) == len(p.csrf) && hmacEqual(got, p.csrf)
}

// run performs one action and says what it did.
func (p *Panel) run(ctx context.Context, op string, req actionRequest) (string, error) {
	nc := p.cfg.Conn
	switch op {
	case "isolate":
		if _, err := adminops.SetIsolation(ctx, nc, req.Target, true); err != nil {
			return "", err
		}
		return fmt.Sprintf("Host %s isolated: it starts no replicas; running ones quiesce.", req.Target), nil
	case "restore":
		if _, err := adminops.SetIsolation(ctx, nc, req.Target, false); err != nil {
			return "", err
		}
		return fmt.Sprintf("Host %s restored: it starts replicas again.", req.Target), nil
	case "quiesce", "stop":
		if err := adminops.StopReplica(ctx, nc, req.Target, op == "stop"); err != nil {
			return "", err
		}
		if op == "stop" {
			return fmt.Sprintf("Replica %s is stopping now.", req.Target), nil
		}
		return fmt.Sprintf("Replica %s is quiescing.", req.Target), nil
	case "reset":
		res, err := adminops.ResetService(ctx, nc, req.Target)
		if err != nil {
			return "", err
		}
		probes := 0
		for _, r := range res.Reset {
			if r.Probe {
				probes++
			}
		}
		return fmt.Sprintf("%s reset on %d of %d hosts; %d probe replica(s) started.", res.Service, len(res.Reset), res.Offering, probes), nil
	case "placement":
		if err := adminops.SetPlacement(ctx, nc, req.Target, req.Scheme); err != nil {
			return "", err
		}
		if req.Scheme == "" {
			return fmt.Sprintf("%s: placement follows the default.", req.Target), nil
		}
		return fmt.Sprintf("%s: placement %s.", req.Target, req.Scheme), nil
	default:
		return "", &httpError{http.StatusNotFound, fmt.Sprintf("unknown action %q (isolate, restore, quiesce, stop, reset, placement)", op)}
	}
}

// httpError is an error with its status.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, adminops.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, adminops.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, adminops.ErrNotPermitted):
		return http.StatusForbidden
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	default:
		return http.StatusBadGateway
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
