//go:build !linux

package proc_test

import (
	"errors"
	"testing"

	"github.com/musterhq/muster/attach/internal/proc"
)

func TestStartUnsupported(t *testing.T) {
	if _, err := proc.Start(proc.Spec{Path: "/bin/true"}); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Start = %v, want ErrUnsupported", err)
	}
}
