package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/placement"
	"github.com/musterhq/muster/internal/streams"
)

// The host pool and placement settings, in the KV bucket muster_pool
// (proto.PoolBucket): `muster host add|rm|enable|disable|set` and
// `muster service placement`. Brokers and attach managers follow the
// bucket, so a change applies within moments, on every host.

// poolKV connects as admin and opens (or creates) the pool bucket.
func poolKV(c *cli.Context, name string) (jetstream.KeyValue, *nats.Conn, context.Context, context.CancelFunc, error) {
	nc, err := connect(c, name, auth.RoleAdmin)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	js, err := jetstream.New(nc)
	if err == nil {
		var kv jetstream.KeyValue
		if kv, err = streams.EnsureConfigBucket(ctx, js, proto.PoolBucket); err == nil {
			return kv, nc, ctx, cancel, nil
		}
	}
	cancel()
	nc.Close()
	return nil, nil, nil, nil, fmt.Errorf("host pool: %w", err)
}

// updateHost applies f to the pool record of id (a missing record is an
// error unless create), with a compare-and-set retry.
func updateHost(c *cli.Context, id, verb string, create bool, f func(*proto.HostSetting)) error {
	if err := proto.ValidID(id); err != nil {
		return fmt.Errorf("host %q: %v", id, err)
	}
	kv, nc, ctx, cancel, err := poolKV(c, "muster host "+verb)
	if err != nil {
		return err
	}
	defer nc.Close()
	defer cancel()
	key := proto.PoolHostKey(id)
	for range 5 {
		var h proto.HostSetting
		var rev uint64
		e, err := kv.Get(ctx, key)
		switch {
		case err == nil:
			if h, err = proto.DecodeHostSetting(e.Value()); err != nil {
				return err
			}
			rev = e.Revision()
			if create {
				return fmt.Errorf("host %s is already in the pool", id)
			}
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			if !create {
				return fmt.Errorf("host %s not found in the pool (muster host ls; muster host add %s)", id, id)
			}
			h = proto.HostSetting{ID: id, Added: time.Now().UnixMilli()}
		default:
			return fmt.Errorf("host pool: %w", err)
		}
		f(&h)
		b, _ := json.Marshal(h)
		if rev == 0 {
			_, err = kv.Create(ctx, key, b)
		} else {
			_, err = kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("host pool: %w", err)
		}
		// Changed meanwhile (the host added itself, another admin): again.
	}
	return fmt.Errorf("host %s: the pool record kept changing; try again", id)
}

// hostChange is the action of `muster host VERB HOST`: it applies set to
// the host's pool record (creating it with create) and says done.
func hostChange(verb string, create bool, done string, set func(*cli.Context, *proto.HostSetting)) cli.ActionFunc {
	return func(c *cli.Context) error {
		id, err := oneArg(c, "HOST")
		if err != nil {
			return err
		}
		if err := updateHost(c, id, verb, create, func(h *proto.HostSetting) { set(c, h) }); err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.App.Writer, "host %s %s\n", id, done)
		return err
	}
}

// poolCommands are the host pool subcommands of `muster host`.
func poolCommands() []*cli.Command {
	flags := func(more ...cli.Flag) []cli.Flag { return connFlags(append([]cli.Flag{adminTimeout()}, more...)...) }
	return []*cli.Command{{
		Name:        "add",
		Usage:       "add a host to the pool before it runs (a host also adds itself when its attach manager starts)",
		ArgsUsage:   "HOST",
		Description: "Writes host.HOST in the " + proto.PoolBucket + " bucket.\n\n" + exitStatusHelp,
		Flags:       flags(&cli.StringFlag{Name: "note", Usage: "a note shown in host show"}),
		Action:      hostChange("add", true, "added to the pool", func(c *cli.Context, h *proto.HostSetting) { h.Note = c.String("note") }),
	}, {
		Name:        "rm",
		Usage:       "remove a host from the pool (one that registers again is added again)",
		ArgsUsage:   "HOST",
		Description: "Deletes host.HOST from the " + proto.PoolBucket + " bucket.\n\n" + exitStatusHelp,
		Flags:       flags(),
		Action: func(c *cli.Context) error {
			id, err := oneArg(c, "HOST")
			if err != nil {
				return err
			}
			kv, nc, ctx, cancel, err := poolKV(c, "muster host rm")
			if err != nil {
				return err
			}
			defer nc.Close()
			defer cancel()
			if _, err := kv.Get(ctx, proto.PoolHostKey(id)); err != nil {
				return fmt.Errorf("host %s not found in the pool (muster host ls)", id)
			}
			if err := kv.Delete(ctx, proto.PoolHostKey(id)); err != nil {
				return fmt.Errorf("host pool: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "host %s removed from the pool\n", id)
			return nil
		},
	}, {
		Name:        "enable",
		Usage:       "let the brokers place replicas on a host again",
		ArgsUsage:   "HOST",
		Description: exitStatusHelp,
		Flags:       flags(),
		Action:      hostChange("enable", false, "enabled", func(_ *cli.Context, h *proto.HostSetting) { h.Disabled = false }),
	}, {
		Name:        "disable",
		Usage:       "place no new replicas on a host (its running replicas go on; isolate to quiesce them)",
		ArgsUsage:   "HOST",
		Description: exitStatusHelp,
		Flags:       flags(),
		Action:      hostChange("disable", false, "disabled: no new replicas are placed on it", func(_ *cli.Context, h *proto.HostSetting) { h.Disabled = true }),
	}, {
		Name:      "set",
		Usage:     "change a host's live settings: max_replicas=N, max_users=N (0: the host's config), note=TEXT, enabled=true|false, isolated=true|false",
		ArgsUsage: "HOST KEY=VALUE...",
		Description: "Limits go to the pool record, which the host's attach manager follows (it applies them at once);\n" +
			"isolated=true|false is muster host isolate|restore.\n\n" + exitStatusHelp,
		Flags: flags(),
		Action: func(c *cli.Context) error {
			if c.NArg() < 2 {
				return errors.New("host set: want HOST KEY=VALUE...")
			}
			id := c.Args().First()
			var isolate *bool
			var sets []func(*proto.HostSetting)
			for _, kv := range c.Args().Slice()[1:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("host set: %q: want KEY=VALUE", kv)
				}
				switch k {
				case "max_replicas", "max_users":
					n, err := strconv.Atoi(v)
					if err != nil || n < 0 {
						return fmt.Errorf("host set: %s=%q: want a number ≥ 0", k, v)
					}
					if k == "max_replicas" {
						sets = append(sets, func(h *proto.HostSetting) { h.MaxReplicas = n })
					} else {
						sets = append(sets, func(h *proto.HostSetting) { h.MaxUsers = n })
					}
				case "note":
					sets = append(sets, func(h *proto.HostSetting) { h.Note = v })
				case "enabled", "isolated":
					b, err := strconv.ParseBool(v)
					if err != nil {
						return fmt.Errorf("host set: %s=%q: want true or false", k, v)
					}
					if k == "enabled" {
						sets = append(sets, func(h *proto.HostSetting) { h.Disabled = !b })
					} else {
						isolate = &b
					}
				default:
					return fmt.Errorf("host set: unknown setting %q (max_replicas, max_users, note, enabled, isolated)", k)
				}
			}
			if len(sets) > 0 {
				if err := updateHost(c, id, "set", false, func(h *proto.HostSetting) {
					for _, f := range sets {
						f(h)
					}
				}); err != nil {
					return err
				}
			}
			if isolate != nil {
				op, done := proto.OpRestore, "restored"
				if *isolate {
					op, done = proto.OpIsolate, "isolated"
				}
				if err := hostControl(c, id, op); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "host %s %s\n", id, done)
			}
			fmt.Fprintf(c.App.Writer, "host %s updated\n", id)
			return nil
		},
	}}
}

// placementCommand is `muster service placement [SERVICE] SCHEME`.
func placementCommand() *cli.Command {
	names := make([]string, len(placement.Schemes))
	for i, s := range placement.Schemes {
		names[i] = string(s)
	}
	return &cli.Command{
		Name:      "placement",
		Usage:     "choose how a service's replicas are placed on hosts: " + strings.Join(names, ", "),
		ArgsUsage: "SERVICE SCHEME | --default SCHEME | SERVICE --reset",
		Description: "Writes the scheme to the " + proto.PoolBucket + " bucket; the leading broker uses it for the next placement.\n" +
			"--default sets the scheme of services without one (else the brokers' --placement, else p2c).\n" +
			"docs/OPERATIONS.md \"Placement\" says what each scheme optimises.\n\n" + exitStatusHelp,
		Flags: connFlags(adminTimeout(),
			&cli.BoolFlag{Name: "default", Usage: "set the default scheme"},
			&cli.BoolFlag{Name: "reset", Usage: "remove the service's own scheme (it follows the default)"}),
		Action: func(c *cli.Context) error {
			var key, scheme, what string
			switch {
			case c.Bool("default") && c.NArg() == 1:
				key, scheme, what = proto.PoolDefaultKey, c.Args().First(), "default placement"
			case c.Bool("reset") && c.NArg() == 1:
				svc, err := proto.ParseService(c.Args().First())
				if err != nil {
					return err
				}
				key, what = proto.PoolServiceKey(svc), svc.String()
			case !c.Bool("default") && !c.Bool("reset") && c.NArg() == 2:
				svc, err := proto.ParseService(c.Args().First())
				if err != nil {
					return err
				}
				key, scheme, what = proto.PoolServiceKey(svc), c.Args().Get(1), svc.String()
			default:
				return errors.New("service placement: want SERVICE SCHEME, --default SCHEME or SERVICE --reset")
			}
			if scheme != "" {
				if _, err := placement.Parse(scheme); err != nil {
					return err
				}
			}
			kv, nc, ctx, cancel, err := poolKV(c, "muster service placement")
			if err != nil {
				return err
			}
			defer nc.Close()
			defer cancel()
			if scheme == "" {
				if err := kv.Delete(ctx, key); err != nil {
					return fmt.Errorf("host pool: %w", err)
				}
				fmt.Fprintf(c.App.Writer, "%s: placement follows the default\n", what)
				return nil
			}
			b, _ := json.Marshal(proto.ServiceSetting{Placement: scheme})
			if _, err := kv.Put(ctx, key, b); err != nil {
				return fmt.Errorf("host pool: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "%s: placement %s\n", what, scheme)
			return nil
		},
	}
}
