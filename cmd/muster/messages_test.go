package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/testutil"
)

// packagePrefix matches an internal package prefix as the user would see it.
var packagePrefix = regexp.MustCompile(`(^|[:;(] ?)(proto|natsconn|natsutil|auth|client|attach|broker|worker|streams|kvwatch|embedded|nats|jetstream): `)

// TestMessagesForUsers: the errors muster prints carry no internal
// package prefix, name characters (not bytes) and say what to check.
func TestMessagesForUsers(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir()) // no default credentials of a local muster up
	noServer := "--server=nats://" + freeAddr(t)
	for _, tc := range []struct {
		name     string
		args     []string
		contains []string
	}{
		{"bad service (proto)", []string{"call", "DÉMO/ECHO/ECHO"}, []string{`bad service name: "DÉMO/ECHO/ECHO": class has character 'É'`}},
		{"long non-ASCII part counts characters", []string{"call", strings.Repeat("É", 20) + "/B/C"}, []string{"has character 'É'"}},
		{"bad id (proto)", []string{"replica", "stop", "bad.id"}, []string{`bad id: "bad.id" has character '.'`}},
		{"bad role (auth)", []string{"auth", "creds", "--dir", t.TempDir(), "bogus"}, []string{`unknown role "bogus"`}},
		{"no server (nats), client", []string{"call", noServer, "A/B/C"}, []string{"no servers available", "is `muster up` running?"}},
		{"no server (nats), admin", []string{"service", "ls", noServer}, []string{"is `muster up` running?"}},
		{"no server (nats), broker", []string{"broker", noServer}, []string{"is the NATS server running"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runApp(context.Background(), nil, tc.args...)
			if r.err == nil {
				t.Fatal("no error")
			}
			msg := r.err.Error()
			if m := packagePrefix.FindString(msg); m != "" {
				t.Errorf("error %q shows the package prefix %q", msg, m)
			}
			if strings.Contains(msg, "Ã") {
				t.Errorf("error %q shows a byte of a character", msg)
			}
			for _, want := range tc.contains {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if exitCode(r.err) != 1 {
				t.Errorf("exit %d, want 1", exitCode(r.err))
			}
		})
	}
}

// TestMessageNoCredentials: a client refused by a server that wants
// credentials is told to give them.
func TestMessageNoCredentials(t *testing.T) {
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	k, err := auth.LoadOrCreateKeys(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	s := testutil.StartSecureNATS(t, k)
	r := runApp(context.Background(), nil, "call", "--server", s.ClientURL(), "A/B/C")
	if r.err == nil || !strings.Contains(r.err.Error(), "give --creds") || packagePrefix.MatchString(r.err.Error()) {
		t.Fatalf("err %v, want a hint to give --creds and no package prefix", r.err)
	}
}

func TestPresent(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"proto: bad service name: \"x\": want CLASS/NAME/SERVICE", "bad service name: \"x\": want CLASS/NAME/SERVICE"},
		{"attach: state dir /x: auth: write /x/y: denied", "state dir /x: write /x/y: denied"},
		{"connect nats://h:4222: nats: no servers available for connection", "connect nats://h:4222: no servers available for connection"},
		{"client: closed (attach: gone)", "closed (gone)"},
		{"bench: unknown scenario \"x\"", "bench: unknown scenario \"x\""}, // a command's own prefix stays
		{"call: interrupted; cancelled", "call: interrupted; cancelled"},
	} {
		if got := present(errors.New(tc.in)).Error(); got != tc.want {
			t.Errorf("present(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// The shown error still unwraps: exit status and errors.Is work.
	pe := proto.Errorf(proto.CodeNotRegistered, "nats: gone")
	err := present(coded(pe))
	if !errors.Is(err, proto.ErrNotRegistered) || exitCode(err) != 2 || err.Error() != "0007/0007 gone" {
		t.Errorf("present(coded) = %v (exit %d)", err, exitCode(err))
	}
	if err := present(fmt.Errorf("connect: %w", nats.ErrNoServers)); !errors.Is(err, nats.ErrNoServers) {
		t.Errorf("present does not unwrap: %v", err)
	}
}
