package registry

import (
	"bytes"
	"fmt"
	"math"
	"net/http"

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
	subtitle := "95% CI (log-log)"
	if report.GroupBy != "" {
		subtitle = "by " + report.GroupBy + "; " + subtitle
	}
	if r.cfg.MinCell > 1 {
		subtitle += "; groups under " + itoa(r.cfg.MinCell) + " patients not shown"
	}
	if r.cfg.RoundTo > 1 {
		subtitle += "; counts rounded to " + itoa(r.cfg.RoundTo)
	}
	chart := plot.SurvivalChart{Title: endpointTitles[report.Endpoint], Subtitle: subtitle}
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
			for _, cat := range tp.Categories {
				if cat.Count == nil {
					bar.Suppressed = true
					continue
				}
				bar.Segments = append(bar.Segments, plot.Segment{Label: cat.Display, Count: *cat.Count})
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
