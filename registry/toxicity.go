package registry

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// ToxicitySummary is one toxicity (CRS or ICANS) in one group of courses: how many had it at
// all and at ASTCT grade 3 or above (each as a rate of the group with its Wilson interval),
// how many had each grade as their worst, and on which day after infusion it began.
type ToxicitySummary struct {
	Any        Proportion `json:"any"`
	Grade3Plus Proportion `json:"grade_3_plus"`
	// MaxGrade counts courses by their worst grade: "1" … "5", and "ungraded" where every
	// report of the toxicity lacked a grade.
	MaxGrade map[string]*int `json:"max_grade"`
	// OnsetDays is the first onset's day after infusion among the courses with the
	// toxicity: median and quartiles (R's default type 7). Null when fewer than the minimum
	// cell had it, as quartiles of a handful are nearly individual days.
	OnsetDays *Quartiles `json:"onset_days"`
}

// Quartiles are the 25th, 50th and 75th percentiles of a sample.
type Quartiles struct {
	Q1     float64 `json:"q1"`
	Median float64 `json:"median"`
	Q3     float64 `json:"q3"`
}

// ToxicityGroup is one group's CRS and ICANS.
type ToxicityGroup struct {
	Group string          `json:"group"`
	N     *int            `json:"n"`
	CRS   ToxicitySummary `json:"crs"`
	ICANS ToxicitySummary `json:"icans"`
}

// ToxicityReport answers GET /registry/outcomes/toxicity.
type ToxicityReport struct {
	GroupBy string          `json:"group_by,omitempty"`
	MinCell int             `json:"min_cell"`
	RoundTo int             `json:"round_to"`
	Groups  []ToxicityGroup `json:"groups"`
}

// A toxicity belongs to the course whose day 0 it follows: on or after the course's infusion
// and before the patient's next one. Its day is the onset the projection imputed for partial
// dates.
const toxicitySQL = `
SELECT c.g, c.resource_type || '/' || c.resource_id, t.kind, max(t.grade), min(t.onset_imputed_on - c.infused_on)
FROM course c JOIN registry_toxicity t ON t.patient_id = c.patient_id
WHERE t.kind IN ('crs', 'icans') AND t.onset_imputed_on >= c.infused_on
  AND (c.next_infused_on IS NULL OR t.onset_imputed_on < c.next_infused_on)
GROUP BY 1, 2, 3`

const groupSizeSQL = `SELECT g, count(*)::int FROM course GROUP BY g`

// groupSizes counts the selected courses of each group, in the report's transaction.
func groupSizes(ctx context.Context, tx pgx.Tx, with string, args []any) (map[string]int, error) {
	rows, err := tx.Query(ctx, with+groupSizeSQL, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	size := map[string]int{}
	for rows.Next() {
		var g string
		var n int
		if err := rows.Scan(&g, &n); err != nil {
			return nil, err
		}
		size[g] = n
	}
	return size, rows.Err()
}

// Toxicity reports CRS and ICANS among the selected courses, by group.
func (r *Registry) Toxicity(ctx context.Context, f Filter, groupBy string) (*ToxicityReport, error) {
	report, _, err := r.toxicity(ctx, f, groupBy)
	return report, err
}

// toxicity is Toxicity with the cohort of each published group, for the overlap control.
func (r *Registry) toxicity(ctx context.Context, f Filter, groupBy string) (*ToxicityReport, []cohort, error) {
	with, err := courses(groupBy, f)
	if err != nil {
		return nil, nil, err
	}
	var members map[string]cohort
	type worst struct {
		grade *int
		onset int
	}
	var size map[string]int
	found := map[string]map[string][]worst{} // group → kind → one per course
	err = r.analytic(ctx, func(tx pgx.Tx) error {
		var err error
		if members, err = r.groupCohorts(ctx, tx, with, f.args()); err != nil {
			return err
		}
		if size, err = groupSizes(ctx, tx, with, f.args()); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, with+toxicitySQL, f.args()...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g, course, kind string
			var w worst
			if err := rows.Scan(&g, &course, &kind, &w.grade, &w.onset); err != nil {
				return err
			}
			if found[g] == nil {
				found[g] = map[string][]worst{}
			}
			found[g][kind] = append(found[g][kind], w)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("toxicity query: %w", err)
	}
	report := &ToxicityReport{GroupBy: groupBy, MinCell: r.cfg.MinCell, RoundTo: max(r.cfg.RoundTo, 1), Groups: []ToxicityGroup{}}
	var published []cohort
	for g, n := range size {
		if r.cfg.MinCell > 1 && n < r.cfg.MinCell {
			continue // not listed, as a group of none is not
		}
		published = append(published, members[g])
		group := ToxicityGroup{Group: g, N: r.roundedPtr(&n)}
		summarise := func(ws []worst) ToxicitySummary {
			c := newCells()
			c.set("n", n)
			c.set("any", len(ws))
			c.set("none", n-len(ws))
			c.sumOf("n", "any", "none")
			grades := []string{"1", "2", "3", "4", "5", "ungraded"}
			counts := map[string]int{}
			var onsets []float64
			for _, w := range ws {
				key := "ungraded"
				if w.grade != nil {
					key = strconv.Itoa(*w.grade)
				}
				counts[key]++
				onsets = append(onsets, float64(w.onset))
			}
			parts := []string{}
			for _, k := range grades {
				c.set("grade:"+k, counts[k])
				parts = append(parts, "grade:"+k)
			}
			c.sumOf("any", parts...)
			c.set("grade3plus", counts["3"]+counts["4"]+counts["5"])
			c.suppress(r.cfg.MinCell)
			s := ToxicitySummary{Any: r.proportion(c, "any", "n"), Grade3Plus: r.proportion(c, "grade3plus", "n"),
				MaxGrade: map[string]*int{}}
			for _, k := range grades {
				s.MaxGrade[k] = r.roundedPtr(c.get("grade:" + k))
			}
			if len(onsets) > 0 && (r.cfg.MinCell <= 1 || len(onsets) >= r.cfg.MinCell) {
				s.OnsetDays = quartiles(onsets)
			}
			return s
		}
		group.CRS = summarise(found[g]["crs"])
		group.ICANS = summarise(found[g]["icans"])
		report.Groups = append(report.Groups, group)
	}
	sortGroups(report.Groups, func(g ToxicityGroup) int { return size[g.Group] }, func(g ToxicityGroup) string { return g.Group })
	return report, published, nil
}

// quartiles of a non-empty sample, by R's default (type 7): linear interpolation between
// order statistics at (n−1)·p.
func quartiles(xs []float64) *Quartiles {
	s := slices.Clone(xs)
	slices.Sort(s)
	at := func(p float64) float64 {
		h := float64(len(s)-1) * p
		lo := math.Floor(h)
		if int(lo)+1 >= len(s) {
			return s[len(s)-1]
		}
		return s[int(lo)] + (h-lo)*(s[int(lo)+1]-s[int(lo)])
	}
	return &Quartiles{Q1: at(0.25), Median: at(0.5), Q3: at(0.75)}
}

// CSV is the report as one row per group and toxicity.
func (rep *ToxicityReport) CSV() [][]string {
	rows := [][]string{{"group", "n", "toxicity", "any", "any_rate", "any_lower", "any_upper",
		"grade_3_plus", "grade_3_plus_rate", "grade_3_plus_lower", "grade_3_plus_upper",
		"max_grade_1", "max_grade_2", "max_grade_3", "max_grade_4", "max_grade_5", "max_grade_ungraded",
		"onset_q1", "onset_median", "onset_q3"}}
	for _, g := range rep.Groups {
		for _, t := range []struct {
			name string
			s    ToxicitySummary
		}{{"crs", g.CRS}, {"icans", g.ICANS}} {
			row := []string{g.Group, cell(g.N), t.name}
			for _, p := range []Proportion{t.s.Any, t.s.Grade3Plus} {
				row = append(row, cell(p.Count), cell(p.Rate), cell(p.Lower), cell(p.Upper))
			}
			for _, k := range []string{"1", "2", "3", "4", "5", "ungraded"} {
				row = append(row, cell(t.s.MaxGrade[k]))
			}
			if q := t.s.OnsetDays; q != nil {
				row = append(row, cell(&q.Q1), cell(&q.Median), cell(&q.Q3))
			} else {
				row = append(row, "NA", "NA", "NA")
			}
			rows = append(rows, row)
		}
	}
	return rows
}
