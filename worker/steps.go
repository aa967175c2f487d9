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
		defer c.stepWG.Wait() // a step running inline (a CANCEL ends the wait in Receive at once)
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

// takeStepLocked takes the OLD nm for an inline step, if c serves with
// Steps and its goroutine waits in Receive with nothing unanswered (else
// the OLD goes to Receive, and Steps runs its step).
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

// runStep answers m, taken by takeStepLocked, on the calling goroutine.
// Steps waits in Receive meanwhile: when the step ends the conversation,
// runStep wakes it.
func (c *Conv) runStep(m *Message) {
	defer c.stepWG.Done()
	reply, end, err := safeStep(c.stepCtx, c.step, m)
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
	c.stepBusy = false
	if c.ended != nil {
		c.mu.Unlock()
		select { // wake Steps in Receive: the conversation is over
		case c.in <- nil:
		default:
		}
		return
	}
	if c.pending == nil {
		c.waitSince = time.Now()
	}
	c.mu.Unlock()
}
