package registry

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/maypok86/otter/v2"
)

// bumpDataVersionSQL records, in the writing transaction, that the registry's tables changed
// (migration 026 says why the count is spread over rows). A report cached at the old version
// is then never served to a snapshot that sees the write; one that does not see it yet may
// still be served the report it would compute itself.
const bumpDataVersionSQL = `UPDATE registry_data_version SET version = version + 1 WHERE shard = pg_backend_pid() % 256`

// DataChanged records in tx that it changed the registry's tables other than through the
// projection (synth.LoadDirect's bulk load), so that no report cached before it is served
// after it commits.
func DataChanged(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, bumpDataVersionSQL)
	return err
}

// reportCache keeps the outcome reports researchers ask for most (the dashboard's response
// and survival reports, reloaded and shared by everyone who opens it) with the cohorts their
// overlap control needs, at the data version they were computed at. A report is served only
// to a query whose snapshot reads the same version, so it is exactly the report that query
// would compute: caching changes how fast the answer comes, never the answer, and the overlap
// control still runs on every request (it depends on who asks; the report does not).
//
// The reports depend on the filter, the grouping, the report's own parameters and the day
// they are counted as of, which together are the key; not on who asks, since researchers all
// see the whole registry through the same suppression.
//
// With maxStale, a report computed at an earlier version is still served while it is younger
// than that: a registry that EHRs write to all day would otherwise compute its dashboard again
// for nearly every researcher. Its figures are then at most maxStale behind the data, as a
// read replica's are behind by its lag.
type reportCache struct {
	entries  *otter.Cache[string, cachedReport]
	maxStale time.Duration
	now      func() time.Time
}

type cachedReport struct {
	version    int64
	computedAt time.Time
	report     any
	// cohorts are the published groups' patients, when hasCohorts: a report computed for a
	// caller without the overlap control may not have them.
	cohorts    []cohort
	hasCohorts bool
}

// newReportCache holds up to maxBytes of reports and cohorts (estimated), served up to
// maxStale after they were computed by the clock now, or exactly while the data have not
// changed if maxStale is zero; nil when maxBytes is zero or less, which turns caching off.
func newReportCache(maxBytes int64, maxStale time.Duration, now func() time.Time) (*reportCache, error) {
	if maxBytes <= 0 {
		return nil, nil
	}
	c, err := otter.New(&otter.Options[string, cachedReport]{
		MaximumWeight: uint64(maxBytes),
		Weigher:       func(key string, v cachedReport) uint32 { return v.weight(len(key)) },
	})
	if err != nil {
		return nil, fmt.Errorf("outcome report cache: %w", err)
	}
	return &reportCache{entries: c, maxStale: maxStale, now: now}, nil
}

// weight estimates an entry's bytes: its cohorts (8 bytes a patient, the bulk of it at scale)
// and, for a survival report, its curves' points.
func (v cachedReport) weight(keyLen int) uint32 {
	n := 1024 + keyLen
	for _, c := range v.cohorts {
		n += 8*len(c) + 24
	}
	if s, ok := v.report.(*SurvivalReport); ok {
		for _, g := range s.Groups {
			n += 96 * len(g.Curve)
		}
	}
	return uint32(min(n, 1<<31))
}

// dataVersion reads the registry's data version in tx's snapshot.
func dataVersion(ctx context.Context, tx pgx.Tx) (int64, error) {
	var v int64
	err := tx.QueryRow(ctx, `SELECT coalesce(sum(version), 0)::bigint FROM registry_data_version`).Scan(&v)
	return v, err
}

// lookup reads the data version in tx's snapshot and the report cached under key at that
// version, or at an earlier one while it is younger than maxStale; withCohorts asks for an
// entry that kept its cohorts. A nil cache finds nothing and reads nothing.
func (c *reportCache) lookup(ctx context.Context, tx pgx.Tx, key string, withCohorts bool) (version int64, hit *cachedReport, err error) {
	if c == nil {
		return 0, nil, nil
	}
	if version, err = dataVersion(ctx, tx); err != nil {
		return 0, nil, err
	}
	e, ok := c.entries.GetIfPresent(key)
	if !ok || (withCohorts && !e.hasCohorts) {
		return version, nil, nil
	}
	// A version above the snapshot's is a report of data this snapshot does not see yet
	// (a replica behind the one that computed it): served only as stale, if at all.
	if e.version != version && (c.maxStale <= 0 || c.now().Sub(e.computedAt) > c.maxStale) {
		return version, nil, nil
	}
	return version, &e, nil
}

// add keeps report, computed at version with its published cohorts when withCohorts, under
// key. The report is shared by every request that is served it, so no caller may change a
// report it was given.
func (c *reportCache) add(key string, version int64, report any, cohorts []cohort, withCohorts bool) {
	if c == nil {
		return
	}
	c.entries.Set(key, cachedReport{version: version, computedAt: c.now(), report: report, cohorts: cohorts, hasCohorts: withCohorts})
}

// reportKey names a report by everything it is computed from.
func reportKey(kind string, f Filter, groupBy string, params ...string) string {
	var b strings.Builder
	b.WriteString(kind)
	field := func(name string, values ...string) {
		b.WriteString("|" + name + "=")
		for i, v := range values {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(fmt.Sprintf("%q", v))
		}
	}
	month := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.Format(time.DateOnly)
	}
	field("disease", f.Diseases...)
	field("product", f.Products...)
	field("target", f.Targets...)
	field("site", f.Sites...)
	field("from", month(f.InfusedFrom))
	field("to", month(f.InfusedTo))
	field("group_by", groupBy)
	field("params", params...)
	return b.String()
}
