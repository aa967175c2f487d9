package proto

// InboxPrefix is the reply inbox prefix a NATS user named name connects
// with when Muster's permissions are on (nats.go CustomInboxPrefix,
// natscli --inbox-prefix): "_INBOX.<name>". Two tokens, so that repliers
// may publish to all of "_INBOX.>" while each user may subscribe only to
// its own "_INBOX.<name>.>" (docs/PROTOCOL.md §12).
func InboxPrefix(name string) string { return "_INBOX." + name }
