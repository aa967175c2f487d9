package main

import (
	"context"
	"encoding/json"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/internal/testutil"
)

func TestVersion(t *testing.T) {
	out := run(t, nil, "version", "--server", "nats://"+freeAddr(t))
	if want := "muster " + versionString() + " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"; out != want {
		t.Fatalf("stdout %q, want %q", out, want)
	}
	if out := run(t, nil, "--version"); out != "muster version "+versionString()+"\n" {
		t.Fatalf("--version: stdout %q", out)
	}
}

// versionJSON runs `muster version --json` against server and decodes it,
// also returning the raw output and stderr.
func versionJSON(t *testing.T, server string) (v versionInfo, raw, stderr string) {
	t.Helper()
	r := runApp(context.Background(), nil, "version", "--json", "--server", server)
	if r.err != nil {
		t.Fatalf("version --json: %v (stderr %q)", r.err, r.stderr)
	}
	raw = r.stdout.String()
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("stdout %q: %v", raw, err)
	}
	if v.Version != versionString() || v.Go != runtime.Version() || v.OS != runtime.GOOS || v.Arch != runtime.GOARCH {
		t.Errorf("got %+v", v)
	}
	return v, raw, r.stderr.String()
}

// TestVersionJSON: version --json has stable fields, and the versions the
// live attach managers registered; "hosts" is [] when none is live and
// null, with a note on stderr and exit 0, when NATS cannot be reached
// within a second.
func TestVersionJSON(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	t.Run("no server", func(t *testing.T) {
		v, raw, stderr := versionJSON(t, "nats://"+freeAddr(t))
		if v.Hosts != nil || !strings.Contains(raw, `"hosts":null`) || !strings.Contains(stderr, "hosts unknown") {
			t.Errorf("stdout %q stderr %q: want hosts null and a note", raw, stderr)
		}
		for _, k := range []string{`"version":`, `"go":`, `"os":`, `"arch":`} {
			if !strings.Contains(raw, k) {
				t.Errorf("%s lacks %s", raw, k)
			}
		}
	})
	t.Run("server that never answers", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		accepted := make(chan net.Conn, 16)
		defer func() {
			l.Close()
			for len(accepted) > 0 {
				(<-accepted).Close()
			}
		}()
		go func() { // accept, say nothing
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				select {
				case accepted <- c:
				default:
					c.Close()
				}
			}
		}()
		start := time.Now()
		v, _, stderr := versionJSON(t, "nats://"+l.Addr().String())
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v, want about %v", d, hostsTimeout)
		}
		if v.Hosts != nil || !strings.Contains(stderr, "hosts unknown") {
			t.Errorf("hosts %v, stderr %q", v.Hosts, stderr)
		}
	})
	t.Run("no attach manager", func(t *testing.T) {
		s := testutil.StartNATS(t)
		v, raw, _ := versionJSON(t, s.ClientURL())
		if v.Hosts == nil || len(v.Hosts) != 0 || !strings.Contains(raw, `"hosts":[]`) {
			t.Errorf("stdout %q, want hosts []", raw)
		}
	})
	t.Run("live attach manager", func(t *testing.T) {
		t.Setenv("TMPDIR", t.TempDir())
		addr := freeAddr(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, done := startUp(t, ctx, "--insecure", "--nats-listen", addr, "--data", t.TempDir(), "--log-level", "warn")
		v, raw, _ := versionJSON(t, "nats://"+addr)
		if len(v.Hosts) != 1 || v.Hosts[0].ID == "" || v.Hosts[0].Host == "" || v.Hosts[0].Version != versionString() {
			t.Errorf("stdout %q, want one host of version %s", raw, versionString())
		}
		if out := run(t, nil, "version", "--server", "nats://"+addr); len(v.Hosts) == 1 &&
			!strings.Contains(out, "attach manager "+v.Hosts[0].ID+" on "+v.Hosts[0].Host+": "+versionString()+"\n") {
			t.Errorf("stdout %q lacks the attach manager's version", out)
		}
		cancel()
		if err := waitUp(t, done); err != nil {
			t.Fatalf("up returned %v", err)
		}
	})
}

// TestHelpDocumentsExitStatus checks every command's help names the exit
// codes scripts rely on.
func TestHelpDocumentsExitStatus(t *testing.T) {
	for _, args := range [][]string{
		{"--help"},
		{"up", "--help"},
		{"broker", "--help"},
		{"call", "--help"},
		{"converse", "--help"},
		{"service", "ls", "--help"},
		{"replica", "ls", "--help"},
		{"replica", "quiesce", "--help"},
		{"example", "echo", "--help"},
		{"version", "--help"},
		{"completion", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out := run(t, nil, args...)
			if !strings.Contains(out, "EXIT STATUS") || !strings.Contains(out, "CCCC/NNNN") {
				t.Fatalf("help lacks the exit status:\n%s", out)
			}
		})
	}
}

// TestUsageErrorsGoToStderr checks that a bad flag is an error (exit 1)
// and nothing is written to stdout.
func TestUsageErrorsGoToStderr(t *testing.T) {
	r := runApp(context.Background(), nil, "call", "--bogus", "A/B/C")
	if r.err == nil || exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "muster call --help") {
		t.Fatalf("err %v", r.err)
	}
	if r.stdout.String() != "" {
		t.Fatalf("stdout %q, want nothing", r.stdout)
	}
}

func TestParseHeaders(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		ok   bool
	}{
		{"none", nil, true},
		{"simple", []string{"A=b"}, true},
		{"empty value", []string{"A="}, true},
		{"equals in value", []string{"A=b=c"}, true},
		{"no equals", []string{"A"}, false},
		{"empty key", []string{"=b"}, false},
		{"space in key", []string{"A B=c"}, false},
		{"colon in key", []string{"A:B=c"}, false},
		{"muster header", []string{"muster-deadline=1"}, false},
		{"nats header", []string{"Nats-Service-Error=x"}, false},
		{"status", []string{"Status=503"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseHeaders(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("parseHeaders(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}
