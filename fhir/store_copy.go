package fhir

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// CopyBatch stores a prepared batch of new resources as WriteBatch does (the same rows: each
// version, its resource row and its search index rows), but sends each table's rows with
// COPY rather than an INSERT of unnested arrays: PostgreSQL then fills a heap page at a time,
// with one WAL record per page rather than one per row, and has no arrays to take apart. It
// costs a round trip or two per table where WriteBatch pipelines everything in one, so it
// suits large batches of creates (the follow-up scheduler's new Tasks), not a Bundle of a few
// resources.
//
// A resource that exists already fails the batch with a unique violation, as WriteBatch's
// version row would.
func (s *Store) CopyBatch(ctx context.Context, tx pgx.Tx, b *PreparedBatch) ([]*Version, error) {
	for _, g := range b.w.groups {
		if err := g.copyTo(ctx, tx); err != nil {
			return nil, fmt.Errorf("writing %d new resources: %w", len(b.resources), err)
		}
	}
	return b.versions, s.record(tx, b.versions, b.resources)
}

// copyTable is one table's share of a writeGroup: its columns, and how to fill row i.
type copyTable struct {
	name    string
	columns []string
	n       int
	row     func(i int, row []any)
}

// copyTo copies the group's rows into their tables: the versions first, which the resource
// rows' foreign key names.
func (g *writeGroup) copyTo(ctx context.Context, tx pgx.Tx) error {
	if len(g.replacedIDs) > 0 {
		return fmt.Errorf("a copied batch holds new resources only, not a later version of %s/%s", g.replacedTypes[0], g.replacedIDs[0])
	}
	for _, t := range g.copyTables() {
		if t.n == 0 {
			continue
		}
		src := &rowSource{n: t.n, i: -1, row: make([]any, len(t.columns)), fill: t.row}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{t.name}, t.columns, src); err != nil {
			return fmt.Errorf("copying into %s: %w", t.name, err)
		}
	}
	return nil
}

// copyTables are the tables a group's rows go to, in the order they must, each with the
// columns batch's INSERTs give it.
func (g *writeGroup) copyTables() []copyTable {
	return []copyTable{
		{"resource_version", []string{"resource_type", "resource_id", "version_id", "last_updated", "body"}, len(g.ids),
			func(i int, row []any) {
				row[0], row[1], row[2], row[3], row[4] = g.types[i], g.ids[i], g.versions[i], g.updated[i], g.bodies[i]
			}},
		{"resource", []string{"resource_type", "resource_id", "version_id", "last_updated", "deleted"}, len(g.ids),
			func(i int, row []any) {
				row[0], row[1], row[2], row[3], row[4] = g.types[i], g.ids[i], g.versions[i], g.updated[i], g.deleted[i]
			}},
		{"search_string", []string{"resource_type", "resource_id", "code", "value", "normalized", "oversized"}, len(g.str.ids),
			func(i int, row []any) {
				r := &g.str
				row[0], row[1], row[2], row[3], row[4], row[5] = r.types[i], r.ids[i], r.codes[i], r.values[i], r.normalized[i], r.oversized[i]
			}},
		{"search_token", []string{"resource_type", "resource_id", "code", "system", "value", "display", "oversized"}, len(g.tok.ids),
			func(i int, row []any) {
				r := &g.tok
				row[0], row[1], row[2], row[3], row[4], row[5], row[6] = r.types[i], r.ids[i], r.codes[i], r.systems[i], r.values[i], r.displays[i], r.oversized[i]
			}},
		{"search_date", []string{"resource_type", "resource_id", "code", "low", "high"}, len(g.date.ids),
			func(i int, row []any) {
				r := &g.date
				row[0], row[1], row[2], row[3], row[4] = r.types[i], r.ids[i], r.codes[i], r.lows[i], r.highs[i]
			}},
		{"search_reference", []string{"resource_type", "resource_id", "code", "target_type", "target_id", "url", "version", "oversized"}, len(g.ref.ids),
			func(i int, row []any) {
				r := &g.ref
				row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7] = r.types[i], r.ids[i], r.codes[i], r.targetTypes[i], r.targetIDs[i], r.urls[i], r.versions[i], r.oversized[i]
			}},
		{"search_number", []string{"resource_type", "resource_id", "code", "value", "low", "high"}, len(g.num.ids),
			func(i int, row []any) {
				r := &g.num
				row[0], row[1], row[2], row[3], row[4], row[5] = r.types[i], r.ids[i], r.codes[i], r.values[i], r.lows[i], r.highs[i]
			}},
		{"search_quantity", []string{"resource_type", "resource_id", "code", "value", "low", "high", "system", "unit"}, len(g.qty.ids),
			func(i int, row []any) {
				r := &g.qty
				row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7] = r.types[i], r.ids[i], r.codes[i], r.values[i], r.lows[i], r.highs[i], r.systems[i], r.units[i]
			}},
		{"search_uri", []string{"resource_type", "resource_id", "code", "value", "oversized"}, len(g.uri.ids),
			func(i int, row []any) {
				r := &g.uri
				row[0], row[1], row[2], row[3], row[4] = r.types[i], r.ids[i], r.codes[i], r.values[i], r.oversized[i]
			}},
	}
}

// rowSource hands pgx's CopyFrom the rows of a table's parallel arrays, one reused row at a
// time: pgx encodes each row before it asks for the next.
type rowSource struct {
	n, i int
	row  []any
	fill func(i int, row []any)
}

func (r *rowSource) Next() bool { r.i++; return r.i < r.n }

func (r *rowSource) Values() ([]any, error) {
	r.fill(r.i, r.row)
	return r.row, nil
}

func (r *rowSource) Err() error { return nil }
