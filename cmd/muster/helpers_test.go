package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/worker"
)

// syncBuffer is a bytes.Buffer safe for a command writing in one
// goroutine while the test reads in another.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is what one run of the app produced.
type result struct {
	stdout, stderr *syncBuffer
	err            error
}

// runApp runs muster with args (without "muster") and stdin, under ctx.
func runApp(ctx context.Context, stdin io.Reader, args ...string) result {
	a := app()
	r := result{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	a.Reader, a.Writer, a.ErrWriter = stdin, r.stdout, r.stderr
	r.err = a.RunContext(ctx, append([]string{"muster"}, args...))
	return r
}

// run runs muster and fails the test on an error.
func run(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	r := runApp(context.Background(), stdin, args...)
	if r.err != nil {
		t.Fatalf("muster %s: %v (stderr %q)", strings.Join(args, " "), r.err, r.stderr)
	}
	return r.stdout.String()
}

// echoEnv starts NATS, a broker and one echo replica.
func echoEnv(t *testing.T, opts ...worker.Option) (*harness.Env, *harness.Replica) {
	t.Helper()
	env := harness.Start(t, broker.Config{})
	r := env.StartReplica(demo.Echo, append([]worker.Option{worker.WithService(demo.EchoService)}, opts...)...)
	return env, r
}

// serverFlag is --server pointing at env's NATS.
func serverFlag(env *harness.Env) string { return "--server=" + env.Server.ClientURL() }

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// discard is a logger that drops everything.
var discard = harness.Quiet

// waitReturn waits up to 30s for a command run in a goroutine to return
// after its context was cancelled, and returns its error.
func waitReturn(t *testing.T, done <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30s", what)
		return nil
	}
}
