package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/examples/demo"
)

// TestFlagsAfterArguments: a flag after the positional arguments is taken
// as a flag, never sent as data; "--" ends the flags; an unknown flag
// anywhere is refused, naming it, before anything runs.
func TestFlagsAfterArguments(t *testing.T) {
	env, _ := echoEnv(t)
	svc := demo.EchoService
	t.Run("json after service", func(t *testing.T) {
		out := run(t, nil, "call", svc, serverFlag(env), "--json")
		var got callResult
		if err := json.Unmarshal([]byte(out), &got); err != nil || got.Data != "" || got.Service != svc {
			t.Fatalf("stdout %q (%v): want a JSON result of an empty payload", out, err)
		}
	})
	t.Run("json after data", func(t *testing.T) {
		out := run(t, nil, "call", serverFlag(env), svc, "hi", "--json")
		var got callResult
		if err := json.Unmarshal([]byte(out), &got); err != nil || got.Data != "hi" {
			t.Fatalf("stdout %q (%v): want a JSON result with data hi", out, err)
		}
	})
	t.Run("value flags after arguments", func(t *testing.T) {
		if out := run(t, nil, "call", svc, "hi", "--timeout", "5s", serverFlag(env), "-H", "X-A=b"); out != "hi\n" {
			t.Fatalf("stdout %q", out)
		}
	})
	t.Run("double dash ends flags", func(t *testing.T) {
		if out := run(t, nil, "call", serverFlag(env), svc, "--", "--json"); out != "--json\n" {
			t.Fatalf("stdout %q, want the literal payload --json", out)
		}
	})
	for _, tc := range []struct {
		name     string
		args     []string
		contains []string
	}{
		{"unknown flag after arguments", []string{"call", svc, "hi", "--jsn"}, []string{"unknown flag --jsn", "put -- before it", "muster call --help"}},
		{"unknown flag before arguments", []string{"call", "--jsn", svc}, []string{"unknown flag --jsn", "muster call --help"}},
		{"unknown flag=value", []string{"call", svc, "--nope=1"}, []string{"unknown flag --nope"}},
		{"flag without its value", []string{"call", svc, "hi", "--timeout"}, []string{"--timeout needs a value"}},
		{"unknown flag of a subcommand", []string{"service", "reset", svc, "--bogus"}, []string{"unknown flag --bogus", "muster service reset --help"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runApp(context.Background(), nil, tc.args...) // refused before connecting: no --server needed
			if r.err == nil || exitCode(r.err) != 1 {
				t.Fatalf("err %v, want a usage error (exit 1); stdout %q", r.err, r.stdout)
			}
			for _, want := range tc.contains {
				if !strings.Contains(r.err.Error(), want) {
					t.Errorf("error %q lacks %q", r.err, want)
				}
			}
			if r.stdout.String() != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
	t.Run("help after arguments", func(t *testing.T) {
		if out := run(t, nil, "call", svc, "hi", "--help"); !strings.Contains(out, "muster call - call a service") {
			t.Fatalf("stdout %q, want call's help", out)
		}
	})
}

// TestBenchChecksArgumentsFirst: bench takes its flags after the scenario
// names and checks every name before it runs the first scenario.
func TestBenchChecksArgumentsFirst(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		contains string
	}{
		// --clients after the name is parsed (and refused), not taken for a scenario.
		{"flag after name", []string{"warm", "--clients", "0"}, "must be positive"},
		{"unknown name after a good one", []string{"warm", "nosuch"}, `unknown scenario "nosuch"`},
		{"unknown flag after name", []string{"warm", "--jsn"}, "unknown flag --jsn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := runApp(context.Background(), nil, append([]string{"bench"}, tc.args...)...)
			if r.err == nil || exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), tc.contains) {
				t.Fatalf("err %v (exit %d), want exit 1 with %q", r.err, exitCode(r.err), tc.contains)
			}
			if r.stdout.String() != "" {
				t.Errorf("stdout %q: a scenario ran", r.stdout)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v: a scenario ran before the arguments were checked", d)
			}
		})
	}
}

func TestReorderArgs(t *testing.T) {
	a := app().App
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"no args", []string{"muster"}, []string{"muster"}},
		{"flags first", []string{"muster", "call", "--json", "A/B/C"}, []string{"muster", "call", "--json", "--", "A/B/C"}},
		{"flags last", []string{"muster", "call", "A/B/C", "x", "--json", "--timeout", "1s"}, []string{"muster", "call", "--json", "--timeout", "1s", "--", "A/B/C", "x"}},
		{"flag=value", []string{"muster", "call", "A/B/C", "--timeout=1s"}, []string{"muster", "call", "--timeout=1s", "--", "A/B/C"}},
		{"double dash", []string{"muster", "call", "A/B/C", "--", "--json"}, []string{"muster", "call", "--", "A/B/C", "--json"}},
		{"stdin dash", []string{"muster", "call", "A/B/C", "-", "--json"}, []string{"muster", "call", "--json", "--", "A/B/C", "-"}},
		{"subcommand", []string{"muster", "service", "reset", "A/B/C", "--json"}, []string{"muster", "service", "reset", "--json", "--", "A/B/C"}},
		{"no positional", []string{"muster", "up", "--insecure"}, []string{"muster", "up", "--insecure"}},
		{"unknown command untouched", []string{"muster", "nosuch", "--json"}, []string{"muster", "nosuch", "--json"}},
		{"completion request untouched", []string{"muster", "call", "A", completionFlag}, []string{"muster", "call", "A", completionFlag}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := reorderArgs(a, tc.in)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("reorderArgs(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// TestUnknownCommand: an unknown command or subcommand is an error with
// exit status 1, not urfave/cli's 3 (which is bench's missed target).
func TestUnknownCommand(t *testing.T) {
	for _, args := range [][]string{
		{"nosuch"},
		{"service", "nosuch"},
		{"replica", "nosuch", "x"},
		{"help", "nosuch"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			r := runApp(context.Background(), nil, args...)
			if r.err == nil || exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "nosuch") {
				t.Fatalf("err %v (exit %d), want exit 1 naming nosuch", r.err, exitCode(r.err))
			}
		})
	}
	r := runApp(context.Background(), nil, "service", "nosuch")
	if !strings.Contains(r.err.Error(), `unknown command "nosuch" (see muster service --help)`) {
		t.Errorf("err %v", r.err)
	}
	if exitCode(&targetsMissedError{[]string{"warm"}}) != 3 {
		t.Error("a missed bench target is not exit status 3")
	}
	if exitCode(nil) != 0 {
		t.Error("success is not exit status 0")
	}
}

// TestUnexpectedArgument: a command that takes no arguments refuses one.
func TestUnexpectedArgument(t *testing.T) {
	for _, args := range [][]string{{"up", "extra"}, {"service", "ls", "extra"}, {"version", "extra"}} {
		r := runApp(context.Background(), nil, args...)
		if r.err == nil || exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), `unexpected argument "extra"`) {
			t.Errorf("muster %s: err %v, want an unexpected argument", strings.Join(args, " "), r.err)
		}
	}
}
