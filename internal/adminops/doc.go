// Package adminops performs the operator actions of Muster over a NATS
// connection that holds the admin role: isolate or restore a host, stop
// or quiesce a replica, reset a failing service, change a service's
// placement scheme, and read a host's or a replica's log. The control
// panel (internal/panel) calls them; they do what `muster host
// isolate|restore`, `muster replica stop|quiesce`, `muster service
// reset|placement` and `muster host|replica logs` do, on the same
// subjects and buckets (docs/PROTOCOL.md, docs/OPERATIONS.md).
//
// Every function takes a context that bounds it, and returns an error that
// says what was not found or refused, with a hint; a refusal by the NATS
// server (credentials without the admin role) wraps ErrNotPermitted.
package adminops
