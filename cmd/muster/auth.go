package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/panel"
)

// authCommand is `muster auth`: the keys and credentials of a secured
// Muster (operator mode, internal/auth).
func authCommand() *cli.Command {
	dir := func() cli.Flag {
		return &cli.StringFlag{Name: "dir", Usage: "directory holding keys/ (seeds, 0700) and creds/ (`DIR`)", Required: true}
	}
	return &cli.Command{
		Name:  "auth",
		Usage: "create NATS keys and per-role credentials (.creds), print an external server's config",
		Description: "Roles and their permissions: docs/PROTOCOL.md §12. The seeds under DIR/keys are\n" +
			"secrets and must stay the same: JetStream keeps the MUSTER account's data under its key.",
		Subcommands: []*cli.Command{
			{
				Name:  "init",
				Usage: "create the keys (if missing) and one .creds file per role under DIR/creds",
				Flags: []cli.Flag{dir()},
				Action: func(c *cli.Context) error {
					k, err := auth.LoadOrCreateKeys(filepath.Join(c.String("dir"), "keys"))
					if err != nil {
						return err
					}
					for _, r := range auth.Roles {
						p, err := auth.WriteCreds(k, filepath.Join(c.String("dir"), "creds"), r)
						if err != nil {
							return err
						}
						fmt.Fprintf(c.App.Writer, "%s\t%s\n", r, p)
					}
					return nil
				},
			},
			{
				Name:      "creds",
				Usage:     "print (or write with --out) the .creds of a role: " + roleList(),
				ArgsUsage: "ROLE",
				Flags: []cli.Flag{dir(),
					&cli.StringFlag{Name: "name", Usage: "user name: replica or attach manager id, client name; its inbox prefix is _INBOX.`NAME` (default: the role)"},
					&cli.StringFlag{Name: "service", Usage: "replica role only: the one service it may serve (`C/N/S`)"},
					&cli.StringFlag{Name: "out", Usage: "write to `FILE` (mode 0600) instead of stdout"},
				},
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("muster auth creds: want one ROLE (%s)", roleList())
					}
					role, err := auth.ParseRole(c.Args().First())
					if err != nil {
						return err
					}
					k, err := loadKeys(c.String("dir"))
					if err != nil {
						return err
					}
					creds, err := auth.ScopedUserCreds(k, role, auth.Scope{Name: c.String("name"), Service: c.String("service")})
					if err != nil {
						return err
					}
					if out := c.String("out"); out != "" {
						p, err := auth.WriteCredsFile(out, creds)
						if err != nil {
							return err
						}
						fmt.Fprintf(c.App.ErrWriter, "muster: wrote %s (inbox prefix %s)\n", p, auth.InboxPrefix(auth.Scope{Name: c.String("name")}.UserName(role)))
						return nil
					}
					_, err = c.App.Writer.Write(creds)
					return err
				},
			},
			{
				Name:  "panel-token",
				Usage: "print the control panel's token, derived from admin credentials",
				Description: "The token of the control panel of a daemon that acts with these admin credentials:\n" +
					"--dir DIR reads DIR/creds/admin.creds (for `muster up --data DIR`: it rewrites them at each\n" +
					"start, so the token changes then), --creds FILE the file given to --panel-creds.\n" +
					"Open http://HOST:PORT/?token=TOKEN, or sign in with it; scripts send \"Authorization: Bearer TOKEN\".",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "dir", Usage: "directory holding creds/admin.creds (`DIR`)"},
					&cli.StringFlag{Name: "creds", Usage: "admin credentials `FILE`"},
				},
				Action: func(c *cli.Context) error {
					file := c.String("creds")
					switch {
					case (file == "") == (c.String("dir") == ""):
						return errors.New("muster auth panel-token: want --dir DIR or --creds FILE")
					case file == "":
						file = filepath.Join(c.String("dir"), "creds", auth.CredsFile(auth.RoleAdmin))
					}
					secret, err := panel.SecretFromCreds(file)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintln(c.App.Writer, panel.Token(secret))
					return err
				},
			},
			{
				Name:  "server-config",
				Usage: "print the config block that makes an external nats-server trust these keys",
				Flags: []cli.Flag{dir()},
				Action: func(c *cli.Context) error {
					k, err := loadKeys(c.String("dir"))
					if err != nil {
						return err
					}
					_, err = fmt.Fprint(c.App.Writer, auth.ServerConfig(k))
					return err
				},
			},
		},
	}
}

// loadKeys loads the keys under dir/keys, refusing to create new ones: a
// command that only reads them must not start a second trust chain.
func loadKeys(dir string) (*auth.Keys, error) {
	kd := filepath.Join(dir, "keys")
	if _, err := os.Stat(kd); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no keys in %s: run muster auth init --dir %s first", kd, dir)
	}
	return auth.LoadOrCreateKeys(kd)
}

func roleList() string {
	s := ""
	for i, r := range auth.Roles {
		if i > 0 {
			s += ", "
		}
		s += string(r)
	}
	return s
}
