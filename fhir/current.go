package fhir

import (
	"context"
	"fmt"
)

// How other packages read the store. They never name its tables: they call Current or
// ByIdentifierSystem, one query for any number of resources, or, when a query of theirs must
// join the store in the same statement, use CurrentRelation or VersionRelation inside it.

// Relations for other packages' queries that must read the store in the same statement as
// their own tables: the follow-up scheduler's and the work list's, which look at every Task
// and let PostgreSQL join them (a hash join, or an index lookup per row) rather than ship
// every id back and forth. Each is a subquery with named columns, so the store's tables can
// change without those queries knowing; PostgreSQL pulls a simple subquery up into the query
// it appears in, so a join on (resource_type, resource_id) plans exactly as one on the tables'
// keys.
const (
	// CurrentRelation is the current version of every resource that is not deleted: columns
	// resource_type, resource_id, version_id, last_updated and body (the JSON as text).
	CurrentRelation = `(SELECT r.resource_type, r.resource_id, r.version_id, r.last_updated, v.body
	FROM resource r JOIN resource_version v ON v.resource_type = r.resource_type
		AND v.resource_id = r.resource_id AND v.version_id = r.version_id
	WHERE NOT r.deleted)`

	// VersionRelation is every stored version of every resource: columns resource_type,
	// resource_id, version_id and body (NULL for a deletion). Its key is (resource_type,
	// resource_id, version_id), so the latest version of one resource is one index probe.
	VersionRelation = `(SELECT resource_type, resource_id, version_id, body FROM resource_version)`

	// StringIndexRelation is the string search index of current resources: columns
	// resource_type, resource_id, code (the search parameter) and normalized (lower-case,
	// accents removed, as searchparam.NormalizeString). One resource's rows are an index probe.
	StringIndexRelation = `(SELECT resource_type, resource_id, code, normalized FROM search_string)`

	// TokenIndexRelation is the token search index of current resources: columns
	// resource_type, resource_id, code, system and value. One resource's rows are an index probe.
	TokenIndexRelation = `(SELECT resource_type, resource_id, code, system, value FROM search_token)`
)

// Current returns the current versions of the resources of one type named by ids, keyed by
// id, in one query: ids that are unknown or deleted are absent.
func (s *Store) Current(ctx context.Context, db DBTX, resourceType string, ids []string) (map[string]*Version, error) {
	out := make(map[string]*Version, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := db.Query(ctx, `SELECT r.resource_id, r.version_id, r.last_updated, v.body
		FROM resource r JOIN resource_version v USING (resource_type, resource_id, version_id)
		WHERE r.resource_type = $1 AND r.resource_id = ANY($2) AND NOT r.deleted`, resourceType, ids)
	if err != nil {
		return nil, fmt.Errorf("reading current %s resources: %w", resourceType, err)
	}
	defer rows.Close()
	for rows.Next() {
		v := &Version{Type: resourceType}
		var body string
		if err := rows.Scan(&v.ID, &v.VersionID, &v.LastUpdated, &body); err != nil {
			return nil, fmt.Errorf("reading current %s resources: %w", resourceType, err)
		}
		v.JSON = []byte(body)
		out[v.ID] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading current %s resources: %w", resourceType, err)
	}
	return out, nil
}

// Identified is a resource found by one of its identifiers.
type Identified struct {
	ID    string // the resource's id
	Value string // the identifier's value
}

// ByIdentifierSystem returns the current resources of one type that carry an identifier of
// system, ordered by the identifier's value (then id), from the search index. A resource with
// several identifiers of the system appears once for each.
func (s *Store) ByIdentifierSystem(ctx context.Context, db DBTX, resourceType, system string) ([]Identified, error) {
	rows, err := db.Query(ctx, `SELECT t.resource_id, t.value
		FROM search_token t JOIN resource r ON r.resource_type = t.resource_type AND r.resource_id = t.resource_id
		WHERE t.resource_type = $1 AND t.code = 'identifier' AND t.system = $2 AND NOT r.deleted
		ORDER BY t.value, t.resource_id`, resourceType, system)
	if err != nil {
		return nil, fmt.Errorf("finding %s by identifier system %s: %w", resourceType, system, err)
	}
	defer rows.Close()
	var out []Identified
	for rows.Next() {
		var it Identified
		if err := rows.Scan(&it.ID, &it.Value); err != nil {
			return nil, fmt.Errorf("finding %s by identifier system %s: %w", resourceType, system, err)
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("finding %s by identifier system %s: %w", resourceType, system, err)
	}
	return out, nil
}
