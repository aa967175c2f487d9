package attach

// The config parser: the file's sections and their cross-checks, every
// problem collected as a *ConfigError naming file:line:col and field.

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/musterhq/muster/broker/proto"
	"go.yaml.in/yaml/v3"
)

// The fields each mapping may have, in the order the error message lists them.
var (
	topFields  = []string{"host", "services"}
	hostFields = []string{"name", "max_replicas", "max_users", "state_dir", "log_dir", "temp_dir",
		"log_max_bytes", "log_keep", "log_total_bytes", "heartbeat", "grace"}
	serviceFields = []string{"service", "program", "args", "env", "dir", "min", "max", "standby", "capacity",
		"idle_timeout", "start_timeout", "conv_timeout", "restart", "exit_after_conversation"}
	restartPolicies = []string{RestartOnFailure, RestartAlways, RestartNever}
)

// LoadConfig reads and checks the config file at path. Relative paths in
// it (program, dir, the host's directories) are resolved against the
// file's directory and stored absolute.
//
// Every problem found is reported, each as a *ConfigError naming
// file:line:col and the field, joined with errors.Join when there are
// several; every error wraps ErrConfig.
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
	return parseConfig(abs, data)
}

// causeText is err without the path a *fs.PathError repeats.
func causeText(err error) string {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// parseConfig parses and checks a config file's contents as LoadConfig
// does; file names it in error messages and is the base of relative paths.
func parseConfig(file string, data []byte) (*Config, error) {
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
	c.dirsSet.state, c.dirsSet.log, c.dirsSet.temp = h.dirsSet["state_dir"], h.dirsSet["log_dir"], h.dirsSet["temp_dir"]

	if n, ok := f["services"]; ok {
		p.services(n, c)
	} else {
		p.errorf(root, "services", "missing: want a non-empty list of services")
	}

	if h.maxReplicasOK {
		sum := 0
		for _, s := range c.Services {
			sum += s.Min + s.Standby
		}
		if c.Host.MaxReplicas < sum {
			p.errorf(h.maxReplicas, "host.max_replicas", "want at least the sum of the services' min and standby (%d), got %d%s",
				sum, c.Host.MaxReplicas, defaultNote(h.maxReplicasSet))
		}
	}
	return c
}

// hostResult is what the cross-section checks need to know about the host
// section.
type hostResult struct {
	maxReplicas    *yaml.Node      // where to report max_replicas problems
	maxReplicasSet bool            // max_replicas was in the file
	maxReplicasOK  bool            // max_replicas is usable
	dirsSet        map[string]bool // state_dir, log_dir, temp_dir set in the file
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
	if v, ok := f["max_users"]; ok && !isNull(resolve(v)) {
		h.MaxUsers, _ = p.integer(v, "host.max_users", 0, maxCount, h.MaxUsers)
	}
	for key, dst := range map[string]*string{"state_dir": &h.StateDir, "log_dir": &h.LogDir, "temp_dir": &h.TempDir} {
		if v, ok := f[key]; ok {
			if s, ok := p.str(v, "host."+key); ok {
				*dst, _ = p.path(v, "host."+key, s)
				if res.dirsSet == nil {
					res.dirsSet = map[string]bool{}
				}
				res.dirsSet[key] = true
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
			if err := proto.CheckService(name); err != nil {
				p.errorf(v, path+".service", "bad service name: %q: %v", name, err)
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
	if v, ok := f["standby"]; ok {
		var sbOK bool
		if s.Standby, sbOK = p.integer(v, path+".standby", 0, maxCount, s.Standby); sbOK && minOK && maxOK && s.Min+s.Standby > s.Max {
			p.errorf(v, path+".standby", "min (%d) + standby (%d) is greater than max (%d): standby replicas are processes of the service too", s.Min, s.Standby, s.Max)
		}
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
