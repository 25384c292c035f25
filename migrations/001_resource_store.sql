-- The FHIR resource store: every version of every resource, and which version is current.
--
-- A resource's JSON is kept as the exact bytes the server normalised (google/fhir's
-- marshalling) and serves back unchanged, so a read costs no re-encoding. Search does not
-- look inside it: search parameters get index tables of their own.

CREATE TABLE resource_version (
    -- Global order of writes, for system-level history and its paging.
    seq           bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    resource_type text        NOT NULL,
    resource_id   text        NOT NULL,
    version_id    integer     NOT NULL CHECK (version_id > 0),
    last_updated  timestamptz NOT NULL,
    -- NULL for a deletion, which is a version too (a later read answers 410 Gone).
    body          text,
    PRIMARY KEY (resource_type, resource_id, version_id)
);

CREATE INDEX resource_version_last_updated ON resource_version (last_updated, seq);

-- One row per resource: its current version. Writers lock this row (SELECT ... FOR UPDATE)
-- to serialise updates of one resource, which is how If-Match never loses an update.
CREATE TABLE resource (
    resource_type text        NOT NULL,
    resource_id   text        NOT NULL,
    version_id    integer     NOT NULL,
    last_updated  timestamptz NOT NULL,
    deleted       boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (resource_type, resource_id),
    FOREIGN KEY (resource_type, resource_id, version_id)
        REFERENCES resource_version (resource_type, resource_id, version_id)
);

CREATE INDEX resource_type_last_updated ON resource (resource_type, last_updated);
