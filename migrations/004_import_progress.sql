-- How far `cartreg import` got with each file, committed in the same transaction as the
-- resources it imported, so a failed or interrupted import resumes exactly where it stopped.
CREATE TABLE import_progress (
    source        text        PRIMARY KEY,  -- the file's absolute path
    done          bigint      NOT NULL,     -- NDJSON lines, or 1 for a Bundle, committed
    prefix_sha256 text        NOT NULL,     -- digest of the committed part: a changed file starts over
    completed     boolean     NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
