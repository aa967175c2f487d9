package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
)

// maxLine is the longest stdin line converse sends (NATS's default max
// payload).
const maxLine = 1 << 20

// converseCommand is `muster converse SERVICE`.
func converseCommand() *cli.Command {
	return &cli.Command{
		Name:      "converse",
		Usage:     "hold a conversation: one message per stdin line, one reply per stdout line",
		ArgsUsage: "CLASS/NAME/SERVICE",
		Description: "The first stdin line opens the conversation, each further line is the next\n" +
			"message, and end of input ends the conversation. If the replica ends it,\n" +
			"converse stops reading and exits 0. SIGINT, SIGTERM and a closed stdout\n" +
			"(SIGPIPE) cancel it at the replica; if converse dies without a word\n" +
			"(SIGKILL), the replica ends it when its keepalives stop (within 2s).\n\n" + exitStatusHelp,
		Flags: connFlags(
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up on a message's reply after this long"},
		),
		Action: runConverse,
	}
}

func runConverse(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("converse: want SERVICE")
	}
	svc := c.Args().First()
	if _, err := proto.ParseService(svc); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, cancelSignals...)
	defer stop()
	cl, closeClient, err := newClient(c, "muster converse")
	if err != nil {
		return err
	}
	defer closeClient()

	done := make(chan struct{})
	defer close(done)
	lines := readLines(c, done)
	first, ok, err := nextLine(ctx, lines)
	if err != nil || !ok {
		if err == nil {
			err = errors.New("converse: no input: the first stdin line opens the conversation")
		}
		return err
	}
	conv, reply, err := cl.Open(ctx, svc, first)
	if err != nil {
		if ctx.Err() != nil && c.Context.Err() == nil {
			return errInterrupted // the client cancelled the NEW at the replica
		}
		return err
	}
	for {
		if err := writeLine(c.App.Writer, reply); err != nil {
			abandon(conv)
			if errors.Is(err, syscall.EPIPE) {
				return errors.New("converse: stdout closed; conversation cancelled")
			}
			return err
		}
		if err := conv.Ended(); err != nil {
			if errors.Is(err, proto.ErrEOC) {
				return nil // the replica ended it
			}
			return err
		}
		line, ok, err := nextLine(ctx, lines)
		if err != nil { // interrupted, or stdin failed
			abandon(conv)
			return err
		}
		if !ok {
			ectx, cancel := context.WithTimeout(context.Background(), finishTimeout)
			err := conv.End(ectx)
			cancel()
			return err
		}
		mctx, cancel := context.WithTimeout(ctx, c.Duration("timeout"))
		reply, err = conv.Send(mctx, line)
		cancel()
		if err != nil {
			abandon(conv) // a timeout leaves it open at the replica
			if ctx.Err() != nil && c.Context.Err() == nil {
				return errInterrupted
			}
			return err
		}
	}
}

// errInterrupted is what converse returns after a signal; the
// conversation was cancelled at the replica.
var errInterrupted = errors.New("converse: interrupted; conversation cancelled")

// finishTimeout bounds ending or cancelling a conversation.
const finishTimeout = 5 * time.Second

// abandon cancels conv if it is still open, best effort: the error that
// made converse give up is the one worth reporting.
func abandon(conv *client.Conv) {
	if conv.Ended() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
	defer cancel()
	_ = conv.Cancel(ctx)
}

// line is one stdin line, or the error that ended reading.
type line struct {
	data []byte
	err  error
}

// readLines reads stdin in its own goroutine, so a signal can interrupt
// the wait for the next line. The goroutine ends at end of input, on a
// read error, or when done is closed; a read in progress cannot be
// interrupted, so it ends when that read returns (at the latest when the
// process exits).
func readLines(c *cli.Context, done <-chan struct{}) <-chan line {
	ch := make(chan line)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(c.App.Reader)
		sc.Buffer(make([]byte, 0, 64*1024), maxLine)
		send := func(l line) bool {
			select {
			case ch <- l:
				return true
			case <-done:
				return false
			}
		}
		for sc.Scan() {
			if !send(line{data: append([]byte(nil), sc.Bytes()...)}) {
				return
			}
		}
		if err := sc.Err(); err != nil {
			send(line{err: fmt.Errorf("read stdin: %w", err)})
		}
	}()
	return ch
}

// nextLine returns the next stdin line; ok is false at end of input.
func nextLine(ctx context.Context, lines <-chan line) (data []byte, ok bool, err error) {
	select {
	case l, open := <-lines:
		if !open {
			return nil, false, nil
		}
		return l.data, l.err == nil, l.err
	case <-ctx.Done():
		return nil, false, errInterrupted
	}
}
