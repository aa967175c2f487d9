// Package depcheck holds only a test: it keeps the SDK packages that user
// programs link (the worker SDK, the client SDK, the wire contract) free of
// the server, the CLI framework, gopsutil and YAML, so a replica binary
// stays small and starts fast. Nomad checks its package boundaries the
// same way, with `go list -deps`.
package depcheck
