// Package attach is Muster's attach manager: it starts replicas of the
// services in its local config when the broker asks, supervises them, and
// cleans up after them.
//
// The programs an attach manager may start come only from its config file
// (see [LoadConfig]); nothing received from the network ever reaches a
// command line, an argument list or a replica's environment.
package attach
