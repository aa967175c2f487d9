package attach

import (
	"errors"
	"fmt"
	"runtime"
)

var (
	// ErrConfig is wrapped by every error LoadConfig returns.
	ErrConfig = errors.New("attach: bad config")
	// ErrUnsupported is returned by Start on operating systems other than
	// Linux, where replicas cannot be supervised. It wraps
	// errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("attach manager: not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)
)
