package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
)

// callCommand is `muster call SERVICE [DATA|-]`.
func callCommand() *cli.Command {
	return &cli.Command{
		Name:      "call",
		Usage:     "call a service once and print its reply",
		ArgsUsage: "CLASS/NAME/SERVICE [DATA|-]",
		Description: "Sends DATA (\"-\": stdin; none: an empty payload) and prints the reply\n" +
			"to stdout, with a newline added if it lacks one (--raw: the bytes as they came).\n" +
			"Flags may come before or after SERVICE; after \"--\" everything is an argument\n" +
			"(muster call SVC -- --json sends \"--json\").\n" +
			"--json prints the reply as a JSON string (invalid UTF-8 is replaced).\n" +
			"SIGINT, SIGTERM and SIGPIPE cancel the call at the replica that holds it.\n\n" + exitStatusHelp,
		Flags: connFlags(
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up after this long (queueing included)"},
			&cli.StringSliceFlag{Name: "header", Aliases: []string{"H"}, Usage: "request header `KEY=VALUE` (repeatable)"},
			&cli.BoolFlag{Name: "json", Usage: `print {"service","data","elapsed_ms"} (and "replica" when the reply names it) instead of the bare reply`},
			&cli.BoolFlag{Name: "raw", Usage: "print the reply's bytes unchanged, without adding a newline"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "say on stderr what the call went through: warm, or queued, a replica taking it, the reply, with times"},
		),
		Action: runCall,
	}
}

// callResult is the --json output of call.
type callResult struct {
	Service   string `json:"service"`
	Data      string `json:"data"`
	Replica   string `json:"replica,omitempty"` // only when the reply names it (call replies do not, to keep the warm path lean)
	ElapsedMS int64  `json:"elapsed_ms"`
}

func runCall(c *cli.Context) error {
	if c.NArg() < 1 || c.NArg() > 2 {
		return errors.New("call: want SERVICE [DATA|-]")
	}
	svc := c.Args().Get(0)
	if _, err := proto.ParseService(svc); err != nil {
		return err
	}
	if c.Bool("json") && c.Bool("raw") {
		return errors.New("call: --json and --raw are mutually exclusive")
	}
	hdr, err := parseHeaders(c.StringSlice("header"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, cancelSignals...)
	defer stop()
	var data []byte
	switch arg := c.Args().Get(1); arg {
	case "-":
		if data, err = readAll(ctx, c.App.Reader); err != nil {
			if ctx.Err() != nil && c.Context.Err() == nil {
				return errCallInterrupted // nothing was sent
			}
			return fmt.Errorf("read stdin: %w", err)
		}
	default:
		data = []byte(arg)
	}
	cl, closeClient, err := newClient(c, "muster call")
	if err != nil {
		return err
	}
	defer closeClient() // also sends what is still buffered: a CANCEL
	start := time.Now()
	var tr client.Trace
	if c.Bool("verbose") {
		ctx = client.WithTrace(ctx, &tr)
	}
	r, err := cl.CallMsg(ctx, svc, data, hdr)
	if c.Bool("verbose") {
		fmt.Fprintln(c.App.ErrWriter, describeTrace(tr, err))
	}
	if err != nil {
		if ctx.Err() != nil && c.Context.Err() == nil {
			return errCallInterrupted
		}
		return err
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, callResult{
			Service: svc, Data: string(r.Data), Replica: r.Header.Get(proto.HdrReplica),
			ElapsedMS: time.Since(start).Milliseconds(),
		})
	}
	if c.Bool("raw") {
		_, err := c.App.Writer.Write(r.Data)
		return err
	}
	return writeLine(c.App.Writer, r.Data)
}

// readAll reads r to its end, or until ctx ends (a read in progress then
// goes on in the background until the process exits).
func readAll(ctx context.Context, r io.Reader) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(r)
		ch <- result{b, err}
	}()
	select {
	case res := <-ch:
		return res.b, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// errCallInterrupted is what call returns after a signal (Ctrl-C): the
// call was cancelled, at the replica if one held it. Not a deadline.
var errCallInterrupted = errors.New("call: interrupted; cancelled")

// cancelSignals end `call` and `converse`, which then cancel their work at
// the replica. SIGPIPE is among them so that a write to a closed stdout
// (`muster converse … | head -1`) returns EPIPE instead of killing the
// process before it could cancel.
var cancelSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE}

// parseHeaders reads KEY=VALUE pairs. Muster's and NATS's own headers are
// refused: they steer the protocol.
func parseHeaders(kvs []string) (nats.Header, error) {
	h := nats.Header{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\r\n:") {
			return nil, fmt.Errorf("--header %q: want KEY=VALUE", kv)
		}
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "muster-") || strings.HasPrefix(lk, "nats-") || lk == "status" {
			return nil, fmt.Errorf("--header %q: %s is reserved", kv, k)
		}
		h[k] = append(h[k], v)
	}
	return h, nil
}

// writeLine writes b and a newline unless b ends with one.
func writeLine(w io.Writer, b []byte) error {
	if len(b) == 0 || b[len(b)-1] != '\n' {
		b = append(b[:len(b):len(b)], '\n')
	}
	_, err := w.Write(b)
	return err
}

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// newClient connects and makes a client with --timeout as its default
// deadline; closeClient undoes both.
func newClient(c *cli.Context, name string) (cl *client.Client, closeClient func(), err error) {
	nc, err := connect(c, name, auth.RoleClient)
	if err != nil {
		return nil, nil, err
	}
	if cl, err = client.New(nc, client.WithTimeout(c.Duration("timeout"))); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return cl, func() { _ = cl.Close(); nc.Close() }, nil
}

// describeTrace says what a call went through, for --verbose.
func describeTrace(t client.Trace, err error) string {
	since := func(at time.Time) string {
		return fmt.Sprintf("%.2f ms", float64(at.Sub(t.Sent).Microseconds())/1000)
	}
	var b strings.Builder
	b.WriteString("muster: call:")
	switch {
	case t.Sent.IsZero():
		b.WriteString(" not sent")
	case !t.Queued.IsZero():
		fmt.Fprintf(&b, " no free replica, queued by a broker after %s (seq %s)", since(t.Queued), t.Seq)
		if !t.Working.IsZero() {
			fmt.Fprintf(&b, "; replica %s took it after %s (cold start or a replica freed up)", t.Replica, since(t.Working))
		}
	default:
		b.WriteString(" warm: a running replica took it at once")
		if t.Replica != "" {
			fmt.Fprintf(&b, " (replica %s)", t.Replica)
		}
	}
	if !t.Reply.IsZero() {
		if err != nil {
			fmt.Fprintf(&b, "; error after %s", since(t.Reply))
		} else {
			fmt.Fprintf(&b, "; reply after %s", since(t.Reply))
		}
	}
	return b.String()
}
