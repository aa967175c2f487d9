package auth

import (
	"fmt"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
)

// ServerOptions sets on o what an embedded nats-server needs to trust k
// (operator mode): the operator, the system account, and a memory
// resolver preloaded with both accounts' JWTs; JetStream is enabled for
// the MUSTER account by its JWT's limits. o's other fields (listen
// address, JetStream store dir …) are the caller's.
func ServerOptions(k *Keys, o *server.Options) error {
	oc, err := jwt.DecodeOperatorClaims(k.OperatorJWT())
	if err != nil {
		return fmt.Errorf("auth: operator JWT: %w", err)
	}
	r := &server.MemAccResolver{}
	if err := r.Store(k.SystemAccountKey(), k.SystemAccountJWT()); err != nil {
		return err
	}
	if err := r.Store(k.AccountKey(), k.AccountJWT()); err != nil {
		return err
	}
	o.TrustedOperators = []*jwt.OperatorClaims{oc}
	o.SystemAccount = k.SystemAccountKey()
	o.AccountResolver = r
	o.JetStream = true
	return nil
}

// ServerConfig renders the nats-server configuration that makes an
// external server (or each node of a cluster) trust k: operator mode, a
// memory resolver preloaded with the system and MUSTER accounts. Paste it
// into the server's config; JetStream (jetstream { store_dir: … }) and
// the listen address are the server's own settings. Users need no server
// config: their .creds are signed by the MUSTER account.
func ServerConfig(k *Keys) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Muster: operator mode. The MUSTER account (%s) holds Muster's\n", k.AccountKey())
	b.WriteString("# subjects, streams and users; users authenticate with .creds files\n")
	b.WriteString("# made by `muster auth creds ROLE`. JetStream must be enabled, e.g.\n")
	b.WriteString("# jetstream { store_dir: \"/var/lib/nats\" }\n")
	fmt.Fprintf(&b, "operator: %s\n", k.OperatorJWT())
	fmt.Fprintf(&b, "system_account: %s\n", k.SystemAccountKey())
	b.WriteString("resolver: MEMORY\n")
	b.WriteString("resolver_preload: {\n")
	fmt.Fprintf(&b, "  # %s\n  %s: %s\n", SystemAccountName, k.SystemAccountKey(), k.SystemAccountJWT())
	fmt.Fprintf(&b, "  # %s\n  %s: %s\n", AccountName, k.AccountKey(), k.AccountJWT())
	b.WriteString("}\n")
	return b.String()
}
