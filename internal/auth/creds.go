package auth

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// UserCreds returns a .creds file (NATS "decorated" user JWT and nkey
// seed, jwt.FormatUserConfig) for a user of role named name ("" for the
// role's name), signed by the MUSTER account, with the role's permissions
// and no expiry.
func UserCreds(k *Keys, role Role, name string) ([]byte, error) {
	return ScopedUserCreds(k, role, Scope{Name: name})
}

// ScopedUserCreds is UserCreds for a Scope. A replica with both a name
// (its replica id) and a service gets the credentials an attach manager
// gives it: signed by the replica signer (ReplicaSigner.Creds).
func ScopedUserCreds(k *Keys, role Role, s Scope) ([]byte, error) {
	if role == RoleReplica && s.Name != "" && s.Service != "" {
		return k.ReplicaSigner().Creds(s.Name, s.Service)
	}
	p, err := Render(role, s)
	if err != nil {
		return nil, err
	}
	return userCreds(k, role, s, p)
}

// userCreds signs credentials for role and s with permissions p.
func userCreds(k *Keys, role Role, s Scope, p Perms) ([]byte, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upub, err := ukp.PublicKey()
	if err != nil {
		return nil, err
	}
	uc := jwt.NewUserClaims(upub)
	uc.Name = s.UserName(role)
	uc.Tags.Add("role:" + string(role))
	p.apply(uc)
	ujwt, err := uc.Encode(k.Account)
	if err != nil {
		return nil, fmt.Errorf("auth: sign %s user JWT: %w", role, err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(ujwt, seed)
}

// CredsFile is the file name of role's credentials in a creds dir.
func CredsFile(role Role) string { return string(role) + ".creds" }

// WriteCreds writes <dir>/<role>.creds (mode 0600) for a user named after
// the role, creating dir (0700) if needed; it replaces an existing file.
// It returns the path.
func WriteCreds(k *Keys, dir string, role Role) (string, error) {
	creds, err := UserCreds(k, role, "")
	if err != nil {
		return "", err
	}
	return WriteCredsFile(filepath.Join(dir, CredsFile(role)), creds)
}

// WriteCredsFile writes creds to path, mode 0600, creating its dir (0700)
// if needed (an existing dir is left as it is). The file is written under a temporary name and renamed, so a
// reader never sees half a file and the mode is never wider than 0600.
func WriteCredsFile(path string, creds []byte) (string, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("auth: creds dir %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".creds-*")
	if err != nil {
		return "", fmt.Errorf("auth: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return "", fmt.Errorf("auth: write %s: %w", path, err)
	}
	if _, err := f.Write(creds); err != nil {
		f.Close()
		return "", fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("auth: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("auth: write %s: %w", path, err)
	}
	return path, nil
}
