package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// completionCommand is `muster completion bash|zsh|fish`.
func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "bash: source <(muster completion bash)    (in ~/.bashrc; needs the bash-completion package)\n" +
			"zsh:  source <(muster completion zsh)     (in ~/.zshrc, after compinit)\n" +
			"fish: muster completion fish > ~/.config/fish/completions/muster.fish\n" +
			"The scripts ask muster itself for the commands and flags, so they stay current.\n\n" + exitStatusHelp,
		Action: runCompletion,
	}
}

func runCompletion(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("completion: want bash, zsh or fish")
	}
	var script string
	switch sh := c.Args().First(); sh {
	case "bash":
		script = bashCompletion
	case "zsh":
		script = zshCompletion
	case "fish":
		// From a new app: the running one's commands hold urfave/cli's
		// shared help command, which earlier runs in the same process
		// (tests) can leave holding itself: ToFishCompletion would recurse
		// without end.
		s, err := app().ToFishCompletion()
		if err != nil {
			return fmt.Errorf("completion: fish: %w", err)
		}
		script = s
	default:
		return fmt.Errorf("completion: unknown shell %q: want bash, zsh or fish", sh)
	}
	_, err := io.WriteString(c.App.Writer, strings.ReplaceAll(script, "$PROG", c.App.Name))
	return err
}

// bashCompletion is urfave/cli v2's autocomplete/bash_autocomplete (MIT
// licence) with the program's name filled in: sourced from a pipe,
// BASH_SOURCE would not name it.
const bashCompletion = `#! /bin/bash
# muster completion for bash: source <(muster completion bash)

# Macs have bash3 for which the bash-completion package doesn't include
# _init_completion. This is a minimal version of that function.
_cli_init_completion() {
  COMPREPLY=()
  _get_comp_words_by_ref "$@" cur prev words cword
}

_cli_bash_autocomplete() {
  if [[ "${COMP_WORDS[0]}" != "source" ]]; then
    local cur opts base words
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    if declare -F _init_completion >/dev/null 2>&1; then
      _init_completion -n "=:" || return
    else
      _cli_init_completion -n "=:" || return
    fi
    words=("${words[@]:0:$cword}")
    if [[ "$cur" == "-"* ]]; then
      requestComp="${words[*]} ${cur} --generate-bash-completion"
    else
      requestComp="${words[*]} --generate-bash-completion"
    fi
    opts=$(eval "${requestComp}" 2>/dev/null)
    COMPREPLY=($(compgen -W "${opts}" -- ${cur}))
    return 0
  fi
}

complete -o bashdefault -o default -o nospace -F _cli_bash_autocomplete $PROG
`

// zshCompletion is urfave/cli v2's autocomplete/zsh_autocomplete (MIT
// licence) with the program's name filled in.
const zshCompletion = `#compdef $PROG
# muster completion for zsh: source <(muster completion zsh)

_cli_zsh_autocomplete() {
  local -a opts
  local cur
  cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion)}")
  fi

  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}

compdef _cli_zsh_autocomplete $PROG
`
