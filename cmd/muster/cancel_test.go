//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/worker"
)

// These tests run `muster call` and `muster converse` as real processes of
// this test binary (see TestMain) and end them the ways a user does: kill,
// Ctrl-C, a closed pipe. The replica must learn of it: within 2s for a
// conversation whose client is gone, at once for a cancelled call.

// endingEcho echoes conversation messages and reports, on ended, how its
// conversation ended.
func endingEcho(ended chan<- error) worker.HandlerFunc {
	return func(ctx context.Context, c *worker.Conv) error {
		for {
			m, err := c.Receive(ctx)
			if err != nil {
				ended <- err
				return nil
			}
			if err := c.Reply(m.Data); err != nil {
				ended <- err
				return nil
			}
		}
	}
}

// converseChild is `muster converse` running as a child process.
type converseChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *os.File // the read end of its stdout pipe
	lines  *bufio.Reader
	exited chan struct{} // closed when it has exited
}

func startConverse(t *testing.T, env *harness.Env, svc string) *converseChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "converse", serverFlag(env), "--timeout", "20s", svc)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close() // the child holds the write end now
	ch := &converseChild{cmd: cmd, stdin: stdin, stdout: r, lines: bufio.NewReader(r), exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(ch.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-ch.exited
		r.Close()
	})
	return ch
}

// say sends one line and returns the reply line.
func (ch *converseChild) say(t *testing.T, line string) string {
	t.Helper()
	if _, err := io.WriteString(ch.stdin, line+"\n"); err != nil {
		t.Fatal(err)
	}
	got, err := ch.lines.ReadString('\n')
	if err != nil {
		t.Fatalf("reply to %q: %v", line, err)
	}
	return got
}

// waitEnded waits up to 10s for the handler to report its end and checks
// it came within limit of since.
func waitEnded(t *testing.T, ended <-chan error, since time.Time, limit time.Duration, want error) {
	t.Helper()
	select {
	case err := <-ended:
		d := time.Since(since)
		t.Logf("replica's handler saw %v %v later", err, d)
		if want != nil && !errors.Is(err, want) {
			t.Fatalf("handler saw %v, want %v", err, want)
		}
		if d > limit {
			t.Fatalf("conversation ended %v later, want ≤ %v", d, limit)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("conversation still open at the replica 10s later")
	}
}

// A `muster converse` that dies (SIGKILL), is interrupted (SIGINT,
// SIGTERM) or loses its stdout (`| head -1`) frees its replica's slot
// within 2s.
func TestConverseClientGoneFreesReplica(t *testing.T) {
	env := harness.Start(t, broker.Config{})
	ended := make(chan error, 1)
	const svc = "T/CONV/GONE"
	env.StartReplica(endingEcho(ended), worker.WithService(svc))
	cases := []struct {
		name string
		end  func(t *testing.T, ch *converseChild)
		want error
	}{
		{"SIGKILL", func(t *testing.T, ch *converseChild) { _ = ch.cmd.Process.Signal(syscall.SIGKILL) }, proto.ErrLoggedOff},
		{"SIGINT", func(t *testing.T, ch *converseChild) { _ = ch.cmd.Process.Signal(syscall.SIGINT) }, proto.ErrCancelled},
		{"SIGTERM", func(t *testing.T, ch *converseChild) { _ = ch.cmd.Process.Signal(syscall.SIGTERM) }, proto.ErrCancelled},
		{"stdout closed", func(t *testing.T, ch *converseChild) {
			// yes | muster converse … | head -1: the reader goes, and
			// input keeps coming.
			ch.stdout.Close()
			go func() {
				for {
					if _, err := io.WriteString(ch.stdin, "y\n"); err != nil {
						return
					}
				}
			}()
		}, proto.ErrCancelled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := startConverse(t, env, svc)
			if got := ch.say(t, "a"); got != "a\n" {
				t.Fatalf("first reply %q", got)
			}
			if got := ch.say(t, "b"); got != "b\n" {
				t.Fatalf("second reply %q", got)
			}
			gone := time.Now()
			tc.end(t, ch)
			waitEnded(t, ended, gone, 2*time.Second, tc.want)
			select {
			case <-ch.exited:
			case <-time.After(10 * time.Second):
				t.Fatal("converse still running 10s later")
			}
		})
	}
}

// Ctrl-C on `muster call` cancels the call at the replica: the handler's
// context ends, and call says it was interrupted (exit status 1), not that
// a deadline passed.
func TestCallInterruptCancelsAtReplica(t *testing.T) {
	env := harness.Start(t, broker.Config{})
	took, ended := make(chan struct{}, 1), make(chan error, 1)
	const svc = "T/CALL/LONG"
	env.StartReplica(func(ctx context.Context, c *worker.Conv) error {
		if _, err := c.Receive(ctx); err != nil {
			return err
		}
		took <- struct{}{}
		select {
		case <-ctx.Done():
			ended <- ctx.Err()
		case <-time.After(30 * time.Second):
			ended <- errors.New("never cancelled")
		}
		return nil
	}, worker.WithService(svc))
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "call", serverFlag(env), "--timeout", "60s", svc, "long")
			stderr := &syncBuffer{}
			cmd.Stderr = stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
			select {
			case <-took:
			case <-time.After(10 * time.Second):
				t.Fatal("the call never reached the replica")
			}
			interrupted := time.Now()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-ended:
				t.Logf("handler's context ended (%v) %v after %v", err, time.Since(interrupted), sig)
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("handler: %v, want its context cancelled", err)
				}
				if d := time.Since(interrupted); d > time.Second {
					t.Fatalf("cancelled %v after the signal, want ≤ 1s", d)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("handler's context still live 10s after the interrupt")
			}
			select {
			case err := <-exited:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 {
					t.Fatalf("call exited with %v, want status 1", err)
				}
				// Reported as what it was, not as a missed deadline.
				if got := stderr.String(); got != "muster: call: interrupted; cancelled\n" {
					t.Errorf("stderr %q, want the interruption", got)
				}
				exited <- err
			case <-time.After(10 * time.Second):
				t.Fatal("call still running 10s after the interrupt")
			}
		})
	}
}

// blockingReader blocks its first Read until closed, closing reading
// when that Read begins.
type blockingReader struct {
	reading, closed chan struct{}
}

func (r *blockingReader) Read([]byte) (int, error) {
	close(r.reading)
	<-r.closed
	return 0, io.EOF
}

// Ctrl-C while `muster call SVC -` waits for stdin ends it at once, as
// interrupted, having sent nothing.
func TestCallInterruptWhileReadingStdin(t *testing.T) {
	stdin := &blockingReader{reading: make(chan struct{}), closed: make(chan struct{})}
	defer close(stdin.closed)
	done := make(chan result, 1)
	server := "--server=nats://" + freeAddr(t)
	go func() { done <- runApp(context.Background(), stdin, "call", server, "A/B/C", "-") }()
	select {
	case <-stdin.reading: // call's signal handler is in place before it reads
	case r := <-done:
		t.Fatalf("call returned before reading stdin: %v", r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("call never read stdin")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err == nil || r.err.Error() != "call: interrupted; cancelled" || exitCode(r.err) != 1 {
			t.Fatalf("err %v, want the interruption (exit 1)", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("call still waiting for stdin 10s after Ctrl-C")
	}
}
