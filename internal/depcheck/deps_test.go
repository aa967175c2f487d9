package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

// heavy are the module paths an SDK package must not link.
var heavy = []string{
	"github.com/nats-io/nats-server",
	"github.com/urfave/cli",
	"github.com/shirou/gopsutil",
	"gopkg.in/yaml",
	"go.yaml.in/yaml",
	"github.com/goccy/go-yaml",
	"github.com/prometheus", // the daemons' /metrics only
}

func TestSDKsDoNotLinkServerCode(t *testing.T) {
	for _, pkg := range []string{
		"github.com/musterhq/muster/worker",
		"github.com/musterhq/muster/broker/client",
		"github.com/musterhq/muster/broker/proto",
		"github.com/musterhq/muster/examples/echo-worker",
	} {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 10 {
				t.Fatalf("go list -deps %s listed only %d packages: %q", pkg, len(deps), deps)
			}
			for _, d := range deps {
				for _, h := range heavy {
					if strings.HasPrefix(d, h) {
						t.Errorf("%s links %s (from %s)", pkg, d, h)
					}
				}
			}
		})
	}
}
