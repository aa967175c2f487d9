// Command echo-worker is a complete Muster replica: the echo demo service,
// configured from the environment an attach manager sets (MUSTER_URL,
// MUSTER_SERVICE, MUSTER_IDLE_TIMEOUT …).
//
//	MUSTER_URL=nats://127.0.0.1:4222 MUSTER_SERVICE=DEMO/ECHO/ECHO go run ./examples/echo-worker
package main

import (
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/worker"
)

func main() {
	worker.Main(worker.HandlerFunc(demo.Echo))
}
