package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/testutil"
)

func TestExample(t *testing.T) {
	tests := []struct {
		name, example, envService, call, data, want string
	}{
		{"echo", "echo", "", demo.EchoService, "hi", "hi\n"},
		{"sleep", "sleep", "", sleepService, "1ms", "slept 1ms\n"},
		{"echo under MUSTER_SERVICE", "echo", "TEST/OTHER/ECHO", "TEST/OTHER/ECHO", "hi", "hi\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(proto.EnvService, tt.envService)
			t.Setenv(proto.EnvReplicaID, "r-example")
			env := harness.Start(t, broker.Config{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stderr := &syncBuffer{}
			done := make(chan error, 1)
			go func() {
				a := app()
				a.Reader, a.Writer, a.ErrWriter = strings.NewReader(""), io.Discard, stderr
				done <- a.RunContext(ctx, []string{"muster", "example", tt.example, serverFlag(env)})
			}()
			// Wait for the replica's log line: besides readiness, reading it
			// through the mutex orders the example's flag parsing before
			// ours (see startUp).
			testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if !strings.Contains(stderr.String(), "replica ready") {
					return fmt.Errorf("replica not ready; stderr:\n%s", stderr)
				}
				return nil
			})
			if got := run(t, nil, "call", serverFlag(env), tt.call, tt.data); got != tt.want {
				t.Fatalf("stdout %q, want %q", got, tt.want)
			}
			if out := run(t, nil, "replica", "ls", serverFlag(env)); !strings.Contains(out, "r-example") {
				t.Fatalf("replica ls:\n%s", out)
			}
			cancel()
			if err := waitReturn(t, done, "example"); err != nil {
				t.Fatalf("example returned %v", err)
			}
		})
	}
}

func TestExampleBadEnvironment(t *testing.T) {
	t.Setenv(proto.EnvCapacity, "lots")
	env := harness.Start(t, broker.Config{})
	r := runApp(context.Background(), nil, "example", "echo", serverFlag(env))
	if r.err == nil || !strings.Contains(r.err.Error(), proto.EnvCapacity) {
		t.Fatalf("err %v, want one naming %s", r.err, proto.EnvCapacity)
	}
}
