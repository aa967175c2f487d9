package client

import "errors"

// ErrClosed is the Cause of the error every method returns once Close was
// called, including calls and conversation messages that were waiting at
// that moment; that error's code is 0215/0148 (proto.ErrBrokerNotActive).
var ErrClosed = errors.New("client: closed")

// errNoResponders marks a NATS 503: nobody subscribed to the subject. The
// client handles it itself (the warm path falls back to the broker); it is
// never returned.
var errNoResponders = errors.New("client: no responders")
