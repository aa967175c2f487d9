package panel

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/musterhq/muster/internal/picture"
	"github.com/musterhq/muster/internal/placement"
)

// The views' data: everything a template prints, formatted here, from the
// picture and nothing else.

// view names a view: its path and its title.
type view struct {
	Name, Path, Title string
}

var views = []view{
	{"overview", "/", "Overview"},
	{"hosts", "/hosts", "Hosts"},
	{"services", "/services", "Services"},
	{"replicas", "/replicas", "Replicas"},
}

func viewNamed(name string) (view, bool) {
	for _, v := range views {
		if v.Name == name {
			return v, true
		}
	}
	return view{}, false
}

// frame is what every view's fragment gets.
type frame struct {
	View    string
	Signed  bool // actions are enabled
	Stamp   string
	Problem string   // the system could not be read (the figures are the last good ones)
	Partial []string // parts of the picture that could not be read
	Empty   bool     // no picture yet

	Overview *overviewData
	Hosts    *hostsData
	Services *servicesData
	Replicas *replicasData
}

// cell is a figure with an optional second line.
type cell struct {
	V, Sub string
}

type card struct {
	Label, Value, Sub, Href, Class string
}

type attention struct {
	Level, Text, Href string
}

type brokerRow struct {
	ID, Host, Version, Up string
}

type overviewData struct {
	Brokers   []brokerRow
	Cards     []card
	Chart     chart
	Attention []attention
	Services  []serviceRow
}

type hostRow struct {
	ID, Name, Status, Version string
	Online, Isolated          bool
	Replicas, Users           cell
	CPU, Load                 string
	Memory                    cell
	Events, Bandwidth, Heard  string
	Services                  string
	Failing                   []string
	Logs                      bool // the host answers log requests (online)
}

type hostsData struct {
	Summary string
	Rows    []hostRow
}

type serviceRow struct {
	Key, Name, Hosts                         string
	Replicas, Active, Waiting, Requests      cell
	Occupied, Failed, Events, Bytes, AvgProc cell
	Placement                                string
	Failing                                  []string
	Fails                                    bool
}

type servicesData struct {
	Summary string
	Rows    []serviceRow
	Schemes []string
}

type replicaRow struct {
	ID, Service, Host, HostName, PID, State, Clients string
	Busy                                             string // busy or idle
	Active, Events, Bytes, Processing, CPU, RSS      cell
	Up, Last                                         string
	Quiescing                                        bool
}

type replicasData struct {
	Summary string
	Rows    []replicaRow
}

// buildFrame makes view's data from st.
func buildFrame(v view, st state, signed bool, now time.Time) frame {
	f := frame{View: v.Name, Signed: signed}
	if st.err != nil {
		f.Problem = st.err.Error()
	}
	if st.pic == nil {
		f.Empty = true
		if f.Problem == "" {
			f.Problem = "no picture of the system yet"
		}
		return f
	}
	p := st.pic
	f.Partial = p.Problems
	f.Stamp = "updated " + time.UnixMilli(p.At).Format("15:04:05")
	switch v.Name {
	case "overview":
		f.Overview = buildOverview(p, st.hist, now)
	case "hosts":
		f.Hosts = buildHosts(p, now)
	case "services":
		f.Services = buildServices(p)
	case "replicas":
		f.Replicas = buildReplicas(p, now)
	}
	return f
}

func buildOverview(p *picture.Picture, hist []sample, now time.Time) *overviewData {
	o := &overviewData{Chart: buildChart(hist, now)}
	online, configured, users, allowed := 0, 0, 0, 0
	for _, h := range p.Hosts {
		if h.Online {
			online++
			users += h.Users
			allowed += h.MaxUsers
		}
		if h.Configured {
			configured++
		}
	}
	busy := 0
	for _, r := range p.Replicas {
		if r.Active > 0 {
			busy++
		}
	}
	waiting, failing := 0, 0
	for _, s := range p.Services {
		waiting += s.Pending
		if len(s.Failing) > 0 {
			failing++
		}
	}
	rate := 0.0
	if n := len(hist); n > 0 {
		rate = hist[n-1].rate
	}
	hostClass := ""
	if online < configured {
		hostClass = "warn"
	}
	waitClass, failClass := "", ""
	if waiting > 0 {
		waitClass = "warn"
	}
	if failing > 0 {
		failClass = "bad"
	}
	o.Cards = []card{
		{Label: "Hosts online", Value: fmt.Sprintf("%d / %d", online, configured), Sub: "of configured · " + plural(len(p.Brokers), "broker"), Href: "/hosts", Class: hostClass},
		{Label: "Services", Value: strconv.Itoa(len(p.Services)), Sub: fmt.Sprintf("%s of %d allowed", plural(users, "user"), allowed), Href: "/services"},
		{Label: "Replicas", Value: strconv.Itoa(len(p.Replicas)), Sub: fmt.Sprintf("%d busy", busy), Href: "/replicas"},
		{Label: "Calls/s", Value: fmtRate(rate), Sub: "over the last sample", Href: "#chart"},
		{Label: "Waiting", Value: strconv.Itoa(waiting), Sub: "queued requests", Href: "/services", Class: waitClass},
		{Label: "Failing", Value: strconv.Itoa(failing), Sub: "services failing to start", Href: "/services", Class: failClass},
	}
	for _, h := range p.Hosts {
		switch h.Status {
		case "offline":
			heard := "never registered"
			if h.Updated > 0 {
				heard = "last heard " + fmtAgo(now, h.Updated) + " ago"
			}
			o.Attention = append(o.Attention, attention{"warn", "Host " + h.ID + " is offline (" + heard + ")", "/hosts"})
		case "isolated":
			o.Attention = append(o.Attention, attention{"warn", "Host " + h.ID + " is isolated: it starts no replicas", "/hosts"})
		case "disabled":
			o.Attention = append(o.Attention, attention{"info", "Host " + h.ID + " is disabled in the pool: no new replicas are placed on it", "/hosts"})
		}
	}
	for _, s := range p.Services {
		if s.Pending > 0 {
			o.Attention = append(o.Attention, attention{"warn", fmt.Sprintf("%s: %d waiting, %d replicas, %d of %d busy", s.Service, s.Pending, s.Replicas, s.Active, s.Capacity), "/services"})
		}
		for _, host := range sortedKeys(s.Failing) {
			o.Attention = append(o.Attention, attention{"bad", s.Service + " is failing on " + host + ": " + s.Failing[host], "/services"})
		}
		if len(s.Hosts) == 0 && s.Replicas == 0 {
			o.Attention = append(o.Attention, attention{"bad", s.Service + ": no online host can start it", "/hosts"})
		}
	}
	for _, b := range p.Brokers {
		o.Brokers = append(o.Brokers, brokerRow{ID: b.ID, Host: orDash(b.Host), Version: orDash(b.Version), Up: fmtSince(now, b.Started)})
	}
	o.Services = buildServices(p).Rows
	return o
}

func buildHosts(p *picture.Picture, now time.Time) *hostsData {
	d := &hostsData{}
	configured, online := 0, 0
	for _, h := range p.Hosts {
		if h.Configured {
			configured++
		}
		if h.Online {
			online++
		}
		r := hostRow{ID: h.ID, Name: h.Host, Status: h.Status, Version: orDash(h.Version), Online: h.Online, Isolated: h.Isolated,
			Services: strings.Join(h.Services, ", "), Logs: h.Online}
		if h.Updated == 0 {
			r.Replicas, r.Users, r.Memory = cell{V: "–"}, cell{V: "–"}, cell{V: "–"}
			r.CPU, r.Load, r.Events, r.Bandwidth, r.Heard = "–", "–", "–", "–", "never"
		} else {
			r.Replicas = cell{V: fmtLimit(h.Replicas, h.MaxReplicas)}
			if h.Starting > 0 {
				r.Replicas.Sub = fmt.Sprintf("%d starting", h.Starting)
			}
			r.Users = cell{V: fmtLimit(h.Users, h.MaxUsers)}
			r.CPU = fmt.Sprintf("%.0f%%", h.CPUPercent)
			r.Load = fmt.Sprintf("%.2f", h.Load1)
			r.Memory = cell{V: fmtBytes(float64(h.MemFree)) + " free"}
			if h.MemTotal > 0 {
				r.Memory.Sub = "of " + fmtBytes(float64(h.MemTotal))
			}
			r.Events = fmtRate(h.EventsPerSec)
			r.Bandwidth = fmtBytes(h.BytesPerSec) + "/s"
			r.Heard = fmtAgo(now, h.Updated) + " ago"
		}
		for _, svc := range sortedKeys(h.Failing) {
			r.Failing = append(r.Failing, svc+": "+h.Failing[svc])
		}
		d.Rows = append(d.Rows, r)
	}
	d.Summary = fmt.Sprintf("%d online of %d configured", online, configured)
	return d
}

func buildServices(p *picture.Picture) *servicesData {
	d := &servicesData{}
	for _, sc := range placement.Schemes {
		d.Schemes = append(d.Schemes, string(sc))
	}
	failing := 0
	for _, s := range p.Services {
		r := serviceRow{Key: strings.ReplaceAll(s.Service, "/", "."), Name: s.Service, Hosts: strings.Join(s.Hosts, ", "), Placement: s.Placement}
		r.Replicas = cell{V: strconv.Itoa(s.Replicas)}
		if s.Quiescing > 0 {
			r.Replicas.Sub = fmt.Sprintf("%d quiescing", s.Quiescing)
		}
		r.Active = cell{V: fmt.Sprintf("%d / %d", s.Active, s.Capacity), Sub: fmt.Sprintf("high %d", s.ActiveHigh)}
		r.Waiting = cell{V: strconv.Itoa(s.Pending), Sub: fmt.Sprintf("high %d · missing %d", s.PendingHigh, s.Missing)}
		r.Requests = cell{V: fmtInt(s.Requests), Sub: fmt.Sprintf("warm %s · queued %s", fmtInt(s.Warm), fmtInt(s.Queued))}
		r.Occupied = cell{V: fmtInt(s.ServerOccupied)}
		r.Failed = cell{V: fmtInt(s.Failed)}
		r.Events = cell{V: fmtInt(s.Events), Sub: plural64(s.Errors, "error")}
		r.Bytes = cell{V: fmtBytes(float64(s.BytesIn)) + " in", Sub: fmtBytes(float64(s.BytesOut)) + " out"}
		r.AvgProc = cell{V: "–"}
		if s.Events > 0 {
			r.AvgProc = cell{V: fmtDur(time.Duration(s.ProcessingNS / s.Events)), Sub: "total " + fmtDur(time.Duration(s.ProcessingNS))}
		}
		for _, host := range sortedKeys(s.Failing) {
			r.Failing = append(r.Failing, host+": "+s.Failing[host])
		}
		r.Fails = len(s.Failing) > 0
		if r.Fails {
			failing++
		}
		d.Rows = append(d.Rows, r)
	}
	d.Summary = fmt.Sprintf("%s, %d failing", plural(len(p.Services), "service"), failing)
	return d
}

func buildReplicas(p *picture.Picture, now time.Time) *replicasData {
	d := &replicasData{}
	busy := 0
	for _, r := range p.Replicas {
		row := replicaRow{ID: r.ID, Service: r.Service, Host: r.Attach, HostName: r.Host, PID: strconv.Itoa(r.PID), State: r.State,
			Quiescing: r.State == "quiescing"}
		if row.Host == "" {
			row.Host = "–"
		}
		row.Busy = "idle"
		if r.Active > 0 {
			busy++
			row.Busy = "busy"
		}
		seen := map[string]bool{}
		var clients []string
		for _, cv := range r.Convs {
			if !seen[cv.Client] {
				seen[cv.Client] = true
				clients = append(clients, cv.Client)
			}
		}
		row.Clients = orDash(strings.Join(clients, ", "))
		if r.ConvsOmitted > 0 {
			row.Clients += fmt.Sprintf(" +%d", r.ConvsOmitted)
		}
		st := r.Stats
		row.Active = cell{V: fmt.Sprintf("%d / %d", r.Active, r.Capacity), Sub: plural64(st.Conversations, "request")}
		row.Events = cell{V: fmtInt(st.Messages), Sub: plural64(st.Errors, "error")}
		row.Bytes = cell{V: fmtBytes(float64(st.BytesIn)) + " in · " + fmtBytes(float64(st.BytesOut)) + " out", Sub: "per event –"}
		row.Processing = cell{V: fmtDur(time.Duration(st.ProcessingNS)), Sub: "avg –"}
		if n := st.Messages; n > 0 {
			row.Processing.Sub = "avg " + fmtDur(time.Duration(st.ProcessingNS/n))
			row.Bytes.Sub = "per event " + fmtBytes(float64(st.BytesIn)/float64(n)) + " · " + fmtBytes(float64(st.BytesOut)/float64(n))
		}
		row.CPU = cell{V: fmt.Sprintf("%.0f%%", r.CPUPercent)}
		row.RSS = cell{V: "–"}
		if r.RSS > 0 {
			row.RSS = cell{V: fmtBytes(float64(r.RSS))}
		}
		row.Up = fmtSince(now, r.Started)
		row.Last = "never active"
		if r.LastActive > 0 {
			row.Last = "active " + fmtAgo(now, r.LastActive) + " ago"
		}
		d.Rows = append(d.Rows, row)
	}
	d.Summary = fmt.Sprintf("%s, %d busy", plural(len(p.Replicas), "replica"), busy)
	return d
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func plural(n int, what string) string { return plural64(int64(n), what) }

func plural64(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmtInt(n) + " " + what + "s"
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
