package main

import (
	"errors"
	"regexp"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/internal/auth"
)

// internalPrefix matches the package prefix of a library error ("proto:
// bad service name", "nats: no servers available …") at the start of the
// message or of one of its parts. Go convention puts it there; a user has
// no use for it.
var internalPrefix = regexp.MustCompile(`(^|: |; |\()(?:proto|natsconn|natsutil|auth|client|attach|broker|worker|streams|kvwatch|embedded|statedir|logrot|proc|xdg|nats|jetstream): `)

// present returns err as muster shows it: without the libraries' package
// prefixes. It still unwraps to err, so exitCode and errors.Is see
// through it.
func present(err error) error {
	if err == nil {
		return nil
	}
	msg := stripPrefixes(err.Error())
	if msg == err.Error() {
		return err
	}
	return &shownError{msg: msg, err: err}
}

// stripPrefixes removes every internal package prefix from msg.
func stripPrefixes(msg string) string {
	for {
		out := internalPrefix.ReplaceAllString(msg, "$1")
		if out == msg {
			return out
		}
		msg = out
	}
}

// shownError is an error with the message muster shows for it.
type shownError struct {
	msg string
	err error
}

func (e *shownError) Error() string { return e.msg }
func (e *shownError) Unwrap() error { return e.err }

// connectHint adds what to check to a failed connection of role: a
// client's or admin's "no servers" most likely means no `muster up`; a
// refused login means missing or wrong credentials.
func connectHint(err error, role auth.Role) error {
	var hint string
	switch {
	case errors.Is(err, nats.ErrNoServers) && (role == auth.RoleClient || role == auth.RoleAdmin):
		hint = "is `muster up` running? Else give --server or MUSTER_URL"
	case errors.Is(err, nats.ErrNoServers):
		hint = "is the NATS server running and reachable?"
	case errors.Is(err, nats.ErrAuthorization):
		hint = "the server wants other credentials: give --creds (`muster up` writes them to DATA/creds/" + string(role) + ".creds)"
	default:
		return err
	}
	return &shownError{msg: err.Error() + " (" + hint + ")", err: err}
}
