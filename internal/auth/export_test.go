package auth

// ScopedUserCredsWithout is ScopedUserCreds without the publish grant
// subject: the credentials a role had before that grant existed.
func ScopedUserCredsWithout(k *Keys, role Role, s Scope, subject string) ([]byte, error) {
	p, err := Render(role, s)
	if err != nil {
		return nil, err
	}
	var pub []Grant
	for _, g := range p.Pub {
		if g.Subject != subject {
			pub = append(pub, g)
		}
	}
	p.Pub = pub
	return userCreds(k, role, s, p)
}
