package proto

import (
	"fmt"
	"unicode/utf8"
)

// IsTokenByte reports whether c may appear in a name token: one of
// [A-Za-z0-9_-]. Service parts, replica and conversation ids and attach
// manager (host) names all follow this rule, so each is one NATS subject
// token and a safe file name.
func IsTokenByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// CheckToken checks that s is 1..maxLen characters of [A-Za-z0-9_-]. Its
// errors say what is wrong without naming s, for the caller to wrap.
func CheckToken(s string, maxLen int) error {
	if s == "" {
		return fmt.Errorf("is empty")
	}
	for i, r := range s { // runes, so a message shows 'É', not a byte of it
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return fmt.Errorf("has byte %#02x, which is not UTF-8 (allowed: A-Z a-z 0-9 _ -)", s[i])
			}
		}
		if r >= utf8.RuneSelf || !IsTokenByte(byte(r)) {
			return fmt.Errorf("has character %q (allowed: A-Z a-z 0-9 _ -)", r)
		}
	}
	// Only ASCII is left: its length in bytes is its length in characters.
	if len(s) > maxLen {
		return fmt.Errorf("is longer than %d characters", maxLen)
	}
	return nil
}
