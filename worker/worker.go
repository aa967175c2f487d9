// Package worker is the SDK for writing Muster replicas. A replica serves
// one service (CLASS/NAME/SERVICE): it registers, takes calls and
// conversations from the warm path and from the durable queue, heartbeats,
// and exits on its own after an idle timeout or at end of conversation.
//
//	func main() {
//		worker.Main(worker.HandlerFunc(func(ctx context.Context, c *worker.Conv) error {
//			m, err := c.Receive(ctx)
//			if err != nil {
//				return err
//			}
//			return c.Reply(m.Data)
//		}))
//	}
//
// Settings come from the environment an attach manager sets (MUSTER_*),
// overridden by options.
package worker

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Handler serves one call or conversation.
type Handler interface {
	Serve(ctx context.Context, c *Conv) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c *Conv) error

// Serve calls f.
func (f HandlerFunc) Serve(ctx context.Context, c *Conv) error { return f(ctx, c) }

// Run serves h until the replica exits: after its idle timeout, at end of
// conversation (WithExitAfterConversation), on a QUIESCE or IMMED request,
// on SIGTERM/SIGINT, or when ctx is done. Exiting quiesces first: no new
// conversations, open ones get the grace period, then they are ended
// (clients get 0003/0010) and the registration is removed. Run returns nil
// after a clean exit, or the error that kept it from starting.
func Run(ctx context.Context, h Handler, opts ...Option) error {
	cfg, err := resolve(osLookup, opts)
	if err != nil {
		return err
	}
	nc := cfg.conn
	if nc == nil {
		connCfg := cfg.connCfg
		if connCfg.URL == "" {
			return fmt.Errorf("%w: no NATS URL: set MUSTER_URL or use WithURL/WithConn", ErrConfig)
		}
		if connCfg.Name == "" {
			connCfg.Name = "muster-replica " + cfg.service.String()
		}
		if nc, err = connCfg.Connect(); err != nil {
			return err
		}
		defer nc.Close()
	}
	var sig chan os.Signal
	if cfg.signals {
		sig = make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(sig)
		// An attach manager reads our stdout and stderr through a pipe; if
		// it dies, a log line must not kill us mid-conversation (Go's
		// default for a broken pipe on fd 1 or 2). The next manager stops
		// us gracefully instead.
		signal.Ignore(syscall.SIGPIPE)
	}
	var usr1 chan os.Signal
	if cfg.signals && cfg.standby {
		// The attach manager that started this standby activates it (only
		// once its record says "standby", which start writes: the handler
		// is in place before that, so the signal cannot kill us).
		usr1 = make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		defer signal.Stop(usr1)
	}
	var usr2 chan os.Signal
	if cfg.signals && cfg.standby && cfg.armFile != "" {
		// And arms or disarms it (standby.go): the file says which, so
		// signals that coalesce lose nothing.
		usr2 = make(chan os.Signal, 1)
		signal.Notify(usr2, syscall.SIGUSR2)
		defer signal.Stop(usr2)
	}
	r := newReplica(cfg, h, nc)
	defer r.watchRefusals()()
	if err := r.start(ctx); err != nil {
		return err
	}
	cfg.logger.Info("replica ready", "capacity", cfg.capacity, "idle_timeout", cfg.idleTimeout)
	if cfg.ready != nil {
		cfg.ready()
	}
wait:
	for {
		select {
		case <-ctx.Done():
			r.quiesce("context done")
		case s := <-sig:
			r.quiesce("signal " + s.String())
		case <-usr1:
			r.activate("SIGUSR1 from the attach manager")
			continue
		case <-usr2:
			r.rearm()
			continue
		case <-r.stop:
		}
		break wait
	}
	r.shutdown(cfg.grace)
	r.mu.Lock()
	reason := r.exitReason
	r.mu.Unlock()
	cfg.logger.Info("replica exited", "reason", reason)
	return nil
}

// Main runs h with settings from the environment and exits the process:
// status 0 after a clean exit, 1 (with the error on stderr) otherwise.
func Main(h Handler, opts ...Option) {
	if err := Run(context.Background(), h, opts...); err != nil {
		fmt.Fprintln(os.Stderr, "muster worker:", err)
		os.Exit(1)
	}
	os.Exit(0)
}
