-- The web pages' calendar feed tokens and their shared sign-in limiter (package web).

-- A person's calendar feed token: a random secret in the URL a calendar application polls
-- (GET /worklist.ics?feed=...), since such applications send no bearer token. Only its SHA-256
-- is stored, so a copy of this table opens no feed. One per user: making a new one replaces
-- the old, which stops working; disabling the user ends it with their sessions.
CREATE TABLE web_feed_token (
    user_name    text        PRIMARY KEY REFERENCES web_user (name) ON DELETE CASCADE,
    token_hash   bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz
);

-- Failed sign-ins, one row each, counted by every replica: the limit is the registry's, not
-- each process's. The key is the SHA-256 of "name:..." or "addr:...", so the names people
-- mistype (sometimes their password) are not kept. A row is one failure rather than a
-- counter per fixed window, so the window slides: no burst of twice the allowance across a
-- window's edge. Refused attempts add no row, so a key has at most the allowance in the window.
CREATE TABLE web_signin_failure (
    key_hash  bytea       NOT NULL,
    failed_at timestamptz NOT NULL
);
CREATE INDEX web_signin_failure_key ON web_signin_failure (key_hash, failed_at);
CREATE INDEX web_signin_failure_at ON web_signin_failure (failed_at);
