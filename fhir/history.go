package fhir

import (
	"context"
	"fmt"
	"time"
)

// HistoryQuery selects versions: of one resource (Type and ID), of a type (Type), or of all.
type HistoryQuery struct {
	Type, ID string
	Since    time.Time // versions written at or after it; zero for no limit
	AtLow    time.Time // with AtHigh: versions that were current at some moment in [AtLow, AtHigh)
	AtHigh   time.Time
	Count    int
	// Before continues a listing: versions written before the one with this sequence number.
	Before int64
}

// HistoryEntry is a version with its place in the global order of writes.
type HistoryEntry struct {
	Version
	Seq int64
}

// History lists versions newest first, one page of at most q.Count, and whether more follow.
func (s *Store) History(ctx context.Context, q Querier, hq HistoryQuery) (entries []HistoryEntry, more bool, err error) {
	args := []any{hq.Type, hq.ID, nullTime(hq.Since), hq.Before, hq.Count + 1, nullTime(hq.AtLow), nullTime(hq.AtHigh)}
	rows, err := q.Query(ctx, `
		SELECT v.seq, v.resource_type, v.resource_id, v.version_id, v.last_updated, v.body
		FROM resource_version v
		WHERE ($1 = '' OR v.resource_type = $1)
		  AND ($2 = '' OR v.resource_id = $2)
		  AND ($3::timestamptz IS NULL OR v.last_updated >= $3)
		  AND ($4 = 0 OR v.seq < $4)
		  AND ($6::timestamptz IS NULL OR (
		        v.last_updated < $7
		        AND NOT EXISTS (SELECT 1 FROM resource_version n
		            WHERE n.resource_type = v.resource_type AND n.resource_id = v.resource_id
		              AND n.version_id = v.version_id + 1 AND n.last_updated <= $6)))
		ORDER BY v.seq DESC
		LIMIT $5`, args...)
	if err != nil {
		return nil, false, fmt.Errorf("listing history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e HistoryEntry
		var body *string
		if err := rows.Scan(&e.Seq, &e.Type, &e.ID, &e.VersionID, &e.LastUpdated, &body); err != nil {
			return nil, false, fmt.Errorf("reading history: %w", err)
		}
		if body == nil {
			e.Deleted = true
		} else {
			e.JSON = []byte(*body)
		}
		entries = append(entries, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("reading history: %w", err)
	}
	if len(entries) > hq.Count {
		return entries[:hq.Count], true, nil
	}
	return entries, false, nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
