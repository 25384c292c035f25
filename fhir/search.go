package fhir

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir/fhirpath"
	"github.com/cartreg/cartreg/fhir/searchparam"
)

// Params is the search parameter registry: the specification's definitions, and how to index
// a resource by them.
type Params interface {
	Extractor
	Lookup(resourceType, code string) (*searchparam.Definition, bool)
	ForType(resourceType string) []*searchparam.Definition
	// Derived says which parameters are answered from others' index rows (the store does
	// not index them: see searchparam.Derived).
	Derived(resourceType, code string) (searchparam.Derived, bool)
}

// Searcher runs searches over the index tables.
type Searcher struct {
	store   *Store
	params  Params
	baseURL string // this server's FHIR base, when configured: references to it are local
	now     func() time.Time
	limits  SearchLimits
}

// NewSearcher returns a searcher over store's database.
func NewSearcher(store *Store, params Params, baseURL string) *Searcher {
	return &Searcher{store: store, params: params, baseURL: strings.TrimSuffix(baseURL, "/"), now: store.now, limits: DefaultSearchLimits}
}

// page is one page of search results.
type page struct {
	matches    []*Version
	included   []*Version
	total      *int
	next, prev string // cursors
}

// cursor marks a position in a sorted result: the sort values and id of a row, and which way
// the page it starts goes.
type cursor struct {
	Keys     []any  `json:"k"`
	Type     string `json:"t"`
	ID       string `json:"i"`
	Backward bool   `json:"b,omitempty"`
}

func (c cursor) encode() string {
	raw, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func decodeCursor(s string) (*cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	var c cursor
	if err == nil {
		err = json.Unmarshal(raw, &c)
	}
	if err != nil || !IsResourceType(c.Type) || !ValidID(c.ID) {
		return nil, badCursor()
	}
	return &c, nil
}

func badCursor() error {
	return NewOutcome(http.StatusBadRequest, Value, "_cursor is not one this server made", "_cursor")
}

// checkCursorKeys makes sure a cursor's sort values are what cursorKeys writes for cols:
// text PostgreSQL reads back with each column's cast. Anything else would fail in the
// database, as a 500, or page from the wrong place.
func checkCursorKeys(at *cursor, cols []sortColumn) error {
	if len(at.Keys) != len(cols)-2 {
		return NewOutcome(http.StatusBadRequest, Value, "_cursor does not belong to this search", "_cursor")
	}
	for i, k := range at.Keys {
		v, ok := k.(string)
		if !ok || !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
			return badCursor()
		}
		switch cols[i].cast {
		case "timestamptz":
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil && v != "infinity" && v != "-infinity" {
				return badCursor()
			}
		case "float8":
			if _, err := strconv.ParseFloat(v, 64); err != nil {
				return badCursor()
			}
		}
	}
	return nil
}

// sortColumn is one ORDER BY key: an SQL expression over the row r, never NULL (missing
// values become a sentinel that sorts last), and how to read a cursor value back.
type sortColumn struct {
	expr string
	desc bool
	cast string
}

func (s *Searcher) sortColumns(b *sqlBuilder, types []string, keys []sortKey) ([]sortColumn, error) {
	var cols []sortColumn
	for _, k := range keys {
		switch k.code {
		case "_id":
			cols = append(cols, sortColumn{expr: "r.resource_id", desc: k.desc, cast: "text"})
			continue
		case "_lastUpdated":
			cols = append(cols, sortColumn{expr: "r.last_updated", desc: k.desc, cast: "timestamptz"})
			continue
		}
		kind, _, ok := s.lookupAll(types, k.code)
		if !ok {
			return nil, NewOutcome(http.StatusBadRequest, NotSupported, fmt.Sprintf("_sort: %s is not a search parameter of %s", k.code, strings.Join(types, ", ")))
		}
		agg, column, cast := "min", "", ""
		switch kind {
		case searchparam.String:
			column, cast = "normalized", "text"
		case searchparam.Token:
			column, cast = "value", "text"
		case searchparam.URI:
			column, cast = "value", "text"
		case searchparam.Reference:
			column, cast = "target_id", "text"
		case searchparam.Date:
			column, cast = "low", "timestamptz"
			if k.desc {
				agg, column = "max", "high"
			}
		case searchparam.Number, searchparam.Quantity:
			column, cast = "value", "float8"
			if k.desc {
				agg = "max"
			}
		default:
			return nil, NewOutcome(http.StatusBadRequest, NotSupported, "_sort: cannot sort by "+k.code)
		}
		if kind == searchparam.String || kind == searchparam.Token || kind == searchparam.URI || kind == searchparam.Reference {
			if k.desc {
				agg = "max"
			}
		}
		sentinel := map[string]string{"text": "''", "timestamptz": "'-infinity'::timestamptz", "float8": "'-Infinity'::float8"}[cast]
		if !k.desc {
			sentinel = map[string]string{"text": "chr(1114111)", "timestamptz": "'infinity'::timestamptz", "float8": "'Infinity'::float8"}[cast]
		}
		expr := "COALESCE((SELECT " + agg + "(x." + column + ") FROM " + indexTable[kind] + " x WHERE x.resource_type = r.resource_type AND x.resource_id = r.resource_id AND " +
			s.codeCondition(b, "x", types, k.code) + "), " + sentinel + ")"
		cols = append(cols, sortColumn{expr: expr, desc: k.desc, cast: cast})
	}
	// The row's identity ends every ordering, so it is total and paging is stable.
	return append(cols, sortColumn{expr: "r.resource_type", cast: "text"}, sortColumn{expr: "r.resource_id", cast: "text"}), nil
}

// where builds the conditions shared by the page query and the count.
func (s *Searcher) where(b *sqlBuilder, types []string, q *searchQuery) (string, error) {
	var typeCond string
	if len(types) == 1 { // plain equality gives the planner a sharper estimate
		typeCond = "r.resource_type = " + b.arg(types[0])
	} else {
		typeCond = "r.resource_type = ANY(" + b.arg(types) + "::text[])"
	}
	conds := []string{typeCond, "NOT r.deleted"}
	o := owner{typeExpr: "r.resource_type", idExpr: "r.resource_id", types: types}
	if q.compartment != nil {
		conds = append(conds, q.compartment.condition(b, o))
	}
	for _, f := range q.filters {
		for _, values := range f.values {
			c, err := s.condition(b, o, f.key, values, false)
			if err != nil {
				return "", err
			}
			conds = append(conds, "("+c+")")
		}
	}
	return strings.Join(conds, " AND "), nil
}

// pageQuery builds the statement for one page of a search: the matches, ordered, with their
// sort keys (to make cursors) and bodies.
func (s *Searcher) pageQuery(types []string, q *searchQuery) (sqlText string, args []any, cols []sortColumn, at *cursor, err error) {
	b := &sqlBuilder{base: q.base}
	where, err := s.where(b, types, q)
	if err != nil {
		return "", nil, nil, nil, err
	}
	if cols, err = s.sortColumns(b, types, q.sort); err != nil {
		return "", nil, nil, nil, err
	}
	if q.cursor != "" {
		if at, err = decodeCursor(q.cursor); err != nil {
			return "", nil, nil, nil, err
		}
		if err = checkCursorKeys(at, cols); err != nil {
			return "", nil, nil, nil, err
		}
	}
	backward := at != nil && at.Backward

	var selectKeys, order []string
	for i, c := range cols {
		selectKeys = append(selectKeys, c.expr+" AS k"+fmt.Sprint(i))
		dir := "ASC"
		if c.desc != backward {
			dir = "DESC"
		}
		order = append(order, "k"+fmt.Sprint(i)+" "+dir)
	}
	sqlText = "SELECT * FROM (SELECT r.resource_type, r.resource_id, r.version_id, r.last_updated, " + strings.Join(selectKeys, ", ") +
		" FROM resource r WHERE " + where + ") m"
	if at != nil {
		sqlText += " WHERE " + keysetCondition(b, cols, at, backward)
	}
	sqlText += " ORDER BY " + strings.Join(order, ", ") + " LIMIT " + b.arg(q.count+1)
	sqlText = "SELECT m.resource_type, m.resource_id, m.version_id, m.last_updated, v.body, " + keyList(len(cols)) +
		" FROM (" + sqlText + ") m JOIN resource_version v USING (resource_type, resource_id, version_id) ORDER BY " + strings.Join(order, ", ")
	return sqlText, b.args, cols, at, nil
}

// run executes a parsed search for one page.
func (s *Searcher) run(ctx context.Context, db Querier, types []string, q *searchQuery) (*page, error) {
	sqlText, args, cols, at, err := s.pageQuery(types, q)
	if err != nil {
		return nil, err
	}
	backward := at != nil && at.Backward
	b := &sqlBuilder{args: args}

	rows, err := db.Query(ctx, sqlText, append([]any{pgx.QueryExecModeExec}, b.args...)...)
	if err != nil {
		return nil, fmt.Errorf("searching: %w", err)
	}
	defer rows.Close()
	var matches []*Version
	var keys [][]any
	for rows.Next() {
		v := &Version{}
		var body string
		dest := []any{&v.Type, &v.ID, &v.VersionID, &v.LastUpdated, &body}
		rowKeys := make([]any, len(cols))
		for i := range cols {
			dest = append(dest, &rowKeys[i])
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("reading search results: %w", err)
		}
		v.JSON = []byte(body)
		matches = append(matches, v)
		keys = append(keys, rowKeys)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading search results: %w", err)
	}

	p := &page{}
	more := len(matches) > q.count
	if more {
		matches, keys = matches[:q.count], keys[:q.count]
	}
	if backward { // fetched in reverse to find the rows before the cursor: put them back in order
		for i, j := 0, len(matches)-1; i < j; i, j = i+1, j-1 {
			matches[i], matches[j] = matches[j], matches[i]
			keys[i], keys[j] = keys[j], keys[i]
		}
	}
	p.matches = matches
	if len(matches) > 0 {
		first, last := keys[0], keys[len(keys)-1]
		if (!backward && more) || (backward && at != nil) {
			p.next = cursor{Keys: cursorKeys(last), Type: matches[len(matches)-1].Type, ID: matches[len(matches)-1].ID}.encode()
		}
		if (backward && more) || (!backward && at != nil) {
			p.prev = cursor{Keys: cursorKeys(first), Type: matches[0].Type, ID: matches[0].ID, Backward: true}.encode()
		}
	}
	if q.total == "accurate" || q.total == "estimate" || q.summary == "count" {
		cb := &sqlBuilder{base: q.base}
		cwhere, err := s.where(cb, types, q)
		if err != nil {
			return nil, err
		}
		var n int
		if err := db.QueryRow(ctx, "SELECT count(*) FROM resource r WHERE "+cwhere, append([]any{pgx.QueryExecModeExec}, cb.args...)...).Scan(&n); err != nil {
			return nil, fmt.Errorf("counting search results: %w", err)
		}
		p.total = &n
	}
	return p, nil
}

// runLimited runs a search and its includes read-only, each statement taking at most the
// Timeout limit: a search that runs out is a 422 naming it, and
// PostgreSQL stops working on it, where a cancelled HTTP request alone would leave the
// statement running.
func (s *Searcher) runLimited(ctx context.Context, q *searchQuery, types []string) (*page, error) {
	var p *page
	err := s.readLimited(ctx, func(db Querier) error {
		var err error
		if p, err = s.run(ctx, db, types, q); err != nil {
			return err
		}
		if q.summary != "count" {
			p.included, err = s.include(ctx, db, q, p.matches)
		}
		return err
	})
	return p, err
}

// readLimited runs fn on a reader whose statements are each read-only and may each take at
// most the Timeout limit (limitedReader), as searches, histories and $everything read; a
// statement that runs out is a 422 naming the limit.
func (s *Searcher) readLimited(ctx context.Context, fn func(db Querier) error) error {
	err := fn(limitedReader{pool: s.store.db, timeout: s.limits.Timeout})
	if QueryCanceled(err) && ctx.Err() == nil {
		return timeoutOutcome(s.limits.Timeout, "CARTREG_SEARCH_TIMEOUT")
	}
	return err
}

func keyList(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = "m.k" + fmt.Sprint(i)
	}
	return strings.Join(parts, ", ")
}

// cursorKeys keeps the sort values of a row, without its type and id (stored apart), as
// text PostgreSQL reads back with the column's cast: the sentinels for missing values are
// infinities, which JSON cannot carry as numbers.
func cursorKeys(keys []any) []any {
	out := make([]any, 0, len(keys)-2)
	for _, k := range keys[:len(keys)-2] {
		switch v := k.(type) {
		case time.Time:
			k = v.UTC().Format(time.RFC3339Nano)
		case float64:
			switch {
			case math.IsInf(v, 1):
				k = "Infinity"
			case math.IsInf(v, -1):
				k = "-Infinity"
			default:
				k = strconv.FormatFloat(v, 'g', -1, 64)
			}
		case fmt.Stringer: // pgtype's infinite timestamps
			k = v.String()
		}
		out = append(out, k)
	}
	return out
}

// keysetCondition selects the rows after (or, going backward, before) the cursor's row in
// the sort order: (k0 > a) OR (k0 = a AND k1 > b) OR ...
func keysetCondition(b *sqlBuilder, cols []sortColumn, at *cursor, backward bool) string {
	values := append(append([]any{}, at.Keys...), at.Type, at.ID)
	var ors []string
	for i := range cols {
		var ands []string
		for j := 0; j < i; j++ {
			ands = append(ands, fmt.Sprintf("m.k%d = %s::%s", j, b.arg(values[j]), cols[j].cast))
		}
		op := ">"
		if cols[i].desc != backward {
			op = "<"
		}
		ands = append(ands, fmt.Sprintf("m.k%d %s %s::%s", i, op, b.arg(values[i]), cols[i].cast))
		ors = append(ors, "("+strings.Join(ands, " AND ")+")")
	}
	return "(" + strings.Join(ors, " OR ") + ")"
}

// include follows _include and _revinclude from the matches, and with :iterate from what
// they bring in. More than the MaxIncluded limit is a 422: a silently cut list would look
// complete. Each query reads at most one row past the limit, so a fan-out of millions costs
// no more than one of a thousand.
func (s *Searcher) include(ctx context.Context, db Querier, q *searchQuery, matches []*Version) ([]*Version, error) {
	if len(q.includes) == 0 && len(q.revincl) == 0 {
		return nil, nil
	}
	seen := map[string]bool{}
	for _, m := range matches {
		seen[m.Path()] = true
	}
	var included []*Version
	frontier := matches
	maxIncluded := s.limits.MaxIncluded
	for round := 0; round < 4 && len(frontier) > 0; round++ {
		byType := map[string][]string{}
		for _, v := range frontier {
			byType[v.Type] = append(byType[v.Type], v.ID)
		}
		// A query that fills its LIMIT has found more unseen resources than the page may
		// still take; one that does not is complete.
		limit := maxIncluded - len(included) + len(seen) + 1
		var found [][2]string
		for _, inc := range q.includes {
			if (round > 0 && !inc.iterate) || len(byType[inc.source]) == 0 {
				continue
			}
			codes, narrowed := s.storedCodes(inc.source, inc.param)
			pairs, err := collectPairs(db.Query(ctx, `SELECT DISTINCT s.target_type, s.target_id FROM search_reference s
				WHERE s.resource_type = $1 AND s.code = ANY($2::text[]) AND s.resource_id = ANY($3::text[]) AND s.target_id <> ''
				  AND ($4 = '' OR s.target_type = $4) AND ($7 = '' OR s.target_type = $7)
				  AND local_reference(s.url, $5, s.target_type, s.target_id)
				LIMIT $6`,
				inc.source, codes, byType[inc.source], inc.target, q.base+"/", limit, narrowed))
			if err != nil {
				return nil, fmt.Errorf("following _include %s:%s: %w", inc.source, inc.param, err)
			}
			found = append(found, pairs...)
		}
		for _, inc := range q.revincl {
			if round > 0 && !inc.iterate {
				continue
			}
			for targetType, ids := range byType {
				codes, narrowed := s.storedCodes(inc.source, inc.param)
				if narrowed != "" && narrowed != targetType {
					continue // the parameter points at narrowed only
				}
				pairs, err := collectPairs(db.Query(ctx, `SELECT DISTINCT s.resource_type, s.resource_id FROM search_reference s
					WHERE s.resource_type = $1 AND s.code = ANY($2::text[]) AND s.target_type = $3 AND s.target_id = ANY($4::text[])
					  AND local_reference(s.url, $5, s.target_type, s.target_id)
					LIMIT $6`,
					inc.source, codes, targetType, ids, q.base+"/", limit))
				if err != nil {
					return nil, fmt.Errorf("following _revinclude %s:%s: %w", inc.source, inc.param, err)
				}
				found = append(found, pairs...)
			}
		}
		var types, ids []string
		for _, p := range found {
			if key := p[0] + "/" + p[1]; !seen[key] {
				if len(types) >= maxIncluded-len(included) {
					return nil, s.tooManyIncluded()
				}
				seen[key] = true
				types, ids = append(types, p[0]), append(ids, p[1])
			}
		}
		loaded, err := s.load(ctx, db, types, ids)
		if err != nil {
			return nil, err
		}
		included = append(included, loaded...)
		frontier = loaded
	}
	return included, nil
}

// scanVersion reads a row of (type, id, version, last updated, body): a current version,
// as searches, includes and $everything list them.
func scanVersion(r pgx.CollectableRow) (*Version, error) {
	v := &Version{}
	var body string
	err := r.Scan(&v.Type, &v.ID, &v.VersionID, &v.LastUpdated, &body)
	v.JSON = []byte(body)
	return v, err
}

// collectPairs reads (resource type, id) rows.
func collectPairs(rows pgx.Rows, err error) ([][2]string, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var p [2]string
		return p, r.Scan(&p[0], &p[1])
	})
}

// load reads the current versions of the given resources, skipping deleted ones.
func (s *Searcher) load(ctx context.Context, db Querier, types, ids []string) ([]*Version, error) {
	if len(types) == 0 {
		return nil, nil
	}
	rows, err := db.Query(ctx, `SELECT r.resource_type, r.resource_id, r.version_id, r.last_updated, v.body
		FROM unnest($1::text[], $2::text[]) AS k(resource_type, resource_id)
		JOIN resource r USING (resource_type, resource_id)
		JOIN resource_version v USING (resource_type, resource_id, version_id)
		WHERE NOT r.deleted ORDER BY r.resource_type, r.resource_id`, types, ids)
	if err != nil {
		return nil, fmt.Errorf("loading included resources: %w", err)
	}
	return pgx.CollectRows(rows, scanVersion)
}

// Match is one conditional operation's criteria, for MatchAll.
type Match struct {
	ResourceType, Criteria string
	Purpose                string // names the criteria in errors: "ifNoneExist", "conditional update" …
}

// MatchOne finds the one resource of resourceType that the criteria (a query string) select,
// for conditional create, update, patch and delete: "" when none does, a 412 Outcome when
// several do. Criteria must all be understood: ignoring one could pick the wrong resource.
// Two requests with the same criteria cannot both find nothing and both create (see MatchAll).
func (s *Searcher) MatchOne(ctx context.Context, tx DBTX, resourceType, criteria, purpose string) (string, error) {
	ids, err := s.MatchAll(ctx, tx, []Match{{ResourceType: resourceType, Criteria: criteria, Purpose: purpose}})
	var one *MatchError
	if errors.As(err, &one) {
		return "", one.Err
	}
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// MatchAll is MatchOne for several criteria at once, as a transaction's conditional entries
// have them: one round trip for all, however many there are. An error names the criteria's
// index in ms as its location's prefix when it is an Outcome.
//
// Two writers whose criteria could match the same resource must not both find nothing and
// both create: each search runs under transaction-scoped advisory locks on its normalised
// criteria (see conditionalLocks). But most criteria are matched by a resource that exists
// already (every Bundle from a site names the site), and waiting for the holder would queue
// all those writers behind one another for nothing. So the locks are first tried, in key
// order, up to the first that is taken; criteria not wholly locked are searched without, and
// only when that search finds nothing does the writer wait for the rest of its locks (still
// in key order) and search again, to see what the holder made.
func (s *Searcher) MatchAll(ctx context.Context, tx DBTX, ms []Match) ([]string, error) {
	type prepared struct {
		sql   string
		args  []any
		locks []conditionalLock
	}
	queries := make([]prepared, len(ms))
	mode := map[int64]bool{} // every criteria's locks: key → shared
	for i, m := range ms {
		params, err := url.ParseQuery(strings.TrimPrefix(m.Criteria, "?"))
		if err != nil || len(params) == 0 {
			return nil, &MatchError{Index: i, Err: NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("%s: %q is not a search query", m.Purpose, m.Criteria))}
		}
		q, err := s.parseSearch([]string{m.ResourceType}, params, true, 2, 2)
		if err != nil {
			return nil, &MatchError{Index: i, Err: err}
		}
		q.base = s.baseURL
		b := &sqlBuilder{base: q.base}
		where, err := s.where(b, []string{m.ResourceType}, q)
		if err != nil {
			return nil, &MatchError{Index: i, Err: err}
		}
		locks := s.conditionalLocks(m.ResourceType, q)
		for _, l := range locks {
			if sh, seen := mode[l.key]; !seen || sh {
				mode[l.key] = l.shared
			}
		}
		// Only ids, at most two: one match is the answer, two are an error.
		queries[i] = prepared{locks: locks,
			sql: "SELECT r.resource_id FROM resource r WHERE " + where + " ORDER BY r.resource_id LIMIT 2", args: b.args}
	}
	keys, shared := sortedLocks(mode)

	ids := make([][]string, len(ms))
	var taken int
	batch := &pgx.Batch{}
	batch.Queue(tryLocksSQL, keys, shared).QueryRow(func(row pgx.Row) error { return row.Scan(&taken) })
	for i, q := range queries {
		queueMatch(batch, q.sql, q.args, &ids[i])
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return nil, fmt.Errorf("conditional matches: %w", err)
	}
	// The locks taken are keys[:taken]; a criteria is locked when all of its are among them.
	var held int64
	if taken > 0 {
		held = keys[taken-1]
	}
	wait := map[int64]bool{}
	var again []int
	for i, q := range queries {
		if len(ids[i]) > 0 || len(q.locks) == 0 || taken > 0 && q.locks[len(q.locks)-1].key <= held {
			continue
		}
		again = append(again, i)
		for _, l := range q.locks {
			if taken == 0 || l.key > held {
				wait[l.key] = true
			}
		}
	}
	if len(again) > 0 {
		retry := &pgx.Batch{}
		for i, k := range keys { // in key order, all after the ones held
			switch {
			case !wait[k]:
			case shared[i]:
				retry.Queue("SELECT pg_advisory_xact_lock_shared($1)", k)
			default:
				retry.Queue("SELECT pg_advisory_xact_lock($1)", k)
			}
		}
		for _, i := range again {
			queueMatch(retry, queries[i].sql, queries[i].args, &ids[i])
		}
		if err := tx.SendBatch(ctx, retry).Close(); err != nil {
			return nil, fmt.Errorf("conditional matches: %w", err)
		}
	}

	out := make([]string, len(ms))
	for i, found := range ids {
		switch len(found) {
		case 0:
		case 1:
			out[i] = found[0]
		default:
			m := ms[i]
			return nil, &MatchError{Index: i, Err: NewOutcome(http.StatusPreconditionFailed, Duplicate,
				fmt.Sprintf("%s: more than one %s matches %q", m.Purpose, m.ResourceType, m.Criteria))}
		}
	}
	return out, nil
}

// queueMatch queues a match query whose ids go to *ids. Its statement is prepared and cached
// per connection like every other: the same criteria shape (identifier=system|value) comes
// back with every Bundle, and planning it again each time cost more than running it.
func queueMatch(b *pgx.Batch, sqlText string, args []any, ids *[]string) {
	b.Queue(sqlText, args...).Query(func(rows pgx.Rows) error {
		found, err := pgx.CollectRows(rows, pgx.RowTo[string])
		*ids = found
		return err
	})
}

// MatchError is MatchAll's error about one of its criteria.
type MatchError struct {
	Index int
	Err   error
}

func (e *MatchError) Error() string { return e.Err.Error() }
func (e *MatchError) Unwrap() error { return e.Err }

// CheckCriteria reports whether criteria ("Task?owner=Practitioner/7&status=requested") is a
// search this server can run in full: a Subscription's criteria must be, or it would notify
// of resources that do not match. It returns the resource type searched.
func (s *Searcher) CheckCriteria(criteria string) (string, error) {
	resourceType, _, err := s.parseCriteria(criteria)
	return resourceType, err
}

func (s *Searcher) parseCriteria(criteria string) (string, *searchQuery, error) {
	resourceType, query, _ := strings.Cut(criteria, "?")
	if !fhirpath.IsResourceType(resourceType) {
		return "", nil, fmt.Errorf("%q does not start with a resource type", criteria)
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return "", nil, fmt.Errorf("%q is not a search query: %v", criteria, err)
	}
	for k := range params {
		if resultParameters[strings.SplitN(k, ":", 2)[0]] {
			return "", nil, fmt.Errorf("%s: result parameters have no place in criteria", k)
		}
	}
	q, err := s.parseSearch([]string{resourceType}, params, true, 1, 1)
	if err != nil {
		var o *Outcome
		if errors.As(err, &o) && len(o.Issues) > 0 {
			return "", nil, errors.New(o.Issues[0].Diagnostics)
		}
		return "", nil, err
	}
	if len(q.unknown) > 0 {
		return "", nil, errors.New(q.unknown[0].Diagnostics)
	}
	return resourceType, q, nil
}

// Matching returns the current versions, as written in tx, of those of ids (of the type the
// criteria search) that meet criteria: one search for a whole write's resources. It sees the
// search indexes of tx's own writes.
func (s *Searcher) Matching(ctx context.Context, tx DBTX, criteria string, ids []string) ([]*Version, error) {
	resourceType, q, err := s.parseCriteria(criteria)
	if err != nil {
		return nil, err
	}
	q.filters = append(q.filters, filter{key: "_id", values: [][]string{ids}})
	q.base = s.baseURL
	q.count, q.sort, q.includes, q.revincl, q.total = len(ids), nil, nil, nil, "none"
	p, err := s.run(ctx, tx, []string{resourceType}, q)
	if err != nil {
		return nil, err
	}
	return p.matches, nil
}

func (a *API) typeSearch(c echo.Context) error {
	resourceType, _, err := target(c)
	if err != nil {
		return err
	}
	return a.doSearch(c, []string{resourceType}, nil)
}

// systemSearch is GET /fhir?_type=A,B&...: a search across types, with the parameters they
// share.
func (a *API) systemSearch(c echo.Context) error {
	types, err := parseTypes(c.QueryParam("_type"))
	if err != nil {
		return err
	}
	if types == nil {
		types = ResourceTypes()
	}
	return a.doSearch(c, types, nil)
}

// doSearch runs a search of types, within a compartment when scope is not nil, and answers
// with a page of it.
func (a *API) doSearch(c echo.Context, types []string, scope *compartmentScope) error {
	params := c.QueryParams()
	if c.Request().Method == http.MethodPost {
		form, err := c.FormParams()
		if err != nil {
			return NewOutcome(http.StatusBadRequest, Structure, "POST _search takes an application/x-www-form-urlencoded body")
		}
		params = mergeValues(params, form)
	}
	strict := preferences(c.Request()).StrictHandling
	q, err := a.search.parseSearch(types, params, strict, a.config.DefaultCount, a.config.MaxCount)
	if err != nil {
		return err
	}
	q.base = a.baseURL(c)
	q.compartment = scope
	p, err := a.search.runLimited(c.Request().Context(), q, types)
	if err != nil {
		return err
	}

	base := a.baseURL(c)
	b := newBundle("searchset", a.now())
	b.Total = p.total
	b.Link = []bundleLink{{Relation: "self", URL: pageURL(base, c, nil)}}
	// _summary=count answers with the total alone: there is no page to go on to.
	if p.next != "" && q.summary != "count" {
		b.Link = append(b.Link, bundleLink{Relation: "next", URL: pageURL(base, c, map[string]string{"_cursor": p.next})})
	}
	if p.prev != "" && q.summary != "count" {
		b.Link = append(b.Link, bundleLink{Relation: "previous", URL: pageURL(base, c, map[string]string{"_cursor": p.prev})})
	}
	if q.summary != "count" {
		for _, v := range p.matches {
			body, err := shape(v.JSON, q)
			if err != nil {
				return err
			}
			b.Entry = append(b.Entry, bundleEntry{FullURL: base + "/" + v.Path(), Resource: body, Search: &entrySearch{Mode: "match"}})
		}
		for _, v := range p.included {
			b.Entry = append(b.Entry, bundleEntry{FullURL: base + "/" + v.Path(), Resource: v.JSON, Search: &entrySearch{Mode: "include"}})
		}
	}
	if len(q.unknown) > 0 {
		oo, err := MarshalOutcome(q.unknown, false)
		if err != nil {
			return err
		}
		b.Entry = append(b.Entry, bundleEntry{Resource: oo, Search: &entrySearch{Mode: "outcome"}})
	}
	return b.send(c)
}

func mergeValues(a, b url.Values) url.Values {
	out := url.Values{}
	for k, v := range a {
		out[k] = append(out[k], v...)
	}
	for k, v := range b {
		out[k] = append(out[k], v...)
	}
	return out
}

// shape applies _elements and _summary to a match: only the asked-for elements (plus id,
// meta and resourceType), tagged SUBSETTED as the specification asks.
func shape(raw []byte, q *searchQuery) ([]byte, error) {
	if len(q.elements) == 0 && (q.summary == "" || q.summary == "false") {
		return raw, nil
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(raw, &body); err != nil {
		return nil, err
	}
	keep := map[string]bool{"resourceType": true, "id": true, "meta": true}
	switch {
	case len(q.elements) > 0:
		for _, e := range q.elements {
			keep[strings.SplitN(e, ".", 2)[0]] = true
		}
	case q.summary == "text":
		keep["text"] = true
	case q.summary == "data":
		for k := range body {
			keep[k] = k != "text"
		}
	case q.summary == "true":
		for k := range body {
			keep[k] = k != "text" && k != "contained" && !strings.HasPrefix(k, "_")
		}
	}
	for k := range body {
		if !keep[k] {
			delete(body, k)
		}
	}
	var meta map[string]any
	_ = json.Unmarshal(body["meta"], &meta)
	if meta == nil {
		meta = map[string]any{}
	}
	tags, _ := meta["tag"].([]any)
	meta["tag"] = append(tags, map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"})
	rawMeta, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	body["meta"] = rawMeta
	return json.Marshal(body)
}
