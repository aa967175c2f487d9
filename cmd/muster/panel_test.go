package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/picture"
	"github.com/musterhq/muster/internal/testutil"
)

// The control panel in a real browser: a headless Chromium (Debian's
// chromium package; .ci/run installs it) driven through the DevTools
// protocol against a real `muster up` with credentials. One browser for
// the whole file, every step bounded.

// chromiumPath finds the browser, or fails the test saying how to install
// it: the browser tests must not pass for lack of a browser.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MUSTER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium found: the control panel tests drive a real headless browser. " +
		"Install it (Debian/Ubuntu: apt-get update && apt-get install -y chromium) or set MUSTER_CHROMIUM=/path/to/chrome")
	return ""
}

// screenshotDir is where the test saves its screenshots: $MUSTER_SCREENSHOTS
// if set (kept), else a temporary dir (removed after the test).
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MUSTER_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// browser is one headless Chromium tab.
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string // uncaught exceptions and CSP violations in the page
}

func startBrowser(t *testing.T, parent context.Context) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // containers run tests as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("renderer-process-limit", "1"),
		chromedp.WindowSize(1280, 800),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx}
	if err := chromedp.Do(ctx); err != nil { // starts the browser, bound to ctx
		t.Fatalf("start Chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				b.mu.Lock()
				b.problems = append(b.problems, m.String())
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// do runs actions within d.
func (b *browser) do(d time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// must runs actions within 15s and fails the test on an error.
func (b *browser) must(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := b.do(15*time.Second, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise).
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// look sets the viewport and the colour scheme.
func look(width, height int64, dark bool) chromedp.Action[chromedp.Void] {
	scheme := "light"
	if dark {
		scheme = "dark"
	}
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
			Width: width, Height: height, DeviceScaleFactor: 1, Mobile: width < 600}); err != nil {
			return err
		}
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		return err
	})
}

// shot saves a screenshot of the viewport as dir/name.png.
func (b *browser) shot(dir, name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// live waits until the page's event stream delivered an update.
var live = chromedp.WaitVisible(chromedp.CSS(`#live[data-state="live"]`))

// hostStatus is host id's status as `muster host ls --json` reports it.
func hostStatus(t *testing.T, server, creds, id string) string {
	t.Helper()
	var out struct {
		Hosts []picture.Host `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(run(t, nil, "host", "ls", "--json", server, creds)), &out); err != nil {
		t.Fatal(err)
	}
	for _, h := range out.Hosts {
		if h.ID == id {
			return h.Status
		}
	}
	t.Fatalf("host %s not in muster host ls", id)
	return ""
}

// TestPanel: the control panel of a real `muster up` in a real browser.
// The overview lists the demo services; a cold call makes its replica
// appear in the replicas view within 2s, without a reload; isolating a
// host through the page's confirm step changes its status, and `muster
// host ls` agrees; an action without the token is refused. It saves a
// screenshot of each view, light and dark, at 1280×800 and 390×844.
func TestPanel(t *testing.T) {
	chromiumPath(t) // fail first, and fast, without a browser
	shots := screenshotDir(t)
	t.Setenv("TMPDIR", t.TempDir())
	addr, data := freeAddr(t), filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr, done := startUp(t, ctx, "--nats-listen", addr, "--data", data, "--log-level", "warn")
	m := regexp.MustCompile(`(?m)^muster up: control panel: (http://[^/\s]+)/\?token=(\S+)$`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("the banner names no control panel URL:\n%s", stderr)
	}
	base, token := m[1], m[2]
	server, admin := "--server=nats://"+addr, "--creds="+filepath.Join(data, "creds", "admin.creds")
	clientCreds := "--creds=" + filepath.Join(data, "creds", "client.creds")
	if got := strings.TrimSpace(run(t, nil, "auth", "panel-token", "--dir", data)); got != token {
		t.Errorf("muster auth panel-token --dir prints %q, the banner %q", got, token)
	}
	var hosts struct {
		Hosts []picture.Host `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(run(t, nil, "host", "ls", "--json", server, admin)), &hosts); err != nil || len(hosts.Hosts) != 1 {
		t.Fatalf("host ls: %v %+v", err, hosts)
	}
	hostID := hosts.Hosts[0].ID

	b := startBrowser(t, ctx)

	t.Run("refused without the token", func(t *testing.T) {
		// Reads are open on loopback, actions are not: the page offers
		// them disabled, and the server refuses them.
		b.must("open the hosts view", look(1280, 800, false), chromedp.Navigate(base+"/hosts"), live,
			chromedp.WaitVisible(chromedp.CSS(`#readonly`)),
			chromedp.WaitVisible(chromedp.CSS(`button[data-op="isolate"][data-target="`+hostID+`"][disabled]`)))
		status := eval[int](b, `fetch("/api/actions/isolate", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({target: "`+hostID+`"})}).then(r => r.status)`)
		if status != http.StatusUnauthorized {
			t.Errorf("an action from the page without the token: %d, want 401", status)
		}
		for _, hdr := range []map[string]string{
			{"Authorization": "Bearer wrong"},
			{"Cookie": "muster_panel=wrong"},
			{"Cookie": "muster_panel=" + token}, // no CSRF token
		} {
			req, _ := http.NewRequest("POST", base+"/api/actions/isolate", strings.NewReader(`{"target":"`+hostID+`"}`))
			req.Header.Set("Content-Type", "application/json")
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("an action with %v: %d, want 403", hdr, resp.StatusCode)
			}
		}
		if s := hostStatus(t, server, admin, hostID); s != "active" {
			t.Errorf("after refused actions the host is %s", s)
		}
		b.shot(shots, "hosts-readonly-light-1280")
	})

	t.Run("overview", func(t *testing.T) {
		// The banner's URL signs the browser in and leaves the address bar.
		b.must("open the banner's URL", chromedp.Navigate(base+"/?token="+token), live,
			chromedp.WaitVisible(chromedp.CSS(`tr[data-service="`+demo.EchoService+`"]`)))
		loc := eval[string](b, `location.href`)
		if strings.Contains(loc, "token") || loc != base+"/" {
			t.Errorf("after signing in the page is at %s", loc)
		}
		text := eval[string](b, `document.querySelector("main").textContent`)
		for _, want := range []string{demo.EchoService, sleepService, "Hosts online", "Calls/s", "Waiting", "Failing"} {
			if !strings.Contains(text, want) {
				t.Errorf("the overview lacks %q:\n%s", want, text)
			}
		}
		if eval[bool](b, `!!document.querySelector("#chart svg")`) != true {
			t.Error("the overview has no chart")
		}
		if strings.Contains(eval[string](b, `document.documentElement.outerHTML`), token) {
			t.Error("the page shows the panel token")
		}
	})

	t.Run("cold call shows a replica live", func(t *testing.T) {
		b.must("open the replicas view", chromedp.Navigate(base+"/replicas"), live,
			chromedp.WaitVisible(chromedp.CSS(`#rep-none`)))
		eval[bool](b, `window.stillHere = true`)
		if got := run(t, nil, "call", server, clientCreds, "--timeout", "10s", demo.EchoService, "hello"); got != "hello\n" {
			t.Fatalf("call: %q", got)
		}
		start := time.Now()
		if err := b.do(2*time.Second, chromedp.WaitVisible(chromedp.CSS(`#replicas tr[data-service="`+demo.EchoService+`"]`))); err != nil {
			t.Fatalf("no replica of %s in the replicas view 2s after a cold call: %v\n%s", demo.EchoService, err,
				eval[string](b, `document.querySelector("main").innerText`))
		}
		t.Logf("replica shown %v after the call returned", time.Since(start).Round(time.Millisecond))
		if !eval[bool](b, `window.stillHere === true`) {
			t.Error("the page was reloaded")
		}
	})

	t.Run("screenshots", func(t *testing.T) {
		rep := eval[string](b, `document.querySelector("#replicas tr[data-replica]").dataset.replica`)
		// A burst, so the views show busy replicas, queued requests and a
		// curve: more sleeping calls than the demo's 4 replicas of a service.
		nc, err := natsconn.Config{URL: "nats://" + addr, CredsFile: filepath.Join(data, "creds", "client.creds")}.Connect()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		cl, err := client.New(nc, client.WithTimeout(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		var burst sync.WaitGroup
		defer burst.Wait()
		for range 6 {
			burst.Add(1)
			go func() {
				defer burst.Done()
				_, _ = cl.Call(ctx, sleepService, []byte("5s"))
			}()
		}
		b.must("watch the burst", chromedp.Navigate(base+"/replicas"), live,
			chromedp.Poll[chromedp.Void](`document.querySelectorAll('#replicas tr[data-service="`+sleepService+`"]').length >= 3`, chromedp.WithPollingTimeout(10*time.Second)))
		pages := []struct{ name, path, ready string }{
			{"overview", "/", `#chart`},
			{"hosts", "/hosts", `#hosts`},
			{"services", "/services", `#services`},
			{"replicas", "/replicas", `#replicas`},
			{"replica-log", "/replicas/" + rep + "/log", `#log`},
		}
		for _, size := range [][2]int64{{1280, 800}, {390, 844}} {
			for _, dark := range []bool{false, true} {
				scheme := "light"
				if dark {
					scheme = "dark"
				}
				for _, p := range pages {
					b.must("show "+p.name, look(size[0], size[1], dark), chromedp.Navigate(base+p.path),
						chromedp.WaitVisible(chromedp.CSS(p.ready)), live)
					b.shot(shots, fmt.Sprintf("%s-%s-%d", p.name, scheme, size[0]))
				}
			}
		}
		// The log view shows the replica's log, and no layout overflows
		// the phone's width outside the scrolling tables.
		b.must("phone", look(390, 844, false), chromedp.Navigate(base+"/replicas/"+rep+"/log"), chromedp.WaitVisible(chromedp.CSS(`#log`)))
		if h := eval[string](b, `document.querySelector("#log").dataset.host`); h != hostID {
			t.Errorf("the log view reads the log from host %q, want %q", h, hostID)
		}
		for _, p := range pages[:4] {
			b.must("phone "+p.name, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS(p.ready)))
			if w := eval[int](b, `document.documentElement.scrollWidth`); w > 390 {
				t.Errorf("%s is %dpx wide on a 390px screen", p.name, w)
			}
		}
		b.must("desktop", look(1280, 800, false))
	})

	t.Run("logs", func(t *testing.T) {
		// The hosts view's download: the attach manager's own log, with
		// the token only.
		get := func(url, tok string) (*http.Response, string) {
			req, _ := http.NewRequest("GET", url, nil)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var sb strings.Builder
			_, _ = io.Copy(&sb, resp.Body)
			return resp, sb.String()
		}
		if resp, _ := get(base+"/logs/"+hostID, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("log download without the token: %d, want 401", resp.StatusCode)
		}
		resp, body := get(base+"/logs/"+hostID, token)
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") ||
			!strings.Contains(body, "replica") {
			t.Errorf("log download: %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Disposition"), body)
		}
		// The replica's log, as the log view follows it.
		var reps struct {
			Replicas []picture.Replica `json:"replicas"`
		}
		if err := json.Unmarshal([]byte(run(t, nil, "replica", "ls", "--json", "--service", demo.EchoService, server, admin)), &reps); err != nil || len(reps.Replicas) == 0 {
			t.Fatalf("replica ls: %v %+v", err, reps)
		}
		rep := reps.Replicas[0].ID
		resp, body = get(base+"/api/log?host="+hostID+"&replica="+rep+"&offset=0", token)
		var chunk struct {
			Text string `json:"text"`
			End  int64  `json:"end"`
		}
		if err := json.Unmarshal([]byte(body), &chunk); resp.StatusCode != http.StatusOK || err != nil || chunk.End != int64(len(chunk.Text)) || !strings.Contains(chunk.Text, "replica ready") {
			t.Errorf("replica log: %d %v %s", resp.StatusCode, err, body)
		}
	})

	t.Run("isolate through the confirm step", func(t *testing.T) {
		row := `tr[data-host="` + hostID + `"]`
		b.must("open the hosts view", chromedp.Navigate(base+"/hosts"), live,
			chromedp.WaitVisible(chromedp.CSS(row+`[data-status="active"]`)))
		isolate := chromedp.CSS(row + ` button[data-op="isolate"]:not([disabled])`)
		// Cancelled, by mouse and by keyboard (Enter on the focused button,
		// Escape in the dialog, whose Cancel has the focus): nothing happens.
		b.must("cancel", chromedp.Click(isolate), chromedp.WaitVisible(chromedp.CSS(`dialog#confirm[open]`)),
			chromedp.Click(chromedp.CSS(`#confirm-cancel`)), chromedp.WaitNotVisible(chromedp.CSS(`dialog#confirm`)))
		b.must("keyboard", chromedp.Focus(isolate), chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.CSS(`dialog#confirm[open]`)))
		if f := eval[string](b, `document.activeElement.id`); f != "confirm-cancel" {
			t.Errorf("the dialog opens with the focus on %q, want Cancel", f)
		}
		b.must("escape", chromedp.KeyEvent(kb.Escape), chromedp.WaitNotVisible(chromedp.CSS(`dialog#confirm`)))
		if s := hostStatus(t, server, admin, hostID); s != "active" {
			t.Fatalf("after a cancelled isolation the host is %s", s)
		}
		// Confirmed: the host is isolated, the page shows it without a
		// reload, and the CLI agrees.
		eval[bool](b, `window.stillHere = true`)
		b.must("ask", chromedp.Click(isolate), chromedp.WaitVisible(chromedp.CSS(`dialog#confirm[open]`)))
		b.shot(shots, "hosts-confirm-light-1280")
		b.must("confirm", chromedp.Click(chromedp.CSS(`#confirm-ok`)))
		if err := b.do(5*time.Second, chromedp.WaitVisible(chromedp.CSS(row+`[data-status="isolated"]`))); err != nil {
			t.Fatalf("the hosts view does not show %s isolated: %v", hostID, err)
		}
		if !eval[bool](b, `window.stillHere === true`) {
			t.Error("the page was reloaded")
		}
		if toast := eval[string](b, `document.querySelector("#toast").textContent`); !strings.Contains(toast, "isolated") {
			t.Errorf("toast %q", toast)
		}
		if s := hostStatus(t, server, admin, hostID); s != "isolated" {
			t.Errorf("muster host ls says %s is %s after the page isolated it", hostID, s)
		}
		b.shot(shots, "hosts-isolated-light-1280")
		// And restored the same way.
		b.must("restore", chromedp.Click(chromedp.CSS(row+` button[data-op="restore"]`)), chromedp.WaitVisible(chromedp.CSS(`dialog#confirm[open]`)),
			chromedp.Click(chromedp.CSS(`#confirm-ok`)))
		if err := b.do(5*time.Second, chromedp.WaitVisible(chromedp.CSS(row+`[data-status="active"]`))); err != nil {
			t.Fatalf("the hosts view does not show %s restored: %v", hostID, err)
		}
		testutil.CheckFor(t, 5*time.Second, 50*time.Millisecond, func() error {
			if s := hostStatus(t, server, admin, hostID); s != "active" {
				return fmt.Errorf("muster host ls says %s is %s after the page restored it", hostID, s)
			}
			return nil
		})
	})

	t.Run("placement through the confirm step", func(t *testing.T) {
		sel := chromedp.CSS(`select[data-target="` + demo.EchoService + `"]`)
		b.must("open the services view", chromedp.Navigate(base+"/services"), live, chromedp.WaitEnabled(sel))
		b.must("choose memory", chromedp.SetValue(sel, "memory"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector('select[data-target="`+demo.EchoService+`"]').dispatchEvent(new Event("change", {bubbles: true}))`),
			chromedp.WaitVisible(chromedp.CSS(`dialog#confirm[open]`)), chromedp.Click(chromedp.CSS(`#confirm-ok`)),
			chromedp.Poll[chromedp.Void](`document.querySelector("#toast").textContent.includes("placement memory")`, chromedp.WithPollingTimeout(5*time.Second)))
		// The leading broker follows the pool bucket, and reports the scheme.
		testutil.CheckFor(t, 5*time.Second, 100*time.Millisecond, func() error {
			var out struct {
				Services []picture.Service `json:"services"`
			}
			if err := json.Unmarshal([]byte(run(t, nil, "service", "ls", "--json", server, admin)), &out); err != nil {
				return err
			}
			for _, s := range out.Services {
				if s.Service == demo.EchoService && s.Placement != "memory" {
					return fmt.Errorf("muster service ls says %s is placed by %q", s.Service, s.Placement)
				}
			}
			return nil
		})
	})

	t.Run("broker with --panel-creds", func(t *testing.T) {
		// Another daemon serves the panel only with admin credentials, and
		// every request needs the token, even on loopback.
		adminFile := filepath.Join(data, "creds", "admin.creds")
		brokerURL := func(extra ...string) (string, string, context.CancelFunc, <-chan error) {
			bctx, bcancel := context.WithCancel(ctx)
			errOut := &syncBuffer{}
			done := make(chan error, 1)
			go func() {
				a := app()
				a.Reader, a.Writer, a.ErrWriter = strings.NewReader(""), &syncBuffer{}, errOut
				done <- a.RunContext(bctx, append([]string{"muster", "broker", server, "--creds", filepath.Join(data, "creds", "broker.creds"),
					"--log-level", "warn", "--http", "127.0.0.1:0"}, extra...))
			}()
			testutil.CheckFor(t, 15*time.Second, 20*time.Millisecond, func() error {
				if !httpLine.MatchString(errOut.String()) || !strings.Contains(errOut.String(), "muster broker ") {
					return fmt.Errorf("broker not started:\n%s", errOut)
				}
				return nil
			})
			u, _ := endpointURL(t, errOut.String())
			return u, errOut.String(), bcancel, done
		}
		get := func(url, tok string) (int, string) {
			req, _ := http.NewRequest("GET", url, nil)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var sb strings.Builder
			_, _ = io.Copy(&sb, resp.Body)
			return resp.StatusCode, sb.String()
		}
		u, banner, stop, done := brokerURL("--panel-creds", adminFile)
		if !strings.Contains(banner, "muster broker: control panel "+u+"/ (its token: muster auth panel-token --creds "+adminFile+")") || strings.Contains(banner, token) {
			t.Errorf("the broker's banner:\n%s", banner)
		}
		tok := strings.TrimSpace(run(t, nil, "auth", "panel-token", "--creds", adminFile))
		if code, _ := get(u+"/", ""); code != http.StatusSeeOther {
			t.Errorf("the broker's panel without the token: %d, want 303 to the sign-in", code)
		}
		if code, body := get(u+"/services", tok); code != http.StatusOK || !strings.Contains(body, demo.EchoService) {
			t.Errorf("the broker's panel with the token: %d\n%s", code, body)
		}
		stop()
		if err := waitReturn(t, done, "broker"); err != nil {
			t.Fatalf("broker returned %v", err)
		}
		u, _, stop, done = brokerURL()
		if code, body := get(u+"/", tok); code != http.StatusNotFound || !strings.Contains(body, "--panel-creds") {
			t.Errorf("the broker without --panel-creds: %d %q", code, body)
		}
		stop()
		if err := waitReturn(t, done, "broker"); err != nil {
			t.Fatalf("broker returned %v", err)
		}
	})

	b.mu.Lock()
	if len(b.problems) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(b.problems, "\n"))
	}
	b.mu.Unlock()
	cancel()
	if err := waitUp(t, done); err != nil {
		t.Fatalf("up returned %v", err)
	}
}

// TestUpPanelAccess: without credentials (--insecure) `muster up` makes a
// token for the run and prints it only in its banner; reads are open on a
// loopback --http and closed beyond it; actions always need the token.
func TestUpPanelAccess(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	do := func(method, url, tok string) int {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(`{"target":"no-such-host"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		http      string
		openReads bool
	}{{"127.0.0.1:0", true}, {"0.0.0.0:0", false}} {
		ctx, cancel := context.WithCancel(context.Background())
		stderr, done := startUp(t, ctx, "--insecure", "--nats-listen", freeAddr(t), "--data", t.TempDir(), "--log-level", "error", "--http", tt.http)
		m := regexp.MustCompile(`(?m)^muster up: control panel: http://([^/\s]+)/\?token=(\S+)$`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("--http %s: no control panel URL in the banner:\n%s", tt.http, stderr)
		}
		if m[1] != strings.TrimPrefix(m[1], "[::]") || strings.HasPrefix(m[1], "0.0.0.0") {
			t.Errorf("--http %s: the banner's URL names no host a browser can open: %s", tt.http, m[1])
		}
		base, token := "http://"+m[1], m[2]
		read := do("GET", base+"/hosts", "")
		if tt.openReads && read != http.StatusOK || !tt.openReads && read != http.StatusSeeOther {
			t.Errorf("--http %s: a read without the token: %d", tt.http, read)
		}
		if code := do("GET", base+"/hosts", token); code != http.StatusOK {
			t.Errorf("--http %s: a read with the token: %d", tt.http, code)
		}
		if code := do("POST", base+"/api/actions/isolate", ""); code != http.StatusUnauthorized {
			t.Errorf("--http %s: an action without the token: %d, want 401", tt.http, code)
		}
		if code := do("POST", base+"/api/actions/isolate", "wrong"+token); code != http.StatusForbidden {
			t.Errorf("--http %s: an action with a wrong token: %d, want 403", tt.http, code)
		}
		// With the token the action runs: no such host.
		if code := do("POST", base+"/api/actions/isolate", token); code != http.StatusNotFound {
			t.Errorf("--http %s: an action with the token on an unknown host: %d, want 404", tt.http, code)
		}
		cancel()
		if err := waitUp(t, done); err != nil {
			t.Fatalf("up returned %v", err)
		}
	}
}
