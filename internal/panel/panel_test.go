package panel

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/picture"
	"github.com/musterhq/muster/internal/testutil"
)

var secret = []byte("SUAtestseedtestseedtestseedtestseed")

// fakePicture is a system with an active, an isolated and a configured
// offline host, a failing service and two replicas; requests grows with n.
func fakePicture(n int64) *picture.Picture {
	now := time.Now().UnixMilli()
	p := &picture.Picture{At: now, Brokers: []picture.Broker{{ID: "b1"}}}
	p.Hosts = []picture.Host{
		{AttachInfo: proto.AttachInfo{ID: "h1", Host: "alpha", Version: "v1", Services: []string{"DEMO/ECHO/ECHO"}, Updated: now,
			Replicas: 2, MaxReplicas: 8, Users: 1, MaxUsers: 100, MemFree: 3 << 30, MemTotal: 8 << 30, EventsPerSec: 2.5, BytesPerSec: 2048},
			Online: true, Configured: true, Status: "active"},
		{AttachInfo: proto.AttachInfo{ID: "h2", Host: "beta", Version: "v1", Isolated: true, Updated: now, Services: []string{"DEMO/ECHO/ECHO"},
			Failing: map[string]string{"DEMO/ECHO/ECHO": "exit status 3"}}, Online: true, Configured: true, Status: "isolated"},
		{AttachInfo: proto.AttachInfo{ID: "h3"}, Configured: true, Status: "offline", AgeMS: -1},
	}
	p.Services = []picture.Service{
		{Service: "DEMO/ECHO/ECHO", Replicas: 2, Capacity: 2, Active: 1, Pending: 3, Requests: 100 + n, Warm: 60, Queued: 40 + n, Events: 120,
			ProcessingNS: 120e6, Hosts: []string{"h1", "h2"}, Placement: "p2c", Failing: map[string]string{"h2": "exit status 3"}},
		{Service: "X/Y/Z", Hosts: []string{"h1"}},
	}
	p.Replicas = []picture.Replica{
		{ReplicaInfo: proto.ReplicaInfo{ID: "r1", Service: "DEMO/ECHO/ECHO", Host: "alpha", Attach: "h1", PID: 4242, State: "ready", Capacity: 1, Active: 1,
			Started: now - 65000, Stats: proto.Stats{Conversations: 7, Messages: 9, BytesIn: 900, BytesOut: 1800, ProcessingNS: 9e6},
			Convs: []proto.ConvInfo{{Client: "client", Call: true}}}, CPUPercent: 3, RSS: 12 << 20},
		{ReplicaInfo: proto.ReplicaInfo{ID: "r2", Service: "DEMO/ECHO/ECHO", Attach: "h1", PID: 4243, State: "quiescing", Capacity: 1}},
	}
	return p
}

// testPanel serves a panel over a fake picture; nc may be nil.
func testPanel(t *testing.T, nc *nats.Conn, open bool) (*httptest.Server, *Panel, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	p, err := New(Config{Conn: nc, Secret: secret, OpenReads: open, Daemon: "test", Version: "v0",
		Gather: func(context.Context) (*picture.Picture, error) { return fakePicture(n.Load()), nil }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(func() { p.Close(); srv.Close() })
	return srv, p, &n
}

// client does not follow redirects.
var client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}

func do(t *testing.T, method, url string, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func cookie(tok string) map[string]string { return map[string]string{"Cookie": cookieName + "=" + tok} }

// TestViews: each view shows the picture's figures; unsigned, its
// actions are disabled.
func TestViews(t *testing.T) {
	srv, p, _ := testPanel(t, nil, true)
	for path, want := range map[string][]string{
		"/":                 {"DEMO/ECHO/ECHO", "X/Y/Z", "2 / 3", "Host h2 is isolated", "DEMO/ECHO/ECHO is failing on h2: exit status 3", "Host h3 is offline", "3 waiting"},
		"/hosts":            {`id="host-h1"`, "alpha", "st-isolated", "1 / 100", "3.0 GiB free", "2.5", "2.0 KiB/s", "2 online of 3 configured", "not registered", ">Restore<", ">Isolate<"},
		"/services":         {`id="svc-DEMO.ECHO.ECHO"`, "h2: exit status 3", `data-op="reset"`, `<option value="p2c" selected>p2c</option>`, "warm 60", "1.00 ms"},
		"/replicas":         {`id="rep-r1"`, "4242", "client", "1.00 ms", "12.0 MiB", "st-quiescing", "/replicas/r1/log?host=h1"},
		"/static/panel.css": {"prefers-color-scheme: dark"},
	} {
		resp, body := do(t, "GET", srv.URL+path, "", nil)
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
			continue
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("%s lacks %q", path, w)
			}
		}
		if strings.HasPrefix(path, "/static") {
			continue
		}
		if !strings.Contains(body, "Read-only") && path != "/" {
			t.Errorf("%s unsigned: no read-only note", path)
		}
		if strings.Contains(body, `data-op="isolate" data-target="h1" data-title="Isolate host h1?" data-confirm="Host h1 starts no new replicas; its running replicas finish their conversations and exit. It stays isolated, across restarts, until restored." data-verb="Isolate">`) {
			t.Errorf("%s unsigned: an enabled action", path)
		}
		if strings.Contains(body, "muster-csrf") || strings.Contains(body, p.Token()) {
			t.Errorf("%s unsigned: shows the CSRF token or the panel token", path)
		}
	}
	// Signed in: actions enabled, the CSRF token in the page, never the
	// panel token.
	_, body := do(t, "GET", srv.URL+"/hosts", "", cookie(p.Token()))
	if !strings.Contains(body, `<meta name="muster-csrf" content="`+p.csrf+`">`) || strings.Contains(body, "Read-only") ||
		strings.Contains(body, p.Token()) || !regexp.MustCompile(`data-op="isolate" data-target="h1"[^>]*data-verb="Isolate">`).MatchString(body) {
		t.Errorf("signed hosts view:\n%s", body)
	}
	if resp, _ := do(t, "GET", srv.URL+"/nope", "", nil); resp.StatusCode != 404 {
		t.Errorf("/nope: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", srv.URL+"/debug/pprof/", "", nil); resp.StatusCode != 404 {
		t.Errorf("/debug/pprof/: %d", resp.StatusCode)
	}
}

// TestReadAccess: reads need the token unless open, and open reads only
// for a loopback Host; ?token= signs in and leaves the URL.
func TestReadAccess(t *testing.T) {
	srv, p, _ := testPanel(t, nil, false)
	resp, _ := do(t, "GET", srv.URL+"/hosts", "", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next=%2Fhosts" {
		t.Errorf("closed read: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := do(t, "GET", srv.URL+"/api/picture", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("closed /api/picture: %d", resp.StatusCode)
	}
	resp, _ = do(t, "GET", srv.URL+"/hosts?token=wrong", "", nil)
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Errorf("wrong ?token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	resp, _ = do(t, "GET", srv.URL+"/hosts?token="+p.Token(), "", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/hosts" {
		t.Fatalf("?token: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	c := resp.Cookies()
	if len(c) != 1 || c[0].Value != p.Token() || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("?token cookie %+v", c)
	}
	if resp, _ := do(t, "GET", srv.URL+"/hosts", "", cookie(p.Token())); resp.StatusCode != 200 {
		t.Errorf("with the cookie: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", srv.URL+"/api/picture", "", map[string]string{"Authorization": "Bearer " + p.Token()}); resp.StatusCode != 200 {
		t.Errorf("bearer /api/picture: %d", resp.StatusCode)
	}
	// The sign-in form.
	resp, _ = do(t, "POST", srv.URL+"/login", "token="+p.Token()+"&next=/services", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/services" || len(resp.Cookies()) != 1 {
		t.Errorf("sign-in: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = do(t, "POST", srv.URL+"/login", "token=x&next=//evil.example/", map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("wrong sign-in: %d", resp.StatusCode)
	}
	if safeNext("//evil.example/") != "/" || safeNext("https://evil.example/") != "/" || safeNext("/hosts") != "/hosts" {
		t.Error("safeNext lets a foreign target through")
	}

	open, _, _ := testPanel(t, nil, true)
	if resp, _ := do(t, "GET", open.URL+"/hosts", "", nil); resp.StatusCode != 200 {
		t.Errorf("open read: %d", resp.StatusCode)
	}
	// Another name for this address (DNS rebinding) does not get open reads.
	req, _ := http.NewRequest("GET", open.URL+"/hosts", nil)
	req.Host = "evil.example"
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Errorf("open read under another host name: %v %v", resp.StatusCode, err)
	}
	// Logs need the token even with open reads.
	if resp, _ := do(t, "GET", open.URL+"/api/log?host=h1&replica=r1&offset=0", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("open log: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", open.URL+"/logs/h1", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("open log download: %d", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", open.URL+"/replicas/r1/log", "", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("open log view: %d", resp.StatusCode)
	}
}

// TestActions: an action is refused without the token (401), with a
// wrong one (403), with the cookie but without the page's CSRF token or
// from another origin (403), without a JSON body (415); it runs with the
// cookie and the CSRF token, or with a bearer token.
func TestActions(t *testing.T) {
	s := testutil.StartNATS(t)
	nc, host := testutil.Connect(t, s), testutil.Connect(t, s)
	var ops []string
	got := make(chan string, 10)
	sub, err := host.Subscribe(proto.AttachControlSubject("h1"), func(m *nats.Msg) {
		got <- m.Header.Get(proto.HdrOp)
		b, _ := json.Marshal(proto.AttachInfo{ID: "h1", Isolated: m.Header.Get(proto.HdrOp) == proto.OpIsolate})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = host.Flush()
	srv, p, _ := testPanel(t, nc, true)
	url := srv.URL + "/api/actions/isolate"
	body := `{"target":"h1"}`
	jsonCT := map[string]string{"Content-Type": "application/json"}
	with := func(m ...map[string]string) map[string]string {
		out := map[string]string{}
		for _, x := range m {
			for k, v := range x {
				out[k] = v
			}
		}
		return out
	}
	for _, tt := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no token", jsonCT, 401},
		{"wrong cookie", with(jsonCT, cookie("wrong"), map[string]string{csrfHeader: p.csrf}), 403},
		{"wrong bearer", with(jsonCT, map[string]string{"Authorization": "Bearer wrong"}), 403},
		{"cookie without CSRF", with(jsonCT, cookie(p.Token())), 403},
		{"cookie with a wrong CSRF", with(jsonCT, cookie(p.Token()), map[string]string{csrfHeader: "x" + p.csrf[1:]}), 403},
		{"another origin", with(jsonCT, cookie(p.Token()), map[string]string{csrfHeader: p.csrf, "Origin": "http://evil.example"}), 403},
		{"a form", with(cookie(p.Token()), map[string]string{csrfHeader: p.csrf, "Content-Type": "application/x-www-form-urlencoded"}), 415},
	} {
		resp, b := do(t, "POST", url, body, tt.hdr)
		if resp.StatusCode != tt.want || !strings.Contains(b, `"error"`) {
			t.Errorf("%s: %d %s, want %d", tt.name, resp.StatusCode, b, tt.want)
		}
	}
	select {
	case op := <-got:
		t.Fatalf("a refused action reached the host: %s", op)
	default:
	}
	origin := map[string]string{"Origin": strings.TrimPrefix(srv.URL, "")}
	resp, b := do(t, "POST", url, body, with(jsonCT, cookie(p.Token()), map[string]string{csrfHeader: p.csrf}, origin))
	if resp.StatusCode != 200 || !strings.Contains(b, "Host h1 isolated") {
		t.Fatalf("isolate: %d %s", resp.StatusCode, b)
	}
	ops = append(ops, <-got)
	resp, b = do(t, "POST", srv.URL+"/api/actions/restore", body, with(jsonCT, map[string]string{"Authorization": "Bearer " + p.Token()}))
	if resp.StatusCode != 200 || !strings.Contains(b, "restored") {
		t.Fatalf("restore: %d %s", resp.StatusCode, b)
	}
	ops = append(ops, <-got)
	if ops[0] != proto.OpIsolate || ops[1] != proto.OpRestore {
		t.Errorf("the host got %v", ops)
	}
	bearer := with(jsonCT, map[string]string{"Authorization": "Bearer " + p.Token()})
	for path, want := range map[string]int{
		"/api/actions/isolate {\"target\":\"h9\"}":                             404,
		"/api/actions/isolate {\"target\":\"a.b\"}":                            400,
		"/api/actions/explode {\"target\":\"h1\"}":                             404,
		"/api/actions/placement {\"target\":\"A/B/C\",\"scheme\":\"fastest\"}": 400,
	} {
		p, b, _ := strings.Cut(path, " ")
		if resp, body := do(t, "POST", srv.URL+p, b, bearer); resp.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", path, resp.StatusCode, body, want)
		}
	}
}

// TestEvents: the event stream sends the view's fragment, then each
// change, at most once a second.
func TestEvents(t *testing.T) {
	srv, _, n := testPanel(t, nil, true)
	req, _ := http.NewRequest("GET", srv.URL+"/api/events?view=services", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan string, 10)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "data: "):
				data = append(data, strings.TrimPrefix(line, "data: "))
			case line == "" && data != nil:
				events <- strings.Join(data, "\n")
				data = nil
			}
		}
	}()
	next := func() (string, time.Time) {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatal("stream ended")
			}
			return e, time.Now()
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
		}
		return "", time.Time{}
	}
	first, at1 := next()
	if !strings.Contains(first, `id="svc-DEMO.ECHO.ECHO"`) || !strings.Contains(first, ">100<") {
		t.Fatalf("first event:\n%s", first)
	}
	n.Store(5)
	second, at2 := next()
	if !strings.Contains(second, ">105<") {
		t.Errorf("second event lacks the new figure:\n%s", second)
	}
	if d := at2.Sub(at1); d < 900*time.Millisecond {
		t.Errorf("two events %v apart, want at most one a second", d)
	}
	if resp, _ := do(t, "GET", srv.URL+"/api/events?view=nope", "", nil); resp.StatusCode != 400 {
		t.Errorf("unknown view: %d", resp.StatusCode)
	}
}

// TestHistory: the chart's rate is the change of the requests over time;
// a counter that went down gives no rate; old samples go.
func TestHistory(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var h []sample
	h = appendSample(h, sample{at: t0, requests: 10}, t0)
	h = appendSample(h, sample{at: t0.Add(2 * time.Second), requests: 20, queued: 3}, t0.Add(2*time.Second))
	h = appendSample(h, sample{at: t0.Add(3 * time.Second), requests: 5}, t0.Add(3*time.Second))
	if len(h) != 3 || h[1].rate != 5 || h[2].rate != 0 {
		t.Fatalf("history %+v", h)
	}
	h = appendSample(h, sample{at: t0.Add(historySpan + 2500*time.Millisecond), requests: 5}, t0.Add(historySpan+2500*time.Millisecond))
	if len(h) != 2 {
		t.Errorf("history kept %d samples older than the span", len(h))
	}
	c := buildChart(h, t0.Add(historySpan+2500*time.Millisecond))
	if c.Empty || c.Max != "1" || strings.Count(c.Calls, ",") != 2 {
		t.Errorf("chart %+v", c)
	}
}

func TestToken(t *testing.T) {
	if Token(secret) == Token([]byte("another secret, long enough")) || len(Token(secret)) != 32 || Token(secret) == csrfToken(secret) {
		t.Error("tokens not distinct")
	}
	if _, err := New(Config{Gather: func(context.Context) (*picture.Picture, error) { return nil, errors.New("x") }}); err == nil {
		t.Error("New without a secret succeeded")
	}
}

// TestSamplerStopsWhenUnused: sampling starts with the first use, goes on
// while used, stops after idleStop without a use, and starts again.
func TestSamplerStopsWhenUnused(t *testing.T) {
	var n atomic.Int64
	s := newSampler(func(context.Context) (*picture.Picture, error) { n.Add(1); return fakePicture(0), nil })
	s.idleEvery, s.idleStop = 20*time.Millisecond, 50*time.Millisecond
	defer s.close()
	if n.Load() != 0 {
		t.Fatal("sampled before any use")
	}
	st := s.fresh(testutil.Context(t, 5*time.Second), time.Second)
	if st.pic == nil {
		t.Fatal("no picture")
	}
	running := func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.running }
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if running() {
			return errors.New("still sampling")
		}
		return nil
	})
	before := n.Load()
	s.current()
	testutil.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n.Load() == before {
			return errors.New("no sample after a new use")
		}
		return nil
	})
}

// TestSamplerFollows: a replica that appears or goes is sampled at once,
// not at the next tick; a known one's heartbeat is not.
func TestSamplerFollows(t *testing.T) {
	var n atomic.Int64
	s := newSampler(func(context.Context) (*picture.Picture, error) { n.Add(1); return fakePicture(0), nil })
	s.idleEvery = time.Hour
	changed := make(chan func(string, bool), 1)
	unfollowed := make(chan struct{})
	s.follow = func(f func(string, bool)) (func(), error) {
		changed <- f
		return func() { close(unfollowed) }, nil
	}
	s.fresh(testutil.Context(t, 5*time.Second), time.Second)
	f := <-changed
	wait := func(want int64) {
		t.Helper()
		testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
			if got := n.Load(); got != want {
				return fmt.Errorf("%d samples, want %d", got, want)
			}
			return nil
		})
	}
	wait(1)
	// fresh's own request may come just after the first sample started
	// and be served by a second one: let it pass before counting.
	time.Sleep(3 * minGap)
	base := n.Load()
	f("r1", false) // known: a heartbeat
	time.Sleep(3 * minGap)
	if n.Load() != base {
		t.Fatalf("a known replica's heartbeat was sampled")
	}
	f("r9", false) // new
	wait(base + 1)
	f("r1", true) // gone
	wait(base + 2)
	s.close()
	select {
	case <-unfollowed:
	case <-time.After(5 * time.Second):
		t.Fatal("still following after close")
	}
}
