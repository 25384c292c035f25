-- Who took a de-identified analysis file, when, and of which selection: the manifest a data
-- custodian reviews. The file itself is not kept, nor the key of its pseudonyms.
CREATE TABLE registry_analysis_export (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal   text        NOT NULL,
    exported_at timestamptz NOT NULL,
    query       text        NOT NULL,  -- the request's query string: the selection
    format      text        NOT NULL,
    rows        integer     NOT NULL,
    columns     text[]      NOT NULL
);
CREATE INDEX registry_analysis_export_time ON registry_analysis_export (exported_at);
