package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/musterhq/muster/broker"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/harness"
	"github.com/musterhq/muster/internal/picture"
	"github.com/musterhq/muster/internal/testutil"
	"github.com/musterhq/muster/worker"
)

func TestServiceLs(t *testing.T) {
	env, _ := echoEnv(t)
	run(t, nil, "call", serverFlag(env), demo.EchoService, "hi")
	var got struct {
		Services []picture.Service `json:"services"`
	}
	testutil.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		out := run(t, nil, "service", "ls", serverFlag(env), "--json")
		got.Services = nil
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			return fmt.Errorf("stdout %q: %w", out, err)
		}
		if len(got.Services) != 1 || got.Services[0].Service != demo.EchoService || got.Services[0].Replicas != 1 || got.Services[0].Warm != 1 {
			return fmt.Errorf("services %+v, want %s with 1 replica and 1 warm request", got.Services, demo.EchoService)
		}
		return nil
	})
	out := run(t, nil, "service", "ls", serverFlag(env))
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(strings.Join(strings.Fields(lines[0]), " "), "SERVICE REPLICAS ACTIVE/CAP PENDING REQUESTS WARM QUEUED") {
		t.Fatalf("table %q", out)
	}
	if f := strings.Fields(lines[1]); f[0] != demo.EchoService || f[1] != "1" || f[4] != "1" {
		t.Fatalf("row %q", lines[1])
	}
}

func TestServiceLsEmptyJSON(t *testing.T) {
	env := harness.Start(t, broker.Config{})
	out := run(t, nil, "service", "ls", serverFlag(env), "--json")
	if want := `{"services":[]}` + "\n"; out != want {
		t.Fatalf("stdout %q, want %q", out, want)
	}
}

func TestServiceLsNoBroker(t *testing.T) {
	s := testutil.StartNATS(t)
	r := runApp(context.Background(), nil, "service", "ls", "--server", s.ClientURL())
	if r.err != nil || !strings.Contains(r.stderr.String(), "no broker running") {
		t.Fatalf("err %v, stderr %q: want a partial picture naming no broker running", r.err, r.stderr)
	}
}

func TestReplicaLs(t *testing.T) {
	env, _ := echoEnv(t, worker.WithReplicaID("r-ls"), worker.WithCapacity(3))
	out := run(t, nil, "replica", "ls", serverFlag(env), "--json")
	var got struct {
		Replicas []picture.Replica `json:"replicas"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout %q: %v", out, err)
	}
	if len(got.Replicas) != 1 {
		t.Fatalf("replicas %+v, want one", got.Replicas)
	}
	r := got.Replicas[0]
	if r.ID != "r-ls" || r.Service != demo.EchoService || r.Capacity != 3 || r.State != proto.StateReady {
		t.Fatalf("replica %+v", r)
	}

	out = run(t, nil, "replica", "ls", serverFlag(env))
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(strings.Join(strings.Fields(lines[0]), " "), "ID SERVICE HOST PID STATE ACTIVE EVENTS") {
		t.Fatalf("table %q", out)
	}
	if f := strings.Fields(lines[1]); f[0] != "r-ls" || f[5] != "0/3" {
		t.Fatalf("row %q", lines[1])
	}
}

func TestReplicaLsNoBucket(t *testing.T) {
	s := testutil.StartNATS(t)
	out := run(t, nil, "replica", "ls", "--server", s.ClientURL(), "--json")
	if out != `{"replicas":[]}`+"\n" {
		t.Fatalf("stdout %q", out)
	}
}

func TestReplicaControl(t *testing.T) {
	for _, tt := range []struct {
		args  []string
		doing string
	}{{[]string{"quiesce"}, "quiescing"}, {[]string{"stop"}, "quiescing"}, {[]string{"stop", "--now"}, "stopping"}} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			env, r := echoEnv(t, worker.WithReplicaID("r-ctl"))
			out := run(t, nil, append(append([]string{"replica"}, tt.args...), serverFlag(env), "r-ctl")...)
			if want := "replica r-ctl " + tt.doing + "\n"; out != want {
				t.Fatalf("stdout %q, want %q", out, want)
			}
			if err := r.Wait(t, 10*time.Second); err != nil {
				t.Fatalf("replica exited with %v", err)
			}
			out = run(t, nil, "replica", "ls", serverFlag(env), "--json")
			if strings.Contains(out, "r-ctl") {
				t.Fatalf("replica still listed: %s", out)
			}
		})
	}
}

func TestReplicaControlErrors(t *testing.T) {
	env, _ := echoEnv(t)
	tests := []struct {
		name     string
		args     []string
		contains string
	}{
		{"unknown", []string{"quiesce", "nosuch"}, "replica nosuch not found"},
		{"bad id", []string{"stop", "a.b"}, "bad id"},
		{"no id", []string{"stop"}, "want ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runApp(context.Background(), nil, append([]string{"replica", tt.args[0], serverFlag(env)}, tt.args[1:]...)...)
			if r.err == nil || exitCode(r.err) != 1 || !strings.Contains(r.err.Error(), tt.contains) {
				t.Fatalf("err %v, want exit 1 containing %q", r.err, tt.contains)
			}
		})
	}
}

// replica ls and show say when a parked standby is armed.
func TestStateOfArmedStandby(t *testing.T) {
	for _, tc := range []struct {
		state, arm, want string
	}{
		{proto.StateStandby, proto.ArmOn, "standby (armed)"},
		{proto.StateStandby, proto.ArmOff, "standby"},
		{proto.StateStandby, "", "standby"},
		{proto.StateReady, "", "ready"},
	} {
		if got := stateOf(proto.ReplicaInfo{State: tc.state, Arm: tc.arm}); got != tc.want {
			t.Errorf("state %q arm %q: %q, want %q", tc.state, tc.arm, got, tc.want)
		}
	}
}
