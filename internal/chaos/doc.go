// Package chaos is Muster's fault suite: its tests run a whole system —
// NATS, brokers and attach managers as real processes, replicas started
// on demand — under a steady load of calls while they inject one fault at
// a time (replica SIGKILLs, an attach manager or broker SIGKILL, a NATS
// restart, the loss of one node of a three-node cluster), and count every
// call's outcome: replies, wrong replies, coded errors by code, hangs and
// requests executed twice, and the time until calls succeed again.
//
// `go test ./internal/chaos` runs the short form (a few seconds of load
// per scenario, part of CI); `go test ./internal/chaos -chaos.long` runs
// each scenario for longer and with more load. docs/RELIABILITY.md has
// the figures and the targets.
package chaos
