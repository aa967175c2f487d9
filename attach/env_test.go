package attach

import (
	"runtime"
	"slices"
	"strconv"
	"testing"

	"github.com/musterhq/muster/internal/natsconn"
)

// A replica's GOMAXPROCS is its capacity (at most the CPU count) unless
// the service's env sets it.
func TestReplicaGOMAXPROCS(t *testing.T) {
	m := &Manager{id: "m1", cfg: &Config{}}
	for _, c := range []struct {
		capacity int
		env      map[string]string
		want     string
	}{
		{1, nil, "GOMAXPROCS=1"},
		{1000, nil, "GOMAXPROCS=" + strconv.Itoa(runtime.NumCPU())},
		{1, map[string]string{"GOMAXPROCS": "8"}, "GOMAXPROCS=8"},
	} {
		env := m.env(&ServiceConfig{Service: "A/B/C", Capacity: c.capacity, Env: c.env}, natsconn.Config{}, "r1", "/tmp/x")
		n := 0
		for _, kv := range env {
			if len(kv) > 11 && kv[:11] == "GOMAXPROCS=" {
				n++
			}
		}
		if !slices.Contains(env, c.want) || n != 1 {
			t.Errorf("capacity %d, env %v: got %v, want one %s", c.capacity, c.env, env, c.want)
		}
	}
}
