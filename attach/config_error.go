package attach

import (
	"cmp"
	"fmt"
	"strings"
)

// ConfigError is one problem in a config file. Line and Column are 1-based;
// 0 means unknown. Field is the setting's path, such as "host.max_replicas"
// or "services[2].env.FOO" ("" for the file as a whole).
type ConfigError struct {
	File         string
	Line, Column int
	Field        string
	Msg          string

	err error // underlying cause, if any (e.g. from opening the file)
}

// Error returns "FILE:LINE:COL: FIELD: MSG", leaving out the parts that are
// unknown.
func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(cmp.Or(e.File, "<config>"))
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns ErrConfig and the underlying cause, if any.
func (e *ConfigError) Unwrap() []error {
	if e.err != nil {
		return []error{ErrConfig, e.err}
	}
	return []error{ErrConfig}
}
