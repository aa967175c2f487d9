package proto

import (
	"errors"
	"fmt"
	"strings"
)

// MaxPartLen is the longest a CLASS, NAME or SERVICE part may be.
const MaxPartLen = 32

// Service identifies a service as EntireX does: CLASS/NAME/SERVICE.
type Service struct {
	Class, Name, Service string
}

// ErrBadService is wrapped by every service-name parse error.
var ErrBadService = errors.New("proto: bad service name")

// ParseService parses "CLASS/NAME/SERVICE". Each part is 1–32 characters of
// [A-Za-z0-9_-], which are all safe as NATS subject tokens.
func ParseService(s string) (Service, error) {
	if err := CheckService(s); err != nil {
		return Service{}, fmt.Errorf("%w: %q: %v", ErrBadService, s, err)
	}
	parts := strings.Split(s, "/")
	return Service{parts[0], parts[1], parts[2]}, nil
}

// CheckService checks that s is "CLASS/NAME/SERVICE", each part a token
// (see CheckToken). Like CheckToken, its errors say what is wrong without
// naming s, for the caller to wrap.
func CheckService(s string) error {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return errors.New("want CLASS/NAME/SERVICE")
	}
	for i, p := range parts {
		if err := validPart(p); err != nil {
			return fmt.Errorf("%s %v", [...]string{"class", "name", "service"}[i], err)
		}
	}
	return nil
}

// MustService is ParseService for constants; it panics on a bad name.
func MustService(s string) Service {
	svc, err := ParseService(s)
	if err != nil {
		panic(err)
	}
	return svc
}

func validPart(p string) error { return CheckToken(p, MaxPartLen) }

// String returns "CLASS/NAME/SERVICE".
func (s Service) String() string { return s.Class + "/" + s.Name + "/" + s.Service }

// Tokens returns "CLASS.NAME.SERVICE", the service's subject suffix.
func (s Service) Tokens() string { return s.Class + "." + s.Name + "." + s.Service }

// ServiceFromTokens parses the last three tokens of a subject such as
// "muster.svc.CLASS.NAME.SERVICE" back into a Service.
func ServiceFromTokens(subject string) (Service, error) {
	toks := strings.Split(subject, ".")
	if len(toks) < 3 {
		return Service{}, fmt.Errorf("%w: subject %q has fewer than three tokens", ErrBadService, subject)
	}
	n := len(toks)
	return ParseService(toks[n-3] + "/" + toks[n-2] + "/" + toks[n-1])
}
