package streams

import (
	"fmt"
	"strconv"
	"strings"
)

// MinServerVersion is the oldest nats-server Muster runs on: the first
// with per-message TTL (Nats-TTL, stream setting allow_msg_ttl). On an
// older server a queued request whose caller's deadline passed would stay
// in the queue until a replica pulled it, and an older server silently
// ignores the setting instead of refusing it.
const MinServerVersion = "2.11.0"

// CheckServerVersion says why a server of version v (as in its INFO,
// "2.10.22" or "2.12.0-RC.1") cannot run Muster, or returns nil. A
// pre-release counts as older than its release; a version that cannot be
// read is refused, since nothing then says it supports what Muster needs.
func CheckServerVersion(v string) error {
	got, ok := parseVersion(v)
	if !ok {
		return fmt.Errorf("streams: cannot read the NATS server's version %q: %s", v, whyTTL)
	}
	minV, _ := parseVersion(MinServerVersion)
	if less(got, minV) {
		return fmt.Errorf("streams: NATS server %s is too old: %s; upgrade the server", v, whyTTL)
	}
	return nil
}

// version is major, minor, patch and whether it is a pre-release.
type version struct {
	n   [3]int
	pre bool
}

// parseVersion reads MAJOR.MINOR.PATCH[-PRE][+BUILD] (semver, as
// nats-server reports itself).
func parseVersion(s string) (version, bool) {
	var v version
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	if i := strings.IndexByte(s, '-'); i >= 0 {
		v.pre, s = true, s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return v, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, false
		}
		v.n[i] = n
	}
	return v, true
}

// less reports whether a is older than b.
func less(a, b version) bool {
	for i := range a.n {
		if a.n[i] != b.n[i] {
			return a.n[i] < b.n[i]
		}
	}
	return a.pre && !b.pre
}
