package streams

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/musterhq/muster/internal/testutil"
)

// A request nobody answers yet (JetStream starting, a leader being
// elected) is sent again until it is answered; one that fails otherwise
// is not; and the retries end with the caller's context.
func TestRetry(t *testing.T) {
	nc := testutil.Connect(t, testutil.StartNATS(t))
	ctx := testutil.Context(t, 10*time.Second)
	tries := 0
	err := retry(ctx, func(ctx context.Context) error {
		tries++
		_, err := nc.RequestWithContext(ctx, "muster.test.api", nil)
		if tries == 2 { // the service comes up after the second try
			sub, serr := nc.Subscribe("muster.test.api", func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
			if serr != nil {
				t.Fatal(serr)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			_ = nc.Flush()
		}
		return err
	})
	if err != nil || tries != 3 {
		t.Fatalf("retry: %v after %d tries, want success at the 3rd", err, tries)
	}

	tries = 0
	permanent := errors.New("not allowed")
	if err := retry(ctx, func(context.Context) error { tries++; return permanent }); !errors.Is(err, permanent) || tries != 1 {
		t.Fatalf("a permanent error: %v after %d tries, want it after 1", err, tries)
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = retry(short, func(ctx context.Context) error {
		_, err := nc.RequestWithContext(ctx, "muster.test.nobody", nil)
		return err
	})
	if !(errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded)) || time.Since(start) > 2*time.Second {
		t.Fatalf("retries past the context: %v after %v", err, time.Since(start))
	}
}

// Looking up an asset just made tries "not found" again (a cluster node
// may not have applied the creation yet); a plain retry does not.
func TestRetryMade(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	tries := 0
	err := retryMade(ctx, func(context.Context) error {
		if tries++; tries < 3 {
			return jetstream.ErrStreamNotFound
		}
		return nil
	})
	if err != nil || tries != 3 {
		t.Fatalf("retryMade: %v after %d tries, want success at the 3rd", err, tries)
	}
	tries = 0
	if err := retry(ctx, func(context.Context) error { tries++; return jetstream.ErrBucketNotFound }); !errors.Is(err, jetstream.ErrBucketNotFound) || tries != 1 {
		t.Fatalf("retry of not found: %v after %d tries, want it after 1", err, tries)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := retryMade(short, func(context.Context) error { return jetstream.ErrBucketNotFound }); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("retryMade past its context: %v", err)
	}
}
