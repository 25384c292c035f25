-- The web pages (package web): people who sign in with a password, their sessions, and lost
-- to follow-up as a state of its own beside withdrawal.

-- A person with a local password, for registries without an OpenID Connect provider. The
-- role and sites are those of auth's principals, so pages and the FHIR API share one policy.
CREATE TABLE web_user (
    name          text        PRIMARY KEY,  -- what they type to sign in
    display_name  text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('coordinator', 'researcher', 'admin')),
    sites         text[]      NOT NULL DEFAULT '{}', -- Organization ids a coordinator is limited to
    password_hash text        NOT NULL,              -- bcrypt
    created_at    timestamptz NOT NULL,
    disabled_at   timestamptz
);

-- A signed-in browser. Only the SHA-256 of the random session id is stored, so a copy of this
-- table signs nobody in. A session ends at expires_at, or once idle longer than the server's
-- idle timeout (last_seen_at), or at sign-out (the row is deleted).
CREATE TABLE web_session (
    id_hash      bytea       PRIMARY KEY,
    user_name    text        NOT NULL REFERENCES web_user (name) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX web_session_expires ON web_session (expires_at);

-- Lost to follow-up is a withdrawal the patient did not ask for: the same end of follow-up
-- (no more Tasks, open ones cancelled), told apart so work lists and reports can say which.
ALTER TABLE followup_withdrawal ADD COLUMN lost boolean NOT NULL DEFAULT false;
