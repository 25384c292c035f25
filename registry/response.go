package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/registry/stats"
)

// Proportion is a rate with its 95% Wilson score interval; nil fields are suppressed.
type Proportion struct {
	Count *int     `json:"count"`
	Of    *int     `json:"of"`
	Rate  *float64 `json:"rate"`
	Lower *float64 `json:"lower"`
	Upper *float64 `json:"upper"`
}

// CategoryCount is how many assessed patients were in one response category.
type CategoryCount struct {
	Code    string `json:"code"`
	Display string `json:"display"`
	Scheme  string `json:"scheme"`
	Count   *int   `json:"count"`
}

// Timepoint is the response picture at one milestone of the follow-up plan. Every patient of
// the group is in exactly one of not_yet_due, dead_before and due; every due patient in
// exactly one of assessed, progressed_before, pending and missing.
type Timepoint struct {
	Milestone        string `json:"milestone"`
	Label            string `json:"label"`
	TargetDay        int    `json:"target_day"`
	Window           [2]int `json:"window"`
	NotYetDue        *int   `json:"not_yet_due"`
	DeadBefore       *int   `json:"dead_before"`
	Due              *int   `json:"due"`
	Assessed         *int   `json:"assessed"`
	ProgressedBefore *int   `json:"progressed_before"`
	Pending          *int   `json:"pending"`
	Missing          *int   `json:"missing"`
	// LostToFollowUp and Withdrawn are due patients, unassessed, whose follow-up ended
	// before the window closed: counted apart from missed visits, which might yet be chased.
	LostToFollowUp   *int            `json:"lost_to_follow_up"`
	Withdrawn        *int            `json:"withdrawn"`
	Categories       []CategoryCount `json:"categories"`
	CompleteResponse Proportion      `json:"complete_response"`
	OverallResponse  Proportion      `json:"overall_response"`
	// The same among all infused whose window has closed or who were assessed (n less
	// not_yet_due and pending): dead before it, progressed before it and missing count as
	// non-responders, the intention-to-treat reading.
	CompleteResponseITT Proportion `json:"complete_response_itt"`
	OverallResponseITT  Proportion `json:"overall_response_itt"`
}

// ResponseGroup is one group's timepoints. A group of fewer than MinCell patients is not
// listed at all, exactly as a group of none, so an answer never tells the two apart.
type ResponseGroup struct {
	Group      string      `json:"group"`
	N          *int        `json:"n"`
	Timepoints []Timepoint `json:"timepoints"`
}

// ResponseReport answers GET /registry/outcomes/response.
type ResponseReport struct {
	AsOf    string          `json:"as_of"`
	GroupBy string          `json:"group_by,omitempty"`
	MinCell int             `json:"min_cell"`
	RoundTo int             `json:"round_to"` // counts are multiples of it (1: exact)
	Groups  []ResponseGroup `json:"groups"`
}

// responseSQL classifies every selected course at every milestone, by the assessment that
// counts there (registry_infusion.timepoints) or, without one, by where the patient stood:
// dead, not yet due, progressed, lost to follow-up or withdrawn (follow-up ended before the
// window closed), pending or missing, which depends on the days from infusion to death, to
// progression, to the end of follow-up and to asOf, compared with the milestones' window
// bounds.
//
// Courses are first collapsed into classes that every comparison treats alike, so the
// classification runs once per class and milestone rather than once per patient and
// milestone: each day count is replaced by the lowest day of its interval between
// consecutive bounds ($12, sorted), which compares with every bound as the count itself does.
var responseSQL = `, plan AS (
	SELECT * FROM unnest($7::text[], $8::int[], $9::int[], $10::int[]) AS p(code, target, first_day, last_day)
), ` + endedCTE + `, class AS (
	SELECT c.g, c.timepoints, e.reason, count(*) AS n,
		registry_interval_floor(width_bucket($11::date - c.infused_on, $12::int[]), $12) AS to_now,
		registry_interval_floor(width_bucket(c.death_on - c.infused_on, $12::int[]), $12) AS to_death,
		registry_interval_floor(width_bucket(c.progression_on - c.infused_on, $12::int[]), $12) AS to_progression,
		registry_interval_floor(width_bucket(e.ended_on - c.infused_on, $12::int[]), $12) AS to_end
	FROM course c LEFT JOIN ended e ON e.patient_id = c.patient_id AND e.ended_on >= c.infused_on
	GROUP BY 1, 2, 3, 5, 6, 7, 8
)
SELECT c.g, p.code,
	CASE
		WHEN c.timepoints ? p.code THEN 'assessed'
		WHEN c.to_death <= p.last_day THEN 'dead_before'
		WHEN c.to_now < p.first_day THEN 'not_yet_due'
		WHEN c.to_progression < p.first_day THEN 'progressed_before'
		WHEN c.to_end <= p.last_day THEN c.reason
		WHEN c.to_now <= p.last_day THEN 'pending'
		ELSE 'missing'
	END AS status,
	coalesce(c.timepoints ->> p.code, ''), sum(c.n)::int
FROM class c CROSS JOIN plan p
GROUP BY 1, 2, 3, 4`

// Response counts, for each group and each milestone of the plan, where the selected
// patients stand on asOf: its calendar date in the configured Location.
func (r *Registry) Response(ctx context.Context, f Filter, groupBy string, asOf time.Time) (*ResponseReport, error) {
	report, _, err := r.response(ctx, f, groupBy, asOf, false)
	return report, err
}

// response is Response, with the cohort of each published group when withCohorts is set.
func (r *Registry) response(ctx context.Context, f Filter, groupBy string, asOf time.Time, withCohorts bool) (*ResponseReport, []cohort, error) {
	with, err := courses(groupBy, f)
	if err != nil {
		return nil, nil, err
	}
	codes, targets, starts, ends := r.cfg.Plan.columns()
	if r.cfg.Location != nil {
		asOf = asOf.In(r.cfg.Location)
	}
	asOfDay := time.Date(asOf.Year(), asOf.Month(), asOf.Day(), 0, 0, 0, 0, time.UTC)
	args := append(f.args(), codes, targets, starts, ends, asOfDay, r.cfg.Plan.bounds())
	type key struct{ group, milestone string }
	counts := map[key]map[string]int{} // status or "cat:"+category -> patients
	groupSize := map[string]int{}
	var members map[string]cohort
	cacheKey := reportKey("response", f, groupBy, date(asOfDay))
	var version int64
	var cached *cachedReport
	err = r.analytic(ctx, func(tx pgx.Tx) error {
		var err error
		if version, cached, err = r.reports.lookup(ctx, tx, cacheKey, withCohorts); err != nil || cached != nil {
			return err
		}
		if withCohorts {
			var err error
			if members, err = cohorts(ctx, tx, with, f.args()); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, with+responseSQL, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g, milestone, status, category string
			var n int
			if err := rows.Scan(&g, &milestone, &status, &category, &n); err != nil {
				return err
			}
			k := key{g, milestone}
			if counts[k] == nil {
				counts[k] = map[string]int{}
			}
			counts[k][status] += n
			if category != "" {
				counts[k]["cat:"+category] += n
			}
			if milestone == codes[0] {
				groupSize[g] += n
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("response query: %w", err)
	}
	if cached != nil {
		return cached.report.(*ResponseReport), cached.cohorts, nil
	}

	report := &ResponseReport{AsOf: date(asOfDay), GroupBy: groupBy, MinCell: r.cfg.MinCell, RoundTo: max(r.cfg.RoundTo, 1), Groups: []ResponseGroup{}}
	var published []cohort
	for g, n := range groupSize {
		if r.cfg.MinCell > 1 && n < r.cfg.MinCell {
			continue
		}
		group := ResponseGroup{Group: g, Timepoints: []Timepoint{}}
		published = append(published, members[g])
		group.N = r.roundedPtr(&n)
		for _, m := range r.cfg.Plan.Milestones {
			group.Timepoints = append(group.Timepoints, r.timepoint(m, n, counts[key{g, m.Code}]))
		}
		report.Groups = append(report.Groups, group)
	}
	sortGroups(report.Groups, func(g ResponseGroup) int {
		if g.N == nil {
			return 0
		}
		return *g.N
	}, func(g ResponseGroup) string { return g.Group })
	r.reports.add(cacheKey, version, report, published, withCohorts)
	return report, published, nil
}

func (r *Registry) timepoint(m Milestone, n int, counts map[string]int) Timepoint {
	c := newCells()
	c.set("n", n)
	for _, status := range []string{"not_yet_due", "dead_before", "assessed", "progressed_before", "pending", "missing", "lost", "withdrawn"} {
		c.set(status, counts[status])
	}
	due := counts["assessed"] + counts["progressed_before"] + counts["pending"] + counts["missing"] + counts["lost"] + counts["withdrawn"]
	c.set("due", due)
	c.sumOf("n", "not_yet_due", "dead_before", "due")
	c.sumOf("due", "assessed", "progressed_before", "pending", "missing", "lost", "withdrawn")

	// The categories shown are those of the schemes present, in scheme order, best first, so
	// a zero is visible as a zero.
	var cats []*Category
	complete, response := 0, 0
	schemes := map[string]bool{}
	for k, v := range counts {
		if len(k) > 4 && k[:4] == "cat:" {
			cat := r.terms.Categories[k[4:]]
			schemes[cat.Scheme] = true
			if cat.Complete {
				complete += v
			}
			if cat.Response {
				response += v
			}
		}
	}
	parts := []string{}
	for _, scheme := range []string{"lugano", "imwg", "all", "sle"} {
		if schemes[scheme] {
			for _, cat := range r.terms.Schemes[scheme] {
				cats = append(cats, cat)
				c.set("cat:"+cat.Code, counts["cat:"+cat.Code])
				parts = append(parts, "cat:"+cat.Code)
			}
		}
	}
	c.sumOf("assessed", parts...)
	c.set("complete", complete)
	c.set("response", response)
	c.set("evaluable", counts["assessed"]+counts["dead_before"]+counts["progressed_before"]+counts["missing"]+
		counts["lost"]+counts["withdrawn"])
	c.sumOf("n", "evaluable", "not_yet_due", "pending")
	c.suppress(r.cfg.MinCell)

	get := func(key string) *int { return r.roundedPtr(c.get(key)) }
	tp := Timepoint{Milestone: m.Code, Label: m.Label, TargetDay: m.TargetDay, Window: [2]int{m.WindowStart, m.WindowEnd},
		NotYetDue: get("not_yet_due"), DeadBefore: get("dead_before"), Due: get("due"), Assessed: get("assessed"),
		ProgressedBefore: get("progressed_before"), Pending: get("pending"), Missing: get("missing"),
		LostToFollowUp: get("lost"), Withdrawn: get("withdrawn"),
		Categories: []CategoryCount{}}
	for _, cat := range cats {
		tp.Categories = append(tp.Categories, CategoryCount{Code: cat.Code, Display: cat.Display, Scheme: cat.Scheme, Count: get("cat:" + cat.Code)})
	}
	tp.CompleteResponse = r.proportion(c, "complete", "assessed")
	tp.OverallResponse = r.proportion(c, "response", "assessed")
	tp.CompleteResponseITT = r.proportion(c, "complete", "evaluable")
	tp.OverallResponseITT = r.proportion(c, "response", "evaluable")
	return tp
}

// proportion is num/den with its Wilson interval, both counts rounded first, as OpenSAFELY
// derives figures from rounded counts: a rate of exact counts would give them back.
func (r *Registry) proportion(c *cells, num, den string) Proportion {
	p := Proportion{Of: r.roundedPtr(c.get(den))}
	if !c.shows(num, den, r.cfg.MinCell) {
		return p
	}
	x, n := r.rounded(c.value[num]), r.rounded(c.value[den])
	p.Count = &x
	if n == 0 {
		return p
	}
	rate := float64(x) / float64(n)
	lo, hi := stats.Wilson(x, n, 0.95)
	p.Rate, p.Lower, p.Upper = &rate, &lo, &hi
	return p
}
