package registry

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// BestResponseGroup is one group's best overall response: each course's best category from
// infusion up to its first progression.
type BestResponseGroup struct {
	Group string `json:"group"`
	// N is every infused course selected: the intention-to-treat denominator.
	N *int `json:"n"`
	// Assessed is the courses with at least one response assessment.
	Assessed   *int            `json:"assessed"`
	Categories []CategoryCount `json:"categories"`
	// Overall and complete response, with all infused as the denominator (a course never
	// assessed, dead or progressed before assessment is a non-responder) and with the
	// assessed as the denominator, side by side as trial reports give them.
	OverallResponseITT       Proportion `json:"overall_response_itt"`
	OverallResponseAssessed  Proportion `json:"overall_response_assessed"`
	CompleteResponseITT      Proportion `json:"complete_response_itt"`
	CompleteResponseAssessed Proportion `json:"complete_response_assessed"`
	// MRD: courses with an MRD result, and with a negative one at any assessment (10⁻⁵ or as
	// the sender reports), as a rate of those tested and of all infused.
	MRDTested      *int       `json:"mrd_tested"`
	MRDNegative    Proportion `json:"mrd_negative"`
	MRDNegativeITT Proportion `json:"mrd_negative_itt"`
}

// BestResponseReport answers GET /registry/outcomes/best-response.
type BestResponseReport struct {
	GroupBy string              `json:"group_by,omitempty"`
	MinCell int                 `json:"min_cell"`
	RoundTo int                 `json:"round_to"`
	Groups  []BestResponseGroup `json:"groups"`
}

// An assessment counts towards the best response from day 0 up to the first progression
// (the progression's own assessment included); later ones describe the next line of care.
const bestResponseSQL = `
SELECT c.g, c.resource_type || '/' || c.resource_id, array_agg(a.category),
	coalesce(bool_or(a.mrd_negative), false), bool_or(a.mrd_negative IS NOT NULL)
FROM course c JOIN registry_assessment a ON a.infusion_type = c.resource_type AND a.infusion_id = c.resource_id
WHERE a.day >= 0 AND (c.progression_on IS NULL OR a.assessed_on <= c.progression_on)
GROUP BY 1, 2`

// BestResponse reports each group's best overall response, response rates among all infused
// and among the assessed, and MRD negativity.
func (r *Registry) BestResponse(ctx context.Context, f Filter, groupBy string) (*BestResponseReport, error) {
	report, _, err := r.bestResponse(ctx, f, groupBy)
	return report, err
}

// bestResponse is BestResponse with the cohort of each published group.
func (r *Registry) bestResponse(ctx context.Context, f Filter, groupBy string) (*BestResponseReport, []cohort, error) {
	with, err := courses(groupBy, f)
	if err != nil {
		return nil, nil, err
	}
	var members map[string]cohort
	type course struct {
		best                   *Category
		mrdNegative, mrdTested bool
	}
	var size map[string]int
	found := map[string][]course{}
	err = r.analytic(ctx, func(tx pgx.Tx) error {
		var err error
		if members, err = r.groupCohorts(ctx, tx, with, f.args()); err != nil {
			return err
		}
		if size, err = groupSizes(ctx, tx, with, f.args()); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, with+bestResponseSQL, f.args()...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g, ref string
			var categories []string
			var c course
			if err := rows.Scan(&g, &ref, &categories, &c.mrdNegative, &c.mrdTested); err != nil {
				return err
			}
			for _, code := range categories {
				if cat := r.terms.Categories[code]; cat != nil && (c.best == nil || cat.Rank < c.best.Rank) {
					c.best = cat
				}
			}
			found[g] = append(found[g], c)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("best response query: %w", err)
	}
	report := &BestResponseReport{GroupBy: groupBy, MinCell: r.cfg.MinCell, RoundTo: max(r.cfg.RoundTo, 1), Groups: []BestResponseGroup{}}
	var published []cohort
	for g, n := range size {
		if r.cfg.MinCell > 1 && n < r.cfg.MinCell {
			continue // not listed, as a group of none is not
		}
		published = append(published, members[g])
		c := newCells()
		c.set("n", n)
		assessed, responders, complete, tested, negative := 0, 0, 0, 0, 0
		byCategory := map[string]int{}
		schemes := map[string]bool{}
		for _, course := range found[g] {
			if course.best == nil {
				continue
			}
			assessed++
			byCategory[course.best.Code]++
			schemes[course.best.Scheme] = true
			if course.best.Response {
				responders++
			}
			if course.best.Complete {
				complete++
			}
			if course.mrdTested {
				tested++
			}
			if course.mrdNegative {
				negative++
			}
		}
		c.set("assessed", assessed)
		c.set("not_assessed", n-assessed)
		c.sumOf("n", "assessed", "not_assessed")
		var cats []*Category
		parts := []string{}
		for _, scheme := range []string{"lugano", "imwg", "all", "sle"} {
			if schemes[scheme] {
				for _, cat := range r.terms.Schemes[scheme] {
					cats = append(cats, cat)
					c.set("cat:"+cat.Code, byCategory[cat.Code])
					parts = append(parts, "cat:"+cat.Code)
				}
			}
		}
		c.sumOf("assessed", parts...)
		c.set("response", responders)
		c.set("complete", complete)
		c.set("mrd_tested", tested)
		c.set("mrd_negative", negative)
		c.suppress(r.cfg.MinCell)
		group := BestResponseGroup{Group: g, N: r.roundedPtr(c.get("n")), Assessed: r.roundedPtr(c.get("assessed")), Categories: []CategoryCount{},
			OverallResponseITT: r.proportion(c, "response", "n"), OverallResponseAssessed: r.proportion(c, "response", "assessed"),
			CompleteResponseITT: r.proportion(c, "complete", "n"), CompleteResponseAssessed: r.proportion(c, "complete", "assessed"),
			MRDTested: r.roundedPtr(c.get("mrd_tested")), MRDNegative: r.proportion(c, "mrd_negative", "mrd_tested"),
			MRDNegativeITT: r.proportion(c, "mrd_negative", "n")}
		for _, cat := range cats {
			group.Categories = append(group.Categories, CategoryCount{Code: cat.Code, Display: cat.Display, Scheme: cat.Scheme,
				Count: r.roundedPtr(c.get("cat:" + cat.Code))})
		}
		report.Groups = append(report.Groups, group)
	}
	sortGroups(report.Groups, func(g BestResponseGroup) int { return size[g.Group] }, func(g BestResponseGroup) string { return g.Group })
	return report, published, nil
}

// CSV is the report as one row per group, a column per response category.
func (rep *BestResponseReport) CSV() [][]string {
	var codes []string
	seen := map[string]bool{}
	for _, g := range rep.Groups {
		for _, cat := range g.Categories {
			if !seen[cat.Code] {
				seen[cat.Code] = true
				codes = append(codes, cat.Code)
			}
		}
	}
	header := []string{"group", "n", "assessed", "orr_itt", "orr_itt_rate", "orr_itt_lower", "orr_itt_upper",
		"orr_assessed", "orr_assessed_rate", "orr_assessed_lower", "orr_assessed_upper",
		"cr_itt", "cr_itt_rate", "cr_itt_lower", "cr_itt_upper", "cr_assessed", "cr_assessed_rate", "cr_assessed_lower",
		"cr_assessed_upper", "mrd_tested", "mrd_negative", "mrd_negative_rate", "mrd_negative_lower", "mrd_negative_upper",
		"mrd_negative_itt_rate"}
	for _, code := range codes {
		header = append(header, "best_"+code)
	}
	rows := [][]string{header}
	for _, g := range rep.Groups {
		row := []string{g.Group, cell(g.N), cell(g.Assessed)}
		for _, p := range []Proportion{g.OverallResponseITT, g.OverallResponseAssessed, g.CompleteResponseITT, g.CompleteResponseAssessed} {
			row = append(row, cell(p.Count), cell(p.Rate), cell(p.Lower), cell(p.Upper))
		}
		row = append(row, cell(g.MRDTested), cell(g.MRDNegative.Count), cell(g.MRDNegative.Rate), cell(g.MRDNegative.Lower),
			cell(g.MRDNegative.Upper), cell(g.MRDNegativeITT.Rate))
		rows = append(rows, append(row, categoryCells(g.Categories, codes)...))
	}
	return rows
}
