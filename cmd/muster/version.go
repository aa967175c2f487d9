package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/internal/adminops"
	"github.com/musterhq/muster/internal/auth"
)

// version is set at link time: -ldflags "-X main.version=1.2.3". Empty
// means the module version from the build info.
var version string

// versionString is the version muster reports.
func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

// hostsTimeout bounds each step of asking NATS for the attach managers'
// versions: connecting, then reading their registrations.
const hostsTimeout = time.Second

// versionCommand is `muster version`.
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print muster's version and those of the live attach managers",
		Description: "Prints this binary's version, Go version and platform, then the version\n" +
			"each live attach manager registered (read from NATS, as `muster replica ls`).\n" +
			"If NATS cannot be reached within " + hostsTimeout.String() + ", the hosts' versions are unknown:\n" +
			"it says so on stderr and still exits 0.\n" +
			`--json prints {"version","go","os","arch","hosts"}: hosts is a list of` + "\n" +
			`{"id","host","version"}, [] when no attach manager is live, null when unknown.` + "\n\n" + exitStatusHelp,
		Flags: connFlags(
			&cli.BoolFlag{Name: "json", Usage: "print JSON (stable field names)"},
		),
		Action: runVersion,
	}
}

// versionInfo is the --json output of version.
type versionInfo struct {
	Version string        `json:"version"`
	Go      string        `json:"go"`
	OS      string        `json:"os"`
	Arch    string        `json:"arch"`
	Hosts   []hostVersion `json:"hosts"` // nil (null): unknown, NATS not reachable
}

// hostVersion is one live attach manager's version.
type hostVersion struct {
	ID      string `json:"id"`
	Host    string `json:"host"`
	Version string `json:"version"`
}

func runVersion(c *cli.Context) error {
	v := versionInfo{Version: versionString(), Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	hosts, err := hostVersions(c)
	if err != nil {
		fmt.Fprintf(c.App.ErrWriter, "muster: hosts unknown: %v\n", present(err))
	} else {
		v.Hosts = hosts
	}
	if c.Bool("json") {
		return writeJSON(c.App.Writer, v)
	}
	if _, err := fmt.Fprintf(c.App.Writer, "muster %s %s %s/%s\n", v.Version, v.Go, v.OS, v.Arch); err != nil {
		return err
	}
	for _, h := range v.Hosts {
		if _, err := fmt.Fprintf(c.App.Writer, "attach manager %s on %s: %s\n", h.ID, h.Host, h.Version); err != nil {
			return err
		}
	}
	if hosts != nil && len(hosts) == 0 {
		fmt.Fprintln(c.App.ErrWriter, "muster: no attach manager is live")
	}
	return nil
}

// hostVersions reads the versions of the live attach managers from their
// registrations, giving up after hostsTimeout for each step. The list is
// empty, not nil, when none is live.
func hostVersions(c *cli.Context) ([]hostVersion, error) {
	cfg := connConfig(c, "muster version", auth.RoleAdmin)
	cfg.Timeout = hostsTimeout
	nc, err := cfg.Connect()
	if err != nil {
		return nil, connectHint(err, auth.RoleAdmin)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(c.Context, hostsTimeout)
	defer cancel()
	ams, err := adminops.LiveAttachManagers(ctx, nc, time.Now())
	if err != nil {
		return nil, err
	}
	out := []hostVersion{}
	for _, a := range ams {
		out = append(out, hostVersion{ID: a.ID, Host: a.Host, Version: a.Version})
	}
	return out, nil
}
