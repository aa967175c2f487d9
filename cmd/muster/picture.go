package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/musterhq/muster/internal/auth"
	"github.com/musterhq/muster/internal/picture"
)

// The listings of the admin commands (status, service, host, replica,
// conv) all print one picture of the system (internal/picture), read from
// NATS, so every host shows the same. --json prints the rows with the
// field names of docs/OPERATIONS.md "Figures"; --sort orders by any of
// those fields (numbers largest first, text A–Z); --host and --service
// filter.

// listFlags are the flags of a listing.
func listFlags(more ...cli.Flag) []cli.Flag {
	return connFlags(append([]cli.Flag{jsonFlag(), adminTimeout(),
		&cli.StringFlag{Name: "sort", Usage: "order by this `FIELD` (a --json field name; numbers largest first)"},
		&cli.StringFlag{Name: "host", Usage: "only this attach manager `ID`"},
		&cli.StringFlag{Name: "service", Usage: "only this `SERVICE` (CLASS/NAME/SERVICE)"},
	}, more...)...)
}

// gather connects as admin and reads the picture.
func gather(c *cli.Context, name string) (*picture.Picture, error) {
	nc, err := connect(c, name, auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	p, err := picture.Gather(ctx, nc, picture.Options{})
	if err != nil {
		return nil, err
	}
	for _, pr := range p.Problems {
		fmt.Fprintf(c.App.ErrWriter, "muster: partial picture: %s\n", pr)
	}
	return p, nil
}

// sortRows orders rows (a slice of structs) by the JSON field named
// field: numbers largest first, text and everything else A–Z; ties keep
// their order. An unknown field is an error naming the known ones.
func sortRows(rows any, field string) error {
	if field == "" {
		return nil
	}
	v := reflect.ValueOf(rows)
	n := v.Len()
	keys := make([]map[string]any, n)
	for i := range n {
		b, _ := json.Marshal(v.Index(i).Interface())
		_ = json.Unmarshal(b, &keys[i])
	}
	known := jsonFields(v.Type().Elem())
	if !known[field] {
		names := make([]string, 0, len(known))
		for k := range known {
			names = append(names, k)
		}
		sort.Strings(names)
		return fmt.Errorf("--sort %q: no such field (one of %s)", field, strings.Join(names, ", "))
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		x, y := keys[idx[a]][field], keys[idx[b]][field]
		xf, xok := x.(float64)
		yf, yok := y.(float64)
		if xok && yok {
			return xf > yf
		}
		return fmt.Sprint(x) < fmt.Sprint(y)
	})
	tmp := reflect.MakeSlice(v.Type(), n, n)
	for i, j := range idx {
		tmp.Index(i).Set(v.Index(j))
	}
	reflect.Copy(v, tmp)
	return nil
}

// jsonFields lists the JSON field names of struct type t, embedded
// structs' included.
func jsonFields(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			for k := range jsonFields(f.Type) {
				out[k] = true
			}
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
}

// table writes rows with a header, tab-aligned.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// ago renders a Unix ms time as an age ("3s", "2m10s"); "-" for zero.
func ago(now time.Time, ms int64) string {
	if ms == 0 {
		return "-"
	}
	d := now.Sub(time.UnixMilli(ms))
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// bytesStr renders a byte count with a binary unit.
func bytesStr(b float64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%.0fB", b)
	}
	div, exp := float64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", b/div, "KMGTP"[exp])
}

func itoa[T ~int | ~int64](v T) string { return fmt.Sprint(v) }
