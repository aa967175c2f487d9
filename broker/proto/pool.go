package proto

import (
	"fmt"
	"strings"
)

// PoolBucket is the KV bucket of the host pool and placement settings,
// kept until deleted (no TTL). Keys:
//
//	host.<id>        HostSetting: a configured host (an attach manager adds
//	                 itself when it first starts; `muster host add|rm|
//	                 enable|disable|set` change it)
//	service.C.N.S    ServiceSetting: a service's placement scheme
//	default          ServiceSetting: the scheme of services without one
const PoolBucket = "muster_pool"

// Pool keys.
const (
	PoolHostPrefix    = "host."
	PoolServicePrefix = "service."
	PoolDefaultKey    = "default"
)

// PoolHostKey returns the pool key of host id.
func PoolHostKey(id string) string { return PoolHostPrefix + id }

// PoolServiceKey returns the pool key of service s.
func PoolServiceKey(s Service) string { return PoolServicePrefix + s.Tokens() }

// HostSetting is a configured host's record in PoolBucket.
type HostSetting struct {
	ID string `json:"id"`
	// Disabled hosts get no placements (their running replicas go on).
	Disabled bool `json:"disabled,omitempty"`
	// MaxReplicas and MaxUsers, when > 0, override the host's config
	// (host.max_replicas, host.max_users) while it runs.
	MaxReplicas int    `json:"max_replicas,omitempty"`
	MaxUsers    int    `json:"max_users,omitempty"`
	Added       int64  `json:"added"` // Unix ms
	Note        string `json:"note,omitempty"`
}

// ServiceSetting is a service's (or the default) placement setting.
type ServiceSetting struct {
	Placement string `json:"placement"` // a scheme name (internal/placement)
}

// DecodeHostSetting decodes and validates a HostSetting.
func DecodeHostSetting(b []byte) (HostSetting, error) {
	var h HostSetting
	if err := decodeBody(b, &h); err != nil {
		return h, err
	}
	if err := ValidID(h.ID); err != nil {
		return h, fmt.Errorf("%w: pool host: %w", ErrBadBody, err)
	}
	if h.MaxReplicas < 0 || h.MaxUsers < 0 {
		return h, fmt.Errorf("%w: pool host %s: negative limit", ErrBadBody, h.ID)
	}
	return h, nil
}

// ServiceOfPoolKey returns the service of a PoolServicePrefix key.
func ServiceOfPoolKey(key string) (Service, bool) {
	rest, ok := strings.CutPrefix(key, PoolServicePrefix)
	if !ok {
		return Service{}, false
	}
	s, err := ServiceFromTokens(rest)
	return s, err == nil && s.Tokens() == rest
}
