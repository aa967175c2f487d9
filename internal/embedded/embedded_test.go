package embedded

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestStartEmbeddedPersistent(t *testing.T) {
	store := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// run starts a server on store, hands a JetStream context to fn, and
	// shuts everything down before returning.
	run := func(fn func(js jetstream.JetStream)) {
		t.Helper()
		s, err := Start(Config{Listen: "127.0.0.1:0", StoreDir: store})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { s.Shutdown(); s.WaitForShutdown() }()
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		fn(js)
	}

	run(func(js jetstream.JetStream) {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.FileStorage,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = js.Publish(ctx, "orders.1", []byte("one"))
		if err != nil {
			t.Fatal(err)
		}
	})
	run(func(js jetstream.JetStream) {
		st, err := js.Stream(ctx, "ORDERS")
		if err != nil {
			t.Fatalf("stream after restart: %v", err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 1 || !slices.Equal(info.Config.Subjects, []string{"orders.>"}) {
			t.Errorf("after restart: %d msgs, subjects %q; want 1 msg on orders.>", info.State.Msgs, info.Config.Subjects)
		}
		msg, err := st.GetMsg(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if string(msg.Data) != "one" {
			t.Errorf("message data %q, want one", msg.Data)
		}
	})
}

func TestStartEmbeddedPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	start := time.Now()
	_, err = Start(Config{Listen: l.Addr().String(), StoreDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("err %v, want address already in use", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to report a taken port", d)
	}
}
