package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

func TestConverse(t *testing.T) {
	env, _ := echoEnv(t)
	tests := []struct {
		name, stdin, want string
	}{
		{"client ends at EOF", "a\nb\n", "#1 a\n#2 b\n"},
		{"no final newline", "a\nb", "#1 a\n#2 b\n"},
		{"CRLF", "a\r\nb\r\n", "#1 a\n#2 b\n"},
		{"one line", "only\n", "#1 only\n"},
		{"replica ends it", "a\nbye\nnot sent\n", "#1 a\n#2 bye\n"},
		{"replica ends it at once", "bye\nnot sent\n", "#1 bye\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(t, strings.NewReader(tt.stdin), "converse", serverFlag(env), demo.EchoService)
			if got != tt.want {
				t.Fatalf("stdout %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConverseErrors(t *testing.T) {
	env, _ := echoEnv(t)
	tests := []struct {
		name, stdin, service string
		code                 int
		contains             string
	}{
		{"unknown service", "a\n", "DEMO/X/Y", 2, "0007/0007"},
		{"empty stdin", "", demo.EchoService, 1, "no input"},
		{"bad service", "a\n", "DEMO", 1, "bad service"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runApp(context.Background(), strings.NewReader(tt.stdin), "converse", serverFlag(env), tt.service)
			if r.err == nil || exitCode(r.err) != tt.code || !strings.Contains(r.err.Error(), tt.contains) {
				t.Fatalf("err %v (exit %d), want exit %d containing %q", r.err, exitCode(r.err), tt.code, tt.contains)
			}
		})
	}
}

// TestConverseHandlerError checks that an error ending the conversation
// on the replica's side exits with status 2 and its code.
func TestConverseHandlerError(t *testing.T) {
	env, _ := echoEnv(t)
	env.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		if _, err := c.Receive(ctx); err != nil {
			return err
		}
		if err := c.Reply([]byte("first")); err != nil {
			return err
		}
		if _, err := c.Receive(ctx); err != nil {
			return err
		}
		return errors.New("boom")
	}, worker.WithService("TEST/CONV/FAIL"))
	r := runApp(context.Background(), strings.NewReader("a\nb\nc\n"), "converse", serverFlag(env), "TEST/CONV/FAIL")
	if exitCode(r.err) != 2 || !strings.Contains(r.err.Error(), proto.CodeServiceError.String()) {
		t.Fatalf("err %v, want exit 2 with %s", r.err, proto.CodeServiceError)
	}
	if got := r.stdout.String(); got != "first\n" {
		t.Fatalf("stdout %q, want %q", got, "first\n")
	}
}

// TestConverseInterrupted cancels converse while it waits for stdin: it
// cancels the conversation and fails.
func TestConverseInterrupted(t *testing.T) {
	env, _ := echoEnv(t)
	ended := make(chan error, 1)
	env.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				ended <- err
				return nil
			}
			if err := c.Reply(m.Data); err != nil {
				return err
			}
		}
	}, worker.WithService("TEST/CONV/WAIT"))
	stdin, w := io.Pipe()
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		a := app()
		a.Reader, a.Writer, a.ErrWriter = stdin, out, io.Discard
		done <- a.RunContext(ctx, []string{"muster", "converse", serverFlag(env), "TEST/CONV/WAIT"})
	}()
	if _, err := io.WriteString(w, "hello\n"); err != nil {
		t.Fatal(err)
	}
	testutil.CheckFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if out.String() != "hello\n" {
			return errors.New("no reply yet: " + out.String())
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Fatalf("converse returned %v, want interrupted", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("converse did not return after cancel")
	}
	select {
	case err := <-ended:
		if !errors.Is(err, proto.ErrCancelled) {
			t.Fatalf("handler saw %v, want %v", err, proto.ErrCancelled)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("conversation not ended at the replica")
	}
}

// TestConverseTimeout checks that a reply slower than --timeout fails
// with 0074/0074 and that converse cancels the conversation it leaves.
func TestConverseTimeout(t *testing.T) {
	env, _ := echoEnv(t)
	ended := make(chan error, 1)
	env.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		for i := 0; ; i++ {
			m, err := c.Receive(ctx)
			if err != nil {
				ended <- err
				return nil
			}
			if i == 1 { // too slow for the second message
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
				}
			}
			if err := c.Reply(m.Data); err != nil {
				ended <- err // cancelled while busy: the reply finds it ended
				return nil
			}
		}
	}, worker.WithService("TEST/CONV/SLOW"))
	r := runApp(context.Background(), strings.NewReader("a\nb\nc\n"), "converse", serverFlag(env), "--timeout", "200ms", "TEST/CONV/SLOW")
	if exitCode(r.err) != 2 || !strings.Contains(r.err.Error(), proto.CodeWaitTimeout.String()) {
		t.Fatalf("err %v, want exit 2 with %s", r.err, proto.CodeWaitTimeout)
	}
	if got := r.stdout.String(); got != "a\n" {
		t.Fatalf("stdout %q, want %q", got, "a\n")
	}
	select {
	case err := <-ended:
		if !errors.Is(err, proto.ErrCancelled) {
			t.Fatalf("handler saw %v, want %v", err, proto.ErrCancelled)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("conversation not ended at the replica")
	}
}
