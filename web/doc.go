// Package web is cartreg's pages for people: server-rendered HTML (html/template) with its
// styles and htmx embedded in the binary, nothing fetched from elsewhere, every form working
// without JavaScript.
//
// # Who is signed in
//
// People sign in with a name and password of their own (Users: bcrypt hashes in web_user,
// made by `cartreg user add`). A session is a random 256-bit id in an HttpOnly cookie
// (SameSite=Lax, Secure over https), stored only as its SHA-256 in web_session, ended by
// sign-out, by the idle timeout and by its lifetime. The Sessions middleware turns it into the
// same auth.Principal a bearer token gives (kind user, subject "local|name", the user's role
// and sites, the role's default scopes), so the access policy (package access) judges pages by
// the same rules as the API, and the audit trail records pages like any other request.
//
// People of the hospital's OpenID Connect provider sign in by its authorization code flow
// with PKCE (oidc.go): state, nonce and verifier ride in a short-lived cookie, the code is
// exchanged by golang.org/x/oauth2, and the ID token is verified by package auth, which maps
// it to a role and sites exactly as it maps the provider's bearer tokens. Such a person is a
// web_user row named by their subject ("iss|sub", without a password), rewritten at each
// sign-in, so sessions, feed links and `cartreg user disable` work for them as for anyone.
//
// Every POST carries a CSRF token: on the sign-in form a double-submit cookie, afterwards an
// HMAC of the session id, which only the browser holding the cookie can know. Failed
// sign-ins are limited per name and per address, counted in PostgreSQL so that replicas share
// the allowance, and an unknown name costs the same bcrypt comparison as a known one.
//
// A calendar application cannot sign in or send a bearer token, so a person's calendar link
// carries a token of its own (web_feed_token, hashed): it opens /worklist.ics, and nothing
// else, as that person, until it is replaced or revoked or the person disabled.
//
// # Writes
//
// The work list's actions are FHIR writes through the store, validated as the API validates
// them and in one transaction each, so the registry's projection, the follow-up hook,
// Subscriptions and the audit trail see them as they see the API's: marking a visit missed
// fails its Task with the reason, a note is a Task.note, booking a visit accepts the Task,
// recording a visit with its response creates the remission assessment (which the
// registry counts at the milestone and which completes the Task, checked before commit),
// recording one whose response is not yet known adds a finished Encounter and puts the Task
// in progress until the assessment completes it, reassigning makes another site's Organization the Task's owner, and lost to follow-up is a finished follow-up EpisodeOfCare typed
// cartreg#lost-to-follow-up. A coordinator reaches only their sites' Tasks and patients,
// checked as the API checks them.
//
// # Researchers
//
// The outcome dashboard runs the registry's own endpoints in process for its tables, charts
// and CSV downloads, so suppression of small cells is the registry's, never re-implemented.
package web
