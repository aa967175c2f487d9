// Package attach is Muster's attach manager: it starts replicas of the
// services in its local config when the broker asks, supervises them, and
// cleans up after them.
//
// The programs an attach manager may start come only from its config file
// (see [LoadConfig]); nothing received from the network ever reaches a
// command line, an argument list or a replica's environment.
//
// The attach manager runs on Linux only (it supervises process groups with
// waitid and /proc); elsewhere [Start] returns [ErrUnsupported].
//
// Where things are: config.go is the config schema and its defaults,
// config_parse.go and config_values.go the parser, config_yaml.go the YAML
// decoding and syntax-error positions; manager.go is Start, Shutdown and
// Info, notify.go the notification clamp, spawn.go the reserve, spawn and
// commit of replicas, supervise.go what follows a replica's exit (restarts,
// backoff) and the start-timeout and heartbeat checks. Process groups and
// the one stop routine are in internal/proc, the state records and orphan
// clean-up in internal/statedir, log rotation and the disk cap in
// internal/logrot.
package attach
