package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/internal/xdg"
)

// exitStatusHelp documents the exit codes in every command's help.
const exitStatusHelp = `EXIT STATUS:
   0  success
   1  error: bad usage, no connection, I/O …
   2  Muster answered with a coded error, printed as "muster: CCCC/NNNN description"`

// app builds the muster command. Tests run it with their own Reader,
// Writer and ErrWriter.
func app() *musterApp {
	a := &cli.App{
		Name:        "muster",
		Usage:       "run and use a Muster system: broker, replicas, calls and conversations",
		Version:     versionString(),
		Description: "Results go to stdout, diagnostics to stderr.\n\n" + exitStatusHelp,
		Commands: []*cli.Command{
			upCommand(),
			natsCommand(),
			brokerCommand(),
			attachCommand(),
			authCommand(),
			benchCommand(),
			callCommand(),
			converseCommand(),
			exampleCommand(),
			statusCommand(),
			serviceCommand(),
			hostCommand(),
			replicaCommand(),
			convCommand(),
			versionCommand(),
			completionCommand(),
		},
		// main reports errors and picks the exit status; the library must
		// never call os.Exit itself.
		ExitErrHandler:            func(*cli.Context, error) {},
		DisableSliceFlagSeparator: true, // -H 'X=a,b' is one header value
		EnableBashCompletion:      true, // muster completion bash|zsh|fish
	}
	a.OnUsageError = usageError
	a.Action = rootAction
	wrapActions(a.Commands)
	return &musterApp{a}
}

// wrapActions makes every command's action report Muster's coded errors
// as codedError, so main prints "CCCC/NNNN description" once, and makes
// usage errors plain errors (urfave/cli would print them to stdout).
//
// A command with subcommands refuses an unknown one (urfave/cli would
// exit 3, which is muster bench's status), and a command that takes no
// arguments refuses any.
func wrapActions(cmds []*cli.Command) {
	for _, c := range cmds {
		switch act := c.Action; {
		case len(c.Subcommands) > 0 && act == nil:
			c.Action = groupAction
		case act != nil && c.ArgsUsage == "" && len(c.Subcommands) == 0:
			c.Action = func(ctx *cli.Context) error {
				if ctx.NArg() > 0 {
					return fmt.Errorf("unexpected argument %q: %s takes none (see %s --help)", ctx.Args().First(), ctx.Command.HelpName, ctx.Command.HelpName)
				}
				return coded(act(ctx))
			}
		case act != nil:
			c.Action = func(ctx *cli.Context) error { return coded(act(ctx)) }
		}
		c.OnUsageError = usageError
		wrapActions(c.Subcommands)
	}
}

// rootAction runs for muster without a command: it shows the help, or
// refuses an unknown command.
func rootAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return unknownCommand(c, c.App.Name)
	}
	return cli.ShowAppHelp(c)
}

// groupAction is the same for a command with subcommands.
func groupAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return unknownCommand(c, c.Command.HelpName)
	}
	return cli.ShowSubcommandHelp(c)
}

func unknownCommand(c *cli.Context, parent string) error {
	return fmt.Errorf("unknown command %q (see %s --help)", c.Args().First(), parent)
}

// usageError reports a flag error, pointing at the help.
func usageError(c *cli.Context, err error, _ bool) error {
	return fmt.Errorf("%w (see %s --help)", err, c.Command.HelpName)
}

// codedError is a *proto.Error as the CLI reports it: without the
// library's "muster: " prefix (main adds its own) nor package prefixes in
// its description, exit status 2.
type codedError struct{ pe *proto.Error }

func (e *codedError) Error() string {
	if e.pe.Description == "" {
		return e.pe.Code.String()
	}
	return e.pe.Code.String() + " " + stripPrefixes(e.pe.Description)
}

func (e *codedError) Unwrap() error { return e.pe }

// coded turns an error that is a *proto.Error into a codedError. Commands
// return *proto.Error values unwrapped, so no context is lost.
func coded(err error) error {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return &codedError{pe: pe}
	}
	return err
}

// exitCode is the process exit status for err (see exitStatusHelp): 0
// for nil.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var pe *proto.Error
	if errors.As(err, &pe) {
		return 2
	}
	var tm *targetsMissedError
	if errors.As(err, &tm) {
		return 3
	}
	return 1 // also for urfave/cli's own exit errors ("No help topic", status 3)
}

// connect opens a NATS connection from connConfig.
func connect(c *cli.Context, name string, role auth.Role) (*nats.Conn, error) {
	nc, err := connConfig(c, name, role).Connect()
	if err != nil {
		return nil, connectHint(err, role)
	}
	return nc, nil
}

// connConfig is how the ConnFlags say to connect (natsconn.DefaultURL
// when --server and MUSTER_URL are unset, role's credentials of a local
// `muster up` when none are given), named for monitoring.
func connConfig(c *cli.Context, name string, role auth.Role) natsconn.Config {
	cfg := connConfigFromCLI(c)
	cfg.Name = name
	if cfg.CredsFile == "" && cfg.User == "" && cfg.Token == "" && cfg.NKeySeedFile == "" {
		cfg.CredsFile = defaultCreds(role)
	}
	return cfg
}

// defaultCreds is the .creds file of role that `muster up --secure` wrote
// in its default data directory, if there is one, else "": with it, the
// commands of the README work on a secured `muster up` without flags.
func defaultCreds(role auth.Role) string {
	dir, err := xdg.StateDir()
	if err != nil {
		return ""
	}
	p := filepath.Join(dir, "creds", string(role)+".creds")
	if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
		return ""
	}
	return p
}

// connFlags are natsFlags plus more.
func connFlags(more ...cli.Flag) []cli.Flag { return append(natsFlags(), more...) }

// logLevelFlag is --log-level, read by newLogger.
func logLevelFlag() cli.Flag {
	return &cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"MUSTER_LOG_LEVEL"}, Usage: "log `LEVEL`: debug, info, warn or error"}
}

// newLogger logs text to the app's stderr at --log-level.
func newLogger(c *cli.Context) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	return slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: lvl})), nil
}
