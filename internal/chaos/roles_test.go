package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/musterhq/muster/attach"
	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/worker"
)

// The test binary runs as one of the system's processes when roleEnv is
// set: an attach manager, a broker or a replica.
const (
	roleEnv   = "CHAOS_ROLE"   // attach, broker, replica
	configEnv = "CHAOS_CONFIG" // the attach manager's config file
	execEnv   = "CHAOS_EXEC"   // the replicas' execution log: one request id per line
	runEnv    = "CHAOS_RUN"    // marks every process of one test, to find leftovers
	maxLife   = 3 * time.Minute
)

// runRole runs the role named by roleEnv and exits, if it is set.
func runRole() {
	role := os.Getenv(roleEnv)
	if role == "" {
		return
	}
	go func() { // nobody stopped it: never outlive the test run
		time.Sleep(maxLife)
		os.Exit(9)
	}()
	var err error
	switch role {
	case "replica":
		runReplica() // does not return
	case "attach":
		err = runAttach()
	case "broker":
		err = runBroker()
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos role", role+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// stopSignal returns a context that ends at SIGTERM, SIGINT or SIGHUP.
func stopSignal() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func runAttach() error {
	cfg, err := attach.LoadConfig(os.Getenv(configEnv))
	if err != nil {
		return err
	}
	conn := natsconn.FromEnv(os.LookupEnv)
	nc, err := conn.Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, stop := stopSignal()
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	m, err := attach.Start(startCtx, nc, cfg, attach.Options{Conn: conn, Logger: logger()})
	cancel()
	if err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return m.Shutdown(sctx)
}

func runBroker() error {
	nc, err := natsconn.FromEnv(os.LookupEnv).Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, stop := stopSignal()
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	b, err := broker.Start(startCtx, nc, broker.Config{Logger: logger()})
	cancel()
	if err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return b.Shutdown(sctx)
}

// runReplica serves the chaos service: the payload is "ID SLEEPMS"; the
// replica appends ID to the execution log, sleeps, and echoes the payload.
func runReplica() {
	f, err := os.OpenFile(os.Getenv(execEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	worker.Main(worker.HandlerFunc(func(ctx context.Context, c *worker.Conv) error {
		m, err := c.Receive(ctx)
		if err != nil {
			return err
		}
		id, sleep := parsePayload(m.Data)
		_, _ = io.WriteString(f, id+"\n") // one O_APPEND write: lines never interleave
		if sleep > 0 {
			select {
			case <-time.After(sleep):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return c.Reply(m.Data)
	}), worker.WithLogger(logger()))
}

func payload(id string, sleep time.Duration) []byte {
	return []byte(id + " " + strconv.FormatInt(sleep.Milliseconds(), 10))
}

func parsePayload(b []byte) (id string, sleep time.Duration) {
	id, ms, _ := strings.Cut(string(b), " ")
	n, _ := strconv.Atoi(ms)
	return id, time.Duration(n) * time.Millisecond
}
