package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCompletionScripts: muster completion bash|zsh|fish prints a script
// for muster (the name filled in: sourced from a pipe, bash would not know
// it); another shell is refused.
func TestCompletionScripts(t *testing.T) {
	for _, tc := range []struct {
		shell string
		want  []string
	}{
		{"bash", []string{"complete -o bashdefault -o default -o nospace -F _cli_bash_autocomplete muster\n", "--generate-bash-completion"}},
		{"zsh", []string{"#compdef muster\n", "compdef _cli_zsh_autocomplete muster\n"}},
		{"fish", []string{"complete -c muster ", "'call'"}},
	} {
		t.Run(tc.shell, func(t *testing.T) {
			out := run(t, nil, "completion", tc.shell)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("script lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "$PROG") {
				t.Errorf("script still says $PROG:\n%s", out)
			}
		})
	}
	r := runApp(context.Background(), nil, "completion", "tcsh")
	if r.err == nil || exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), `unknown shell "tcsh"`) {
		t.Fatalf("tcsh: %v", r.err)
	}
}

// TestCompletionCandidates: what the scripts ask muster for, asked of
// this binary as a child process (urfave/cli reads os.Args for it).
func TestCompletionCandidates(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{completionFlag}, []string{"call", "completion", "version", "up"}},
		{[]string{"service", completionFlag}, []string{"ls", "reset"}},
		{[]string{"call", "--ti", completionFlag}, []string{"--timeout"}},
	} {
		cmd := exec.Command(os.Args[0], tc.args...)
		cmd.Env = append(os.Environ(), runMainEnv+"=1")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("muster %s: %v", strings.Join(tc.args, " "), err)
		}
		lines := strings.Split(string(out), "\n")
		for _, w := range tc.want {
			if !slices.Contains(lines, w) {
				t.Errorf("muster %s: no %q in\n%s", strings.Join(tc.args, " "), w, out)
			}
		}
	}
}

// TestBashCompletionCompletes sources the bash script in a real bash and
// completes "muster ca" and "muster service r" with this binary as muster.
// _get_comp_words_by_ref (of the bash-completion package) is stubbed.
func TestBashCompletionCompletes(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to test the bash completion: %v", err)
	}
	dir := t.TempDir()
	if err := os.Symlink(os.Args[0], filepath.Join(dir, "muster")); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "muster.bash")
	if err := os.WriteFile(script, []byte(run(t, nil, "completion", "bash")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		words, want string
	}{
		{"muster ca", "call"},
		{"muster service r", "reset"},
		{"muster com", "completion"},
		{"muster call --ti", "--timeout"},
	} {
		t.Run(tc.words, func(t *testing.T) {
			sh := `_get_comp_words_by_ref() { cur="${COMP_WORDS[COMP_CWORD]}"; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
source "$1"
COMP_WORDS=(` + tc.words + `); COMP_CWORD=$((${#COMP_WORDS[@]}-1))
_cli_bash_autocomplete
echo "${COMPREPLY[@]}"`
			cmd := exec.Command(bash, "-c", sh, "bash", script)
			cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), runMainEnv+"=1")
			out, err := cmd.CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != tc.want {
				t.Fatalf("completing %q: %q (%v), want %q", tc.words, out, err, tc.want)
			}
		})
	}
}
