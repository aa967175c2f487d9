package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/internal/picture"
	"github.com/musterhq/muster/internal/testutil"
)

func TestBroker(t *testing.T) {
	s := testutil.StartNATS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		a := app()
		a.Reader, a.Writer, a.ErrWriter = strings.NewReader(""), io.Discard, stderr
		done <- a.RunContext(ctx, []string{"muster", "broker", "--server", s.ClientURL(), "--log-level", "warn"})
	}()
	// Reading the banner through the mutex also orders the broker's flag
	// parsing before ours (see startUp).
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(stderr.String(), "muster broker ") {
			return fmt.Errorf("broker not started; stderr:\n%s", stderr)
		}
		return nil
	})
	var p picture.Picture
	if err := json.Unmarshal([]byte(run(t, nil, "status", "--server", s.ClientURL(), "--json")), &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Brokers) != 1 || !strings.Contains(stderr.String(), "muster broker "+p.Brokers[0].ID+" ") || p.Brokers[0].Version == "" {
		t.Fatalf("brokers %+v answered; stderr:\n%s", p.Brokers, stderr)
	}
	cancel()
	if err := waitReturn(t, done, "broker"); err != nil {
		t.Fatalf("broker returned %v", err)
	}
}

func TestBrokerNoServer(t *testing.T) {
	r := runApp(context.Background(), nil, "broker", "--server", "nats://"+freeAddr(t))
	if r.err == nil || exitCode(r.err) != 1 {
		t.Fatalf("err %v, want exit 1", r.err)
	}
}
