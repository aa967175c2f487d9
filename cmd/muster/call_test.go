package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/worker"
)

func TestCall(t *testing.T) {
	env, _ := echoEnv(t)
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"argument", "", []string{"hi"}, "hi\n"},
		{"no data", "", nil, "\n"},
		{"stdin", "from stdin", []string{"-"}, "from stdin\n"},
		{"stdin with newline kept once", "two\nlines\n", []string{"-"}, "two\nlines\n"},
		{"empty stdin", "", []string{"-"}, "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"call", serverFlag(env), demo.EchoService}, tt.args...)
			if got := run(t, strings.NewReader(tt.stdin), args...); got != tt.want {
				t.Fatalf("stdout %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCallJSON(t *testing.T) {
	env, _ := echoEnv(t, worker.WithReplicaID("r-json"))
	out := run(t, nil, "call", serverFlag(env), "--json", demo.EchoService, "hi")
	var got callResult
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout %q: %v", out, err)
	}
	if got.Service != demo.EchoService || got.Data != "hi" || got.ElapsedMS < 0 {
		t.Fatalf("got %+v", got)
	}
	for _, k := range []string{`"service":`, `"data":`, `"elapsed_ms":`} {
		if !strings.Contains(out, k) {
			t.Errorf("%s lacks %s", out, k)
		}
	}
}

func TestCallHeaders(t *testing.T) {
	env, _ := echoEnv(t)
	env.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		return c.Reply([]byte(strings.Join(m.Header.Values("X-Test"), "|")))
	}, worker.WithService("TEST/HDR/ECHO"))
	out := run(t, nil, "call", serverFlag(env), "-H", "X-Test=a,b", "-H", "X-Test=c=d", "TEST/HDR/ECHO")
	if out != "a,b|c=d\n" {
		t.Fatalf("stdout %q, want %q", out, "a,b|c=d\n")
	}
}

func TestCallErrors(t *testing.T) {
	env, _ := echoEnv(t)
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"unknown service", []string{demo.EchoService[:5] + "X/Y"}, 2, "0007/0007 service DEMO/X/Y: no replica registered"},
		{"bad service name", []string{"DEMO.ECHO"}, 1, "bad service"},
		{"no service", nil, 1, "want SERVICE"},
		{"too many args", []string{demo.EchoService, "a", "b"}, 1, "want SERVICE"},
		{"bad header", []string{"-H", "novalue", demo.EchoService}, 1, "want KEY=VALUE"},
		{"reserved header", []string{"-H", "Muster-Op=NEW", demo.EchoService}, 1, "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runApp(context.Background(), nil, append([]string{"call", serverFlag(env)}, tt.args...)...)
			if r.err == nil {
				t.Fatalf("no error; stdout %q", r.stdout)
			}
			if got := exitCode(r.err); got != tt.code {
				t.Errorf("exit code %d, want %d (%v)", got, tt.code, r.err)
			}
			if !strings.Contains(r.err.Error(), tt.contains) {
				t.Errorf("error %q does not contain %q", r.err, tt.contains)
			}
			if strings.HasPrefix(r.err.Error(), "muster:") {
				t.Errorf("error %q repeats main's prefix", r.err)
			}
			if r.stdout.String() != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

func TestCallNoServer(t *testing.T) {
	r := runApp(context.Background(), nil, "call", "--server", "nats://"+freeAddr(t), demo.EchoService, "hi")
	if r.err == nil || exitCode(r.err) != 1 {
		t.Fatalf("err %v, want a connection error with exit code 1", r.err)
	}
}

func TestCodedErrorUnwraps(t *testing.T) {
	err := coded(proto.Errorf(proto.CodeNotRegistered, "gone"))
	if !errors.Is(err, proto.ErrNotRegistered) || err.Error() != "0007/0007 gone" || exitCode(err) != 2 {
		t.Fatalf("coded = %v (exit %d)", err, exitCode(err))
	}
	if err := coded(errors.New("plain")); exitCode(err) != 1 || err.Error() != "plain" {
		t.Fatalf("coded(plain) = %v", err)
	}
}

// TestCallRaw: --raw writes the reply's bytes unchanged; without it a
// newline is added to a reply that lacks one.
func TestCallRaw(t *testing.T) {
	env, _ := echoEnv(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"raw", []string{"--raw", demo.EchoService, "hi"}, "hi"},
		{"raw after the data", []string{demo.EchoService, "hi", "--raw"}, "hi"},
		{"raw keeps a newline", []string{"--raw", demo.EchoService, "hi\n"}, "hi\n"},
		{"raw empty", []string{"--raw", demo.EchoService}, ""},
		{"raw binary", []string{"--raw", demo.EchoService, "\x00\xff"}, "\x00\xff"},
		{"not raw", []string{demo.EchoService, "hi"}, "hi\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(t, nil, append([]string{"call", serverFlag(env)}, tc.args...)...); got != tc.want {
				t.Fatalf("stdout %q, want %q", got, tc.want)
			}
		})
	}
	r := runApp(context.Background(), nil, "call", serverFlag(env), "--raw", "--json", demo.EchoService)
	if r.err == nil || !strings.Contains(r.err.Error(), "mutually exclusive") {
		t.Fatalf("--raw --json: %v", r.err)
	}
}
