-- Search indexes: one table per search parameter type, holding the values that the
-- specification's SearchParameter expressions extract from each current resource. They are
-- rewritten in the same transaction as the resource, and emptied when it is deleted.
--
-- Every table has a lookup index led by (resource_type, code) for searching, and one on
-- (resource_type, resource_id) for replacing a resource's entries.

CREATE TABLE search_string (
    resource_type text NOT NULL,
    resource_id   text NOT NULL,
    code          text NOT NULL,
    value         text NOT NULL,  -- as written, for :exact
    normalized    text NOT NULL   -- lower-case, accents removed: default (prefix) and :contains
);
CREATE INDEX search_string_lookup ON search_string (resource_type, code, normalized text_pattern_ops);
CREATE INDEX search_string_owner ON search_string (resource_type, resource_id);

CREATE TABLE search_token (
    resource_type text NOT NULL,
    resource_id   text NOT NULL,
    code          text NOT NULL,
    system        text NOT NULL,  -- '' when the value has none
    value         text NOT NULL,  -- '' for a text-only CodeableConcept
    display       text NOT NULL   -- for :text
);
CREATE INDEX search_token_lookup ON search_token (resource_type, code, value, system);
CREATE INDEX search_token_owner ON search_token (resource_type, resource_id);

CREATE TABLE search_date (
    resource_type text        NOT NULL,
    resource_id   text        NOT NULL,
    code          text        NOT NULL,
    low           timestamptz NOT NULL,  -- inclusive
    high          timestamptz NOT NULL   -- exclusive
);
CREATE INDEX search_date_lookup ON search_date (resource_type, code, low, high);
CREATE INDEX search_date_owner ON search_date (resource_type, resource_id);

CREATE TABLE search_reference (
    resource_type text NOT NULL,
    resource_id   text NOT NULL,
    code          text NOT NULL,
    target_type   text NOT NULL,  -- '' when not known (a canonical, a urn:uuid)
    target_id     text NOT NULL,
    url           text NOT NULL,  -- absolute URL or canonical as written, else ''
    version       text NOT NULL
);
CREATE INDEX search_reference_lookup ON search_reference (resource_type, code, target_id, target_type);
CREATE INDEX search_reference_url ON search_reference (resource_type, code, url) WHERE url <> '';
-- For _revinclude and _has: who points at this resource?
CREATE INDEX search_reference_target ON search_reference (target_type, target_id);
CREATE INDEX search_reference_owner ON search_reference (resource_type, resource_id);

CREATE TABLE search_number (
    resource_type text             NOT NULL,
    resource_id   text             NOT NULL,
    code          text             NOT NULL,
    value         double precision NOT NULL,
    low           double precision NOT NULL,  -- the range the value's precision implies
    high          double precision NOT NULL
);
CREATE INDEX search_number_lookup ON search_number (resource_type, code, value);
CREATE INDEX search_number_owner ON search_number (resource_type, resource_id);

CREATE TABLE search_quantity (
    resource_type text             NOT NULL,
    resource_id   text             NOT NULL,
    code          text             NOT NULL,
    value         double precision,           -- NULL for a Range
    low           double precision NOT NULL,  -- '-Infinity' for a Range open below
    high          double precision NOT NULL,  -- 'Infinity' for a Range open above
    system        text             NOT NULL,
    unit          text             NOT NULL
);
CREATE INDEX search_quantity_lookup ON search_quantity (resource_type, code, value);
CREATE INDEX search_quantity_owner ON search_quantity (resource_type, resource_id);

CREATE TABLE search_uri (
    resource_type text NOT NULL,
    resource_id   text NOT NULL,
    code          text NOT NULL,
    value         text NOT NULL
);
CREATE INDEX search_uri_lookup ON search_uri (resource_type, code, value);
CREATE INDEX search_uri_owner ON search_uri (resource_type, resource_id);
