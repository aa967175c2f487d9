// Package auth holds Muster's NATS security: the trust chain (an
// operator, a system account and the MUSTER account, as nkeys), the roles
// and their least NATS permissions (one table, roles.go), user JWT
// credentials (.creds files) for each role, and what a nats-server needs
// to trust them: options for the embedded server, a config block for an
// external one.
//
// It links nats-server (ServerOptions): daemons and the muster command
// import it, the worker and client SDKs must not.
package auth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// AccountName is the name of the account Muster's subjects, streams and
// users live in; SystemAccountName that of the server's system account.
const (
	OperatorName      = "muster"
	AccountName       = "MUSTER"
	SystemAccountName = "SYS"
)

// Seed files under a keys directory.
const (
	operatorSeedFile = "operator.nk"
	systemSeedFile   = "system.nk"
	accountSeedFile  = "account.nk"
	// replicaSignerSeedFile is the MUSTER account's scoped signing key for
	// replicas (ReplicaSigner). It holds no data: a dir without it (made
	// before it existed) gets one on the next load.
	replicaSignerSeedFile = "replica-signer.nk"
)

// Keys is the trust chain: the operator signs both accounts, the MUSTER
// account signs its users. The seeds are secrets; the JWTs are derived
// from them (re-signed at each load), so only the seeds are stored.
type Keys struct {
	Operator nkeys.KeyPair
	System   nkeys.KeyPair
	Account  nkeys.KeyPair

	replicaSigner                      *ReplicaSigner
	operatorJWT, systemJWT, accountJWT string
	operatorPub, systemPub, accountPub string
}

// NewKeys creates a fresh trust chain in memory.
func NewKeys() (*Keys, error) {
	op, err := nkeys.CreateOperator()
	if err != nil {
		return nil, err
	}
	sys, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	acc, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	rs, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	return fromPairs(op, sys, acc, rs)
}

// LoadOrCreateKeys loads the seeds stored under dir, or creates them (and
// dir, mode 0700; files 0600) when dir holds none. The keys must stay the
// same across restarts: JetStream stores an account's data under its
// public key. It refuses a dir or seed file that group or others may read
// or write, and a dir holding only some of the seeds, naming the path and
// what is wrong.
func LoadOrCreateKeys(dir string) (*Keys, error) {
	if err := checkPrivate(dir, true); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("auth: keys dir %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o700); err != nil { // MkdirAll applies the umask
			return nil, fmt.Errorf("auth: keys dir %s: %w", dir, err)
		}
	}
	files := []string{operatorSeedFile, systemSeedFile, accountSeedFile}
	var have, missing []string
	for _, f := range files {
		p := filepath.Join(dir, f)
		if _, err := os.Lstat(p); err == nil {
			have = append(have, p)
		} else if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, p)
		} else {
			return nil, fmt.Errorf("auth: seed file %s: %w", p, err)
		}
	}
	if len(have) == 0 {
		k, err := NewKeys()
		if err != nil {
			return nil, err
		}
		names := append(files[:len(files):len(files)], replicaSignerSeedFile)
		for i, kp := range []nkeys.KeyPair{k.Operator, k.System, k.Account, k.replicaSigner.kp} {
			seed, err := kp.Seed()
			if err != nil {
				return nil, err
			}
			if err := writePrivate(filepath.Join(dir, names[i]), append(seed, '\n')); err != nil {
				return nil, err
			}
		}
		return k, nil
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("auth: keys dir %s is incomplete: %s missing (restore it from a backup; deleting the dir makes new keys and loses the JetStream data stored under the old account)", dir, missing[0])
	}
	var pairs [3]nkeys.KeyPair
	want := []nkeys.PrefixByte{nkeys.PrefixByteOperator, nkeys.PrefixByteAccount, nkeys.PrefixByteAccount}
	for i, f := range files {
		kp, err := readSeed(filepath.Join(dir, f), want[i])
		if err != nil {
			return nil, err
		}
		pairs[i] = kp
	}
	rsPath := filepath.Join(dir, replicaSignerSeedFile)
	rs, err := readSeed(rsPath, nkeys.PrefixByteAccount)
	if errors.Is(err, fs.ErrNotExist) {
		if rs, err = nkeys.CreateAccount(); err == nil {
			var seed []byte
			if seed, err = rs.Seed(); err == nil {
				err = writePrivate(rsPath, append(seed, '\n'))
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return fromPairs(pairs[0], pairs[1], pairs[2], rs)
}

// LoadKeys loads the seeds stored under dir, which must hold them:
// unlike LoadOrCreateKeys it never starts a new trust chain (the nodes
// of a cluster must all trust the same one). A dir without seeds is an
// error wrapping fs.ErrNotExist.
func LoadKeys(dir string) (*Keys, error) {
	p := filepath.Join(dir, operatorSeedFile)
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("auth: no keys in %s (%s is missing): %w", dir, operatorSeedFile, err)
	}
	return LoadOrCreateKeys(dir)
}

// readSeed reads the nkey seed of kind want stored in the private file
// path. A missing file is an error wrapping fs.ErrNotExist.
func readSeed(p string, want nkeys.PrefixByte) (nkeys.KeyPair, error) {
	if err := checkPrivate(p, false); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("auth: seed file %s: %w", p, err)
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(b))
	if err != nil {
		return nil, fmt.Errorf("auth: seed file %s: not an nkey seed", p)
	}
	pub, _ := kp.PublicKey()
	if !nkeys.IsValidPublicKey(pub) || nkeys.Prefix(pub) != want {
		return nil, fmt.Errorf("auth: seed file %s: not an %s seed", p, prefixName(want))
	}
	return kp, nil
}

func prefixName(p nkeys.PrefixByte) string {
	if p == nkeys.PrefixByteOperator {
		return "operator"
	}
	return "account"
}

// checkPrivate returns an error wrapping fs.ErrNotExist when path does not
// exist, and an error naming path when it is not a private dir (wantDir)
// or regular file: owned by someone else's group or others having any
// access.
func checkPrivate(path string, wantDir bool) error {
	st, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return fmt.Errorf("auth: %s: %w", path, err)
	}
	kind := "file"
	if wantDir {
		kind = "dir"
	}
	switch {
	case wantDir && !st.IsDir():
		return fmt.Errorf("auth: keys dir %s: not a directory", path)
	case !wantDir && !st.Mode().IsRegular():
		return fmt.Errorf("auth: seed file %s: not a regular file", path)
	case st.Mode().Perm()&0o077 != 0:
		want := "0600"
		if wantDir {
			want = "0700"
		}
		return fmt.Errorf("auth: %s %s has mode %04o: group or others may access it (chmod %s %s)", kind, path, st.Mode().Perm(), want, path)
	}
	return nil
}

// writePrivate writes b to path, mode 0600, refusing to replace a file.
func writePrivate(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("auth: write %s: %w", path, err)
	}
	return nil
}

// fromPairs signs the operator and account JWTs.
func fromPairs(op, sys, acc, replicaSigner nkeys.KeyPair) (*Keys, error) {
	k := &Keys{Operator: op, System: sys, Account: acc}
	var err error
	if k.operatorPub, err = op.PublicKey(); err != nil {
		return nil, err
	}
	if k.systemPub, err = sys.PublicKey(); err != nil {
		return nil, err
	}
	if k.accountPub, err = acc.PublicKey(); err != nil {
		return nil, err
	}
	oc := jwt.NewOperatorClaims(k.operatorPub)
	oc.Name = OperatorName
	oc.SystemAccount = k.systemPub
	if k.operatorJWT, err = oc.Encode(op); err != nil {
		return nil, fmt.Errorf("auth: operator JWT: %w", err)
	}
	sc := jwt.NewAccountClaims(k.systemPub)
	sc.Name = SystemAccountName
	if k.systemJWT, err = sc.Encode(op); err != nil {
		return nil, fmt.Errorf("auth: system account JWT: %w", err)
	}
	ac := jwt.NewAccountClaims(k.accountPub)
	ac.Name = AccountName
	// JetStream is enabled for an account by non-zero limits (-1: none).
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	rsPub, err := replicaSigner.PublicKey()
	if err != nil {
		return nil, err
	}
	ac.SigningKeys.AddScopedSigner(replicaScope(rsPub))
	k.replicaSigner = &ReplicaSigner{kp: replicaSigner, account: k.accountPub}
	if k.accountJWT, err = ac.Encode(op); err != nil {
		return nil, fmt.Errorf("auth: account JWT: %w", err)
	}
	return k, nil
}

// OperatorJWT, SystemAccountJWT and AccountJWT are the signed JWTs; the
// ...Key methods their public keys.
func (k *Keys) OperatorJWT() string      { return k.operatorJWT }
func (k *Keys) SystemAccountJWT() string { return k.systemJWT }
func (k *Keys) AccountJWT() string       { return k.accountJWT }
func (k *Keys) OperatorKey() string      { return k.operatorPub }
func (k *Keys) SystemAccountKey() string { return k.systemPub }
func (k *Keys) AccountKey() string       { return k.accountPub }

// ReplicaSigner returns the MUSTER account's scoped signing key for
// replicas.
func (k *Keys) ReplicaSigner() *ReplicaSigner { return k.replicaSigner }
