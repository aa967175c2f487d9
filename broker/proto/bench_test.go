package proto_test

import (
	"testing"
	"time"

	"github.com/musterhq/muster/broker/proto"
)

var (
	sinkService proto.Service
	sinkTime    time.Time
	sinkError   *proto.Error
	sinkErr     error
)

func BenchmarkParseService(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"short", "A/B/C"},
		{"typical", "ACLASS/ASERVER/ECHO"},
		{"max", part32 + "/" + part32 + "/" + part32},
		{"bad", "ACLASS/ASERVER/EC.HO"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkService, sinkErr = proto.ParseService(bc.in)
			}
		})
	}
}

func BenchmarkParseDeadline(b *testing.B) {
	now := time.Now()
	for _, bc := range []struct {
		name string
		h    map[string][]string
	}{
		{"none", map[string][]string{proto.HdrOp: {proto.OpCall}}},
		{"deadline", map[string][]string{proto.HdrDeadline: {"1750000000123"}}},
		{"timeout", map[string][]string{proto.HdrTimeout: {"5000"}}},
		{"both", map[string][]string{proto.HdrDeadline: {"1750000000123"}, proto.HdrTimeout: {"5000"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkTime, sinkErr = proto.ParseDeadline(bc.h, now)
			}
		})
	}
}

func BenchmarkSetError(b *testing.B) {
	e := proto.Errorf(proto.CodeNotRegistered, "service %s not registered", "ACLASS/ASERVER/ECHO")
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := make(map[string][]string, 4)
			proto.SetError(h, e)
		}
	})
	b.Run("reuse", func(b *testing.B) {
		b.ReportAllocs()
		h := make(map[string][]string, 4)
		for b.Loop() {
			proto.SetError(h, e)
		}
	})
}

func BenchmarkErrorFromHeader(b *testing.B) {
	muster := map[string][]string{}
	proto.SetError(muster, proto.Errorf(proto.CodeNotRegistered, "service not registered"))
	for _, bc := range []struct {
		name string
		h    map[string][]string
	}{
		{"none", map[string][]string{proto.HdrReplica: {"r-1"}}},
		{"muster", muster},
		{"micro", map[string][]string{proto.HdrServiceError: {"boom"}, proto.HdrServiceErrorCode: {"500"}}},
		{"malformed", map[string][]string{proto.HdrError: {"bogus"}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkError = proto.ErrorFromHeader(bc.h)
			}
		})
	}
}
