package worker_test

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/streams"
	"github.com/musterhq/muster/internal/testutil"
)

// A replica process whose NATS server is gone exits promptly on SIGTERM:
// at once when idle, after its grace when a handler does not return; it
// never waits on drains, forwards or a deregistration that cannot complete.
func TestReplicaWithoutNATSExitsOnSIGTERM(t *testing.T) {
	const grace = 2 * time.Second
	for _, busy := range []bool{false, true} {
		name := "idle"
		if busy {
			name = "busy"
		}
		t.Run(name, func(t *testing.T) {
			s := testutil.StartNATS(t)
			nc := testutil.Connect(t, s)
			js, _ := jetstream.New(nc)
			if _, err := streams.EnsureBucket(testutil.Context(t, 5*time.Second), js, proto.ReplicaBucket); err != nil {
				t.Fatal(err)
			}
			svc, id := "T/NO/NATS", "nonats-"+name
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "MUSTER_TEST_HELPER=echo", "MUSTER_URL="+s.ClientURL(),
				"MUSTER_SERVICE="+svc, "MUSTER_REPLICA_ID="+id, "MUSTER_HEARTBEAT=200ms",
				"MUSTER_GRACE="+grace.String(), "GORACE=atexit_sleep_ms=0")
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-done
			})
			testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
				if _, ok := replicaRecord(t, nc, id); !ok {
					return errors.New("replica not registered")
				}
				return nil
			})
			if busy {
				c, err := client.New(testutil.Connect(t, s))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				ctx := testutil.Context(t, 20*time.Second)
				cv, _, err := c.Open(ctx, svc, []byte("a"))
				if err != nil {
					t.Fatal(err)
				}
				go func() { _, _ = cv.Send(ctx, []byte("hang")) }()
				testutil.CheckFor(t, 5*time.Second, 5*time.Millisecond, func() error {
					if ri, _ := replicaRecord(t, nc, id); ri.Stats.Messages < 2 || ri.Active != 1 {
						return errors.New("hang not taken yet")
					}
					return nil
				})
			}
			s.Shutdown()
			s.WaitForShutdown()
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			var err error
			select {
			case err = <-done:
				done <- err
			case <-time.After(20 * time.Second):
				t.Fatal("replica still running 20s after SIGTERM")
			}
			took := time.Since(sent)
			t.Logf("%s replica without NATS exited %v after SIGTERM (grace %v)", name, took.Round(time.Millisecond), grace)
			if err != nil {
				t.Errorf("replica exited with %v, want a clean exit", err)
			}
			switch {
			case !busy && took > time.Second:
				t.Errorf("idle replica took %v to exit, want within 1s", took)
			case busy && (took < grace-100*time.Millisecond || took > grace+time.Second):
				t.Errorf("busy replica took %v to exit, want its grace (%v) and at most 1s more", took, grace)
			}
		})
	}
}
