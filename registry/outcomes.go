package registry

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
)

// Filter selects the infusions an outcome query is about. Every list matches any of its
// values; an empty list matches everything.
type Filter struct {
	Diseases, Products, Targets, Sites []string
	InfusedFrom, InfusedTo             *time.Time
}

// GroupBy names what outcomes are broken down by.
var groupings = map[string]string{
	"":        `'all'`,
	"disease": `coalesce(i.disease, 'unclassified')`,
	"product": `i.product_label`,
	"target":  `coalesce(nullif(array_to_string(i.targets, '+'), ''), 'unspecified')`,
	"site":    `coalesce(s.name, 'unknown site')`,
	// Bands, never single years: an exact age with a site and a date could name a patient.
	"age_band": ageBandSQL("i.infused_on"),
	"prior_lines": `CASE WHEN i.prior_lines IS NULL THEN 'unknown' WHEN i.prior_lines <= 1 THEN '0–1'
		WHEN i.prior_lines <= 3 THEN i.prior_lines::text WHEN i.prior_lines <= 5 THEN '4–5' ELSE '6+' END`,
}

// ageBandSQL is the age band at infusion of the course whose infusion date is infused, its
// patient's registry_patient row as p: the analysis file's column and the age_band grouping
// alike.
func ageBandSQL(infused string) string {
	return `CASE WHEN p.birth_on IS NULL THEN 'unknown'
		ELSE (ARRAY['<18', '18–39', '40–64', '65–74', '75+'])[width_bucket(extract(year FROM age(` + infused +
		`, p.birth_on)), ARRAY[0, 18, 40, 65, 75])] END`
}

// endedCTE is each patient's latest end of follow-up (registry_follow_up_end), for the
// queries that count the lost and the withdrawn.
const endedCTE = `ended AS (
	SELECT DISTINCT ON (patient_id) patient_id, ended_on, reason FROM registry_follow_up_end
	ORDER BY patient_id, ended_on DESC
)`

// ParamError is a query parameter the outcome endpoints cannot take, with the parameter's
// name for the OperationOutcome's location.
type ParamError struct {
	Param string
	Msg   string
}

func (e *ParamError) Error() string { return e.Msg }

func paramError(param, format string, args ...any) error {
	return &ParamError{Param: param, Msg: fmt.Sprintf(format, args...)}
}

// ParseFilter reads a query string: disease, product, target and site (each repeatable or
// comma-separated), infused_from and infused_to (inclusive months, YYYY-MM).
//
// Dates select whole calendar months at most. A day would let two queries a day apart
// differ by the patients infused on that day, often one, whose outcome is then the
// difference of the answers. YYYY-MM-DD is taken only on a month's boundary (the first day
// for infused_from, the last for infused_to), so links written with whole months keep
// working; any other day is an error naming the parameter rather than a silent rounding,
// which would answer a question other than the one asked.
func ParseFilter(q url.Values) (Filter, error) {
	var f Filter
	split := func(key string) []string {
		var out []string
		for _, v := range q[key] {
			for _, part := range strings.Split(v, ",") {
				if part = strings.TrimSpace(part); part != "" {
					out = append(out, part)
				}
			}
		}
		return out
	}
	f.Diseases, f.Products, f.Targets, f.Sites = split("disease"), split("product"), split("target"), split("site")
	for _, key := range []string{"infused_from", "infused_to"} {
		v := q.Get(key)
		if v == "" {
			continue
		}
		t, err := parseMonth(key, v, key == "infused_to")
		if err != nil {
			return f, err
		}
		if key == "infused_from" {
			f.InfusedFrom = &t
		} else {
			f.InfusedTo = &t
		}
	}
	if f.InfusedFrom != nil && f.InfusedTo != nil && f.InfusedTo.Before(*f.InfusedFrom) {
		return f, paramError("infused_to", "infused_to %s is before infused_from %s", date(*f.InfusedTo), date(*f.InfusedFrom))
	}
	return f, nil
}

// parseMonth reads YYYY-MM, or YYYY-MM-DD on the month's boundary, as the month's first day
// or, with end, its last.
func parseMonth(key, v string, end bool) (time.Time, error) {
	if m, err := time.Parse("2006-01", v); err == nil {
		if end {
			return m.AddDate(0, 1, -1), nil
		}
		return m, nil
	}
	d, err := time.Parse("2006-01-02", v)
	if err != nil {
		return time.Time{}, paramError(key, "%s=%q: want a month as YYYY-MM", key, v)
	}
	first := time.Date(d.Year(), d.Month(), 1, 0, 0, 0, 0, time.UTC)
	boundary, which := first, "first"
	if end {
		boundary, which = first.AddDate(0, 1, -1), "last"
	}
	if !d.Equal(boundary) {
		return time.Time{}, paramError(key, "%s=%s: outcomes select infusions by whole months, so that two answers cannot "+
			"differ by the patients of one day; give %s (or %s, the month's %s day)", key, v, d.Format("2006-01"), date(boundary), which)
	}
	return d, nil
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// courses is the SQL of the infusions an outcome query counts, one per patient: the patient's
// first infusion among those the filter selects (a re-treatment is a later course, which is
// counted only when the filter selects it and not the first). $1…$6 are the filter; g is the
// group. The caller appends its own select list after the CTE.
//
// Without a filter that is each patient's first infusion, which the projection has numbered
// already (sequence, in the same order): reading those rows saves sorting the whole cohort
// for DISTINCT ON, a third of the time of an unfiltered query over 100,000 patients.
func courses(groupBy string, f Filter) (string, error) {
	g, ok := groupings[groupBy]
	if !ok {
		return "", fmt.Errorf("group_by=%s: want one of disease, product, target, site, age_band, prior_lines", groupBy)
	}
	patientJoin := ""
	if groupBy == "age_band" { // the only grouping that needs the patient's row
		patientJoin = "\n\t\tLEFT JOIN registry_patient p ON p.patient_id = i.patient_id"
	}
	distinct, first, order := "DISTINCT ON (i.patient_id) ", "", "\n\t\tORDER BY i.patient_id, i.infused_on, i.resource_type, i.resource_id"
	if f.empty() {
		distinct, first, order = "", "\n\t\t  AND i.sequence = 1", ""
	}
	// The filter's conditions stay when it is empty (they are all true then): PostgreSQL
	// cannot type a parameter the statement never uses.
	return `WITH course AS (
		SELECT ` + distinct + `i.patient_id, i.resource_type, i.resource_id, i.infused_on, i.death_on, i.last_contact_on,
			i.progression_on, i.last_progression_free_on, i.first_response_on, i.next_infused_on, i.timepoints,
			i.timepoints_text, ` + g + ` AS g
		FROM registry_infusion i LEFT JOIN registry_site s ON s.organization_id = i.effective_site_id` + patientJoin + `
		WHERE ($1::text[] IS NULL OR i.disease = ANY($1))
		  AND ($2::text[] IS NULL OR i.product = ANY($2) OR i.product_label = ANY($2))
		  AND ($3::text[] IS NULL OR i.targets && $3)
		  AND ($4::text[] IS NULL OR i.effective_site_id = ANY($4) OR s.name = ANY($4))
		  AND ($5::date IS NULL OR i.infused_on >= $5)
		  AND ($6::date IS NULL OR i.infused_on <= $6)` + first + order + `)`, nil
}

// empty reports whether the filter selects every infusion.
func (f Filter) empty() bool {
	return len(f.Diseases) == 0 && len(f.Products) == 0 && len(f.Targets) == 0 && len(f.Sites) == 0 &&
		f.InfusedFrom == nil && f.InfusedTo == nil
}

func (f Filter) args() []any {
	return []any{nilIfEmpty(f.Diseases), nilIfEmpty(f.Products), nilIfEmpty(f.Targets), nilIfEmpty(f.Sites), f.InfusedFrom, f.InfusedTo}
}

// sortGroups orders groups by size, largest first, then by name: the order a table or a
// legend is read in.
func sortGroups[T any](groups []T, size func(T) int, name func(T) string) {
	sort.SliceStable(groups, func(i, j int) bool {
		if si, sj := size(groups[i]), size(groups[j]); si != sj {
			return si > sj
		}
		return name(groups[i]) < name(groups[j])
	})
}

// analyticWorkMem is the memory an outcome query may sort and aggregate in before spilling to
// disk. PostgreSQL's 4 MB default spills at about 50,000 patients; these queries run rarely
// and one at a time per researcher, unlike the FHIR API's many small ones.
const analyticWorkMem = "64MB"

// analytic runs an outcome query in a read-only, repeatable-read transaction (the figures and
// the cohort the overlap control records come from one snapshot) with analyticWorkMem,
// planned for its arguments every time: after five runs of a prepared statement PostgreSQL
// may switch to a generic plan, which cannot drop the filters a query leaves unset ("$1 IS
// NULL OR …") and made the response report two to three times slower. Each statement is
// held to Config.QueryTimeout; one that runs past it is a 422 naming the setting.
func (r *Registry) analytic(ctx context.Context, query func(pgx.Tx) error) error {
	ctx = fhir.WithStatementTimeout(ctx, r.cfg.QueryTimeout, "CARTREG_OUTCOMES_TIMEOUT")
	timeout := fhir.StatementTimeoutSetting(r.cfg.QueryTimeout)
	err := pgx.BeginTxFunc(ctx, r.read, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('work_mem', $1, true), set_config('plan_cache_mode', 'force_custom_plan', true), set_config('statement_timeout', $2, true)`,
			analyticWorkMem, timeout); err != nil {
			return err
		}
		return query(tx)
	})
	return fhir.StatementTimeoutOutcome(ctx, err)
}
