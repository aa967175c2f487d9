package testutil

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// httpClient bounds every request of the HTTP helpers.
var httpClient = &http.Client{Timeout: 5 * time.Second}

// HTTPGet fetches url and returns its status code and body, failing the
// test if there is no answer within 5 s.
func HTTPGet(t testing.TB, url string) (int, string) {
	t.Helper()
	code, body, err := TryHTTPGet(url)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// TryHTTPGet is HTTPGet returning the error, for polling.
func TryHTTPGet(url string) (int, string, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", url, err)
	}
	return resp.StatusCode, string(b), nil
}

// Scrape fetches the Prometheus metrics at url (…/metrics) and parses
// them, failing the test if it cannot.
func Scrape(t testing.TB, url string) Metrics {
	t.Helper()
	code, body := HTTPGet(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("GET %s: not the Prometheus text format: %v\n%s", url, err, body)
	}
	return fams
}

// Metrics are parsed metric families by name.
type Metrics map[string]*dto.MetricFamily

// Value returns the value of the counter or gauge name whose labels
// include labels (name=value pairs), and whether there is one.
func (ms Metrics) Value(name string, labels ...string) (float64, bool) {
	for _, m := range ms.find(name, labels) {
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// Histogram returns the count and sum of the histogram name whose labels
// include labels (name=value pairs), and whether there is one.
func (ms Metrics) Histogram(name string, labels ...string) (count uint64, sum float64, ok bool) {
	for _, m := range ms.find(name, labels) {
		if h := m.GetHistogram(); h != nil {
			return h.GetSampleCount(), h.GetSampleSum(), true
		}
	}
	return 0, 0, false
}

// find returns the series of name whose labels include labels.
func (ms Metrics) find(name string, labels []string) []*dto.Metric {
	f := ms[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		out = append(out, m)
	}
	return out
}
