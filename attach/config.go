package attach

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/xdg"
)

// Config is an attach manager's configuration file.
//
// It is the only source of the programs an attach manager starts: a start
// request from the broker names a service, and the program, arguments,
// environment and working directory all come from that service's entry here.
// Nothing received from the network reaches a command line.
type Config struct {
	File     string // absolute path it was loaded from ("" for built-in)
	Host     HostConfig
	Services []ServiceConfig
}

// HostConfig is the "host" section: settings of the attach manager itself.
// Loaded configs have every field filled in (defaults resolved).
type HostConfig struct {
	Name          string        // "name"; default: OS host name sanitised to [A-Za-z0-9_-], at most 64 characters
	MaxReplicas   int           // "max_replicas"; total replicas on this host; default 64; at least the sum of the services' min
	StateDir      string        // "state_dir"; default $XDG_STATE_HOME/muster/attach-<name> or ~/.local/state/muster/attach-<name>
	LogDir        string        // "log_dir"; default <state_dir>/logs
	TempDir       string        // "temp_dir"; default <os.TempDir()>/muster-<name>
	LogMaxBytes   int64         // "log_max_bytes"; per replica log file before rotation; default 10 MiB
	LogKeep       int           // "log_keep"; rotated files kept per replica; default 3
	LogTotalBytes int64         // "log_total_bytes"; cap for the whole log dir; default 1 GiB
	Heartbeat     time.Duration // "heartbeat"; registration refresh interval; default 2s
	Grace         time.Duration // "grace"; a stopping replica's grace for open conversations (MUSTER_GRACE); SIGKILL follows 2s later; default 10s
}

// ServiceConfig is one entry of the "services" list: a service this host
// can start replicas of, and how.
type ServiceConfig struct {
	Service               string            // "service": CLASS/NAME/SERVICE (required, unique)
	Program               string            // "program" (required): absolute path of an existing executable regular file
	Args                  []string          // "args": arguments after the program name
	Env                   map[string]string // "env": extra environment; no MUSTER_* names (the manager sets those)
	Dir                   string            // "dir": absolute working directory; "" means the replica's temp dir
	Min                   int               // "min": replicas kept running; default 0
	Max                   int               // "max": replicas at most; default 1, >= min
	Capacity              int               // "capacity": concurrent conversations per replica; default 1
	IdleTimeout           time.Duration     // "idle_timeout": a replica exits after this long unused; default 60s, 0 = never
	StartTimeout          time.Duration     // "start_timeout": how long a replica may take to register; default 30s
	ConvTimeout           time.Duration     // "conv_timeout": a conversation idle this long is ended; default 5m
	Restart               string            // "restart": RestartOnFailure (default), RestartAlways or RestartNever
	ExitAfterConversation bool              // "exit_after_conversation": a replica serves one conversation, then exits
	Line                  int               // line of this entry in the file (0 for built-in)
}

// Restart policies of ServiceConfig.Restart.
const (
	RestartOnFailure = "on-failure" // restart a replica that exits with an error, while it is still wanted
	RestartAlways    = "always"     // restart a replica whenever it exits, even after its idle timeout (pair it with idle_timeout: 0)
	RestartNever     = "never"      // never restart; the broker asks again if it needs one
)

// ErrConfig is wrapped by every error LoadConfig and ParseConfig return.
var ErrConfig = errors.New("attach: bad config")

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

// Service returns the entry for service name ("CLASS/NAME/SERVICE").
func (c *Config) Service(name string) (*ServiceConfig, bool) {
	for i := range c.Services {
		if c.Services[i].Service == name {
			return &c.Services[i], true
		}
	}
	return nil, false
}

// Defaults and limits.
const (
	defaultMaxReplicas   = 64
	defaultLogMaxBytes   = 10 << 20
	defaultLogKeep       = 3
	defaultLogTotalBytes = 1 << 30
	defaultHeartbeat     = 2 * time.Second
	defaultGrace         = 10 * time.Second

	defaultMax          = 1
	defaultCapacity     = 1
	defaultIdleTimeout  = 60 * time.Second
	defaultStartTimeout = 30 * time.Second
	defaultConvTimeout  = 5 * time.Minute

	maxHostName    = 64
	maxCount       = 1_000_000 // upper bound of replica counts and capacity
	maxLogKeep     = 1000
	maxConfigBytes = 4 << 20
)

// The fields each mapping may have, in the order the error message lists them.
var (
	topFields  = []string{"host", "services"}
	hostFields = []string{"name", "max_replicas", "state_dir", "log_dir", "temp_dir",
		"log_max_bytes", "log_keep", "log_total_bytes", "heartbeat", "grace"}
	serviceFields = []string{"service", "program", "args", "env", "dir", "min", "max", "capacity",
		"idle_timeout", "start_timeout", "conv_timeout", "restart", "exit_after_conversation"}
	restartPolicies = []string{RestartOnFailure, RestartAlways, RestartNever}
)

// defaultHost is the host section before the file (or DemoConfig) sets
// anything; fillDerived completes it afterwards.
func defaultHost() HostConfig {
	return HostConfig{
		MaxReplicas:   defaultMaxReplicas,
		LogMaxBytes:   defaultLogMaxBytes,
		LogKeep:       defaultLogKeep,
		LogTotalBytes: defaultLogTotalBytes,
		Heartbeat:     defaultHeartbeat,
		Grace:         defaultGrace,
	}
}

// defaultService is a service entry before the file (or DemoConfig) sets
// anything.
func defaultService() ServiceConfig {
	return ServiceConfig{
		Max:          defaultMax,
		Capacity:     defaultCapacity,
		IdleTimeout:  defaultIdleTimeout,
		StartTimeout: defaultStartTimeout,
		ConvTimeout:  defaultConvTimeout,
		Restart:      RestartOnFailure,
	}
}

// fillDerived fills in the host settings whose defaults depend on others:
// the name, then the directories named after it.
func (h *HostConfig) fillDerived() {
	if h.Name == "" {
		h.Name = defaultHostName()
	}
	if h.StateDir == "" {
		h.StateDir = defaultStateDir(h.Name)
	}
	if h.LogDir == "" {
		h.LogDir = filepath.Join(h.StateDir, "logs")
	}
	if h.TempDir == "" {
		h.TempDir = filepath.Join(os.TempDir(), "muster-"+h.Name)
	}
}

// newConfig returns a config with every host default resolved except those
// set by set, which runs before the derived defaults are filled in. Both
// ParseConfig and DemoConfig build their configs through it.
func newConfig(file string, set func(*HostConfig)) *Config {
	c := &Config{File: file, Host: defaultHost()}
	if set != nil {
		set(&c.Host)
	}
	c.Host.fillDerived()
	return c
}

// defaultHostName is the OS host name made safe for subjects and paths.
func defaultHostName() string {
	h, _ := os.Hostname()
	return sanitiseName(h)
}

// sanitiseName replaces every character outside [A-Za-z0-9_-] with '-' and
// cuts the result to maxHostName bytes ("localhost" if nothing is left).
func sanitiseName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() == maxHostName {
			break
		}
		if r < utf8.RuneSelf && validNameByte(byte(r)) {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "localhost"
	}
	return b.String()
}

func validNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func validHostName(s string) bool {
	if s == "" || len(s) > maxHostName {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !validNameByte(s[i]) {
			return false
		}
	}
	return true
}

// defaultStateDir is $XDG_STATE_HOME/muster/attach-<name> (see package
// xdg), or a directory under the temp dir when there is no home.
func defaultStateDir(name string) string {
	dir, err := xdg.StateDir("attach-" + name)
	if err != nil {
		return filepath.Join(os.TempDir(), "muster-state", "muster", "attach-"+name)
	}
	return dir
}

// DemoConfig is the built-in config: the demo echo and sleep services served
// by executable (normally the muster binary itself, via `muster example`).
func DemoConfig(executable string) *Config {
	c := newConfig("", nil)
	for _, d := range []struct{ service, example string }{
		{"DEMO/ECHO/ECHO", "echo"},
		{"DEMO/SLEEP/SLEEP", "sleep"},
	} {
		s := defaultService()
		s.Service = d.service
		s.Program = executable
		s.Args = []string{"example", d.example}
		s.Min = 0
		s.Max = 4
		s.Capacity = 1
		s.IdleTimeout = 30 * time.Second
		c.Services = append(c.Services, s)
	}
	return c
}

// LoadConfig reads and checks the config file at path (see ParseConfig).
func LoadConfig(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &ConfigError{File: path, Msg: "cannot read config: " + err.Error(), err: err}
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, &ConfigError{File: abs, Msg: "cannot read config: " + causeText(err), err: err}
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, &ConfigError{File: abs, Msg: "is a directory, want a YAML file"}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, &ConfigError{File: abs, Msg: "cannot read config: " + causeText(err), err: err}
	}
	if len(data) > maxConfigBytes {
		return nil, &ConfigError{File: abs, Msg: fmt.Sprintf("larger than %d MiB", maxConfigBytes>>20)}
	}
	return ParseConfig(abs, data)
}

// causeText is err without the path a *fs.PathError repeats.
func causeText(err error) string {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// ParseConfig parses and checks a config file's contents. file names it in
// error messages, and relative paths in it (program, dir, the host's
// directories) are resolved against file's directory and stored absolute.
//
// Every problem found is reported, each as a *ConfigError, joined with
// errors.Join when there are several; every error wraps ErrConfig.
func ParseConfig(file string, data []byte) (*Config, error) {
	p := &parser{file: file}
	base, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, &ConfigError{File: file, Msg: "cannot resolve the config file's directory: " + err.Error(), err: err}
	}
	p.base = base
	var c *Config
	if root := p.decode(data); root != nil {
		c = p.config(root)
	}
	if len(p.errs) > 0 {
		return nil, p.err()
	}
	return c, nil
}

// parser walks a decoded YAML document, collecting every problem.
type parser struct {
	file string
	base string // directory relative paths are resolved against
	errs []*ConfigError
}

func (p *parser) errorf(n *yaml.Node, field, format string, args ...any) {
	e := &ConfigError{File: p.file, Field: field, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

// err returns the problems found, in file order.
func (p *parser) err() error {
	slices.SortStableFunc(p.errs, func(a, b *ConfigError) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	if len(p.errs) == 1 {
		return p.errs[0]
	}
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// decode parses data as exactly one YAML document and returns its root node,
// or nil after recording why not.
func (p *parser) decode(data []byte) (root *yaml.Node) {
	defer func() {
		if r := recover(); r != nil { // yaml.v3 should not panic, but a config must not crash the manager
			root = nil
			p.errorf(nil, "", "cannot parse YAML: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(nil, "", "empty config: want host and services")
		} else {
			p.syntaxError(err, data)
		}
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		p.errorf(&extra, "", "want one YAML document, found another")
		return nil
	case !errors.Is(err, io.EOF):
		p.syntaxError(err, data)
		return nil
	}
	if len(doc.Content) == 0 || isNull(resolve(doc.Content[0])) {
		p.errorf(nil, "", "empty config: want host and services")
		return nil
	}
	return doc.Content[0]
}

// syntaxError records a YAML syntax error, finding its line where yaml.v3
// leaves it out.
func (p *parser) syntaxError(err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line, col int
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg = n, text
				if parserProblems[msg] {
					line++ // yaml.v3 reports parser (not scanner) errors with 0-based lines
				}
				if msg == "did not find expected key" || msg == "did not find expected '-' indicator" {
					// yaml.v3 names the line where the block mapping or
					// list starts; the misplaced line is further down.
					line = problemLine(data, line, msg)
				}
			}
		}
	}
	if line == 0 {
		switch {
		case strings.HasPrefix(msg, "unknown anchor '"):
			name := strings.TrimSuffix(strings.TrimPrefix(msg, "unknown anchor '"), "' referenced")
			line, col = findAlias(data, name)
		case strings.Contains(msg, "control characters") || strings.Contains(msg, "UTF-8") ||
			strings.Contains(msg, "Unicode"):
			line, col = findBadChar(data)
		}
	}
	if line == 0 {
		// yaml.v3 leaves out "line N" when N would be 1 (its marks are 0-based).
		line = 1
	}
	p.errs = append(p.errs, &ConfigError{File: p.file, Line: line, Column: col, Msg: "YAML syntax error: " + msg})
}

// parserProblems are the messages of yaml.v3's parser errors, whose "line N"
// is 0-based (its scanner errors' are 1-based).
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
	"found undefined tag handle":             true,
}

// problemLine returns the first line, from line from on, at which data
// stops parsing with msg: the shortest prefix of data that fails with msg.
// Prefixes ending before a block-structure error parse, so a binary search
// finds it.
func problemLine(data []byte, from int, msg string) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	prefix := func(n int) []byte { // the first n lines
		end := 0
		for _, l := range lines[:n] {
			end += len(l)
		}
		return data[:end]
	}
	lo, hi := max(from, 1), len(lines)
	if lo > hi {
		return from
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if failsWith(prefix(mid), msg) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return hi
}

// failsWith reports whether data does not parse as YAML, for reason msg.
func failsWith(data []byte, msg string) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			return false
		}
		text := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(text, "line "); ok {
			_, text, _ = strings.Cut(rest, ": ")
		}
		return text == msg
	}
}

// findAlias returns the position of the first "*name" alias in data.
func findAlias(data []byte, name string) (line, col int) {
	needle := []byte("*" + name)
	for off := 0; ; {
		i := bytes.Index(data[off:], needle)
		if i < 0 {
			return 0, 0
		}
		at := off + i
		end := at + len(needle)
		if end == len(data) || bytes.IndexByte([]byte(" \t\r\n,]}"), data[end]) >= 0 {
			return position(data, at)
		}
		off = at + 1
	}
}

// findBadChar returns the position of the first character YAML forbids.
func findBadChar(data []byte) (line, col int) {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		ok := r == '\t' || r == '\n' || r == '\r' || r >= 0x20 && r <= 0x7e || r == 0x85 ||
			r >= 0xa0 && r <= 0xd7ff || r >= 0xe000 && r <= 0xfffd || r >= 0x10000 && r <= 0x10ffff
		if r == utf8.RuneError && size <= 1 || !ok {
			return position(data, i)
		}
		i += size
	}
	return 0, 0
}

// position converts a byte offset into a 1-based line and column.
func position(data []byte, off int) (line, col int) {
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = utf8.RuneCount(before[bytes.LastIndexByte(before, '\n')+1:]) + 1
	return line, col
}

// config checks the top-level mapping.
func (p *parser) config(root *yaml.Node) *Config {
	root = resolve(root)
	if root.Kind != yaml.MappingNode {
		p.errorf(root, "", "want a mapping with host and services, got %s", describe(root))
		return nil
	}
	f := p.fields(root, "", topFields)
	var h hostResult
	c := newConfig(p.file, func(hc *HostConfig) { h = p.host(f["host"], root, hc) })

	if n, ok := f["services"]; ok {
		p.services(n, c)
	} else {
		p.errorf(root, "services", "missing: want a non-empty list of services")
	}

	if h.maxReplicasOK {
		sum := 0
		for _, s := range c.Services {
			sum += s.Min
		}
		if c.Host.MaxReplicas < sum {
			p.errorf(h.maxReplicas, "host.max_replicas", "want at least the sum of the services' min (%d), got %d%s",
				sum, c.Host.MaxReplicas, defaultNote(h.maxReplicasSet))
		}
	}
	return c
}

// hostResult is what the cross-section checks need to know about the host
// section.
type hostResult struct {
	maxReplicas    *yaml.Node // where to report max_replicas problems
	maxReplicasSet bool       // max_replicas was in the file
	maxReplicasOK  bool       // max_replicas is usable
}

// host parses the host section n (nil if absent) into h.
func (p *parser) host(n, root *yaml.Node, h *HostConfig) hostResult {
	res := hostResult{maxReplicas: root, maxReplicasOK: true}
	if n == nil {
		return res
	}
	n = resolve(n)
	if isNull(n) {
		return res
	}
	res.maxReplicas = n
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "host", "want a mapping, got %s", describe(n))
		return res
	}
	f := p.fields(n, "host", hostFields)
	if v, ok := f["name"]; ok {
		if s, ok := p.str(v, "host.name"); ok {
			if validHostName(s) {
				h.Name = s
			} else {
				p.errorf(v, "host.name", "want 1-%d characters of A-Z a-z 0-9 _ -, got %s", maxHostName, describe(v))
			}
		}
	}
	if v, ok := f["max_replicas"]; ok && !isNull(resolve(v)) {
		res.maxReplicas, res.maxReplicasSet = v, true
		h.MaxReplicas, res.maxReplicasOK = p.integer(v, "host.max_replicas", 1, maxCount, h.MaxReplicas)
	}
	for key, dst := range map[string]*string{"state_dir": &h.StateDir, "log_dir": &h.LogDir, "temp_dir": &h.TempDir} {
		if v, ok := f[key]; ok {
			if s, ok := p.str(v, "host."+key); ok {
				*dst, _ = p.path(v, "host."+key, s)
			}
		}
	}
	maxOK, totalOK := true, true
	if v, ok := f["log_max_bytes"]; ok {
		h.LogMaxBytes, maxOK = p.size(v, "host.log_max_bytes", h.LogMaxBytes)
	}
	if v, ok := f["log_keep"]; ok {
		h.LogKeep, _ = p.integer(v, "host.log_keep", 0, maxLogKeep, h.LogKeep)
	}
	if v, ok := f["log_total_bytes"]; ok {
		h.LogTotalBytes, totalOK = p.size(v, "host.log_total_bytes", h.LogTotalBytes)
	}
	if maxOK && totalOK && h.LogTotalBytes < h.LogMaxBytes {
		at := cmp.Or(f["log_total_bytes"], f["log_max_bytes"])
		p.errorf(at, "host.log_total_bytes", "want at least log_max_bytes (%d), got %d", h.LogMaxBytes, h.LogTotalBytes)
	}
	if v, ok := f["heartbeat"]; ok {
		var good bool
		if h.Heartbeat, good = p.duration(v, "host.heartbeat", false, h.Heartbeat); good && (h.Heartbeat < 10*time.Millisecond || h.Heartbeat > 30*time.Second) {
			p.errorf(v, "host.heartbeat", "want 10ms to 30s (replicas refuse other heartbeats), got %v", h.Heartbeat)
		}
	}
	if v, ok := f["grace"]; ok {
		h.Grace, _ = p.duration(v, "host.grace", true, h.Grace)
	}
	return res
}

// services parses the services list n into c.Services.
func (p *parser) services(n *yaml.Node, c *Config) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "services", "want a list of services, got %s", describe(n))
		return
	}
	if len(n.Content) == 0 {
		p.errorf(n, "services", "want a non-empty list of services, got an empty list")
		return
	}
	first := make(map[string]int) // service name → line of its entry
	for i, e := range n.Content {
		path := fmt.Sprintf("services[%d]", i)
		s, nameNode, ok := p.service(e, path)
		if !ok {
			continue
		}
		if nameNode != nil {
			if line, dup := first[s.Service]; dup {
				p.errorf(nameNode, path+".service", "duplicate service %q (first at line %d)", s.Service, line)
			} else {
				first[s.Service] = s.Line
			}
		}
		c.Services = append(c.Services, s)
	}
}

// service parses one services entry. nameNode is the node of a well-formed
// service name, nil if there is none; ok is false if e is not a mapping.
func (p *parser) service(e *yaml.Node, path string) (s ServiceConfig, nameNode *yaml.Node, ok bool) {
	s = defaultService()
	e = resolve(e)
	if e.Kind != yaml.MappingNode {
		p.errorf(e, path, "want a mapping, got %s", describe(e))
		return s, nil, false
	}
	s.Line = e.Line
	f := p.fields(e, path, serviceFields)

	if v := p.required(f, "service", e, path, "want CLASS/NAME/SERVICE"); v != nil {
		if name, ok := p.str(v, path+".service"); ok {
			if _, err := proto.ParseService(name); err != nil {
				p.errorf(v, path+".service", "%s", strings.TrimPrefix(err.Error(), "proto: "))
			} else {
				s.Service, nameNode = name, v
			}
		}
	}
	if v := p.required(f, "program", e, path, "want the path of the program to run"); v != nil {
		if prog, ok := p.str(v, path+".program"); ok {
			s.Program = p.program(v, path+".program", prog)
		}
	}
	if v, ok := f["args"]; ok {
		s.Args = p.args(v, path+".args")
	}
	if v, ok := f["env"]; ok {
		s.Env = p.env(v, path+".env")
	}
	if v, ok := f["dir"]; ok {
		if d, ok := p.str(v, path+".dir"); ok {
			s.Dir = p.dir(v, path+".dir", d)
		}
	}
	minOK, maxOK := true, true
	if v, ok := f["min"]; ok {
		s.Min, minOK = p.integer(v, path+".min", 0, maxCount, s.Min)
	}
	maxSet := false
	if v, ok := f["max"]; ok {
		maxSet = !isNull(resolve(v))
		s.Max, maxOK = p.integer(v, path+".max", 1, maxCount, s.Max)
	}
	if minOK && maxOK && s.Min > s.Max {
		note := ""
		if !maxSet {
			note = ", the default"
		}
		p.errorf(e, path, "min (%d) is greater than max (%d%s)", s.Min, s.Max, note)
	}
	if v, ok := f["capacity"]; ok {
		s.Capacity, _ = p.integer(v, path+".capacity", 1, maxCount, s.Capacity)
	}
	if v, ok := f["idle_timeout"]; ok {
		s.IdleTimeout, _ = p.duration(v, path+".idle_timeout", true, s.IdleTimeout)
	}
	if v, ok := f["start_timeout"]; ok {
		s.StartTimeout, _ = p.duration(v, path+".start_timeout", false, s.StartTimeout)
	}
	if v, ok := f["conv_timeout"]; ok {
		s.ConvTimeout, _ = p.duration(v, path+".conv_timeout", false, s.ConvTimeout)
	}
	if v, ok := f["restart"]; ok {
		if r, ok := p.str(v, path+".restart"); ok {
			if slices.Contains(restartPolicies, r) {
				s.Restart = r
			} else {
				p.errorf(v, path+".restart", "want one of %s, got %s", strings.Join(restartPolicies, ", "), describe(v))
			}
		}
	}
	if v, ok := f["exit_after_conversation"]; ok {
		s.ExitAfterConversation = p.boolean(v, path+".exit_after_conversation", s.ExitAfterConversation)
	}
	return s, nameNode, true
}

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

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what n is for a "got ..." message.
func describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.ScalarNode:
		v := n.Value
		if len(v) > 64 {
			v = v[:61] + "..."
		}
		return strconv.Quote(v)
	}
	return "an alias"
}

// defaultNote marks a value that came from the defaults.
func defaultNote(set bool) string {
	if set {
		return ""
	}
	return " (the default)"
}
