package registry

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/registry/plot"
)

var endpointTitles = map[string]string{
	EndpointOS:  "Overall survival",
	EndpointPFS: "Progression-free survival",
	EndpointDOR: "Duration of response",
}

func writeSVG(c echo.Context, render func(*bytes.Buffer) error) error {
	var buf bytes.Buffer
	if err := render(&buf); err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "image/svg+xml", buf.Bytes())
}

func orNaN(v *float64) float64 {
	if v == nil {
		return math.NaN()
	}
	return *v
}

func (r *Registry) getSurvivalSVG(c echo.Context) error {
	report, err := r.survivalFor(c)
	if err != nil {
		return err
	}
	chart := plot.SurvivalChart{Title: endpointTitles[report.Endpoint]}
	for _, g := range report.Groups {
		if g.N == nil {
			continue
		}
		curve := plot.Curve{Label: r.groupLabel(report.GroupBy, g.Group), N: *g.N, EventsHidden: g.Events == nil}
		if g.Events != nil {
			curve.Events = *g.Events
		}
		if r.cfg.MinCell > 1 {
			curve.StoppedBelow = r.cfg.MinCell // the report's curve stops where fewer remain at risk
		}
		for _, p := range g.Curve {
			curve.Points = append(curve.Points, plot.Point{Days: p.TDays, AtRisk: p.AtRisk, Survival: p.Survival,
				Lower: orNaN(p.Lower), Upper: orNaN(p.Upper), Censored: p.Censored})
		}
		chart.Curves = append(chart.Curves, curve)
	}
	// The subtitle promises only what the figure draws: bands exist for up to
	// plot.MaxBandCurves curves with finite intervals.
	var notes []string
	if report.GroupBy != "" {
		notes = append(notes, "by "+report.GroupBy)
	}
	switch {
	case chart.DrawsBands():
		notes = append(notes, "shaded: 95% CI (log-log)")
	case len(chart.Curves) > plot.MaxBandCurves:
		notes = append(notes, "confidence bands not drawn for more than "+itoa(plot.MaxBandCurves)+" groups")
	}
	if r.cfg.MinCell > 1 {
		notes = append(notes, "groups under "+itoa(r.cfg.MinCell)+" patients not shown")
	}
	if r.cfg.RoundTo > 1 {
		notes = append(notes, "counts rounded to "+itoa(r.cfg.RoundTo))
	}
	chart.Subtitle = strings.Join(notes, "; ")
	return writeSVG(c, func(b *bytes.Buffer) error { return chart.WriteSVG(b) })
}

func (r *Registry) getResponseSVG(c echo.Context) error {
	f, groupBy, err := r.query(c, "percent")
	if err != nil {
		return err
	}
	if groupBy != "" {
		// One stacked bar per timepoint has no room for groups; ignoring the parameter would
		// pass off all patients' bars as one group's.
		return badRequest(fmt.Errorf("group_by=%s: the response chart shows all selected patients, one bar per timepoint, "+
			"and cannot group them; select a group with disease, product, target or site, or ask "+
			"/registry/outcomes/response?group_by=%s for the table", groupBy, groupBy), "group_by")
	}
	report, err := r.answerResponse(c, f, "")
	if err != nil {
		return err
	}
	chart := plot.ResponseChart{Title: "Response by follow-up timepoint", Percent: c.QueryParam("percent") != "false",
		Subtitle: "best-to-worst categories per scheme; assessment nearest each timepoint; as of " + report.AsOf}
	if len(report.Groups) == 1 {
		for _, tp := range report.Groups[0].Timepoints {
			bar := plot.Bar{Label: tp.Label}
			if tp.Assessed == nil {
				bar.Suppressed = true
			} else {
				bar.N = *tp.Assessed
			}
			// Categories under the minimum cell are hidden, not the whole bar: the shown
			// ones keep their counts, and the patients of the hidden ones (the difference
			// from the assessed total, which the table already allows) are one hatched block.
			shown, anyHidden := 0, false
			for _, cat := range tp.Categories {
				if cat.Count == nil {
					anyHidden = true
					continue
				}
				shown += *cat.Count
				bar.Segments = append(bar.Segments, plot.Segment{Label: cat.Display, Count: *cat.Count})
			}
			if anyHidden && !bar.Suppressed && bar.N > shown {
				bar.Segments = append(bar.Segments, plot.Segment{Hidden: true, Count: bar.N - shown,
					Label: "Not shown: categories under " + itoa(r.cfg.MinCell) + " patients"})
			}
			chart.Bars = append(chart.Bars, bar)
		}
	}
	return writeSVG(c, func(b *bytes.Buffer) error { return chart.WriteSVG(b) })
}

// groupLabel is how a chart names a group: a disease by its display, the whole selection as
// "All patients"; products, targets and sites are reported by name already.
func (r *Registry) groupLabel(groupBy, group string) string {
	switch {
	case groupBy == "":
		return "All patients"
	case groupBy == "disease" && group == "unclassified":
		return "Unclassified"
	case groupBy == "disease":
		if d := r.terms.Disease(group); d != nil {
			return d.Display
		}
	}
	return group
}

// getToxicitySVG draws CRS and ICANS as one stacked bar each: the share of courses by their
// worst ASTCT grade, none at the bottom. Groups are not drawn (the table has them).
func (r *Registry) getToxicitySVG(c echo.Context) error {
	f, groupBy, err := r.query(c, "percent")
	if err != nil {
		return err
	}
	if groupBy != "" {
		return badRequest(fmt.Errorf("group_by=%s: the toxicity chart shows all selected courses; ask "+
			"/registry/outcomes/toxicity?group_by=%s for the table", groupBy, groupBy), "group_by")
	}
	report, err := r.answerToxicity(c, f, "")
	if err != nil {
		return err
	}
	chart := plot.ResponseChart{Title: "CRS and ICANS by worst ASTCT grade", Percent: c.QueryParam("percent") != "false",
		Subtitle: "share of infused courses; grade 5 is death from the toxicity"}
	if len(report.Groups) == 1 {
		g := report.Groups[0]
		for _, t := range []struct {
			label string
			s     ToxicitySummary
		}{{"CRS", g.CRS}, {"ICANS", g.ICANS}} {
			bar := plot.Bar{Label: t.label, N: *g.N}
			shown := 0
			none := *g.N
			if t.s.Any.Count != nil {
				none -= *t.s.Any.Count
			} else {
				none = -1
			}
			if none >= 0 {
				bar.Segments = append(bar.Segments, plot.Segment{Label: "None", Count: none})
				shown += none
			}
			// Ungraded next to none, so the worst colours stay with the worst grades.
			for _, k := range []string{"ungraded", "1", "2", "3", "4", "5"} {
				label := "Grade " + k
				if k == "ungraded" {
					label = "Grade not recorded"
				}
				if n := t.s.MaxGrade[k]; n != nil {
					bar.Segments = append(bar.Segments, plot.Segment{Label: label, Count: *n})
					shown += *n
				}
			}
			if shown < bar.N {
				bar.Segments = append(bar.Segments, plot.Segment{Hidden: true, Count: bar.N - shown,
					Label: "Not shown: categories under " + itoa(r.cfg.MinCell) + " patients"})
			}
			chart.Bars = append(chart.Bars, bar)
		}
	}
	return writeSVG(c, func(b *bytes.Buffer) error { return chart.WriteSVG(b) })
}

// incidenceTitles name each event's chart and its curve.
var incidenceTitles = map[string][2]string{
	IncidenceRelapse:         {"Cumulative incidence of relapse or progression", "Relapse or progression"},
	KindSubsequentMalignancy: {"Cumulative incidence of subsequent malignancy", "Subsequent malignancy"},
	KindTCellMalignancy:      {"Cumulative incidence of T-cell malignancy", "T-cell malignancy"},
	KindInfection:            {"Cumulative incidence of infection", "Infection"},
	KindProlongedCytopenia:   {"Cumulative incidence of prolonged cytopenia", "Prolonged cytopenia"},
}

// getIncidenceSVG draws cumulative incidence curves rising from 0: for all selected courses
// the event and death without it (non-relapse mortality for relapse), by group the event
// only, one curve per group.
func (r *Registry) getIncidenceSVG(c echo.Context) error {
	report, err := r.incidenceFor(c)
	if err != nil {
		return err
	}
	event, groupBy := report.Event, report.GroupBy
	titles := incidenceTitles[event]
	notes := []string{"Aalen-Johansen; death competing"}
	if groupBy != "" {
		notes = append([]string{"by " + groupBy}, notes...)
	}
	if r.cfg.MinCell > 1 {
		notes = append(notes, "groups under "+itoa(r.cfg.MinCell)+" patients not shown")
	}
	if r.cfg.RoundTo > 1 {
		notes = append(notes, "counts rounded to "+itoa(r.cfg.RoundTo))
	}
	chart := plot.SurvivalChart{Title: titles[0], Subtitle: strings.Join(notes, "; "), YLabel: "Cumulative incidence", Rising: true}
	curve := func(label string, g IncidenceGroup, events *int, value func(IncidencePoint) float64) plot.Curve {
		cv := plot.Curve{Label: label, N: *g.N, EventsHidden: events == nil}
		if events != nil {
			cv.Events = *events
		}
		if r.cfg.MinCell > 1 {
			cv.StoppedBelow = r.cfg.MinCell
		}
		for _, p := range g.Curve {
			cv.Points = append(cv.Points, plot.Point{Days: p.TDays, AtRisk: p.AtRisk, Survival: value(p),
				Lower: math.NaN(), Upper: math.NaN(), Censored: p.Censored})
		}
		return cv
	}
	for _, g := range report.Groups {
		label := titles[1]
		if groupBy != "" {
			label = r.groupLabel(groupBy, g.Group)
		}
		chart.Curves = append(chart.Curves, curve(label, g, g.Events, func(p IncidencePoint) float64 { return p.Incidence }))
		if groupBy == "" {
			death := "Death without " + strings.ToLower(titles[1])
			if event == IncidenceRelapse {
				death = "Non-relapse mortality"
			}
			chart.Curves = append(chart.Curves, curve(death, g, g.Competing, func(p IncidencePoint) float64 { return p.CompetingIncidence }))
		}
	}
	return writeSVG(c, func(b *bytes.Buffer) error { return chart.WriteSVG(b) })
}

// getBestResponseSVG draws each group's best overall response as one stacked bar, its
// categories as shares of all infused courses, those never assessed on top.
func (r *Registry) getBestResponseSVG(c echo.Context) error {
	f, groupBy, err := r.query(c, "percent")
	if err != nil {
		return err
	}
	report, err := r.answerBestResponse(c, f, groupBy)
	if err != nil {
		return err
	}
	chart := plot.ResponseChart{Title: "Best overall response", Percent: c.QueryParam("percent") != "false",
		Subtitle: "best category from infusion to first progression; share of all infused courses"}
	for _, g := range report.Groups {
		bar := plot.Bar{Label: r.groupLabel(groupBy, g.Group), N: *g.N}
		shown := 0
		for _, cat := range g.Categories {
			if cat.Count != nil {
				bar.Segments = append(bar.Segments, plot.Segment{Label: cat.Display, Count: *cat.Count})
				shown += *cat.Count
			}
		}
		if g.Assessed != nil {
			bar.Segments = append(bar.Segments, plot.Segment{Label: "Not assessed", Count: *g.N - *g.Assessed})
			shown += *g.N - *g.Assessed
		}
		if shown < bar.N {
			bar.Segments = append(bar.Segments, plot.Segment{Hidden: true, Count: bar.N - shown,
				Label: "Not shown: categories under " + itoa(r.cfg.MinCell) + " patients"})
		}
		chart.Bars = append(chart.Bars, bar)
	}
	return writeSVG(c, func(b *bytes.Buffer) error { return chart.WriteSVG(b) })
}
