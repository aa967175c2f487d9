package panel

import (
	"strconv"
	"strings"
	"time"
)

// The chart: calls per second and queued requests over the last
// historySpan, drawn as inline SVG in a fixed viewBox (chartW × chartH)
// that the page stretches to its width.

const (
	chartW = 600
	chartH = 150
)

type chart struct {
	Calls, CallsArea, Queued string // SVG points
	Max                      string // the top of the scale
	Now, NowQueued           string // the latest values
	Label                    string // for screen readers
	Empty                    bool
}

func buildChart(hist []sample, now time.Time) chart {
	c := chart{Max: "1", Now: "0.0", NowQueued: "0"}
	if len(hist) == 0 {
		c.Empty = true
		c.Label = "No samples yet"
		return c
	}
	top := 0.0
	for _, s := range hist {
		top = max(top, s.rate, float64(s.queued))
	}
	scale := niceMax(top)
	x := func(t time.Time) float64 {
		return float64(chartW) * (1 - now.Sub(t).Seconds()/historySpan.Seconds())
	}
	y := func(v float64) float64 { return chartH - v/scale*(chartH-4) }
	var calls, queued []string
	for _, s := range hist {
		xs := num(max(0, x(s.at)))
		calls = append(calls, xs+","+num(y(s.rate)))
		queued = append(queued, xs+","+num(y(float64(s.queued))))
	}
	c.Calls, c.Queued = strings.Join(calls, " "), strings.Join(queued, " ")
	first := num(max(0, x(hist[0].at)))
	last := num(max(0, x(hist[len(hist)-1].at)))
	c.CallsArea = first + "," + num(chartH) + " " + c.Calls + " " + last + "," + num(chartH)
	c.Max = strconv.FormatFloat(scale, 'f', -1, 64)
	latest := hist[len(hist)-1]
	c.Now, c.NowQueued = fmtRate(latest.rate), strconv.Itoa(latest.queued)
	c.Label = "Calls per second now " + c.Now + ", queued requests now " + c.NowQueued + ", scale up to " + c.Max
	return c
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
