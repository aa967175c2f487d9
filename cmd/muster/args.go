package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// musterApp is the muster command: a *cli.App whose Run and RunContext
// first put the flags that follow positional arguments where urfave/cli
// v2 parses them (it stops at the first positional argument, so
// `muster call SVC --json` would send "--json" as data), and report errors
// in the user's words (see present).
type musterApp struct{ *cli.App }

// Run runs muster with os.Args-style args.
func (a *musterApp) Run(args []string) error { return a.RunContext(context.Background(), args) }

// RunContext runs muster with os.Args-style args under ctx.
func (a *musterApp) RunContext(ctx context.Context, args []string) error {
	args, err := reorderArgs(a.App, args)
	if err == nil {
		err = a.App.RunContext(ctx, args)
	}
	return present(err)
}

// completionFlag is the hidden last argument with which the shell
// completion scripts ask for candidates.
const completionFlag = "--generate-bash-completion"

// reorderArgs finds the command args run (args[0] is the program) and
// returns args with that command's flags, wherever they were, before its
// positional arguments, and "--" between the two, so that urfave/cli
// parses every flag and takes no flag for data. "--" ends the flags: what
// follows it is positional even if it starts with "-". A word that looks
// like a flag but is none of the command's is refused, naming it, before
// anything runs. Flags of parent commands (before the command's name) are
// left where they are.
func reorderArgs(a *cli.App, args []string) ([]string, error) {
	if len(args) < 2 || args[len(args)-1] == completionFlag {
		return args, nil
	}
	cmds, flags, path := a.Commands, a.Flags, a.Name
	for i := 1; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			return args, nil
		}
		if isFlagArg(arg) {
			if f := lookupFlag(flags, arg); f != nil && takesValue(f) && !strings.Contains(arg, "=") {
				i++ // its value
			}
			continue
		}
		var cmd *cli.Command
		for _, c := range cmds {
			if c.HasName(arg) {
				cmd = c
			}
		}
		if cmd == nil {
			return args, nil // an unknown command: the app reports it
		}
		path += " " + cmd.Name
		if len(cmd.Subcommands) > 0 {
			cmds, flags = cmd.Subcommands, cmd.Flags
			continue
		}
		rest, err := reorderCommandArgs(cmd, args[i+1:])
		if err != nil {
			return nil, fmt.Errorf("%w (see %s --help)", err, path)
		}
		return append(args[:i+1:i+1], rest...), nil
	}
	return args, nil
}

// reorderCommandArgs puts cmd's flags in args before its positional
// arguments, with "--" between them.
func reorderCommandArgs(cmd *cli.Command, args []string) ([]string, error) {
	var flagArgs, positional []string
	help := false
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if !isFlagArg(arg) {
			positional = append(positional, arg)
			continue
		}
		name, _, hasValue := strings.Cut(arg, "=")
		f := lookupFlag(cmd.Flags, arg)
		if f == nil && isHelpFlag(arg) {
			help = true
		} else if f == nil {
			if len(positional) > 0 {
				return nil, fmt.Errorf("unknown flag %s; to pass it as an argument, put -- before it", name)
			}
			return nil, fmt.Errorf("unknown flag %s", name)
		}
		flagArgs = append(flagArgs, arg)
		if f != nil && takesValue(f) && !hasValue {
			if i+1 == len(args) {
				return nil, fmt.Errorf("flag %s needs a value", name)
			}
			i++
			flagArgs = append(flagArgs, args[i])
		}
	}
	if len(positional) == 0 || help {
		// With --help, urfave/cli would take the first argument for
		// the name of a command to show the help of.
		return flagArgs, nil
	}
	return append(append(flagArgs, "--"), positional...), nil
}

// isFlagArg reports whether arg is a flag (or a flag's name=value): it
// starts with "-" and is not "-" alone (stdin) or "--".
func isFlagArg(arg string) bool { return len(arg) > 1 && arg[0] == '-' && arg != "--" }

// flagName is arg's name without its dashes and "=value". Go's flag
// package takes -name and --name alike.
func flagName(arg string) string {
	name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-"), "=")
	return name
}

// lookupFlag returns the flag among flags that arg names, or nil.
func lookupFlag(flags []cli.Flag, arg string) cli.Flag {
	name := flagName(arg)
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// isHelpFlag reports whether arg is --help or -h, which urfave/cli adds
// to every command.
func isHelpFlag(arg string) bool {
	n := flagName(arg)
	return !strings.Contains(arg, "=") && (n == "help" || n == "h")
}

// takesValue reports whether f needs a value (--timeout 5s), unlike a
// boolean flag (--json).
func takesValue(f cli.Flag) bool {
	v, ok := f.(interface{ TakesValue() bool })
	return ok && v.TakesValue()
}
