-- The audit trail (package audit): one row per request that read or wrote patient data, made
-- tamper-evident by a hash chain. A row is inserted unsealed, with the hash of its own content
-- and the id of the transaction that inserted it; a periodic seal, one replica at a time, later
-- gives the rows of finished transactions their place in the chain (chain_seq) and the chained
-- hash. Nothing here holds an access token or a request body.
CREATE TABLE audit_event (
    id           bigserial   PRIMARY KEY,      -- insertion order: paging tie-break, never shown
    event_id     uuid        NOT NULL UNIQUE,  -- the AuditEvent's FHIR id
    recorded     timestamptz NOT NULL,
    action       text        NOT NULL,         -- C R U D E
    interaction  text        NOT NULL,         -- restful-interaction code, or login
    outcome      integer     NOT NULL,         -- the HTTP status answered
    agent_kind   text        NOT NULL,         -- client | user | operator | anonymous
    agent_who    text        NOT NULL,
    agent_role   text        NOT NULL,
    source       text        NOT NULL,         -- the client's address
    request_id   text        NOT NULL,
    entities     text[]      NOT NULL,         -- references touched, "Patient/123"
    patients     text[]      NOT NULL,         -- ids of the patients concerned
    event        jsonb       NOT NULL,         -- the whole event; the columns above repeat it for search
    content_hash bytea       NOT NULL,         -- SHA-256 of the event's canonical encoding
    xid          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    chain_seq    bigint      UNIQUE,           -- NULL until sealed
    chain_hash   bytea,                        -- SHA-256(previous chain_hash || content_hash)
    CHECK ((chain_seq IS NULL) = (chain_hash IS NULL))
);
-- The default search order (newest first) and date ranges.
CREATE INDEX audit_event_recorded ON audit_event (recorded DESC, id DESC);
CREATE INDEX audit_event_agent ON audit_event (agent_who, recorded DESC);
CREATE INDEX audit_event_entities ON audit_event USING gin (entities);
CREATE INDEX audit_event_patients ON audit_event USING gin (patients);
CREATE INDEX audit_event_request ON audit_event (request_id);
-- What a seal scans: the unsealed rows, in the order they join the chain.
CREATE INDEX audit_event_unsealed ON audit_event (xid, id) WHERE chain_seq IS NULL;

-- Where the chain starts once retention has deleted its oldest rows: the last deleted row's
-- sequence number and chained hash, so the first remaining row can still be checked.
CREATE TABLE audit_anchor (
    chain_seq  bigint      PRIMARY KEY,
    chain_hash bytea       NOT NULL,
    pruned_at  timestamptz NOT NULL,
    before     timestamptz NOT NULL,  -- the retention cut-off of that prune
    pruned     integer     NOT NULL   -- how many rows that prune deleted
);

-- A guard against mistakes, not against a determined administrator (the chain is what detects
-- those): content never changes, a row is sealed once, and rows are deleted only by a prune,
-- which says so by setting cartreg.audit_prune for its own transaction.
CREATE FUNCTION audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'audit events are deleted only by retention, once sealed'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF current_setting('cartreg.audit_prune', true) IS DISTINCT FROM 'on' OR OLD.chain_seq IS NULL THEN
            RAISE EXCEPTION 'audit events are deleted only by retention, once sealed'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.chain_seq IS NOT NULL
       OR (OLD.id, OLD.event_id, OLD.recorded, OLD.action, OLD.interaction, OLD.outcome,
           OLD.agent_kind, OLD.agent_who, OLD.agent_role, OLD.source, OLD.request_id,
           OLD.entities, OLD.patients, OLD.event, OLD.content_hash, OLD.xid)
          IS DISTINCT FROM
          (NEW.id, NEW.event_id, NEW.recorded, NEW.action, NEW.interaction, NEW.outcome,
           NEW.agent_kind, NEW.agent_who, NEW.agent_role, NEW.source, NEW.request_id,
           NEW.entities, NEW.patients, NEW.event, NEW.content_hash, NEW.xid) THEN
        RAISE EXCEPTION 'audit events cannot be changed; only an unsealed row may be sealed'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_event_guard BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_guard();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_guard();
