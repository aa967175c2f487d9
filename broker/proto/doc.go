// Package proto is Muster's wire contract: service names, NATS subjects,
// message headers, error codes and the JSON bodies that travel between
// clients, replicas, brokers and attach managers, and the MUSTER_*
// environment an attach manager starts a replica with.
//
// It is a leaf package (standard library only) so that worker binaries and
// third-party tools can use it without pulling in the broker. The same
// contract is written out for non-Go implementers in docs/PROTOCOL.md; the
// two must stay in step.
package proto
