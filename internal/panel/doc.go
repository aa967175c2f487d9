// Package panel is Muster's control panel: one web page, served by a
// daemon's HTTP endpoint (internal/httpd), to watch the whole system live
// and take the operator's everyday actions.
//
// It shows the picture of the system (internal/picture), sampled by the
// serving process at most once a second while someone watches (every five
// seconds otherwise, for the chart's history) and pushed to each open page
// by Server-Sent Events; it invents no figures of its own. Its actions
// (internal/adminops) run over the daemon's NATS connection, which must
// hold the admin role.
//
// Views: overview (/), hosts, services, replicas, and a replica's log.
// Everything is server-rendered HTML from embedded templates, styled by one
// embedded stylesheet, with one small embedded script that applies the
// pushed updates in place and asks for confirmation before an action; no
// file comes from elsewhere.
//
// Access: a panel token derived from a secret (the admin credentials'
// seed: Token) is the key. Opening any page with ?token=T, or signing in
// with it, sets an HttpOnly, SameSite=Strict cookie. Reads need it unless
// the panel was started with open reads (`muster up` on a loopback
// address) and the request names a loopback host; actions and logs always
// need it, and an action made with the cookie must also carry the page's
// CSRF token (scripts may send the token as "Authorization: Bearer T"
// instead).
package panel
