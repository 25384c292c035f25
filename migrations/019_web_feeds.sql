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
