package registry

import (
	"bytes"
	"math"
	"net/http"
	"strconv"

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
	chart := plot.SurvivalChart{Title: endpointTitles[report.Endpoint], Subtitle: subtitle}
	for _, g := range report.Groups {
		if g.Suppressed || g.N == nil {
			continue
		}
		curve := plot.Curve{Label: g.Group, N: *g.N}
		if g.Events != nil {
			curve.Events = *g.Events
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
	f, _, err := r.query(c)
	if err != nil {
		return err
	}
	report, err := r.Response(c.Request().Context(), f, "", r.now())
	if err != nil {
		return err
	}
	chart := plot.ResponseChart{Title: "Response by follow-up timepoint", Percent: c.QueryParam("percent") != "false",
		Subtitle: "best-to-worst categories per scheme; assessment nearest each timepoint; as of " + report.AsOf}
	if len(report.Groups) == 1 && !report.Groups[0].Suppressed {
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

func itoa(n int) string {
	return strconv.Itoa(n)
}
