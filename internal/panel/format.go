package panel

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Figures as the views print them: short, fixed in form, so a column
// keeps its width as they change.

// fmtInt prints n with thin groups (12 345).
func fmtInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, "\u202f"...) // narrow no-break space
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// fmtBytes prints a byte count with a binary unit.
func fmtBytes(b float64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%.0f B", b)
	}
	exp, div := 0, float64(unit)
	for n := b / unit; n >= unit && exp < 5; n /= unit {
		div *= unit
		exp++
	}
	v := b / div
	prec := 1
	if v >= 100 {
		prec = 0
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + " " + string("KMGTPE"[exp]) + "iB"
}

// fmtDur prints a duration with three significant digits at most.
func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return sig(float64(d)/float64(time.Microsecond)) + " µs"
	case d < time.Second:
		return sig(float64(d)/float64(time.Millisecond)) + " ms"
	case d < time.Minute:
		return sig(d.Seconds()) + " s"
	default:
		return fmtSpan(d)
	}
}

// sig prints v with three significant digits.
func sig(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// fmtSpan prints a coarse span: 42s, 5m 03s, 2h 10m, 3d 4h.
func fmtSpan(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm %02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh %02dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd %dh", s/86400, s%86400/3600)
	}
}

// fmtAgo prints how long before now the Unix ms t was ("never" for 0).
func fmtAgo(now time.Time, t int64) string {
	if t <= 0 {
		return "never"
	}
	return fmtSpan(now.Sub(time.UnixMilli(t)))
}

// fmtSince prints how long ago the Unix ms t was, without "ago" ("–"
// for 0: not known).
func fmtSince(now time.Time, t int64) string {
	if t <= 0 {
		return "–"
	}
	return fmtSpan(now.Sub(time.UnixMilli(t)))
}

// fmtRate prints a rate with one decimal.
func fmtRate(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// fmtLimit prints n of max (max 0: no limit).
func fmtLimit(n, max int) string {
	if max <= 0 {
		return strconv.Itoa(n) + " / ∞"
	}
	return strconv.Itoa(n) + " / " + strconv.Itoa(max)
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceMax(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
