-- The registry's data version: a count of the transactions that changed its projection, which
-- the outcome reports' cache (package registry, reportCache) reads in the snapshot of the
-- report it may serve. One counter would make every registry write wait for the one before it
-- to commit; the count is spread over 256 rows instead, each writer bumping the row of its
-- backend (pg_backend_pid() % 256), and read as their sum, which only ever grows. Backends
-- are unique on the server, so two writers meet on a row only when their process ids agree
-- modulo 256, and then the second waits for the first's commit, nothing worse.
CREATE TABLE registry_data_version (
    shard smallint PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 50); -- room on the page for HOT updates: the rows are rewritten constantly

INSERT INTO registry_data_version (shard) SELECT generate_series(0, 255);
