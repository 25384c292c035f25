// Package auth is cartreg's identity layer: who a request acts for, and what it may do.
//
// The threat: the registry holds identifiable patient records from many hospitals, and
// without this anyone who reaches the port can read or change all of them. Every request
// must carry a bearer token naming a Principal with a Role, the sites it is limited to, and
// SMART scopes; the routes decide from those.
//
// Systems (an EHR feed, a coordinators' tool, an analysis job) are registered clients. They
// get short-lived access tokens (5 minutes) from POST /auth/token by the OAuth client
// credentials grant, as SMART Backend Services describes: preferably by signing a one-time
// JWT with a private key that never leaves them (private_key_jwt, RS384 or ES384, its jti
// remembered until it expires so a captured assertion cannot be replayed), or with a secret
// that the database keeps only as a bcrypt hash. A token can narrow the client's registered
// scopes, never widen them. Tokens are ES256 JWTs signed by a key kept in PostgreSQL, so
// every replica issues and checks them alike; rotation keeps the old key verifying until
// its tokens have expired.
//
// People sign in elsewhere: tokens of configured OpenID Connect providers are accepted,
// checked against the provider's published keys (cached, and fetched again when a token
// names a new key), and a claim mapped to a role; a person with no mapped role is refused. The
// ID tokens of the pages' sign-in (the provider's code flow) are checked by the same keys and
// mapped by the same rule (VerifyIDToken), with the nonce of the sign-in that asked for them.
//
// The JOSE work (parsing, signatures, key sets) is github.com/lestrrat-go/jwx's; this
// package decides which algorithms and keys are acceptable before jwx verifies anything,
// so "none", HMAC-with-a-public-key and algorithm confusion are refused up front.
package auth
