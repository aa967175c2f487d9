package attach

// The config parser's checks of single values: numbers, durations, sizes,
// paths, programs, argument lists and environments.

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"go.yaml.in/yaml/v3"
)

// required returns f[key], or nil after reporting it missing (at the entry e
// when the key is absent).
func (p *parser) required(f map[string]*yaml.Node, key string, e *yaml.Node, path, want string) *yaml.Node {
	v, ok := f[key]
	if !ok {
		p.errorf(e, path+"."+key, "missing: %s", want)
		return nil
	}
	if isNull(resolve(v)) {
		p.errorf(v, path+"."+key, "missing: %s", want)
		return nil
	}
	return v
}

// fields checks that mapping n has only keys from allowed, each once, and
// returns the value node of each key present.
func (p *parser) fields(n *yaml.Node, path string, allowed []string) map[string]*yaml.Node {
	out := make(map[string]*yaml.Node)
	seen := make(map[string]*yaml.Node)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, path, "want a field name, got %s", describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k, path, "duplicate field %q (first at line %d)", k.Value, first.Line)
			continue
		}
		seen[k.Value] = k
		if !slices.Contains(allowed, k.Value) {
			p.errorf(k, path, "unknown field %q (allowed: %s)", k.Value, strings.Join(allowed, ", "))
			continue
		}
		out[k.Value] = v
	}
	return out
}

// str returns scalar n's text; ok is false if n is null (unset) or not a
// usable string (reported).
func (p *parser) str(n *yaml.Node, field string) (string, bool) {
	n = resolve(n)
	if isNull(n) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		p.errorf(n, field, "want a string, got %s", describe(n))
		return "", false
	}
	if strings.IndexByte(n.Value, 0) >= 0 {
		p.errorf(n, field, "contains a NUL character")
		return "", false
	}
	return n.Value, true
}

// integer returns whole number n in [lo, hi], or def when n is null or bad
// (reported; ok false).
func (p *parser) integer(n *yaml.Node, field string, lo, hi int, def int) (int, bool) {
	n = resolve(n)
	if isNull(n) {
		return def, true
	}
	var v int64
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil || v < int64(lo) {
		hint := ""
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
			if _, err := strconv.Atoi(n.Value); err == nil {
				hint = " (a quoted string; write the number without quotes)"
			}
		}
		p.errorf(n, field, "want a whole number >= %d, got %s%s", lo, describe(n), hint)
		return def, false
	}
	if v > int64(hi) {
		p.errorf(n, field, "want a whole number <= %d, got %s", hi, describe(n))
		return def, false
	}
	return int(v), true
}

// duration returns Go duration n (> 0, or >= 0 if zeroOK), or def when n is
// null or bad (reported; ok false).
func (p *parser) duration(n *yaml.Node, field string, zeroOK bool, def time.Duration) (time.Duration, bool) {
	n = resolve(n)
	if isNull(n) {
		return def, true
	}
	var d time.Duration
	var err error
	if n.Kind == yaml.ScalarNode {
		d, err = time.ParseDuration(n.Value)
	}
	if n.Kind != yaml.ScalarNode || err != nil {
		p.errorf(n, field, "want a duration such as \"30s\", got %s", describe(n))
		return def, false
	}
	if d < 0 || d == 0 && !zeroOK {
		want := "> 0"
		if zeroOK {
			want = ">= 0"
		}
		p.errorf(n, field, "want a duration %s, got %s", want, describe(n))
		return def, false
	}
	return d, true
}

// size returns byte size n (> 0), or def when n is null or bad (reported; ok
// false).
func (p *parser) size(n *yaml.Node, field string, def int64) (int64, bool) {
	n = resolve(n)
	if isNull(n) {
		return def, true
	}
	var v int64
	ok := false
	if n.Kind == yaml.ScalarNode {
		if n.ShortTag() == "!!int" {
			ok = n.Decode(&v) == nil
		} else {
			v, ok = parseSize(n.Value)
		}
	}
	if !ok {
		p.errorf(n, field, "want a size such as \"10MiB\" or a number of bytes, got %s", describe(n))
		return def, false
	}
	if v <= 0 {
		p.errorf(n, field, "want a size > 0, got %s", describe(n))
		return def, false
	}
	return v, true
}

// sizeUnits are the units parseSize accepts, by lower-case name.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// parseSize parses a whole number with an optional unit: "512KiB", "10MiB",
// "100kB" (1000 bytes), "5MB".
func parseSize(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, false
	}
	mult, ok := sizeUnits[strings.ToLower(strings.TrimSpace(s[i:]))]
	if !ok || n > math.MaxInt64/mult {
		return 0, false
	}
	return n * mult, true
}

// boolean returns true or false n, or def when n is null or bad (reported).
func (p *parser) boolean(n *yaml.Node, field string, def bool) bool {
	n = resolve(n)
	if isNull(n) {
		return def
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Value != "true" && n.Value != "false" {
		p.errorf(n, field, "want true or false, got %s", describe(n))
		return def
	}
	return n.Value == "true"
}

// path resolves s against the config file's directory.
func (p *parser) path(n *yaml.Node, field, s string) (string, bool) {
	switch {
	case s == "":
		p.errorf(n, field, "want a path, got \"\"")
		return "", false
	case s == "~" || strings.HasPrefix(s, "~/") || strings.HasPrefix(s, `~\`):
		p.errorf(n, field, "%q: \"~\" is not expanded; write an absolute path or one relative to the config file's directory", s)
		return "", false
	case filepath.IsAbs(s):
		return filepath.Clean(s), true
	}
	return filepath.Join(p.base, s), true
}

// relNote explains where a relative path s was looked for.
func relNote(s string) string {
	if filepath.IsAbs(s) {
		return ""
	}
	return " (relative paths are resolved against the config file's directory)"
}

// program checks that prog names an executable regular file and returns its
// absolute path.
func (p *parser) program(n *yaml.Node, field, prog string) string {
	abs, ok := p.path(n, field, prog)
	if !ok {
		return ""
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p.errorf(n, field, "no such file: %s%s", abs, relNote(prog))
	case err != nil:
		p.errorf(n, field, "cannot use %s: %s", abs, causeText(err))
	case st.IsDir():
		p.errorf(n, field, "%s is a directory, want an executable file", abs)
	case !st.Mode().IsRegular():
		p.errorf(n, field, "%s is not a regular file", abs)
	case runtime.GOOS != "windows" && st.Mode().Perm()&0o111 == 0:
		p.errorf(n, field, "%s is not executable (mode %s)", abs, st.Mode().Perm())
	default:
		return abs
	}
	return ""
}

// dir checks that d names an existing directory and returns its absolute
// path.
func (p *parser) dir(n *yaml.Node, field, d string) string {
	abs, ok := p.path(n, field, d)
	if !ok {
		return ""
	}
	st, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		p.errorf(n, field, "no such directory: %s%s", abs, relNote(d))
	case err != nil:
		p.errorf(n, field, "cannot use %s: %s", abs, causeText(err))
	case !st.IsDir():
		p.errorf(n, field, "%s is not a directory", abs)
	default:
		return abs
	}
	return ""
}

// args parses a list of strings.
func (p *parser) args(n *yaml.Node, field string) []string {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, field, "want a list of strings, got %s", describe(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, a := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		if isNull(resolve(a)) {
			p.errorf(a, f, "want a string, got nothing (write \"\" for an empty argument)")
			continue
		}
		if s, ok := p.str(a, f); ok {
			out = append(out, s)
		}
	}
	return out
}

// env parses a mapping of environment variable names to values.
func (p *parser) env(n *yaml.Node, field string) map[string]string {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, field, "want a mapping of NAME: value, got %s", describe(n))
		return nil
	}
	out := make(map[string]string, len(n.Content)/2)
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, field, "want a variable name, got %s", describe(k))
			continue
		}
		name := k.Value
		if line, dup := seen[name]; dup {
			p.errorf(k, field, "duplicate variable %q (first at line %d)", name, line)
			continue
		}
		seen[name] = k.Line
		if !validEnvName(name) {
			p.errorf(k, field, "bad variable name %q: want [A-Za-z_][A-Za-z0-9_]*", name)
			continue
		}
		vf := field + "." + name
		if strings.HasPrefix(strings.ToUpper(name), proto.EnvPrefix) {
			p.errorf(k, vf, "reserved: the attach manager sets the MUSTER_* variables")
			continue
		}
		if isNull(resolve(v)) {
			p.errorf(v, vf, "want a string, got nothing (write \"\" for an empty value)")
			continue
		}
		if s, ok := p.str(v, vf); ok {
			out[name] = s
		}
	}
	return out
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// defaultNote marks a value that came from the defaults.
func defaultNote(set bool) string {
	if set {
		return ""
	}
	return " (the default)"
}
