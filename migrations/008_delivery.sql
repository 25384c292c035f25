-- Outbound notifications (coordinators' digests, FHIR Subscription rest-hooks, e-mail), queued
-- in the same transaction as the write that causes them and delivered at least once by
-- whichever replica claims them first (package schedules/delivery). The retry state lives here,
-- not in a process, so it survives restarts and is shared by the replicas.
--
-- A message is in exactly one state: pending (next_attempt_at set), delivered (delivered_at
-- set) or failed (failed_at set: it kept failing for the give-up period). Failed messages stay
-- listed; nothing is dropped silently.
CREATE TABLE delivery_message (
    id              bigserial   PRIMARY KEY,
    key             text        NOT NULL UNIQUE, -- idempotency key: a second enqueue is a no-op;
                                                 -- sent as X-Cartreg-Delivery for the receiver
    kind            text        NOT NULL,        -- digest | subscription | …, for logs and listings
    channel         text        NOT NULL,        -- webhook | email
    target          text        NOT NULL,        -- the URL, or comma-separated e-mail addresses
    headers         jsonb       NOT NULL DEFAULT '{}', -- extra HTTP headers (may hold secrets:
                                                 -- never logged nor listed)
    content_type    text        NOT NULL DEFAULT '',
    subject         text        NOT NULL DEFAULT '',
    body            bytea       NOT NULL,        -- carries patient data: never logged
    created_at      timestamptz NOT NULL,        -- when enqueued; the give-up period runs from here
    next_attempt_at timestamptz,                 -- pending: when it is due
    attempts        integer     NOT NULL DEFAULT 0,
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text,                        -- the latest failed attempt's, while not delivered
    CHECK (num_nonnulls(next_attempt_at, delivered_at, failed_at) = 1)
);
-- What a delivery pass scans: the pending messages, by when they are due.
CREATE INDEX delivery_message_due ON delivery_message (next_attempt_at, id)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX delivery_message_kind ON delivery_message (kind, id);

-- Every attempt to send a message, successful or not, with what the receiver answered.
CREATE TABLE delivery_attempt (
    message_id   bigint      NOT NULL REFERENCES delivery_message (id) ON DELETE CASCADE,
    attempt      integer     NOT NULL,  -- 1 for the first
    attempted_at timestamptz NOT NULL,
    ok           boolean     NOT NULL,
    status       integer,               -- HTTP status, or SMTP reply code when there was one
    error        text,                  -- NULL when ok
    duration_ms  integer     NOT NULL,
    PRIMARY KEY (message_id, attempt)
);
