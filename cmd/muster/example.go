package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/worker"
)

const sleepService = demo.SleepService

// exampleCommand is `muster example echo|sleep`.
func exampleCommand() *cli.Command {
	return &cli.Command{
		Name:  "example",
		Usage: "serve a demo service as a replica (what an attach manager starts)",
		Subcommands: []*cli.Command{
			exampleServe("echo", demo.EchoService, "answer calls with their payload and conversation messages with \"#N message\"", demo.Echo),
			exampleServe("sleep", sleepService, "answer after the duration the payload names (default 1s)", demo.Sleep),
		},
	}
}

// exampleServe serves h as one replica configured from the environment.
func exampleServe(name, service, usage string, h worker.HandlerFunc) *cli.Command {
	return &cli.Command{
		Name:  name,
		Usage: usage,
		Description: "Serves " + service + " (or $" + proto.EnvService + ") with settings from the MUSTER_*\n" +
			"environment an attach manager sets (" + proto.EnvCapacity + ", " + proto.EnvIdleTimeout + " …),\n" +
			"until its idle timeout, a QUIESCE or IMMED request, or SIGINT/SIGTERM.\n\n" + exitStatusHelp,
		Flags: connFlags(logLevelFlag()),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			svc := service
			if s := os.Getenv(proto.EnvService); s != "" {
				svc = s
			}
			nc, err := connect(c, "muster-replica "+svc, auth.RoleReplica)
			if err != nil {
				return err
			}
			defer nc.Close()
			opts := []worker.Option{worker.WithConn(nc), worker.WithLogger(log)}
			if os.Getenv(proto.EnvService) == "" {
				opts = append(opts, worker.WithService(service))
			}
			return worker.Run(c.Context, h, opts...)
		},
	}
}
