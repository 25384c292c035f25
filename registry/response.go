package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

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

// responseSQL reads every selected course with what its standing at each milestone depends
// on: the days from infusion to asOf ($7), to death, to progression and to the end of
// follow-up, the end's reason, and the assessments that count there (timepoints, read as the
// text the row keeps of them, migration 028). Each course's standing is worked out in Go, by
// standingDays.standing, the rule the analysis file applies too, and the patient's hash is
// the overlap control's cohort, read in the same pass. Counted in SQL instead, grouped on the
// timepoints, a jsonb whose hashing cost more than the scan itself, the report took 200 to
// 260 ms over 100,000 courses, and the cohort a second query.
var responseSQL = `, ` + endedCTE + `
SELECT c.g, ` + patientHashSQL + `, $7::date - c.infused_on, c.death_on - c.infused_on, c.progression_on - c.infused_on,
	e.ended_on - c.infused_on, e.reason, c.timepoints_text
FROM course c LEFT JOIN ended e ON e.patient_id = c.patient_id AND e.ended_on >= c.infused_on`

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
	asOfDay := r.day(asOf)
	t := r.newResponseTally(withCohorts)
	cacheKey := reportKey("response", f, groupBy, date(asOfDay))
	var version int64
	var cached *cachedReport
	err = r.analytic(ctx, func(tx pgx.Tx) error {
		var err error
		if version, cached, err = r.reports.lookup(ctx, tx, cacheKey, withCohorts); err != nil || cached != nil {
			return err
		}
		rows, err := tx.Query(ctx, with+responseSQL, append(f.args(), asOfDay)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		var g, timepoints, reason pgtype.DriverBytes
		var patient int64
		var toNow pgtype.Int4
		var d standingDays
		dest := []any{&g, &patient, &toNow, &d.toDeath, &d.toProgression, &d.toEnd, &reason, &timepoints}
		for rows.Next() {
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			d.toNow = toNow.Int32
			if d.toEnd.Valid {
				d.ended = endedAs(string(reason))
			}
			if err := t.add(g, patient, d, timepoints); err != nil {
				return err
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
	report, published := r.responseReport(t, asOfDay, groupBy)
	r.reports.add(cacheKey, version, report, published, withCohorts)
	return report, published, nil
}

// day is t's calendar date in the configured Location, as a UTC midnight: the day a report
// is as of.
func (r *Registry) day(t time.Time) time.Time {
	if r.cfg.Location != nil {
		t = t.In(r.cfg.Location)
	}
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// responseTally counts the response report's courses as they are read.
type responseTally struct {
	milestones  []Milestone
	withCohorts bool
	groups      map[string]*groupTally
	categories  *categoryCodes
	// assessed is each set of counted assessments met, parsed: courses share a few thousand.
	assessed map[string][]countedAt
}

func (r *Registry) newResponseTally(withCohorts bool) *responseTally {
	return &responseTally{milestones: r.cfg.Plan.Milestones, withCohorts: withCohorts, groups: map[string]*groupTally{},
		categories: &categoryCodes{index: map[string]int{}}, assessed: map[string][]countedAt{}}
}

// add counts one course of group g at every milestone: where its timepoints (as text) have
// an assessment that counts there, as assessed in its category, elsewhere by its standing.
// g and timepoints may be the driver's bytes: they are not kept.
func (t *responseTally) add(g []byte, patient int64, d standingDays, timepoints []byte) error {
	gt := t.groups[string(g)] // looked up without copying the bytes
	if gt == nil {
		gt = &groupTally{byMilestone: make([]milestoneTally, len(t.milestones))}
		t.groups[string(g)] = gt
	}
	gt.size++
	if t.withCohorts {
		gt.members = append(gt.members, patient)
	}
	at, ok := t.assessed[string(timepoints)]
	if !ok {
		var err error
		if at, err = t.categories.counted(timepoints, t.milestones); err != nil {
			return err
		}
		t.assessed[string(timepoints)] = at
	}
	for i, m := range t.milestones {
		mt := &gt.byMilestone[i]
		if at[i].counted {
			mt.standings[standingAssessed]++
			if c := at[i].category; c >= 0 {
				if c >= len(mt.categories) {
					mt.categories = append(mt.categories, make([]int, c+1-len(mt.categories))...)
				}
				mt.categories[c]++
			}
			continue
		}
		mt.standings[d.standing(m)]++
	}
	return nil
}

// responseReport is the report of what t counted, as of asOfDay, with the cohort of each
// group it publishes when t keeps them.
func (r *Registry) responseReport(t *responseTally, asOfDay time.Time, groupBy string) (*ResponseReport, []cohort) {
	report := &ResponseReport{AsOf: date(asOfDay), GroupBy: groupBy, MinCell: r.cfg.MinCell, RoundTo: max(r.cfg.RoundTo, 1), Groups: []ResponseGroup{}}
	var published []cohort
	for g, gt := range t.groups {
		n := gt.size
		if r.cfg.MinCell > 1 && n < r.cfg.MinCell {
			continue
		}
		group := ResponseGroup{Group: g, Timepoints: []Timepoint{}}
		if t.withCohorts {
			published = append(published, gt.members.sorted())
		}
		group.N = r.roundedPtr(&n)
		for i, m := range t.milestones {
			group.Timepoints = append(group.Timepoints, r.timepoint(m, n, gt.byMilestone[i].counts(t.categories.codes)))
		}
		report.Groups = append(report.Groups, group)
	}
	sortGroups(report.Groups, func(g ResponseGroup) int {
		if g.N == nil {
			return 0
		}
		return *g.N
	}, func(g ResponseGroup) string { return g.Group })
	return report, published
}

// groupTally is what the response report counts of one group as its courses are read.
type groupTally struct {
	size        int
	members     cohort           // the patients' hashes, for the overlap control
	byMilestone []milestoneTally // by milestone of the plan
}

// milestoneTally counts a group's courses at one milestone: by standing, and the assessed
// by category (numbered by categoryCodes).
type milestoneTally struct {
	standings  [numStandings]int
	categories []int
}

// counts is the tally as Registry.timepoint takes it: by standing's name, and by "cat:" and
// the category's code.
func (t milestoneTally) counts(codes []string) map[string]int {
	out := map[string]int{}
	for s, n := range t.standings {
		out[standing(s).String()] = n
	}
	for c, n := range t.categories {
		if n > 0 {
			out["cat:"+codes[c]] += n
		}
	}
	return out
}

// countedAt is whether an assessment counts at a milestone, and its category's number (-1:
// it has none).
type countedAt struct {
	counted  bool
	category int
}

// categoryCodes numbers the response categories met in courses' timepoints.
type categoryCodes struct {
	codes []string
	index map[string]int
}

// counted reads a course's timepoints (milestone code -> category code, as the projection
// keeps them; NULL or {} for none) into one entry per milestone of the plan.
func (cc *categoryCodes) counted(timepoints []byte, milestones []Milestone) ([]countedAt, error) {
	out := make([]countedAt, len(milestones))
	var byCode map[string]string
	if len(timepoints) > 0 {
		if err := json.Unmarshal(timepoints, &byCode); err != nil {
			return nil, fmt.Errorf("a course's timepoints %q: %w", timepoints, err)
		}
	}
	for i, m := range milestones {
		out[i].category = -1
		cat, ok := byCode[m.Code]
		if !ok {
			continue
		}
		out[i].counted = true
		if cat == "" {
			continue
		}
		n, known := cc.index[cat]
		if !known {
			n = len(cc.codes)
			cc.codes = append(cc.codes, cat)
			cc.index[cat] = n
		}
		out[i].category = n
	}
	return out, nil
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
