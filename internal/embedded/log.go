package embedded

import (
	"fmt"
	"log/slog"
	"strings"
)

// serverLog hands the server's log lines to a slog.Logger: errors and
// warnings as warnings (the server carries on: a node with a clashing
// name, a route from another cluster), a fatal error as an error, notices
// and the lines of a node waiting for its peers (quiet) at debug. Debug
// and trace lines are not asked for.
type serverLog struct{ log *slog.Logger }

// quiet are the starts of the lines a cluster node repeats while its
// peers are missing: the node's own status says as much (Status).
var quiet = []string{
	"Error trying to connect to route",
	"Waiting for routing to be established",
	"JetStream has not established contact with a meta leader",
}

func (l serverLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLog) Warnf(format string, v ...any)   { l.warn(fmt.Sprintf(format, v...)) }
func (l serverLog) Errorf(format string, v ...any)  { l.warn(fmt.Sprintf(format, v...)) }
func (l serverLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLog) Debugf(string, ...any)           {}
func (l serverLog) Tracef(string, ...any)           {}

func (l serverLog) warn(msg string) {
	for _, q := range quiet {
		if strings.HasPrefix(msg, q) {
			l.log.Debug(msg)
			return
		}
	}
	l.log.Warn(msg)
}
