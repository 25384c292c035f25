-- Identity (package auth): the registered clients, the keys this server signs its access
-- tokens with, and the client assertion ids already used, so none can be replayed.

-- A system that calls the API: an EHR feed, a coordinators' tool, an analysis job. It proves
-- who it is with a JWT signed by a key of its registered JWK Set (inline or at a URL), or with
-- a shared secret, never both.
CREATE TABLE auth_client (
    id          text        PRIMARY KEY,
    name        text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('ehr', 'coordinator', 'researcher', 'admin')),
    sites       text[]      NOT NULL DEFAULT '{}', -- Organization ids a coordinator is limited to
    scopes      text        NOT NULL,              -- the most a token may carry, space-separated
    secret_hash text,                              -- bcrypt of the client secret
    jwks        jsonb,                             -- public keys only
    jwks_url    text,
    created_at  timestamptz NOT NULL,
    disabled_at timestamptz,                       -- refused from then on; kept for the record
    CHECK (num_nonnulls(secret_hash, jwks, jwks_url) = 1)
);

-- The keys that sign access tokens. Exactly one is active (retired_at NULL) and signs; a
-- retired key still verifies until verify_until, when every token it signed has expired.
-- Private keys sit here, as a JWK, because anyone who can read this database can already
-- read every record the tokens protect.
CREATE TABLE auth_signing_key (
    kid          text        PRIMARY KEY,  -- the key's RFC 7638 thumbprint
    alg          text        NOT NULL,
    private_jwk  jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    retired_at   timestamptz,
    verify_until timestamptz,
    CHECK ((retired_at IS NULL) = (verify_until IS NULL))
);
CREATE UNIQUE INDEX auth_signing_key_one_active ON auth_signing_key ((true)) WHERE retired_at IS NULL;

-- Client assertion ids (jti) seen, each kept until its assertion expires: a second use before
-- then is a replay. Rows past expires_at are pruned by the token endpoint.
CREATE TABLE auth_seen_jti (
    client_id  text        NOT NULL REFERENCES auth_client (id) ON DELETE CASCADE,
    jti        text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX auth_seen_jti_expiry ON auth_seen_jti (expires_at);
