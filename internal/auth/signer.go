package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/musterhq/muster/broker/proto"
)

// ReplicaSignerFile is the seed file of the replica signer in a keys dir
// (`muster attach --replica-signer <data>/keys/replica-signer.nk`).
const ReplicaSignerFile = replicaSignerSeedFile

// Tags a replica signer puts on the users it signs; the signer's
// permission template reads them ({{tag(svc)}}, {{tag(consumer)}}).
const (
	tagService  = "svc"
	tagConsumer = "consumer"
)

// ReplicaSigner mints the credentials of one replica: a user JWT named
// after the replica id, tagged with its service, signed by a *scoped*
// signing key of the MUSTER account. The server, not the JWT, supplies the
// permissions: the replica role's table with the id, inbox, service and
// consumer filled in from the user's name and tags (replicaTemplate). So
// whoever holds the signer's seed (an attach manager) can make replica
// credentials for any service, but never more than a replica may do: not
// a client's, a broker's or an admin's.
type ReplicaSigner struct {
	kp      nkeys.KeyPair
	account string // the MUSTER account's public key (the JWTs' issuer_account)
}

// LoadReplicaSigner reads a replica signer's seed from seedFile (private:
// mode 0600), for the MUSTER account whose public key is account.
func LoadReplicaSigner(seedFile, account string) (*ReplicaSigner, error) {
	if !nkeys.IsValidPublicAccountKey(account) {
		return nil, fmt.Errorf("auth: replica signer: %q is not an account public key", account)
	}
	kp, err := readSeed(seedFile, nkeys.PrefixByteAccount)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("auth: replica signer seed file %s: %w", seedFile, err)
	}
	if err != nil {
		return nil, err
	}
	return &ReplicaSigner{kp: kp, account: account}, nil
}

// AccountOfCreds returns the public key of the account that issued the
// user of a .creds file (an attach manager's own credentials name the
// account its replicas belong to).
func AccountOfCreds(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("auth: creds file %s: %w", path, err)
	}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return "", fmt.Errorf("auth: creds file %s: no user JWT in it", path)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return "", fmt.Errorf("auth: creds file %s: user JWT: %v", path, err)
	}
	if uc.IssuerAccount != "" {
		return uc.IssuerAccount, nil
	}
	return uc.Issuer, nil
}

// Creds returns the .creds of replica id serving service (CLASS/NAME/
// SERVICE). The user has no expiry: a replica may run for as long as its
// service keeps it (min replicas); its credentials live only in its temp
// dir, which goes when it exits.
func (s *ReplicaSigner) Creds(id, service string) ([]byte, error) {
	if err := proto.CheckToken(id, proto.MaxIDLen); err != nil {
		return nil, fmt.Errorf("auth: replica id %q: %v", id, err)
	}
	sv, err := proto.ParseService(service)
	if err != nil {
		return nil, fmt.Errorf("auth: service %q: %v", service, err)
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upub, err := ukp.PublicKey()
	if err != nil {
		return nil, err
	}
	uc := jwt.NewUserClaims(upub)
	uc.Name = id
	uc.IssuerAccount = s.account
	// Assigned, not Tags.Add, which lower-cases: service names keep their case.
	uc.Tags = jwt.TagList{"role:" + string(RoleReplica), tagService + ":" + sv.Tokens(), tagConsumer + ":" + proto.ConsumerName(sv)}
	uc.SetScoped(true)
	ujwt, err := uc.Encode(s.kp)
	if err != nil {
		return nil, fmt.Errorf("auth: sign replica user JWT: %w", err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(ujwt, seed)
}

// replicaTemplate is the replica role's table as a NATS permission
// template. One difference from account-signed replica creds: a template
// cannot name a queue group (the server drops a templated "subject queue"
// entry), so a scoped replica may subscribe to its own service's warm
// subject outside the queue group muster — its own service only.
func replicaTemplate() jwt.UserPermissionLimits {
	p := table[RoleReplica]
	r := strings.NewReplacer(PhInbox, "_INBOX.{{name()}}", PhID, "{{name()}}",
		PhService, "{{tag("+tagService+")}}", PhConsumer, "{{tag("+tagConsumer+")}}")
	var l jwt.UserPermissionLimits
	l.NatsLimits = jwt.NatsLimits{Subs: jwt.NoLimit, Data: jwt.NoLimit, Payload: jwt.NoLimit}
	for _, g := range p.Pub {
		l.Pub.Allow.Add(r.Replace(g.Subject))
	}
	for _, g := range p.Sub {
		subj, _, _ := strings.Cut(r.Replace(g.Subject), " ")
		l.Sub.Allow.Add(subj)
	}
	if p.Responses > 0 {
		l.Resp = &jwt.ResponsePermission{MaxMsgs: p.Responses}
	}
	return l
}

// replicaScope is the scope of the replica signing key pub.
func replicaScope(pub string) *jwt.UserScope {
	us := jwt.NewUserScope()
	us.Key = pub
	us.Role = string(RoleReplica)
	us.Description = "Muster replicas: one service each (attach managers sign)"
	us.Template = replicaTemplate()
	return us
}
