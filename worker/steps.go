package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/proto"
)

// StepFunc answers one message of a call or conversation: reply is the
// answer, end ends the conversation with it (as ReplyEnd does), and a
// non-nil error ends the conversation with that error instead of a reply
// (a *proto.Error keeps its code; any other error is 0900/0003, as a
// handler's). A panic is a 0900/0003 too. ctx is the one given to Steps:
// it is cancelled when the conversation is (CANCEL, IMMED, a lost client).
// m.Data is only valid until step returns.
type StepFunc func(ctx context.Context, m *Message) (reply []byte, end bool, err error)

// Steps serves c one message at a time with step, until the conversation
// ends: the handler's loop of Receive and Reply, written as one function
// per message. The conversation's state lives in step's closure.
//
//	func(ctx context.Context, c *worker.Conv) error {
//		n := 0
//		return c.Steps(ctx, func(ctx context.Context, m *worker.Message) ([]byte, bool, error) {
//			n++
//			return m.Data, n == 10, nil
//		})
//	}
//
// It is also faster: after the opening message, the replica runs step
// for each OLD on the goroutine that received it (as a raw NATS
// responder answers in its subscription's callback) instead of handing
// the message to the handler's goroutine and waiting for its reply. A
// step that runs longer than a millisecond holds up nothing else: the
// replica then reads its other messages on a new goroutine (private.go).
// Steps of one conversation never run concurrently, and Steps returns
// only after the last one has.
//
// Steps returns nil when the conversation ended normally (the client's
// EOC, or a step that ended it), else why it ended as Receive reports it
// (proto.ErrCancelled, proto.ErrConvTimeout, proto.ErrShutdownImmed, ctx's
// error) or the step's error. A handler returns what Steps returns.
func (c *Conv) Steps(ctx context.Context, step StepFunc) error {
	if !c.call {
		c.mu.Lock()
		c.step, c.stepCtx = step, ctx
		c.mu.Unlock()
		defer c.stopSteps()
	}
	for {
		m, err := c.Receive(ctx)
		if err != nil {
			if errors.Is(err, proto.ErrEOC) {
				return nil
			}
			return err
		}
		reply, end, err := safeStep(ctx, step, m)
		if err != nil {
			return err // finish answers the message with it
		}
		if end || c.call {
			return c.reply(reply, true)
		}
		if err := c.Reply(reply); err != nil {
			return err
		}
	}
}

// safeStep runs step, turning a panic into a service error as safeServe
// does for handlers.
func safeStep(ctx context.Context, step StepFunc, m *Message) (reply []byte, end bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = proto.Errorf(proto.CodeServiceError, "handler panicked: %v", p)
		}
	}()
	return step(ctx, m)
}

// stopSteps runs as Steps returns: no step is taken inline from now on,
// and it waits for one that runs (a CANCEL ends the wait in Receive at
// once, while the step may still run).
func (c *Conv) stopSteps() {
	c.mu.Lock()
	c.step, c.stepCtx = nil, nil
	c.waitSince = time.Time{}
	c.mu.Unlock()
	c.stepWG.Wait()
}

// takeStepLocked takes the OLD nm for an inline step, if c serves with
// Steps and its goroutine waits in Receive with nothing unanswered (else
// the OLD goes to Receive, and Steps runs its step). The caller runs it
// with runStep(m, c.step, c.stepCtx), read under the same lock.
func (c *Conv) takeStepLocked(nm *nats.Msg) *Message {
	if c.step == nil || c.stepBusy || c.waitSince.IsZero() || c.pending != nil || c.ended != nil {
		return nil
	}
	c.stepWG.Add(1)
	m, _ := c.r.message(nm) // a bare OLD or one with headers: its deadline is not the step's concern
	c.waitSince = time.Time{}
	c.takeLocked(m, nm.Reply)
	c.stepBusy = true
	return m
}

// holdStepLocked keeps an OLD that came while a step runs inline (the
// client sent it before the answer to the last one reached it, say after
// its own wait timed out): it runs after that step, as a Receive loop
// would take it after the reply. It reports false when one waits already.
func (c *Conv) holdStepLocked(nm *nats.Msg) bool {
	if c.stepNext != nil {
		return false
	}
	c.stepNext = nm
	return true
}

// runStep answers m, taken by takeStepLocked, with step on the calling
// goroutine, then the OLD held meanwhile (holdStepLocked), if any. Steps
// waits in Receive meanwhile; when a step ends the conversation, runStep
// wakes it.
func (c *Conv) runStep(m *Message, step StepFunc, ctx context.Context) {
	defer c.stepWG.Done()
	for m != nil {
		m = c.step1(m, step, ctx)
	}
}

// step1 runs one step and returns the next message to run, if any.
func (c *Conv) step1(m *Message, step StepFunc, ctx context.Context) (next *Message) {
	reply, end, err := safeStep(ctx, step, m)
	switch {
	case err != nil:
		e := asWireError(err)
		c.mu.Lock()
		if c.pending == m {
			to := c.replyTo
			c.pending, c.replyTo = nil, ""
			c.r.replyError(to, e)
			c.endLocked(e)
		}
		c.mu.Unlock()
		c.r.stats.errors.Add(1)
		c.r.stats.lastError.Store(err.Error())
	default:
		_ = c.reply(reply, end)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if nm := c.stepNext; nm != nil { // (an end answered it already: endLocked)
		c.stepNext = nil
		if c.step != nil {
			next, _ = c.r.message(nm)
			c.takeLocked(next, nm.Reply)
			return next // still busy
		}
		select { // Steps is returning: its handler's end answers it
		case c.in <- nm:
		default:
			c.r.replyError(nm.Reply, errTwoAhead)
		}
	}
	c.stepBusy = false
	if c.ended != nil {
		select { // wake Steps in Receive: the conversation is over
		case c.in <- nil:
		default:
		}
		return nil
	}
	if c.pending == nil && c.step != nil {
		c.waitSince = time.Now() // Steps waits for the client again (CONV-NONACT)
	}
	return nil
}

// errTwoAhead answers a message sent while two before it wait for their
// answers.
var errTwoAhead = proto.Errorf(proto.CodeBadRequest, "message sent before the previous one was answered")
