package panel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/musterhq/muster/internal/adminops"
)

// Logs come from the attach managers over NATS (adminops.ReadLog); they
// may hold anything a replica printed, so reading them always needs the
// token, even where the views are open.

const (
	logViewTail   = 64 << 10  // what the log view shows first
	logPollMax    = 256 << 10 // what one follow request returns at most
	downloadLimit = 64 << 20  // what a download holds at most (the end of the log)
)

// needSigned answers a request without the token; it reports whether it
// did.
func (p *Panel) needSigned(w http.ResponseWriter, r *http.Request, page bool) bool {
	a := p.accessOf(r)
	if a.signed {
		return false
	}
	if page && a.bad == "" {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return true
	}
	status, msg := http.StatusUnauthorized, "logs need the panel token: sign in first"
	if a.bad != "" {
		status, msg = http.StatusForbidden, a.bad
	}
	writeJSON(w, status, map[string]string{"error": msg})
	return true
}

// logPage is a replica's log, followed.
func (p *Panel) logPage(w http.ResponseWriter, r *http.Request) {
	if p.tokenInURL(w, r) || p.needSigned(w, r, true) {
		return
	}
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	d := map[string]any{"Replica": id}
	host, chunk, err := p.findReplicaLog(ctx, id, r.URL.Query().Get("host"))
	if err != nil {
		d["Error"] = err.Error()
	} else {
		d["Host"], d["File"], d["End"] = host, chunk.File, chunk.End()
		d["Text"], d["Size"] = text(chunk.Data), sizeText(chunk)
	}
	var b bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&b, "log", d); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.render(w, r, http.StatusOK, pageData{Title: "Log of " + id, View: "log", Section: "replicas", Signed: true, Live: true, Content: template.HTML(b.String())})
}

// findReplicaLog reads the end of replica id's log from host, else from
// the host that started it (its registration), else from every online
// host in turn (it exited).
func (p *Panel) findReplicaLog(ctx context.Context, id, host string) (string, adminops.LogChunk, error) {
	var hosts []string
	if host != "" {
		hosts = append(hosts, host)
	} else {
		st := p.samp.fresh(ctx, watchEvery)
		if st.pic != nil {
			for _, rep := range st.pic.Replicas {
				if rep.ID == id && rep.Attach != "" {
					hosts = append(hosts, rep.Attach)
				}
			}
			if len(hosts) == 0 {
				for _, h := range st.pic.Hosts {
					if h.Online {
						hosts = append(hosts, h.ID)
					}
				}
			}
		}
	}
	for _, h := range hosts {
		c, err := adminops.ReadLog(ctx, p.cfg.Conn, h, id, -logViewTail, 0)
		if errors.Is(err, adminops.ErrNotFound) && len(hosts) > 1 {
			continue
		}
		return h, c, err
	}
	return "", adminops.LogChunk{}, fmt.Errorf("replica %s: no online host has its log (it was not started by an attach manager, or its log was removed)", id)
}

// apiLog returns the part of a log after ?offset= (JSON), for the log
// view's follow.
func (p *Panel) apiLog(w http.ResponseWriter, r *http.Request) {
	if p.needSigned(w, r, false) {
		return
	}
	q := r.URL.Query()
	offset, err := strconv.ParseInt(q.Get("offset"), 10, 64)
	if err != nil || offset < 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "?offset= wants a byte offset ≥ 0"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	c, err := adminops.ReadLog(ctx, p.cfg.Conn, q.Get("host"), q.Get("replica"), offset, logPollMax)
	if err != nil {
		writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"text": text(c.Data), "offset": c.Offset, "end": c.End(), "size": c.Size,
		"size_text": sizeText(c), "restart": c.Offset < offset})
}

// download sends a host's own log (or, with ?replica=, a replica's) as a
// file: its last downloadLimit bytes (?tail=BYTES for fewer).
func (p *Panel) download(w http.ResponseWriter, r *http.Request) {
	if p.needSigned(w, r, false) {
		return
	}
	host, replica := r.PathValue("host"), r.URL.Query().Get("replica")
	tail := int64(downloadLimit)
	if t := r.URL.Query().Get("tail"); t != "" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n <= 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "?tail= wants a number of bytes > 0"})
			return
		}
		tail = min(n, downloadLimit)
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	c, err := adminops.ReadLog(ctx, p.cfg.Conn, host, replica, -tail, 0)
	if err != nil {
		writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
		return
	}
	name := "muster-attach-" + host + ".log"
	if replica != "" {
		name = "muster-replica-" + replica + ".log"
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Header().Set("Cache-Control", "no-store")
	end := c.Offset + tail // what was asked for: the log's end when it was first read
	end = min(end, c.Size)
	for {
		if _, err := w.Write(c.Data); err != nil {
			return
		}
		if c.End() >= end || len(c.Data) == 0 {
			return
		}
		off := c.End()
		if c, err = adminops.ReadLog(ctx, p.cfg.Conn, host, replica, off, 0); err != nil || c.Offset != off {
			return // rotated meanwhile, or gone: what was sent is what there is
		}
	}
}

// text is b as valid UTF-8 text.
func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

func sizeText(c adminops.LogChunk) string {
	return fmtBytes(float64(c.Size)) + " in all"
}
