package main

import (
	"context"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	out := run(t, nil, "version")
	if !strings.HasPrefix(out, "muster ") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("stdout %q", out)
	}
}

// TestHelpDocumentsExitStatus checks every command's help names the exit
// codes scripts rely on.
func TestHelpDocumentsExitStatus(t *testing.T) {
	for _, args := range [][]string{
		{"--help"},
		{"up", "--help"},
		{"broker", "--help"},
		{"call", "--help"},
		{"converse", "--help"},
		{"service", "ls", "--help"},
		{"replica", "ls", "--help"},
		{"replica", "quiesce", "--help"},
		{"example", "echo", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out := run(t, nil, args...)
			if !strings.Contains(out, "EXIT STATUS") || !strings.Contains(out, "CCCC/NNNN") {
				t.Fatalf("help lacks the exit status:\n%s", out)
			}
		})
	}
}

// TestUsageErrorsGoToStderr checks that a bad flag is an error (exit 1)
// and nothing is written to stdout.
func TestUsageErrorsGoToStderr(t *testing.T) {
	r := runApp(context.Background(), nil, "call", "--bogus", "A/B/C")
	if r.err == nil || exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), "muster call --help") {
		t.Fatalf("err %v", r.err)
	}
	if r.stdout.String() != "" {
		t.Fatalf("stdout %q, want nothing", r.stdout)
	}
}

func TestParseHeaders(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		ok   bool
	}{
		{"none", nil, true},
		{"simple", []string{"A=b"}, true},
		{"empty value", []string{"A="}, true},
		{"equals in value", []string{"A=b=c"}, true},
		{"no equals", []string{"A"}, false},
		{"empty key", []string{"=b"}, false},
		{"space in key", []string{"A B=c"}, false},
		{"colon in key", []string{"A:B=c"}, false},
		{"muster header", []string{"muster-deadline=1"}, false},
		{"nats header", []string{"Nats-Service-Error=x"}, false},
		{"status", []string{"Status=503"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseHeaders(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("parseHeaders(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}
