package fhir

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/fhir/searchparam"
)

// DBTX is what the store's queries run on: the pool, or a transaction when several writes
// must stand or fall together (a transaction Bundle).
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Querier is what a read needs: a DBTX, or the reader of searches (limitedReader).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Extractor computes a resource's search index values, leaving out the parameters skip names.
type Extractor interface {
	ExtractExcept(resourceType string, resource map[string]any, skip map[string]bool) (searchparam.Values, error)
}

// columnParameters are the search parameters that the resource table's own columns answer
// (resource_id, last_updated): search and _sort read those, so the search tables never hold
// them. Indexing them again would add a token and a date row to every version, about one
// write in eight.
var columnParameters = map[string]bool{"_id": true, "_lastUpdated": true}

// Store keeps every version of every resource, which one is current, and the search indexes
// of the current ones, in PostgreSQL.
type Store struct {
	db      *pgxpool.Pool
	indexer Extractor
	now     func() time.Time
	hooks   []WriteHook
}

// NewStore returns a store on db; now is its clock (time.Now outside tests).
func NewStore(db *pgxpool.Pool, indexer Extractor, now func() time.Time) *Store {
	return &Store{db: db, indexer: indexer, now: now}
}

// DB is the pool the store works on.
func (s *Store) DB() DBTX { return s.db }

// Version is one stored version of a resource.
type Version struct {
	Type        string
	ID          string
	VersionID   int
	LastUpdated time.Time
	Deleted     bool
	JSON        []byte // nil for a deletion
}

// ETag is the version's entity tag, W/"n".
func (v *Version) ETag() string { return `W/"` + strconv.Itoa(v.VersionID) + `"` }

// Path is Type/id.
func (v *Version) Path() string { return v.Type + "/" + v.ID }

// InTx runs fn in one database transaction, retried when PostgreSQL reports a serialisation
// failure, deadlock or a lost race for a unique key: each attempt starts from scratch, so a
// retried write is never half applied. Under a context from WithStatementTimeout, each
// statement of the transaction is limited to its time.
func (s *Store) InTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = s.attempt(ctx, fn)
		if !retryable(err) {
			return StatementTimeoutOutcome(ctx, err)
		}
	}
	return err
}

// beginLazily is a store transaction that begins with its first statement (see lazyBegin),
// under the context's statement time limit, if any.
func (s *Store) beginLazily(ctx context.Context) *trackedTx {
	return &trackedTx{begin: &lazyBegin{db: s.db, timeout: timeoutSetting(ctx)}}
}

// attempt runs fn and the write hooks in a transaction that begins with its first statement
// and commits after them. Whatever happens in between, a panic included, the transaction is
// rolled back unless it committed, and its connection goes back to the pool.
func (s *Store) attempt(ctx context.Context, fn func(tx pgx.Tx) error) error {
	t := s.beginLazily(ctx)
	// After a commit there is nothing left to roll back (pgx.ErrTxClosed); a failed rollback
	// closes the connection, and the error that made it is the one to report.
	defer t.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	if err := fn(t); err != nil {
		return err
	}
	if err := s.Flush(ctx, t); err != nil {
		return err
	}
	return t.Commit(ctx)
}

func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40001", "40P01", "23505": // serialization_failure, deadlock_detected, unique_violation
		return true
	}
	return false
}

// Create stores res as a new resource with a server-assigned id.
func (s *Store) Create(ctx context.Context, tx DBTX, res *Resource) (*Version, error) {
	res.ID = NewID()
	return s.writeVersion(ctx, tx, res, 1)
}

// NewID is a fresh server-assigned resource id.
func NewID() string { return uuid.NewString() }

// NewSequentialID is a fresh server-assigned resource id that sorts after the ones made before
// it (a version 7 UUID: its first 48 bits are the time in milliseconds, the rest random), for
// writers of many resources at once. Their rows then go to the end of every index keyed by
// (resource_type, resource_id) (resource's, resource_version's, each search table's), where
// random ids would touch a different page of each index for every resource: PostgreSQL spends
// a quarter less time writing the follow-up scheduler's 97,000 new Tasks of a large registry.
// The id tells when the resource was made, as its first version's meta.lastUpdated does anyway.
func NewSequentialID() string {
	id, err := uuid.NewV7()
	if err != nil { // the random source failed: uuid.NewString would panic too
		panic(err)
	}
	return id.String()
}

// CreateWithID stores res as a new resource under the id it was given, one the server
// assigned earlier (a transaction assigns ids before it rewrites references).
func (s *Store) CreateWithID(ctx context.Context, tx DBTX, res *Resource) (*Version, error) {
	return s.writeVersion(ctx, tx, res, 1)
}

// UpdateResult says what an update did.
type UpdateResult struct {
	Version *Version
	Created bool // no current version existed: the update created the resource
}

// Update makes res the current version of res.Type/res.ID, creating it when it does not
// exist (update as create, with the client's id). With ifMatch, the update happens only if
// the current version is that one. The resource's row is locked for the transaction, so
// concurrent updates of one resource queue up and none is lost.
func (s *Store) Update(ctx context.Context, tx DBTX, res *Resource, ifMatch *int) (UpdateResult, error) {
	current, deleted, exists, err := lockCurrent(ctx, tx, res.Type, res.ID)
	if err != nil {
		return UpdateResult{}, err
	}
	if ifMatch != nil && (!exists || deleted || current != *ifMatch) {
		have := "does not exist"
		if exists {
			have = fmt.Sprintf("is at version %d", current)
			if deleted {
				have += " (deleted)"
			}
		}
		return UpdateResult{}, NewOutcome(http.StatusPreconditionFailed, Conflict,
			fmt.Sprintf("If-Match asks for version %d of %s/%s, which %s", *ifMatch, res.Type, res.ID, have))
	}
	v, err := s.writeVersion(ctx, tx, res, current+1)
	return UpdateResult{Version: v, Created: !exists || deleted}, err
}

// Delete deletes type/id, keeping its history. Deleting what does not exist, or is deleted
// already, is not an error: it returns a nil Version.
func (s *Store) Delete(ctx context.Context, tx DBTX, resourceType, id string) (*Version, error) {
	current, deleted, exists, err := lockCurrent(ctx, tx, resourceType, id)
	if err != nil || !exists || deleted {
		return nil, err
	}
	return s.writeVersion(ctx, tx, &Resource{Type: resourceType, ID: id}, current+1)
}

// lockCurrent locks a resource's row and returns its current version.
func lockCurrent(ctx context.Context, tx DBTX, resourceType, id string) (version int, deleted, exists bool, err error) {
	err = tx.QueryRow(ctx, `SELECT version_id, deleted FROM resource
		WHERE resource_type = $1 AND resource_id = $2 FOR UPDATE`, resourceType, id).Scan(&version, &deleted)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, false, nil
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("locking %s/%s: %w", resourceType, id, err)
	}
	return version, deleted, true, nil
}

// writeVersion stores a version: the resource's body with its id and meta set, or a deletion
// when res.Body is nil; points the resource at it; and rewrites the search index.
func (s *Store) writeVersion(ctx context.Context, tx DBTX, res *Resource, version int) (*Version, error) {
	w := &writeSet{}
	v, err := s.prepareVersion(w, res, version)
	if err != nil {
		return nil, err
	}
	if err := tx.SendBatch(ctx, w.batch()).Close(); err != nil {
		return nil, fmt.Errorf("writing %s/%s version %d: %w", v.Type, v.ID, v.VersionID, err)
	}
	return v, s.record(tx, []*Version{v}, []*Resource{res})
}

// CreateBatch stores new resources, each under the id it was given, in one round trip to the
// database: what a transaction Bundle's creates cost.
func (s *Store) CreateBatch(ctx context.Context, tx DBTX, resources []*Resource) ([]*Version, error) {
	b, err := s.PrepareCreates(resources)
	if err != nil {
		return nil, err
	}
	return s.WriteBatch(ctx, tx, b)
}

// A PreparedBatch is new resources rendered and indexed, ready for WriteBatch: the part of
// CreateBatch that needs no database, so that a writer of many batches can prepare the next
// while one is written.
type PreparedBatch struct {
	w         *writeSet
	versions  []*Version
	resources []*Resource
}

// PrepareCreates renders and indexes new resources, each under the id it was given, as the
// first version of each. It may run in a goroutine of its own; the resources are the batch's
// until it is written.
func (s *Store) PrepareCreates(resources []*Resource) (*PreparedBatch, error) {
	b := &PreparedBatch{w: &writeSet{}, versions: make([]*Version, len(resources)), resources: resources}
	for i, res := range resources {
		v, err := s.prepareVersion(b.w, res, 1)
		if err != nil {
			return nil, err
		}
		b.versions[i] = v
	}
	return b, nil
}

// WriteBatch stores a prepared batch in one round trip to the database.
func (s *Store) WriteBatch(ctx context.Context, tx DBTX, b *PreparedBatch) ([]*Version, error) {
	if err := tx.SendBatch(ctx, b.w.batch()).Close(); err != nil {
		return nil, fmt.Errorf("writing %d new resources: %w", len(b.resources), err)
	}
	return b.versions, s.record(tx, b.versions, b.resources)
}

// PutBatch stores resources under their own ids, as update-as-create does: a new version of
// each that exists, the first version of each that does not. It locks and reads the current
// versions in one round trip and writes everything in a second.
func (s *Store) PutBatch(ctx context.Context, tx DBTX, resources []*Resource) ([]*Version, error) {
	types, ids := make([]string, len(resources)), make([]string, len(resources))
	for i, r := range resources {
		types[i], ids[i] = r.Type, r.ID
	}
	rows, err := tx.Query(ctx, `SELECT r.resource_type, r.resource_id, r.version_id FROM resource r
		WHERE (r.resource_type, r.resource_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
		ORDER BY 1, 2 FOR UPDATE`, types, ids)
	if err != nil {
		return nil, fmt.Errorf("locking resources: %w", err)
	}
	current := map[string]int{}
	for rows.Next() {
		var t, id string
		var v int
		if err := rows.Scan(&t, &id, &v); err != nil {
			rows.Close()
			return nil, err
		}
		current[t+"/"+id] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("locking resources: %w", err)
	}
	w := &writeSet{}
	versions := make([]*Version, len(resources))
	for i, res := range resources {
		key := res.Type + "/" + res.ID
		current[key]++ // the same resource twice in one batch gets two versions
		if versions[i], err = s.prepareVersion(w, res, current[key]); err != nil {
			return nil, err
		}
	}
	if err := tx.SendBatch(ctx, w.batch()).Close(); err != nil {
		return nil, fmt.Errorf("writing %d resources: %w", len(resources), err)
	}
	return versions, s.record(tx, versions, resources)
}

// prepareVersion renders and indexes a version and adds it to w.
func (s *Store) prepareVersion(w *writeSet, res *Resource, version int) (*Version, error) {
	v := &Version{Type: res.Type, ID: res.ID, VersionID: version, LastUpdated: s.now().UTC().Truncate(time.Millisecond), Deleted: res.Body == nil}
	var values searchparam.Values
	if res.Body != nil {
		res.Body["id"] = res.ID
		meta, _ := res.Body["meta"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
		}
		meta["versionId"] = strconv.Itoa(version)
		meta["lastUpdated"] = v.LastUpdated.Format("2006-01-02T15:04:05.000Z07:00")
		res.Body["meta"] = meta
		var err error
		if v.JSON, err = res.JSON(); err != nil {
			return nil, fmt.Errorf("rendering %s/%s: %w", res.Type, res.ID, err)
		}
		if values, err = s.indexer.ExtractExcept(res.Type, res.Body, columnParameters); err != nil {
			return nil, fmt.Errorf("indexing %s/%s: %w", res.Type, res.ID, err)
		}
	}
	w.add(v, values)
	return v, nil
}

var indexTables = []string{"search_string", "search_token", "search_date", "search_reference", "search_number", "search_quantity", "search_uri"}

// writeSet gathers the rows of many versions so that each table gets one statement for all of
// them (rows passed as parallel arrays and unnested), rather than one per version: a batch of
// 10,000 versions costs a dozen statements, not 70,000. A resource written twice in one set
// starts a new group, whose statements follow the first's, so its index rows are replaced in
// order and no upsert meets its own row twice.
type writeSet struct {
	groups []*writeGroup
}

type writeGroup struct {
	seen map[string]bool
	// resource_version and resource
	types, ids []string
	versions   []int32
	updated    []time.Time
	deleted    []bool
	bodies     []*string
	// versions after the first, whose old index rows go
	replacedTypes, replacedIDs []string
	// index rows: each table's resource_type and resource_id columns, then its own
	str struct {
		types, ids, codes, values, normalized []string
		oversized                             []bool
	}
	tok struct {
		types, ids, codes, systems, values, displays []string
		oversized                                    []bool
	}
	date struct {
		types, ids, codes []string
		lows, highs       []time.Time
	}
	ref struct {
		types, ids, codes, targetTypes, targetIDs, urls, versions []string
		oversized                                                 []bool
	}
	num struct {
		types, ids, codes   []string
		values, lows, highs []float64
	}
	qty struct {
		types, ids, codes []string
		values            []*float64
		lows, highs       []float64
		systems, units    []string
	}
	uri struct {
		types, ids, codes, values []string
		oversized                 []bool
	}
}

func (w *writeSet) add(v *Version, values searchparam.Values) {
	key := v.Type + "/" + v.ID
	if len(w.groups) == 0 || w.groups[len(w.groups)-1].seen[key] {
		w.groups = append(w.groups, &writeGroup{seen: map[string]bool{}})
	}
	g := w.groups[len(w.groups)-1]
	g.seen[key] = true
	var body *string
	if v.JSON != nil {
		text := string(v.JSON)
		body = &text
	}
	g.types, g.ids = append(g.types, v.Type), append(g.ids, v.ID)
	g.versions, g.updated = append(g.versions, int32(v.VersionID)), append(g.updated, v.LastUpdated)
	g.deleted, g.bodies = append(g.deleted, v.Deleted), append(g.bodies, body)
	if v.VersionID > 1 {
		g.replacedTypes, g.replacedIDs = append(g.replacedTypes, v.Type), append(g.replacedIDs, v.ID)
	}
	t, id := v.Type, v.ID
	for _, x := range values.Strings {
		r := &g.str
		r.types, r.ids, r.codes, r.values, r.normalized = append(r.types, t), append(r.ids, id), append(r.codes, x.Code),
			append(r.values, x.Value), append(r.normalized, x.Normalized)
		r.oversized = append(r.oversized, stringOversized(x.Normalized))
	}
	for _, x := range values.Tokens {
		r := &g.tok
		r.types, r.ids, r.codes, r.systems, r.values, r.displays = append(r.types, t), append(r.ids, id), append(r.codes, x.Code),
			append(r.systems, x.System), append(r.values, x.Value), append(r.displays, x.Text)
		r.oversized = append(r.oversized, tokenOversized(x.System, x.Value))
	}
	for _, x := range values.Dates {
		r := &g.date
		r.types, r.ids, r.codes, r.lows, r.highs = append(r.types, t), append(r.ids, id), append(r.codes, x.Code),
			append(r.lows, x.Low), append(r.highs, x.High)
	}
	for _, x := range values.References {
		r := &g.ref
		r.types, r.ids, r.codes, r.targetTypes, r.targetIDs, r.urls, r.versions = append(r.types, t), append(r.ids, id),
			append(r.codes, x.Code), append(r.targetTypes, x.Type), append(r.targetIDs, x.ID), append(r.urls, x.URL), append(r.versions, x.Version)
		r.oversized = append(r.oversized, referenceOversized(x.URL))
	}
	for _, x := range values.Numbers {
		r := &g.num
		r.types, r.ids, r.codes, r.values, r.lows, r.highs = append(r.types, t), append(r.ids, id), append(r.codes, x.Code),
			append(r.values, x.Value), append(r.lows, x.Low), append(r.highs, x.High)
	}
	for _, x := range values.Quantities {
		r := &g.qty
		var value *float64
		if !math.IsNaN(x.Value) && !math.IsInf(x.Value, 0) {
			v := x.Value
			value = &v
		}
		r.types, r.ids, r.codes, r.values, r.lows, r.highs, r.systems, r.units = append(r.types, t), append(r.ids, id),
			append(r.codes, x.Code), append(r.values, value), append(r.lows, x.Low), append(r.highs, x.High),
			append(r.systems, x.System), append(r.units, x.Unit)
	}
	for _, x := range values.URIs {
		r := &g.uri
		r.types, r.ids, r.codes, r.values = append(r.types, t), append(r.ids, id), append(r.codes, x.Code), append(r.values, x.Value)
		r.oversized = append(r.oversized, uriOversized(x.Value))
	}
}

// batch is the statements that store the set, in order.
func (w *writeSet) batch() *pgx.Batch {
	b := &pgx.Batch{}
	for _, g := range w.groups {
		b.Queue(`INSERT INTO resource_version (resource_type, resource_id, version_id, last_updated, body)
			SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::text[])`,
			g.types, g.ids, g.versions, g.updated, g.bodies)
		b.Queue(`INSERT INTO resource (resource_type, resource_id, version_id, last_updated, deleted)
			SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::bool[])
			ON CONFLICT (resource_type, resource_id) DO UPDATE
			SET version_id = excluded.version_id, last_updated = excluded.last_updated, deleted = excluded.deleted`,
			g.types, g.ids, g.versions, g.updated, g.deleted)
		if len(g.replacedIDs) > 0 {
			// A join with the replaced resources, not IN: PostgreSQL then finds each one's
			// rows by the (resource_type, resource_id) index, where for IN it may read the
			// whole table, as it does for a few resources among hundreds of thousands of
			// index rows whenever the table's statistics predate those resources.
			for _, table := range indexTables {
				b.Queue(`DELETE FROM `+table+` t USING unnest($1::text[], $2::text[]) AS u(resource_type, resource_id)
					WHERE t.resource_type = u.resource_type AND t.resource_id = u.resource_id`,
					g.replacedTypes, g.replacedIDs)
			}
		}
		if r := g.str; len(r.ids) > 0 {
			b.Queue(`INSERT INTO search_string (resource_type, resource_id, code, value, normalized, oversized)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[])`, r.types, r.ids, r.codes, r.values, r.normalized, r.oversized)
		}
		if r := g.tok; len(r.ids) > 0 {
			b.Queue(`INSERT INTO search_token (resource_type, resource_id, code, system, value, display, oversized)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[])`,
				r.types, r.ids, r.codes, r.systems, r.values, r.displays, r.oversized)
		}
		if r := g.date; len(r.ids) > 0 {
			b.Queue(`INSERT INTO search_date (resource_type, resource_id, code, low, high)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])`,
				r.types, r.ids, r.codes, r.lows, r.highs)
		}
		if r := g.ref; len(r.ids) > 0 {
			b.Queue(`INSERT INTO search_reference (resource_type, resource_id, code, target_type, target_id, url, version, oversized)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bool[])`,
				r.types, r.ids, r.codes, r.targetTypes, r.targetIDs, r.urls, r.versions, r.oversized)
		}
		if r := g.num; len(r.ids) > 0 {
			b.Queue(`INSERT INTO search_number (resource_type, resource_id, code, value, low, high)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::float8[])`,
				r.types, r.ids, r.codes, r.values, r.lows, r.highs)
		}
		if r := g.qty; len(r.ids) > 0 {
			b.Queue(`INSERT INTO search_quantity (resource_type, resource_id, code, value, low, high, system, unit)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::float8[], $7::text[], $8::text[])`,
				r.types, r.ids, r.codes, r.values, r.lows, r.highs, r.systems, r.units)
		}
		if r := g.uri; len(r.ids) > 0 {
			b.Queue(`INSERT INTO search_uri (resource_type, resource_id, code, value, oversized)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[])`, r.types, r.ids, r.codes, r.values, r.oversized)
		}
	}
	return b
}

// Read returns the current version of type/id: a 404 Outcome if there is none, 410 if it
// was deleted.
func (s *Store) Read(ctx context.Context, q DBTX, resourceType, id string) (*Version, error) {
	v := &Version{Type: resourceType, ID: id}
	var body *string
	err := q.QueryRow(ctx, `SELECT r.version_id, r.last_updated, r.deleted, v.body
		FROM resource r JOIN resource_version v USING (resource_type, resource_id, version_id)
		WHERE r.resource_type = $1 AND r.resource_id = $2`, resourceType, id).Scan(&v.VersionID, &v.LastUpdated, &v.Deleted, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, NewOutcome(http.StatusNotFound, NotFound, fmt.Sprintf("%s/%s is not known", resourceType, id))
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s/%s: %w", resourceType, id, err)
	}
	if v.Deleted {
		return v, NewOutcome(http.StatusGone, Deleted, fmt.Sprintf("%s/%s was deleted (version %d)", resourceType, id, v.VersionID))
	}
	v.JSON = []byte(*body)
	return v, nil
}

// VRead returns one version of type/id.
func (s *Store) VRead(ctx context.Context, q DBTX, resourceType, id string, versionID int) (*Version, error) {
	v := &Version{Type: resourceType, ID: id, VersionID: versionID}
	var body *string
	err := q.QueryRow(ctx, `SELECT last_updated, body FROM resource_version
		WHERE resource_type = $1 AND resource_id = $2 AND version_id = $3`, resourceType, id, versionID).Scan(&v.LastUpdated, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, NewOutcome(http.StatusNotFound, NotFound, fmt.Sprintf("%s/%s has no version %d", resourceType, id, versionID))
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s/%s version %d: %w", resourceType, id, versionID, err)
	}
	if body == nil {
		v.Deleted = true
		return v, NewOutcome(http.StatusGone, Deleted, fmt.Sprintf("version %d of %s/%s is its deletion", versionID, resourceType, id))
	}
	v.JSON = []byte(*body)
	return v, nil
}

// applyPatch patches the current version of resourceType/id and stores the result. The
// resource stays locked from read to write, so the patch applies to the version it was
// computed against.
func (s *Store) applyPatch(ctx context.Context, tx DBTX, resourceType, id string, patch jsonpatch.Patch, match *int, limits ResourceLimits) (UpdateResult, error) {
	if _, _, _, err := lockCurrent(ctx, tx, resourceType, id); err != nil {
		return UpdateResult{}, err
	}
	current, err := s.Read(ctx, tx, resourceType, id)
	if err != nil {
		return UpdateResult{}, err
	}
	if match != nil && *match != current.VersionID {
		return UpdateResult{}, NewOutcome(http.StatusPreconditionFailed, Conflict, fmt.Sprintf("If-Match asks for version %d of %s, which is at version %d", *match, current.Path(), current.VersionID))
	}
	patched, err := limits.applyPatch(patch, current.JSON, current.Path())
	if err != nil {
		return UpdateResult{}, err
	}
	if err := limits.checkArrays(patched, ""); err != nil {
		return UpdateResult{}, err
	}
	res, err := Parse(patched)
	if err != nil {
		return UpdateResult{}, err
	}
	if res.Type != resourceType || res.ID != id {
		return UpdateResult{}, NewOutcome(http.StatusUnprocessableEntity, BusinessRule, "a patch may not change the resource's type or id")
	}
	return s.Update(ctx, tx, res, &current.VersionID)
}
