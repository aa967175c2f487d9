package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/testutil"
)

// startUp runs `muster up` with args in a goroutine until ctx is done,
// its HTTP endpoint on a free port unless args set --http (the default
// port may be taken on a developer's machine).
// It returns once up printed its banner: reading stderr through
// syncBuffer's mutex also orders up's flag parsing before the test's next
// command (urfave/cli v2 writes to its package-level HelpFlag on every
// run, so two apps must not parse flags at the same time).
func startUp(t *testing.T, ctx context.Context, args ...string) (stderr *syncBuffer, done <-chan error) {
	t.Helper()
	stderr = &syncBuffer{}
	if !slices.ContainsFunc(args, func(a string) bool { return a == "--http" || strings.HasPrefix(a, "--http=") }) {
		args = append(args, "--http", "127.0.0.1:0")
	}
	ch := make(chan error, 1)
	go func() {
		a := app()
		a.Reader, a.Writer, a.ErrWriter = strings.NewReader(""), &syncBuffer{}, stderr
		ch <- a.RunContext(ctx, append([]string{"muster", "up"}, args...))
	}()
	testutil.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		select {
		case err := <-ch:
			ch <- err
			t.Fatalf("up returned %v; stderr:\n%s", err, stderr)
		default:
		}
		if !strings.Contains(stderr.String(), "try: muster call") {
			return fmt.Errorf("up not ready; stderr:\n%s", stderr)
		}
		return nil
	})
	return stderr, ch
}

// waitUp waits for up to return after its context was cancelled.
func waitUp(t *testing.T, done <-chan error) error {
	t.Helper()
	return waitReturn(t, done, "up")
}

func TestUp(t *testing.T) {
	addr, data := freeAddr(t), filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Setenv("TMPDIR", t.TempDir())
	stderr, done := startUp(t, ctx, "--insecure", "--nats-listen", addr, "--data", data, "--log-level", "warn")
	for _, want := range []string{"INSECURE", "nats://" + addr, data, "muster up: broker ", "attach manager", demo.EchoService, sleepService, "try: muster call --server nats://" + addr + " DEMO/ECHO/ECHO hello"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	// One line each says where the files are.
	for _, re := range []string{
		`muster up: data: +` + regexp.QuoteMeta(data) + ` \(NATS JetStream store\)\n`,
		`muster up: state: +` + regexp.QuoteMeta(data) + `/attach-[A-Za-z0-9_-]+\n`,
		`muster up: logs: +` + regexp.QuoteMeta(data) + `/attach-[A-Za-z0-9_-]+/logs `,
		`muster up: credentials: +none`,
	} {
		if n := len(regexp.MustCompile(re).FindAllString(stderr.String(), -1)); n != 1 {
			t.Errorf("stderr has %d lines matching %s, want 1:\n%s", n, re, stderr)
		}
	}
	if st, err := os.Stat(data); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("data dir: %v, mode %v, want 0700", err, st.Mode().Perm())
	}

	server := "--server=nats://" + addr
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		r := runApp(context.Background(), nil, "call", server, "--timeout", "2s", demo.EchoService, "hello")
		if r.err != nil {
			return r.err
		}
		if got := r.stdout.String(); got != "hello\n" {
			return fmt.Errorf("stdout %q", got)
		}
		return nil
	})
	if got := run(t, nil, "call", server, sleepService, "1ms"); got != "slept 1ms\n" {
		t.Errorf("sleep demo answered %q", got)
	}
	// The replicas were started on demand by the attach manager, as
	// processes of this binary (`muster example echo`), logging beside the data.
	if logs, _ := filepath.Glob(filepath.Join(data, "attach-*", "logs", "DEMO_ECHO_ECHO", "*.log")); len(logs) == 0 {
		t.Errorf("no replica log under %s", data)
	}

	// A second up on the same port or data directory fails at once.
	for _, args := range [][]string{
		{"--nats-listen", addr, "--data", t.TempDir()},
		{"--nats-listen", freeAddr(t), "--data", data},
	} {
		r := runApp(context.Background(), nil, append([]string{"up"}, args...)...)
		if r.err == nil {
			t.Errorf("second up %v succeeded", args)
		}
	}

	cancel()
	if err := waitUp(t, done); err != nil {
		t.Fatalf("up returned %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("NATS still listening after up returned")
	}
}

// TestUpExternal runs up against an existing NATS server: no embedded
// server, no data directory.
func TestUpExternal(t *testing.T) {
	s := testutil.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Setenv("TMPDIR", t.TempDir())
	stderr, done := startUp(t, ctx, "--server", s.ClientURL(), "--log-level", "warn")
	if !strings.Contains(stderr.String(), "(external)") {
		t.Errorf("stderr:\n%s", stderr)
	}
	if got := run(t, nil, "call", "--server", s.ClientURL(), demo.EchoService, "hi"); got != "hi\n" {
		t.Errorf("echo answered %q", got)
	}
	cancel()
	if err := waitUp(t, done); err != nil {
		t.Fatalf("up returned %v", err)
	}
}

func TestUpBadFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		contains string
	}{
		{"server and listen", []string{"--server", "nats://127.0.0.1:1", "--nats-listen", "127.0.0.1:0"}, "not with --server"},
		{"server and insecure", []string{"--server", "nats://127.0.0.1:1", "--insecure"}, "not with --server"},
		{"bad listen", []string{"--nats-listen", "nonsense", "--data", t.TempDir()}, "--nats-listen"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runApp(context.Background(), nil, append([]string{"up"}, tt.args...)...)
			if r.err == nil || !strings.Contains(r.err.Error(), tt.contains) {
				t.Fatalf("err %v, want one containing %q", r.err, tt.contains)
			}
		})
	}
}

func TestDataDirDefault(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	got, err := dataDir("", discard)
	if err != nil || got != filepath.Join(state, "muster") {
		t.Fatalf("dataDir = %q, %v", got, err)
	}
	home := t.TempDir()
	t.Setenv("XDG_STATE_HOME", "relative/ignored")
	t.Setenv("HOME", home)
	got, err = dataDir("", discard)
	if err != nil || got != filepath.Join(home, ".local", "state", "muster") {
		t.Fatalf("dataDir = %q, %v", got, err)
	}
	if st, err := os.Stat(got); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("stat %s: %v", got, err)
	}
}

// TestUpIgnoresMUSTER_URL: MUSTER_URL, set for the clients, does not turn
// `muster up` into a client of another server: up says it ignores it and
// starts its own; --server still picks another server.
func TestUpIgnoresMUSTER_URL(t *testing.T) {
	t.Setenv(proto.EnvURL, "nats://"+freeAddr(t)) // nothing listens there
	t.Setenv("TMPDIR", t.TempDir())
	addr, data := freeAddr(t), filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr, done := startUp(t, ctx, "--insecure", "--nats-listen", addr, "--data", data, "--log-level", "warn")
	for _, want := range []string{"muster up: ignoring MUSTER_URL", "muster up: NATS nats://" + addr + " (embedded"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if got := run(t, nil, "call", "--server", "nats://"+addr, "--timeout", "20s", demo.EchoService, "hi"); got != "hi\n" {
		t.Errorf("echo answered %q", got)
	}
	cancel()
	if err := waitUp(t, done); err != nil {
		t.Fatalf("up returned %v", err)
	}

	// With --server, MUSTER_URL is not mentioned: the flag says it all.
	s := testutil.StartNATS(t)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	stderr, done = startUp(t, ctx2, "--server", s.ClientURL(), "--log-level", "warn")
	if strings.Contains(stderr.String(), "MUSTER_URL") || !strings.Contains(stderr.String(), "(external)") {
		t.Errorf("stderr:\n%s", stderr)
	}
	cancel2()
	if err := waitUp(t, done); err != nil {
		t.Fatalf("up returned %v", err)
	}
}

// TestUpConfigErrorBeforeStart: a bad --config is reported, naming file,
// line and field, before NATS or the broker start: no data directory is
// made, nothing listens.
func TestUpConfigErrorBeforeStart(t *testing.T) {
	bad := writeAttachConfig(t, "    maxx: 3\n")
	addr, data := freeAddr(t), filepath.Join(t.TempDir(), "data")
	r := runApp(context.Background(), nil, "up", "--insecure", "--config", bad, "--nats-listen", addr, "--data", data)
	if r.err == nil || exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), bad+":13:5: services[0]: unknown field \"maxx\"") {
		t.Fatalf("err %v, want the config error naming file, line and field", r.err)
	}
	if strings.Contains(r.stderr.String(), "muster up: NATS") || strings.Contains(r.stderr.String(), "broker") {
		t.Errorf("up started something before reading its config:\n%s", r.stderr)
	}
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("data directory %s: %v; want none (no NATS server was started)", data, err)
	}
}
