package worker

import "errors"

// Errors of the worker SDK. Conversation outcomes are *proto.Error values
// (test them with errors.Is against proto.ErrEOC, proto.ErrCancelled …).
var (
	// ErrConfig is wrapped by every configuration error.
	ErrConfig = errors.New("worker: bad configuration")
	// ErrNotReplied is returned by Receive while the previous message
	// still waits for its reply.
	ErrNotReplied = errors.New("worker: previous message not replied")
	// ErrReplied is returned by Reply when there is nothing to reply to.
	ErrReplied = errors.New("worker: no message waiting for a reply")
)
