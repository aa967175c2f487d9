package attach

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
)

// testdataDir is the absolute path of testdata/config.
func testdataDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", "config"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadConfigGood(t *testing.T) {
	td := testdataDir(t)
	c, err := LoadConfig(filepath.Join("testdata", "config", "good.yaml"))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	prog := filepath.Join(td, "bin", "ok.sh")
	want := &Config{
		File: filepath.Join(td, "good.yaml"),
		Host: HostConfig{
			Name:          "test-host_1",
			MaxReplicas:   12,
			StateDir:      filepath.Join(td, "state"),
			LogDir:        "/var/log/muster",
			TempDir:       "/tmp/muster-test",
			LogMaxBytes:   512 << 10,
			LogKeep:       5,
			LogTotalBytes: 100_000_000,
			Heartbeat:     500 * time.Millisecond,
			Grace:         3 * time.Second,
		},
		Services: []ServiceConfig{
			{
				Service:               "DEMO/ECHO/ECHO",
				Program:               prog,
				Args:                  []string{"example", "echo", "--greeting=hello world"},
				Env:                   map[string]string{"GREETING": "hello", "PORT": "8080", "_EMPTY": ""},
				Dir:                   filepath.Join(td, "work"),
				Min:                   1,
				Max:                   4,
				Capacity:              2,
				IdleTimeout:           30 * time.Second,
				StartTimeout:          10 * time.Second,
				ConvTimeout:           2 * time.Minute,
				Restart:               RestartAlways,
				ExitAfterConversation: true,
				Line:                  15,
			},
			{
				Service:      "DEMO/SLEEP/SLEEP",
				Program:      prog,
				Min:          2,
				Max:          2,
				Capacity:     1,
				IdleTimeout:  0,
				StartTimeout: 30 * time.Second,
				ConvTimeout:  5 * time.Minute,
				Restart:      RestartNever,
				Line:         32,
			},
		},
	}
	want.dirsSet.state, want.dirsSet.log, want.dirsSet.temp = true, true, true
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadConfig:\n got %+v\nwant %+v", c, want)
	}

	s, ok := c.service("DEMO/SLEEP/SLEEP")
	if !ok || s != &c.Services[1] {
		t.Errorf("Service(DEMO/SLEEP/SLEEP) = %p, %v; want %p, true", s, ok, &c.Services[1])
	}
	if s, ok := c.service("DEMO/ECHO/NOPE"); ok || s != nil {
		t.Errorf("Service(DEMO/ECHO/NOPE) = %v, %v; want nil, false", s, ok)
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	td := testdataDir(t)
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	c, err := LoadConfig(filepath.Join("testdata", "config", "minimal.yaml"))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	host, _ := os.Hostname()
	name := sanitiseName(host)
	wantHost := HostConfig{
		Name:          name,
		MaxReplicas:   64,
		StateDir:      filepath.Join(state, "muster", "attach-"+name),
		LogDir:        filepath.Join(state, "muster", "attach-"+name, "logs"),
		TempDir:       defaultTempDir(name, filepath.Join(state, "muster", "attach-"+name)),
		LogMaxBytes:   10 << 20,
		LogKeep:       3,
		LogTotalBytes: 1 << 30,
		Heartbeat:     2 * time.Second,
		Grace:         10 * time.Second,
	}
	if c.Host != wantHost {
		t.Errorf("Host:\n got %+v\nwant %+v", c.Host, wantHost)
	}
	wantSvc := []ServiceConfig{{
		Service:      "A/B/C",
		Program:      filepath.Join(td, "bin", "ok.sh"),
		Max:          1,
		Capacity:     1,
		IdleTimeout:  60 * time.Second,
		StartTimeout: 30 * time.Second,
		ConvTimeout:  5 * time.Minute,
		Restart:      RestartOnFailure,
		Line:         3,
	}}
	if !reflect.DeepEqual(c.Services, wantSvc) {
		t.Errorf("Services:\n got %+v\nwant %+v", c.Services, wantSvc)
	}
}

// TestUseDataDir: the state dir goes under the instance's data dir, the log
// and temp dirs follow it, and dirs the file set stay as set.
func TestUseDataDir(t *testing.T) {
	td := t.TempDir()
	t.Setenv("TMPDIR", td)
	c := DemoConfig("/bin/true")
	c.Host.Name = "h1"
	c.UseDataDir("/data/a")
	if c.Host.StateDir != "/data/a/attach-h1" || c.Host.LogDir != "/data/a/attach-h1/logs" || !strings.HasPrefix(c.Host.TempDir, td+"/muster-h1-") {
		t.Errorf("demo under /data/a: %+v", c.Host)
	}
	other := DemoConfig("/bin/true")
	other.Host.Name = "h1"
	other.UseDataDir("/data/b")
	if other.Host.TempDir == c.Host.TempDir || len(filepath.Base(c.Host.TempDir)) != len("muster-h1-")+8 {
		t.Errorf("temp roots %s and %s: want one per data dir", c.Host.TempDir, other.Host.TempDir)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "a.yaml")
	yaml := "host:\n  name: h2\n  temp_dir: /scratch/t\nservices:\n  - service: A/B/C\n    program: /bin/true\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	f.UseDataDir("/data/c")
	if f.Host.StateDir != "/data/c/attach-h2" || f.Host.LogDir != "/data/c/attach-h2/logs" || f.Host.TempDir != "/scratch/t" {
		t.Errorf("file with temp_dir under /data/c: %+v", f.Host)
	}
	yaml = "host:\n  state_dir: /srv/state\nservices:\n  - service: A/B/C\n    program: /bin/true\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if f, err = LoadConfig(path); err != nil {
		t.Fatal(err)
	}
	before := f.Host
	f.UseDataDir("/data/d")
	if f.Host != before {
		t.Errorf("a state_dir set in the file moved: %+v, was %+v", f.Host, before)
	}
}

func TestDefaultStateDir(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, tc := range []struct {
		name, xdg, home, want string
	}{
		{"xdg", "/var/state", home, "/var/state/muster/attach-h1"},
		{"unset", "", home, filepath.Join(home, ".local", "state", "muster", "attach-h1")},
		{"relative xdg ignored", "state", home, filepath.Join(home, ".local", "state", "muster", "attach-h1")},
		{"no home: under the temp dir", "", "", filepath.Join(os.TempDir(), "muster-state", "muster", "attach-h1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("XDG_STATE_HOME", tc.xdg)
			t.Setenv("HOME", tc.home)
			if got := defaultStateDir("h1"); got != tc.want {
				t.Errorf("defaultStateDir = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSanitiseName(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "web-01", "web-01"},
		{"fqdn", "web01.example.com", "web01-example-com"},
		{"non-ascii", "hôte", "h-te"},
		{"empty", "", "localhost"},
		{"long", strings.Repeat("a", 70), strings.Repeat("a", 64)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sanitiseName(tc.in); got != tc.want {
				t.Errorf("sanitiseName(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"512KiB", 512 << 10, true},
		{"10MiB", 10 << 20, true},
		{"1GiB", 1 << 30, true},
		{"2TiB", 2 << 40, true},
		{"100kB", 100_000, true},
		{"5MB", 5_000_000, true},
		{"3GB", 3_000_000_000, true},
		{"10 mib", 10 << 20, true},
		{"42", 42, true},
		{"42B", 42, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"1.5MiB", 0, false},
		{"-1KiB", 0, false},
		{"10 MiBs", 0, false},
		{"9999999999999TiB", 0, false},
		{"99999999999999999999", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseSize(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseSize(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestDemoConfig(t *testing.T) {
	c := DemoConfig("/usr/local/bin/muster")
	if c.File != "" {
		t.Errorf("File = %q, want \"\"", c.File)
	}
	if c.Host.Name == "" || !filepath.IsAbs(c.Host.StateDir) || c.Host.LogDir == "" || c.Host.TempDir == "" ||
		c.Host.MaxReplicas != 64 || c.Host.Heartbeat != 2*time.Second || c.Host.Grace != 10*time.Second {
		t.Errorf("Host defaults not resolved: %+v", c.Host)
	}
	base := ServiceConfig{
		Program:      "/usr/local/bin/muster",
		Max:          4,
		Capacity:     1,
		IdleTimeout:  30 * time.Second,
		StartTimeout: 30 * time.Second,
		ConvTimeout:  5 * time.Minute,
		Restart:      RestartOnFailure,
	}
	echo, sleep := base, base
	echo.Service, echo.Args = "DEMO/ECHO/ECHO", []string{"example", "echo"}
	sleep.Service, sleep.Args = "DEMO/SLEEP/SLEEP", []string{"example", "sleep"}
	if want := []ServiceConfig{echo, sleep}; !reflect.DeepEqual(c.Services, want) {
		t.Errorf("Services:\n got %+v\nwant %+v", c.Services, want)
	}
	for _, s := range c.Services {
		if _, err := proto.ParseService(s.Service); err != nil {
			t.Error(err)
		}
	}
	if _, ok := c.service("DEMO/ECHO/ECHO"); !ok {
		t.Error("Service(DEMO/ECHO/ECHO) not found")
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	for _, tc := range []struct {
		name, path, want string
		is               error
	}{
		{"not found", missing, missing + ": cannot read config: no such file or directory", fs.ErrNotExist},
		{"directory", dir, dir + ": is a directory, want a YAML file", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadConfig(tc.path)
			if c != nil || err == nil {
				t.Fatalf("LoadConfig = %v, %v; want an error", c, err)
			}
			if err.Error() != tc.want {
				t.Errorf("error:\n got %s\nwant %s", err, tc.want)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
		})
	}
}

// TestParseConfigErrors checks the exact text of each problem parseConfig
// reports. In yaml and want, {{prog}} is an executable script, {{dir}} the
// directory of the config file {{file}}, and {{noexec}} a file without
// execute permission.
func TestParseConfigErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "attach.yaml")
	noexec := filepath.Join(dir, "noexec.sh")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	prog := filepath.Join(testdataDir(t), "bin", "ok.sh")
	expand := strings.NewReplacer("{{prog}}", prog, "{{dir}}", dir, "{{file}}", file, "{{noexec}}", noexec).Replace

	const allowedHost = "(allowed: name, max_replicas, max_users, state_dir, log_dir, temp_dir, log_max_bytes, log_keep, log_total_bytes, heartbeat, grace)"
	const allowedService = "(allowed: service, program, args, env, dir, min, max, standby, capacity, idle_timeout, start_timeout, conv_timeout, restart, exit_after_conversation)"

	for _, tc := range []struct {
		name string
		yaml string
		want string // one line per problem
	}{
		// Structure.
		{"empty file", "", `{{file}}: empty config: want host and services`},
		{"only comments", "# nothing here\n\n# at all\n", `{{file}}: empty config: want host and services`},
		{"null document", "---\n", `{{file}}: empty config: want host and services`},
		{"top level is a list", "- service: A/B/C\n", `{{file}}:1:1: want a mapping with host and services, got a list`},
		{"top level is a string", "hello\n", `{{file}}:1:1: want a mapping with host and services, got "hello"`},
		{"two documents", "services:\n  - service: A/B/C\n    program: {{prog}}\n---\nhost: {}\n",
			`{{file}}:4:1: want one YAML document, found another`},
		{"unknown top-level key", `
hosts: {}
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:2:1: unknown field "hosts" (allowed: host, services)`},
		{"unknown host key", `
host:
  nme: web1
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:3:3: host: unknown field "nme" ` + allowedHost},
		{"unknown service key", `
services:
  - service: A/B/C
    program: {{prog}}
    arg: -v
`, `{{file}}:5:5: services[0]: unknown field "arg" ` + allowedService},
		{"merge key", `
services:
  - &a
    service: A/B/C
    program: {{prog}}
  - <<: *a
    service: A/B/D
`, `{{file}}:6:5: services[1]: unknown field "<<" ` + allowedService + `
{{file}}:6:5: services[1].program: missing: want the path of the program to run`},
		{"duplicate key", `
host:
  name: web1
  name: web2
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:4:3: host: duplicate field "name" (first at line 3)`},
		{"duplicate top-level key", `
services:
  - service: A/B/C
    program: {{prog}}
services: []
`, `{{file}}:5:1: duplicate field "services" (first at line 2)`},
		{"services missing", "host:\n  name: web1\n", `{{file}}:1:1: services: missing: want a non-empty list of services`},
		{"services empty", "services: []\n", `{{file}}:1:11: services: want a non-empty list of services, got an empty list`},
		{"services null", "services:\n", `{{file}}:1:10: services: want a list of services, got nothing`},
		{"services is a mapping", `
services:
  service: A/B/C
  program: {{prog}}
`, `{{file}}:3:3: services: want a list of services, got a mapping`},
		{"service is a string", "services:\n  - A/B/C\n", `{{file}}:2:5: services[0]: want a mapping, got "A/B/C"`},
		{"host is a list", `
host: [web1]
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:2:7: host: want a mapping, got a list`},
		{"args is a string", `
services:
  - service: A/B/C
    program: {{prog}}
    args: --verbose
`, `{{file}}:5:11: services[0].args: want a list of strings, got "--verbose"`},
		{"args element is a list", `
services:
  - service: A/B/C
    program: {{prog}}
    args: [-v, [x]]
`, `{{file}}:5:16: services[0].args[1]: want a string, got a list`},
		{"env is a list", `
services:
  - service: A/B/C
    program: {{prog}}
    env: [FOO=1]
`, `{{file}}:5:10: services[0].env: want a mapping of NAME: value, got a list`},
		{"key is a list", `
services:
  - service: A/B/C
    program: {{prog}}
    [min]: 1
`, `{{file}}:5:5: services[0]: want a field name, got a list`},

		// YAML syntax.
		{"syntax error", `
services:
  - service: A/B/C
    program: [{{prog}}
  - service: A/B/D
`, `{{file}}:4: YAML syntax error: did not find expected ',' or ']'`},
		{"bad indentation", `
services:
  - service: A/B/C
 program: x
`, `{{file}}:4: YAML syntax error: did not find expected key`},
		{"bad indentation in a list", `
services:
  - service: A/B/C
    program: x
  - service: A/B/D
    program: y
 - service: A/B/E
`, `{{file}}:7: YAML syntax error: did not find expected key`},
		{"unclosed flow mapping", "services: [{service: A/B/C\n", `{{file}}:2: YAML syntax error: did not find expected ',' or '}'`},
		{"unterminated string", "services:\n  - service: 'A/B/C\n", `{{file}}:2: YAML syntax error: found unexpected end of stream`},
		{"syntax error on line 1", "services: a: b\n", `{{file}}:1: YAML syntax error: mapping values are not allowed in this context`},
		{"garbage", "\x00\x01\x02 not yaml", `{{file}}:1:1: YAML syntax error: control characters are not allowed`},
		{"control character on line 3", "services:\n  - service: A/B/C\n    program: a\x01b\n",
			`{{file}}:3:15: YAML syntax error: control characters are not allowed`},
		{"tab indentation", "services:\n\t- service: A/B/C\n", `{{file}}:2: YAML syntax error: found character that cannot start any token`},
		{"unknown anchor", `
services:
  - service: A/B/C
    program: *prog
`, `{{file}}:4:14: YAML syntax error: unknown anchor 'prog' referenced`},

		// Service names.
		{"bad service name", `
services:
  - service: A/B
    program: {{prog}}
`, `{{file}}:3:14: services[0].service: bad service name: "A/B": want CLASS/NAME/SERVICE`},
		{"bad service character", `
services:
  - service: A/B/C.D
    program: {{prog}}
`, `{{file}}:3:14: services[0].service: bad service name: "A/B/C.D": service has character '.' (allowed: A-Z a-z 0-9 _ -)`},
		{"missing service", `
services:
  - program: {{prog}}
`, `{{file}}:3:5: services[0].service: missing: want CLASS/NAME/SERVICE`},
		{"duplicate service", `
services:
  - service: A/B/C
    program: {{prog}}
  - service: A/B/D
    program: {{prog}}
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:7:14: services[2].service: duplicate service "A/B/C" (first at line 3)`},

		// Programs.
		{"missing program", `
services:
  - service: A/B/C
    args: [x]
`, `{{file}}:3:5: services[0].program: missing: want the path of the program to run`},
		{"null program", `
services:
  - service: A/B/C
    program:
`, `{{file}}:4:13: services[0].program: missing: want the path of the program to run`},
		{"program not found", `
services:
  - service: A/B/C
    program: /nonexistent/muster-worker
`, `{{file}}:4:14: services[0].program: no such file: /nonexistent/muster-worker`},
		{"relative program resolved against the config dir", `
services:
  - service: A/B/C
    program: bin/ok.sh
`, `{{file}}:4:14: services[0].program: no such file: {{dir}}/bin/ok.sh (relative paths are resolved against the config file's directory)`},
		{"program is a directory", `
services:
  - service: A/B/C
    program: sub
`, `{{file}}:4:14: services[0].program: {{dir}}/sub is a directory, want an executable file`},
		{"program not executable", `
services:
  - service: A/B/C
    program: {{noexec}}
`, `{{file}}:4:14: services[0].program: {{noexec}} is not executable (mode -rw-r--r--)`},
		{"program with tilde", `
services:
  - service: A/B/C
    program: ~/bin/worker
`, `{{file}}:4:14: services[0].program: "~/bin/worker": "~" is not expanded; write an absolute path or one relative to the config file's directory`},
		{"dir missing", `
services:
  - service: A/B/C
    program: {{prog}}
    dir: nope
`, `{{file}}:5:10: services[0].dir: no such directory: {{dir}}/nope (relative paths are resolved against the config file's directory)`},
		{"dir is a file", `
services:
  - service: A/B/C
    program: {{prog}}
    dir: {{noexec}}
`, `{{file}}:5:10: services[0].dir: {{noexec}} is not a directory`},

		// Environment.
		{"env key reserved", `
services:
  - service: A/B/C
    program: {{prog}}
    env:
      MUSTER_X: 1
`, `{{file}}:6:7: services[0].env.MUSTER_X: reserved: the attach manager sets the MUSTER_* variables`},
		{"env key reserved lower case", `
services:
  - service: A/B/C
    program: {{prog}}
    env: {muster_service: X/Y/Z}
`, `{{file}}:5:11: services[0].env.muster_service: reserved: the attach manager sets the MUSTER_* variables`},
		{"env bad key", `
services:
  - service: A/B/C
    program: {{prog}}
    env:
      1FOO: x
      FOO-BAR: y
`, `{{file}}:6:7: services[0].env: bad variable name "1FOO": want [A-Za-z_][A-Za-z0-9_]*
{{file}}:7:7: services[0].env: bad variable name "FOO-BAR": want [A-Za-z_][A-Za-z0-9_]*`},
		{"env duplicate key", `
services:
  - service: A/B/C
    program: {{prog}}
    env:
      FOO: x
      FOO: y
`, `{{file}}:7:7: services[0].env: duplicate variable "FOO" (first at line 6)`},
		{"env null value", `
services:
  - service: A/B/C
    program: {{prog}}
    env:
      FOO:
`, `{{file}}:6:11: services[0].env.FOO: want a string, got nothing (write "" for an empty value)`},
		{"env value is a mapping", `
services:
  - service: A/B/C
    program: {{prog}}
    env:
      FOO: {a: b}
`, `{{file}}:6:12: services[0].env.FOO: want a string, got a mapping`},

		// Numbers, durations, sizes, booleans, enums.
		{"bad duration", `
services:
  - service: A/B/C
    program: {{prog}}
    start_timeout: abc
`, `{{file}}:5:20: services[0].start_timeout: want a duration such as "30s", got "abc"`},
		{"duration without unit", `
services:
  - service: A/B/C
    program: {{prog}}
    conv_timeout: 300
`, `{{file}}:5:19: services[0].conv_timeout: want a duration such as "30s", got "300"`},
		{"negative idle timeout", `
services:
  - service: A/B/C
    program: {{prog}}
    idle_timeout: -1s
`, `{{file}}:5:19: services[0].idle_timeout: want a duration >= 0, got "-1s"`},
		{"zero start timeout", `
services:
  - service: A/B/C
    program: {{prog}}
    start_timeout: 0s
`, `{{file}}:5:20: services[0].start_timeout: want a duration > 0, got "0s"`},
		{"zero heartbeat", `
host:
  heartbeat: 0
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:3:14: host.heartbeat: want a duration > 0, got "0"`},
		{"min greater than max", `
services:
  - service: A/B/C
    program: {{prog}}
    min: 3
    max: 2
`, `{{file}}:3:5: services[0]: min (3) is greater than max (2)`},
		{"min greater than default max", `
services:
  - service: A/B/C
    program: {{prog}}
    min: 2
`, `{{file}}:3:5: services[0]: min (2) is greater than max (1, the default)`},
		{"min and standby greater than max", `
services:
  - service: A/B/C
    program: {{prog}}
    min: 1
    max: 2
    standby: 2
`, `{{file}}:7:14: services[0].standby: min (1) + standby (2) is greater than max (2): standby replicas are processes of the service too`},
		{"negative standby", `
services:
  - service: A/B/C
    program: {{prog}}
    standby: -1
`, `{{file}}:5:14: services[0].standby: want a whole number >= 0, got "-1"`},
		{"negative min", `
services:
  - service: A/B/C
    program: {{prog}}
    min: -1
`, `{{file}}:5:10: services[0].min: want a whole number >= 0, got "-1"`},
		{"max 0", `
services:
  - service: A/B/C
    program: {{prog}}
    max: 0
`, `{{file}}:5:10: services[0].max: want a whole number >= 1, got "0"`},
		{"max is a word", `
services:
  - service: A/B/C
    program: {{prog}}
    max: four
`, `{{file}}:5:10: services[0].max: want a whole number >= 1, got "four"`},
		{"max is quoted", `
services:
  - service: A/B/C
    program: {{prog}}
    max: "4"
`, `{{file}}:5:10: services[0].max: want a whole number >= 1, got "4" (a quoted string; write the number without quotes)`},
		{"max is a fraction", `
services:
  - service: A/B/C
    program: {{prog}}
    max: 1.5
`, `{{file}}:5:10: services[0].max: want a whole number >= 1, got "1.5"`},
		{"max too large", `
services:
  - service: A/B/C
    program: {{prog}}
    max: 2000000
`, `{{file}}:5:10: services[0].max: want a whole number <= 1000000, got "2000000"`},
		{"capacity 0", `
services:
  - service: A/B/C
    program: {{prog}}
    capacity: 0
`, `{{file}}:5:15: services[0].capacity: want a whole number >= 1, got "0"`},
		{"bad size", `
host:
  log_max_bytes: 10 MiBs
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:3:18: host.log_max_bytes: want a size such as "10MiB" or a number of bytes, got "10 MiBs"`},
		{"zero size", `
host:
  log_total_bytes: 0
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:3:20: host.log_total_bytes: want a size > 0, got "0"`},
		{"log total below log max", `
host:
  log_max_bytes: 1GiB
  log_total_bytes: 512MiB
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:4:20: host.log_total_bytes: want at least log_max_bytes (1073741824), got 536870912`},
		{"bad restart value", `
services:
  - service: A/B/C
    program: {{prog}}
    restart: sometimes
`, `{{file}}:5:14: services[0].restart: want one of on-failure, always, never, got "sometimes"`},
		{"bad bool", `
services:
  - service: A/B/C
    program: {{prog}}
    exit_after_conversation: yes
`, `{{file}}:5:30: services[0].exit_after_conversation: want true or false, got "yes"`},
		{"bad host name", `
host:
  name: web 1
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:3:9: host.name: want 1-64 characters of A-Z a-z 0-9 _ -, got "web 1"`},
		{"host path with tilde", `
host:
  state_dir: ~/state
services:
  - service: A/B/C
    program: {{prog}}
`, `{{file}}:3:14: host.state_dir: "~/state": "~" is not expanded; write an absolute path or one relative to the config file's directory`},
		{"max_replicas below sum of min", `
host:
  max_replicas: 3
services:
  - service: A/B/C
    program: {{prog}}
    min: 2
    max: 2
  - service: A/B/D
    program: {{prog}}
    min: 2
    max: 4
`, `{{file}}:3:17: host.max_replicas: want at least the sum of the services' min and standby (4), got 3`},
		{"default max_replicas below sum of min", `
services:
  - service: A/B/C
    program: {{prog}}
    min: 65
    max: 65
`, `{{file}}:2:1: host.max_replicas: want at least the sum of the services' min and standby (65), got 64 (the default)`},

		// Every problem is reported, in file order.
		{"multiple errors", `
host:
  nme: web1
  max_replicas: lots
services:
  - service: A/B
    program: /nonexistent/worker
    max: 0
    idle_timeout: forever
  - service: A/B/C
    program: {{noexec}}
    restart: sometimes
    env: {MUSTER_SERVICE: X/Y/Z}
`, `{{file}}:3:3: host: unknown field "nme" ` + allowedHost + `
{{file}}:4:17: host.max_replicas: want a whole number >= 1, got "lots"
{{file}}:6:14: services[0].service: bad service name: "A/B": want CLASS/NAME/SERVICE
{{file}}:7:14: services[0].program: no such file: /nonexistent/worker
{{file}}:8:10: services[0].max: want a whole number >= 1, got "0"
{{file}}:9:19: services[0].idle_timeout: want a duration such as "30s", got "forever"
{{file}}:11:14: services[1].program: {{noexec}} is not executable (mode -rw-r--r--)
{{file}}:12:14: services[1].restart: want one of on-failure, always, never, got "sometimes"
{{file}}:13:11: services[1].env.MUSTER_SERVICE: reserved: the attach manager sets the MUSTER_* variables`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if runtime.GOOS == "windows" && strings.Contains(tc.want, "mode") {
				t.Skip("no execute permission bits on Windows")
			}
			// Cases written as raw strings start with a newline, which is
			// part of the file: line numbers count it.
			c, err := parseConfig(file, []byte(expand(tc.yaml)))
			if err == nil {
				t.Fatalf("parseConfig succeeded: %+v", c)
			}
			if c != nil {
				t.Errorf("parseConfig returned a config with the error: %+v", c)
			}
			if want := expand(tc.want); err.Error() != want {
				t.Errorf("error:\n got %s\nwant %s", err, want)
			}
			checkErr(t, err)
		})
	}
}

// checkErr checks that err wraps ErrConfig and is a *ConfigError or a join
// of them.
func checkErr(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, ErrConfig) {
		t.Errorf("error %v does not wrap ErrConfig", err)
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		if _, single := err.(*ConfigError); !single {
			errs = j.Unwrap()
		}
	}
	for _, e := range errs {
		ce, ok := e.(*ConfigError)
		if !ok {
			t.Errorf("error %T %v is not a *ConfigError", e, e)
			continue
		}
		if !errors.Is(ce, ErrConfig) {
			t.Errorf("error %v does not wrap ErrConfig", ce)
		}
	}
}

func TestConfigErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  ConfigError
		want string
	}{
		{"full", ConfigError{File: "/etc/muster/attach.yaml", Line: 12, Column: 10, Field: "services[1].max", Msg: `want a whole number >= 1, got "four"`},
			`/etc/muster/attach.yaml:12:10: services[1].max: want a whole number >= 1, got "four"`},
		{"no column", ConfigError{File: "a.yaml", Line: 3, Msg: "m"}, "a.yaml:3: m"},
		{"no position", ConfigError{File: "a.yaml", Field: "f", Msg: "m"}, "a.yaml: f: m"},
		{"no file", ConfigError{Line: 1, Column: 2, Msg: "m"}, "<config>:1:2: m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("Error() = %q, want %q", got, tc.want)
			}
			if !errors.Is(&tc.err, ErrConfig) {
				t.Error("does not wrap ErrConfig")
			}
		})
	}
}

// FuzzParseConfig checks that parseConfig never panics, that every error
// it returns wraps ErrConfig and is made of *ConfigErrors, and that every
// config it accepts keeps the promised invariants.
func FuzzParseConfig(f *testing.F) {
	td := testdataDir(f)
	seeds, err := filepath.Glob(filepath.Join(td, "*.yaml"))
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds in %s: %v", td, err)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("services: [{service: A/B/C, program: bin/ok.sh, env: {A: &x 1, B: *x}}]\n"))
	f.Add([]byte("services: &s [*s]\n"))
	f.Add([]byte("host: {max_replicas: 0x10, log_max_bytes: 1_000}\nservices: []\n"))
	file := filepath.Join(td, "fuzz.yaml") // relative programs resolve into testdata
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig(file, data)
		if err != nil {
			if c != nil {
				t.Errorf("config and error both returned")
			}
			checkErr(t, err)
			return
		}
		if c == nil || len(c.Services) == 0 {
			t.Fatalf("no error and no services: %+v", c)
		}
		h := c.Host
		if !validHostName(h.Name) || h.MaxReplicas < 1 || !filepath.IsAbs(h.StateDir) || h.LogDir == "" ||
			h.TempDir == "" || h.LogMaxBytes <= 0 || h.LogTotalBytes < h.LogMaxBytes || h.LogKeep < 0 ||
			h.Heartbeat <= 0 || h.Grace < 0 {
			t.Errorf("bad host: %+v", h)
		}
		sum := 0
		seen := map[string]bool{}
		for _, s := range c.Services {
			if _, err := proto.ParseService(s.Service); err != nil || seen[s.Service] {
				t.Errorf("bad or duplicate service %q: %v", s.Service, err)
			}
			seen[s.Service] = true
			if !filepath.IsAbs(s.Program) || s.Dir != "" && !filepath.IsAbs(s.Dir) {
				t.Errorf("relative path in %+v", s)
			}
			if s.Min < 0 || s.Max < 1 || s.Min > s.Max || s.Capacity < 1 || s.IdleTimeout < 0 ||
				s.StartTimeout <= 0 || s.ConvTimeout <= 0 || s.Line < 1 {
				t.Errorf("bad service: %+v", s)
			}
			for k := range s.Env {
				if !validEnvName(k) || strings.HasPrefix(strings.ToUpper(k), "MUSTER_") {
					t.Errorf("bad env name %q", k)
				}
			}
			sum += s.Min
		}
		if sum > h.MaxReplicas {
			t.Errorf("sum of min %d > max_replicas %d", sum, h.MaxReplicas)
		}
	})
}

func TestHeartbeatRange(t *testing.T) {
	for _, hb := range []string{"5ms", "1m"} {
		_, err := parseConfig("/etc/a.yaml", []byte("host:\n  heartbeat: "+hb+"\nservices:\n  - service: A/B/C\n    program: /bin/sh\n"))
		if err == nil || !strings.Contains(err.Error(), "/etc/a.yaml:2:14: host.heartbeat: want 10ms to 30s") {
			t.Errorf("heartbeat %s: %v", hb, err)
		}
	}
}
