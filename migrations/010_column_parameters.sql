-- _id and _lastUpdated are answered from resource.resource_id and resource.last_updated, so
-- the search tables no longer hold a row of each for every resource. This clears the rows
-- written before that; nothing has read them.
DELETE FROM search_token WHERE code = '_id';
DELETE FROM search_date WHERE code = '_lastUpdated';
