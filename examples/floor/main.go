// Command floor is the physical floor of a cold start, with no Muster code:
// a process that connects to NATS, subscribes to one subject, answers what
// it receives, and exits after its first reply. `muster bench cold`
// exec's it the way an attach manager exec's a replica and times exec →
// first reply: what no attach manager can beat on this machine.
//
//	MUSTER_URL=nats://127.0.0.1:4222 FLOOR_SUBJECT=floor.x go run ./examples/floor
//
// It reads MUSTER_URL and, when set, MUSTER_CREDS (a .creds file) — the
// variables an attach manager passes — and FLOOR_SUBJECT. With FLOOR_STAY=1
// it answers until killed instead (`muster bench standby` times a request
// to it after it sat idle: the floor of a parked process). It imports
// nothing but nats.go.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

func main() {
	subject := os.Getenv("FLOOR_SUBJECT")
	if subject == "" {
		fmt.Fprintln(os.Stderr, "floor: set FLOOR_SUBJECT")
		os.Exit(1)
	}
	url := os.Getenv("MUSTER_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	var opts []nats.Option
	if c := os.Getenv("MUSTER_CREDS"); c != "" {
		opts = append(opts, nats.UserCredentials(c))
		// Muster's permissions let a user read only its own inbox; this
		// process only answers, so it needs none.
	}
	nc, err := nats.Connect(strings.TrimSpace(url), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	done := make(chan struct{})
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		_ = m.Respond(m.Data)
		select {
		case <-done:
		default:
			close(done)
		}
	}); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	if err := nc.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	if os.Getenv("FLOOR_STAY") == "1" {
		select {} // until killed
	}
	<-done
	_ = nc.Flush() // the reply out before the process goes (Drain would not wait)
	nc.Close()
}
