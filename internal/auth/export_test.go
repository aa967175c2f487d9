package auth

// ScopedUserCredsWithout is ScopedUserCreds without the grant subject
// (publish or subscribe; a queue subscription's is "subject queue"),
// signed by the account: the credentials a role had before that grant.
func ScopedUserCredsWithout(k *Keys, role Role, s Scope, subject string) ([]byte, error) {
	p, err := Render(role, s)
	if err != nil {
		return nil, err
	}
	drop := func(gs []Grant) []Grant {
		var out []Grant
		for _, g := range gs {
			if g.Subject != subject {
				out = append(out, g)
			}
		}
		return out
	}
	p.Pub, p.Sub = drop(p.Pub), drop(p.Sub)
	return userCreds(k, role, s, p)
}
