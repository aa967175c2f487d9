package broker

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestDupInProcessIsNotAnError: a repeat (Muster-Once) that reaches a
// clustered stream while the first copy is still being stored gets
// JetStream's 10158; the broker must stay silent then (the first copy's
// publish answers), not tell the caller 0215/0148. TestClusterPool met it
// after a node loss.
func TestDupInProcessIsNotAnError(t *testing.T) {
	in := fmt.Errorf("nats: %w", &jetstream.APIError{Code: 409, ErrorCode: 10158, Description: "duplicate message id is in process"})
	if !dupInProcess(in) {
		t.Fatalf("%v not taken for a repeat still in process", in)
	}
	for _, err := range []error{nil, &jetstream.APIError{Code: 400, ErrorCode: 10077}, jetstream.ErrNoStreamResponse} {
		if dupInProcess(err) {
			t.Fatalf("%v taken for a repeat in process", err)
		}
	}
}
