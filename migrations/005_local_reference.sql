-- Whether a row of search_reference points into this server: written relative (no url), or
-- absolute on the server's own base (base ends in '/'). One definition for every query that
-- follows references: search, chains, _has, _include, _revinclude and $everything. A plain
-- SQL expression, so the planner inlines it.
CREATE FUNCTION local_reference(url text, base text, target_type text, target_id text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN url = '' OR url = base || target_type || '/' || target_id;
