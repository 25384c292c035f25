-- FHIR Bulk Data $export jobs (package fhir/bulk). A job is asked for by one principal, run by
-- one replica at a time (a session advisory lock on its id, released by PostgreSQL when that
-- replica's connection dies), and written as NDJSON files under the export directory, one per
-- resource type. Each file's row records how far it got after every page, in the same order
-- as the file is written, so a replica that takes over cuts the file back to the last
-- recorded page and carries on after its last id: nothing is lost or written twice.
CREATE TABLE bulk_export_job (
    id               text        PRIMARY KEY,
    state            text        NOT NULL CHECK (state IN ('accepted', 'in-progress', 'completed', 'failed')),
    level            text        NOT NULL CHECK (level IN ('system', 'patient', 'group')),
    request          text        NOT NULL,  -- the kick-off URL, as the manifest repeats it
    base             text        NOT NULL,  -- the FHIR base the client addressed (file URLs, local references)
    params           jsonb       NOT NULL,  -- types, _since, _typeFilter, output format
    patients         text[],                -- a Group's members at kick-off; NULL: no Group
    principal        text        NOT NULL,  -- kind|subject of who asked: only they may poll and download
    transaction_time timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    claims           integer     NOT NULL DEFAULT 0,  -- how often a worker took it up
    error            text                             -- why it failed, for the status OperationOutcome
);

CREATE INDEX bulk_export_job_active ON bulk_export_job (created_at) WHERE state IN ('accepted', 'in-progress');
CREATE INDEX bulk_export_job_principal ON bulk_export_job (principal);

CREATE TABLE bulk_export_file (
    job_id        text    NOT NULL REFERENCES bulk_export_job ON DELETE CASCADE,
    kind          text    NOT NULL CHECK (kind IN ('output', 'error')),
    resource_type text    NOT NULL,
    name          text    NOT NULL,  -- the file's name in the job's directory and its URL
    cursor        text    NOT NULL DEFAULT '',  -- the last id written
    count         bigint  NOT NULL DEFAULT 0,   -- lines written
    bytes         bigint  NOT NULL DEFAULT 0,   -- the file's length after the last recorded page
    done          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, name)
);
