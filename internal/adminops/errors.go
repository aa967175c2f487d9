package adminops

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Sentinel errors, checked with errors.Is; the errors the functions
// return say what in their own words and wrap one of these.
var (
	// ErrNotFound: no live host, replica or service answered to that name.
	ErrNotFound = errors.New("adminops: not found")
	// ErrNotPermitted: the NATS server refused the request: the
	// connection lacks the admin role.
	ErrNotPermitted = errors.New("adminops: not permitted")
	// ErrInvalid: a malformed id, service name or scheme.
	ErrInvalid = errors.New("adminops: invalid argument")
)

// opError is an error with its own message that matches a sentinel.
type opError struct {
	msg  string
	kind error
}

func (e *opError) Error() string { return e.msg }
func (e *opError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &opError{msg: fmt.Sprintf(format, args...), kind: kind}
}

// requestError turns a request's failure into one that says what was
// asked of whom.
func requestError(what string, err error) error {
	switch {
	case errors.Is(err, nats.ErrPermissionViolation):
		return &opError{msg: fmt.Sprintf("%s: the NATS server refused it: the connection needs the admin role (admin.creds)", what), kind: ErrNotPermitted}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("%s: no answer in time (a connection without the admin role gets none): %w", what, err)
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}
