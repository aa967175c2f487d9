package proto

import (
	"errors"
	"fmt"
	"strconv"
)

// Code is an EntireX-style error code: class and number, written
// "CCCC/NNNN". The meanings follow EntireX Broker's, so that people who
// ran EntireX recognise them.
type Code struct {
	Class, Number uint16
}

// The codes Muster uses. Keep their meanings; add, never renumber.
var (
	CodeParticipantUnknown = Code{2, 2}     // replica unknown (timed out or never registered)
	CodeNoConversation     = Code{3, 3}     // no matching conversation
	CodeEOC                = Code{3, 5}     // partner finished the conversation (EOC)
	CodeDeregistered       = Code{3, 10}    // conversation ended because the replica deregistered
	CodeCancelled          = Code{3, 11}    // partner cancelled the conversation
	CodeLoggedOff          = Code{3, 12}    // conversation ended because the partner logged off (replica died)
	CodePartnerTimeout     = Code{3, 67}    // partner timeout
	CodeConvTimeout        = Code{3, 73}    // conversation timeout (CONV-NONACT)
	CodeNotRegistered      = Code{7, 7}     // service not registered, nothing can attach it
	CodeAttachRequired     = Code{10, 22}   // attach service required (the notification itself)
	CodeShutdownImmed      = Code{10, 50}   // shutdown IMMED required
	CodeShutdownQuiesce    = Code{10, 51}   // shutdown QUIESCE required
	CodeAfterEOC           = Code{20, 4}    // no function possible after EOC
	CodeReplicaLimit       = Code{21, 48}   // replica limit for the service reached
	CodeConvLimit          = Code{37, 41}   // conversation limit for the service reached
	CodeWaitTimeout        = Code{74, 74}   // wait timeout (deadline passed)
	CodeBrokerNotActive    = Code{215, 148} // broker not active (transport down)

	// Muster's own codes, in class 0900 (not used by EntireX).
	CodeBadRequest     = Code{900, 1} // malformed message (bad header, bad service name)
	CodePayloadTooBig  = Code{900, 2} // payload over the limit
	CodeServiceError   = Code{900, 3} // the service's handler returned an error
	CodeServiceFailing = Code{900, 4} // the service's replicas keep failing to start
	CodeUnavailable    = Code{900, 5} // temporarily unavailable, retry (NATS or JetStream recovering)
	CodeNotPermitted   = Code{900, 6} // the NATS server refused a publish or subscribe: the credentials lack the permission
)

// String renders the code as "CCCC/NNNN".
func (c Code) String() string { return fmt.Sprintf("%04d/%04d", c.Class, c.Number) }

// Int is the numeric form carried in Nats-Service-Error-Code:
// class*10000 + number (0007/0007 → 70007).
func (c Code) Int() int { return int(c.Class)*10000 + int(c.Number) }

// ErrBadCode is wrapped by ParseCode errors.
var ErrBadCode = errors.New("proto: bad error code")

// ParseCode parses "CCCC/NNNN" (each part 1–4 decimal digits).
func ParseCode(s string) (Code, error) {
	for i := 0; i < len(s); i++ {
		if s[i] != '/' {
			continue
		}
		c, err1 := parse4(s[:i])
		n, err2 := parse4(s[i+1:])
		if err1 != nil || err2 != nil {
			break
		}
		return Code{c, n}, nil
	}
	return Code{}, fmt.Errorf("%w: %q: want CCCC/NNNN", ErrBadCode, s)
}

func parse4(s string) (uint16, error) {
	if len(s) == 0 || len(s) > 4 {
		return 0, ErrBadCode
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, ErrBadCode
		}
	}
	v, err := strconv.ParseUint(s, 10, 16)
	return uint16(v), err
}

// Error is the one typed wire error. It travels in headers (HdrError,
// HdrServiceError, HdrServiceErrorCode) and is what the SDKs return, so
// callers test it with errors.Is against the Err* values below or with
// errors.As to read the code and description.
type Error struct {
	Code        Code
	Description string
	// Cause is the local error behind this one (a NATS transport error,
	// a context's error), for errors.Is and errors.As through Unwrap. It
	// never travels: SetError writes only Code and Description, so an
	// Error read from headers has no Cause.
	Cause error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Description == "" {
		return "muster: " + e.Code.String()
	}
	return "muster: " + e.Code.String() + " " + e.Description
}

// Is makes errors.Is(err, ErrConvTimeout) true for any *Error with that code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Code == e.Code
}

// Unwrap returns the Cause, so errors.Is(err, nats.ErrConnectionClosed)
// sees through an *Error that reports a closed connection.
func (e *Error) Unwrap() error { return e.Cause }

// Errorf builds an *Error with a formatted description. As with
// fmt.Errorf, a %w verb makes its operand the Cause (and formats it as %v).
func Errorf(c Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	e := &Error{Code: c, Description: err.Error()}
	switch err.(type) {
	case interface{ Unwrap() error }, interface{ Unwrap() []error }:
		e.Cause = err
	}
	return e
}

// Sentinels for errors.Is, one per code.
var (
	ErrParticipantUnknown = &Error{Code: CodeParticipantUnknown, Description: "participant unknown"}
	ErrNoConversation     = &Error{Code: CodeNoConversation, Description: "no matching conversation"}
	ErrEOC                = &Error{Code: CodeEOC, Description: "partner finished the conversation"}
	ErrDeregistered       = &Error{Code: CodeDeregistered, Description: "conversation ended because the replica deregistered"}
	ErrCancelled          = &Error{Code: CodeCancelled, Description: "partner cancelled the conversation"}
	ErrLoggedOff          = &Error{Code: CodeLoggedOff, Description: "conversation ended because the partner logged off"}
	ErrPartnerTimeout     = &Error{Code: CodePartnerTimeout, Description: "partner timeout"}
	ErrConvTimeout        = &Error{Code: CodeConvTimeout, Description: "conversation timeout"}
	ErrNotRegistered      = &Error{Code: CodeNotRegistered, Description: "service not registered"}
	ErrShutdownImmed      = &Error{Code: CodeShutdownImmed, Description: "shutdown IMMED required"}
	ErrShutdownQuiesce    = &Error{Code: CodeShutdownQuiesce, Description: "shutdown QUIESCE required"}
	ErrAfterEOC           = &Error{Code: CodeAfterEOC, Description: "no function possible after EOC"}
	ErrReplicaLimit       = &Error{Code: CodeReplicaLimit, Description: "replica limit for the service reached"}
	ErrConvLimit          = &Error{Code: CodeConvLimit, Description: "conversation limit for the service reached"}
	ErrWaitTimeout        = &Error{Code: CodeWaitTimeout, Description: "wait timeout"}
	ErrBrokerNotActive    = &Error{Code: CodeBrokerNotActive, Description: "broker not active"}
	ErrBadRequest         = &Error{Code: CodeBadRequest, Description: "malformed message"}
	ErrPayloadTooBig      = &Error{Code: CodePayloadTooBig, Description: "payload too big"}
	ErrServiceError       = &Error{Code: CodeServiceError, Description: "service error"}
	ErrServiceFailing     = &Error{Code: CodeServiceFailing, Description: "service failing"}
	ErrUnavailable        = &Error{Code: CodeUnavailable, Description: "temporarily unavailable, retry"}
)
