-- Index values too long for a btree. PostgreSQL refuses a btree row over about 2,700 bytes,
-- which made any resource with a long family name, identifier, address line, absolute
-- reference or canonical URL fail to write. Search must still find such values, with the
-- same queries as any other.
--
-- Each search table holding text that its lookup index covers is now split by a column
-- `oversized`, set by the writer when the indexed text is too long: the `false` partition
-- keeps the lookup indexes as before; the `true` partition, rare rows, is indexed only by
-- (resource_type, code) and its values are compared by scanning those rows. A query on the
-- table reads both partitions, each with its own best index, so every search finds long
-- values exactly as it finds short ones, without a truncation that would change answers.

ALTER TABLE search_string RENAME TO search_string_old;
CREATE TABLE search_string (
    resource_type text    NOT NULL,
    resource_id   text    NOT NULL,
    code          text    NOT NULL,
    value         text    NOT NULL,
    normalized    text    NOT NULL,
    oversized     boolean NOT NULL DEFAULT false
) PARTITION BY LIST (oversized);
CREATE TABLE search_string_fits PARTITION OF search_string FOR VALUES IN (false);
CREATE TABLE search_string_oversized PARTITION OF search_string FOR VALUES IN (true);
INSERT INTO search_string SELECT resource_type, resource_id, code, value, normalized, false FROM search_string_old;
DROP TABLE search_string_old;
CREATE INDEX search_string_lookup ON search_string_fits (resource_type, code, normalized text_pattern_ops);
CREATE INDEX search_string_oversized_lookup ON search_string_oversized (resource_type, code);
CREATE INDEX search_string_owner ON search_string (resource_type, resource_id);

ALTER TABLE search_token RENAME TO search_token_old;
CREATE TABLE search_token (
    resource_type text    NOT NULL,
    resource_id   text    NOT NULL,
    code          text    NOT NULL,
    system        text    NOT NULL,
    value         text    NOT NULL,
    display       text    NOT NULL,
    oversized     boolean NOT NULL DEFAULT false
) PARTITION BY LIST (oversized);
CREATE TABLE search_token_fits PARTITION OF search_token FOR VALUES IN (false);
CREATE TABLE search_token_oversized PARTITION OF search_token FOR VALUES IN (true);
INSERT INTO search_token SELECT resource_type, resource_id, code, system, value, display, false FROM search_token_old;
DROP TABLE search_token_old;
CREATE INDEX search_token_lookup ON search_token_fits (resource_type, code, value, system);
CREATE INDEX search_token_oversized_lookup ON search_token_oversized (resource_type, code);
CREATE INDEX search_token_owner ON search_token (resource_type, resource_id);

ALTER TABLE search_reference RENAME TO search_reference_old;
CREATE TABLE search_reference (
    resource_type text    NOT NULL,
    resource_id   text    NOT NULL,
    code          text    NOT NULL,
    target_type   text    NOT NULL,
    target_id     text    NOT NULL,
    url           text    NOT NULL,
    version       text    NOT NULL,
    oversized     boolean NOT NULL DEFAULT false
) PARTITION BY LIST (oversized);
CREATE TABLE search_reference_fits PARTITION OF search_reference FOR VALUES IN (false);
CREATE TABLE search_reference_oversized PARTITION OF search_reference FOR VALUES IN (true);
INSERT INTO search_reference SELECT resource_type, resource_id, code, target_type, target_id, url, version, false FROM search_reference_old;
DROP TABLE search_reference_old;
-- Type and id are bounded (an id has at most 64 characters), so these cover both partitions.
CREATE INDEX search_reference_lookup ON search_reference (resource_type, code, target_id, target_type);
CREATE INDEX search_reference_target ON search_reference (target_type, target_id);
CREATE INDEX search_reference_owner ON search_reference (resource_type, resource_id);
CREATE INDEX search_reference_url ON search_reference_fits (resource_type, code, url) WHERE url <> '';

ALTER TABLE search_uri RENAME TO search_uri_old;
CREATE TABLE search_uri (
    resource_type text    NOT NULL,
    resource_id   text    NOT NULL,
    code          text    NOT NULL,
    value         text    NOT NULL,
    oversized     boolean NOT NULL DEFAULT false
) PARTITION BY LIST (oversized);
CREATE TABLE search_uri_fits PARTITION OF search_uri FOR VALUES IN (false);
CREATE TABLE search_uri_oversized PARTITION OF search_uri FOR VALUES IN (true);
INSERT INTO search_uri SELECT resource_type, resource_id, code, value, false FROM search_uri_old;
DROP TABLE search_uri_old;
CREATE INDEX search_uri_lookup ON search_uri_fits (resource_type, code, value);
CREATE INDEX search_uri_oversized_lookup ON search_uri_oversized (resource_type, code);
CREATE INDEX search_uri_owner ON search_uri (resource_type, resource_id);

ANALYZE search_string, search_token, search_reference, search_uri;
