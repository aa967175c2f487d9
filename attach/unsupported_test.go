//go:build !linux

package attach

import (
	"context"
	"errors"
	"testing"
)

func TestStartUnsupported(t *testing.T) {
	m, err := Start(context.Background(), nil, DemoConfig("/bin/true"), Options{})
	if m != nil || !errors.Is(err, ErrUnsupported) || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Start = %v, %v; want ErrUnsupported", m, err)
	}
}
