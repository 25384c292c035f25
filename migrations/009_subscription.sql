-- The active FHIR Subscriptions, as the write hook matches every write against them: a copy
-- of what each current Subscription resource says, kept in the same transaction as the
-- resource, so one indexed read per write finds those that may apply.
CREATE TABLE subscription_active (
    subscription_id text PRIMARY KEY,
    resource_type   text  NOT NULL,   -- the type the criteria search
    criteria        text  NOT NULL,
    endpoint        text  NOT NULL,   -- channel.endpoint (rest-hook)
    payload         text  NOT NULL,   -- channel.payload: '' sends no body
    headers         jsonb NOT NULL,   -- channel.header, split into name -> value
    ends_at         timestamptz       -- Subscription.end: no notifications after it
);
CREATE INDEX subscription_active_type ON subscription_active (resource_type);
