package plot

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Point is one step of a Kaplan-Meier curve: the estimate just after the
// events at Days.
type Point struct {
	// Days since CAR-T infusion.
	Days float64
	// AtRisk is the number still under observation just before Days (the
	// KM denominator at this time). The numbers-at-risk table is read from
	// it, so the curve must have a point at every distinct event or
	// censoring time, not only at event times.
	AtRisk int
	// Survival is the estimate after the events at Days, in [0, 1].
	Survival float64
	// Lower and Upper are the confidence limits at Days. Set both to NaN
	// where there is no interval (e.g. Greenwood's variance is undefined
	// once the estimate reaches 0); the band is left out there. Values
	// outside [0, 1] are clamped.
	Lower, Upper float64
	// Censored is the number censored at Days. A "+" marks the curve there,
	// the usual KM convention; 0 draws no mark.
	Censored int
}

// Curve is the Kaplan-Meier estimate of one group.
type Curve struct {
	Label string // e.g. a product or site name; shown in the legend and the at-risk table
	// N and Events are the group size and number of events, shown in the
	// legend as reported; they are not re-derived from Points.
	N, Events int
	// EventsHidden says the number of events is suppressed (a small cell):
	// the legend says so instead of printing Events.
	EventsHidden bool
	// StoppedBelow, above 1, says the curve was cut where fewer than that many
	// patients remained at risk, so past its last point the number at risk is
	// shown as "<StoppedBelow", never as a count (0 would be false, 1–4 a small
	// cell).
	StoppedBelow int
	// Points holds one point per distinct time, in ascending order. The
	// curve implicitly starts at (0, 1); a point at day 0 is only needed if
	// something happened on the day of infusion.
	Points []Point
}

// SurvivalChart is a Kaplan-Meier figure: step curves with confidence bands
// over a 0–100% axis, a legend, and a numbers-at-risk table aligned under the
// time axis.
type SurvivalChart struct {
	Title    string // e.g. "Overall survival"
	Subtitle string // e.g. "by product; 95% CI (log-log)"
	// YLabel names the y axis; default "Survival probability". Set it for
	// other time-to-event endpoints ("Progression-free", ...).
	YLabel string
	Curves []Curve
	// RiskTimes are the days at which the at-risk table is tabulated; each
	// column is drawn at that time on the x axis, so times that fall on axis
	// ticks line up with the tick labels. Times beyond the axis are dropped.
	// Default: every 3 months (as whole days: 0, 91, 182, 273, 365, ...)
	// when the axis is shorter than two years, otherwise every year (0, 365,
	// 730, 1095, 1461, ...) — the calendar multiples rather than flat
	// multiples of 90 days, so every column sits exactly under an axis tick.
	RiskTimes []float64
	// MaxDays ends the x axis; 0 means the axis runs to the next tick after
	// the last point of any curve. Curves are cut at MaxDays.
	MaxDays float64
	// Rising draws cumulative incidence instead of survival: curves start at
	// 0 and climb, each Point's Survival field holding the incidence.
	Rising bool
}

// Okabe & Ito's colour-blind-safe palette, reordered so the first curves get
// the most distinct hues and yellow, which is hard to see on white, comes
// last. Text in the yellow uses a darker shade of the same hue.
var survivalPalette = []struct{ line, text string }{
	{"#0072B2", "#0072B2"}, // blue
	{"#D55E00", "#D55E00"}, // vermillion
	{"#009E73", "#007A59"}, // bluish green
	{"#CC79A7", "#B0508A"}, // reddish purple
	{"#E69F00", "#B07A00"}, // orange
	{"#56B4E9", "#2A86BA"}, // sky blue
	{"#000000", "#000000"}, // black
	{"#F0E442", "#8C8200"}, // yellow
}

// dashes tell curves apart once the palette has been used up and colours
// start repeating.
var dashes = []string{"", "7 4", "2 3", "9 3 2 3"}

type curveStyle struct{ line, text, dash string }

func styleFor(i int) curveStyle {
	p := survivalPalette[i%len(survivalPalette)]
	return curveStyle{p.line, p.text, dashes[(i/len(survivalPalette))%len(dashes)]}
}

const (
	daysPerYear  = 365.25
	daysPerMonth = daysPerYear / 12
)

// MaxBandCurves is the most curves a figure shades confidence bands for: past it the
// overlapping bands turn into an unreadable wash, which journal figures avoid.
const MaxBandCurves = 4

// Fixed geometry, in viewBox units.
const (
	survWidth      = 960.0
	survPlotHeight = 380.0
	survRight      = 40.0
	survRowHeight  = 22.0
	legendFont     = 13.0
	tableFont      = 12.0
	maxLabelWidth  = 210.0
	legendSwatch   = 34.0 // line sample plus gap before the text
	legendGap      = 32.0 // between legend columns
)

// timeAxis maps days onto the x axis, which is labelled in months or years.
type timeAxis struct {
	unitDays float64 // daysPerMonth or daysPerYear
	unitName string  // for the axis title
	step     float64 // tick interval in units
	end      float64 // axis end in days
}

// newTimeAxis chooses months for up to three years of follow-up (where
// milestones like "month 3" are how CAR-T results are read) and years beyond,
// with 1-3-6-12 month or 1-2-5-10 year steps so ticks land on milestones.
// maxDays, when positive, fixes the end of the axis; otherwise it is rounded
// up to a tick past lastDays.
func newTimeAxis(maxDays, lastDays float64) timeAxis {
	extent := maxDays
	if extent <= 0 {
		extent = lastDays
	}
	if extent <= 0 {
		extent = daysPerYear // nothing to show: a one-year frame for the "No data" note
	}
	a := timeAxis{unitDays: daysPerMonth, unitName: "Months"}
	steps := []float64{1, 3, 6, 12}
	if extent > 3*daysPerYear+0.5 {
		a.unitDays, a.unitName = daysPerYear, "Years"
		steps = []float64{1, 2, 5, 10, 20, 50}
	}
	units := extent / a.unitDays
	a.step = niceStep(units, 10) // beyond the milestone steps: decades and more
	for _, s := range steps {
		if math.Ceil(units/s-1e-9) <= 12 {
			a.step = s
			break
		}
	}
	if maxDays > 0 {
		a.end = maxDays
	} else {
		a.end = math.Ceil(units/a.step-1e-9) * a.step * a.unitDays
	}
	return a
}

// ticks returns the tick positions in axis units.
func (a timeAxis) ticks() []float64 {
	var t []float64
	for k := 0; ; k++ {
		u := float64(k) * a.step
		if u*a.unitDays > a.end+0.5 {
			return t
		}
		t = append(t, u)
	}
}

// snap moves a time within a day of a tick onto the tick, so that a column
// for day 365 or 91 sits exactly under the "1" year or "3" month label
// (365.25 and 91.3 days) instead of a few pixels off on a short axis.
func (a timeAxis) snap(days float64) float64 {
	tick := math.Round(days/(a.step*a.unitDays)) * a.step * a.unitDays
	if math.Abs(tick-days) <= 1 {
		return tick
	}
	return days
}

// defaultRiskTimes puts at-risk columns on every axis tick that is a multiple
// of 3 months (short follow-up) or 12 months, as whole days rounded down so
// that the 1-year column is day 365, not 365.25. Under six months, where that
// would leave one or two columns, every tick gets one.
func (a timeAxis) defaultRiskTimes() []float64 {
	every := 3.0 // months
	switch {
	case a.end >= 2*daysPerYear:
		every = 12
	case a.end < 6*daysPerMonth:
		every = 0
	}
	everyDays := math.Max(every*daysPerMonth, a.step*a.unitDays)
	var times []float64
	for k := 0; ; k++ {
		d := math.Floor(float64(k)*everyDays + 1e-9)
		if d > a.end+0.5 {
			return times
		}
		times = append(times, d)
	}
}

// atRiskText is the at-risk table's entry for day t.
func (c Curve) atRiskText(t float64) string {
	if c.StoppedBelow > 1 && (len(c.Points) == 0 || t > c.Points[len(c.Points)-1].Days) {
		return "<" + strconv.Itoa(c.StoppedBelow)
	}
	return strconv.Itoa(c.AtRisk(t))
}

// AtRisk reports the number of patients of c still under observation just
// before day t: the AtRisk of the first point at or after t, since nothing
// happens between points. Past the last point nobody is left and it is 0.
func (c Curve) AtRisk(t float64) int {
	i := sort.Search(len(c.Points), func(i int) bool { return c.Points[i].Days >= t })
	if i == len(c.Points) {
		return 0
	}
	return c.Points[i].AtRisk
}

func (c SurvivalChart) validate() error {
	if bad(c.MaxDays) || c.MaxDays < 0 {
		return fmt.Errorf("plot: MaxDays %v must be a finite number of days ≥ 0", c.MaxDays)
	}
	for _, t := range c.RiskTimes {
		if bad(t) || t < 0 {
			return fmt.Errorf("plot: risk time %v must be a finite number of days ≥ 0", t)
		}
	}
	for ci, cv := range c.Curves {
		if cv.N < 0 || cv.Events < 0 {
			return fmt.Errorf("plot: curve %d (%q): negative N or Events", ci, cv.Label)
		}
		prev := 0.0
		for pi, p := range cv.Points {
			where := func(msg string, args ...any) error {
				return fmt.Errorf("plot: curve %d (%q) point %d: "+msg, append([]any{ci, cv.Label, pi}, args...)...)
			}
			switch {
			case bad(p.Days) || p.Days < 0:
				return where("Days %v must be a finite number ≥ 0", p.Days)
			case p.Days < prev:
				return where("Days %v before the previous point's %v: points must be in ascending order", p.Days, prev)
			case bad(p.Survival) || p.Survival < -1e-9 || p.Survival > 1+1e-9:
				return where("Survival %v outside [0, 1]", p.Survival)
			case p.AtRisk < 0 || p.Censored < 0:
				return where("negative AtRisk or Censored")
			case math.IsInf(p.Lower, 0) || math.IsInf(p.Upper, 0):
				return where("infinite confidence limit; use NaN for none")
			}
			prev = p.Days
		}
	}
	return nil
}

func bad(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }

func clamp01(v float64) float64 { return math.Max(0, math.Min(1, v)) }

// survLayout holds the computed geometry of one survival figure.
type survLayout struct {
	axis                      timeAxis
	left, right, top, bottom  float64 // plot area
	height                    float64 // whole figure
	legendTop                 float64
	legendRows                [][]legendItem
	tableTop                  float64
	riskTimes                 []float64
	labelWidth                float64 // width reserved for at-risk row labels
	tableLabels, legendLabels []string
}

type legendItem struct {
	curve int
	x     float64
	text  string
}

func (l *survLayout) x(days float64) float64 {
	return l.left + days/l.axis.end*(l.right-l.left)
}

func (l *survLayout) y(s float64) float64 {
	return l.bottom - clamp01(s)*(l.bottom-l.top)
}

func (c SurvivalChart) layout() *survLayout {
	l := &survLayout{}
	last := 0.0
	for _, cv := range c.Curves {
		if n := len(cv.Points); n > 0 {
			last = math.Max(last, cv.Points[n-1].Days)
		}
	}
	l.axis = newTimeAxis(c.MaxDays, last)

	// Left margin: wide enough for the at-risk row labels, which share the
	// column with the y axis labels.
	for i, cv := range c.Curves {
		lbl := truncate(curveLabel(cv, i), tableFont, maxLabelWidth)
		l.tableLabels = append(l.tableLabels, lbl)
		l.labelWidth = math.Max(l.labelWidth, textWidth(lbl, tableFont))
		l.legendLabels = append(l.legendLabels,
			fmt.Sprintf("%s (n = %d, %s)", curveLabel(cv, i), cv.N, cv.eventsText()))
	}
	const pad = 20.0
	l.left = math.Max(88, pad+l.labelWidth+36)
	l.right = survWidth - survRight

	y := headingHeight(c.Title, c.Subtitle, headingTop)
	// Legend above the plot, in aligned columns: it never hides a curve, and
	// long product names do not squeeze the plot.
	l.legendTop = y + 10
	colW := 0.0
	texts := make([]string, len(l.legendLabels))
	for i, text := range l.legendLabels {
		texts[i] = truncate(text, legendFont, l.right-l.left-legendSwatch)
		colW = math.Max(colW, legendSwatch+textWidth(texts[i], legendFont)+legendGap)
	}
	cols := max(1, int((l.right-l.left+legendGap)/colW))
	for i, text := range texts {
		if i%cols == 0 {
			l.legendRows = append(l.legendRows, nil)
		}
		r := len(l.legendRows) - 1
		l.legendRows[r] = append(l.legendRows[r], legendItem{curve: i, x: l.left + float64(i%cols)*colW, text: text})
	}
	l.top = l.legendTop + float64(len(l.legendRows))*survRowHeight + 16
	l.bottom = l.top + survPlotHeight

	if c.RiskTimes != nil {
		for _, t := range c.RiskTimes {
			if t <= l.axis.end+0.5 {
				l.riskTimes = append(l.riskTimes, t)
			}
		}
	} else {
		l.riskTimes = l.axis.defaultRiskTimes()
	}
	l.tableTop = l.bottom + 64
	l.height = l.bottom + 56
	if len(c.Curves) > 0 && len(l.riskTimes) > 0 {
		l.height = l.tableTop + 14 + float64(len(c.Curves))*survRowHeight + 12
	}
	return l
}

// eventsText is the legend's count of events: "3 events", or that it is not shown.
func (c Curve) eventsText() string {
	switch {
	case c.EventsHidden:
		return "events not shown"
	case c.Events == 1:
		return "1 event"
	}
	return strconv.Itoa(c.Events) + " events"
}

func curveLabel(c Curve, i int) string {
	if c.Label == "" {
		return fmt.Sprintf("Group %d", i+1)
	}
	return c.Label
}

// WriteSVG draws the chart as a standalone SVG document. It fails only on
// invalid input (points out of order, survival outside [0, 1], non-finite
// days) and on errors from w; empty charts and empty curves render.
func (c SurvivalChart) WriteSVG(w io.Writer) error {
	if err := c.validate(); err != nil {
		return err
	}
	l := c.layout()
	cv := newCanvas(survWidth, l.height, c.Title, c.describe())
	cv.heading(20, headingTop, c.Title, c.Subtitle)
	c.drawAxes(cv, l)
	if len(c.Curves) == 0 {
		cv.noData(l.left, l.top, l.right, l.bottom)
	}
	// Bands first so that no band covers another group's line.
	if c.DrawsBands() {
		for i, curve := range c.Curves {
			st := styleFor(i)
			for _, d := range l.bandPaths(curve.Points) {
				cv.Path(d, attr("class", "km-ci"), attr("fill", st.line), attr("fill-opacity", "0.15"), attr("stroke", "none"))
			}
		}
	}
	for i, curve := range c.Curves {
		st := styleFor(i)
		if len(curve.Points) == 0 {
			continue
		}
		a := []string{attr("class", "km-curve"), attr("fill", "none"), attr("stroke", st.line), attr("stroke-width", "2.2"),
			attr("stroke-linejoin", "miter")}
		if st.dash != "" {
			a = append(a, attr("stroke-dasharray", st.dash))
		}
		start := 1.0
		if c.Rising {
			start = 0
		}
		cv.Path(l.stepPath(curve.Points, start), a...)
		if d := l.censorPath(curve.Points); d != "" {
			cv.Path(d, attr("class", "km-censor"), attr("fill", "none"), attr("stroke", st.line), attr("stroke-width", "1.4"))
		}
	}
	c.drawLegend(cv, l)
	c.drawRiskTable(cv, l)
	return cv.finish(w)
}

// DrawsBands says whether the figure shades confidence bands: some curve has a finite
// interval, and there are no more than MaxBandCurves curves. A subtitle should promise
// bands only when it is true.
func (c SurvivalChart) DrawsBands() bool {
	if len(c.Curves) > MaxBandCurves {
		return false
	}
	for _, curve := range c.Curves {
		for _, p := range curve.Points {
			if !math.IsNaN(p.Lower) && !math.IsNaN(p.Upper) {
				return true
			}
		}
	}
	return false
}

// describe is the <desc> text: a plain-language summary for screen readers.
func (c SurvivalChart) describe() string {
	if len(c.Curves) == 0 {
		return "Kaplan-Meier plot with no data."
	}
	parts := make([]string, len(c.Curves))
	for i, cv := range c.Curves {
		parts[i] = fmt.Sprintf("%s (n=%d, %s)", curveLabel(cv, i), cv.N, cv.eventsText())
	}
	return "Kaplan-Meier curves: " + strings.Join(parts, "; ") + "."
}

func (c SurvivalChart) drawAxes(cv *canvas, l *survLayout) {
	tick := attr("font-size", "12")
	for p := 0; p <= 100; p += 20 {
		y := l.y(float64(p) / 100)
		if p > 0 {
			cv.Line(l.left, y, l.right, y, attr("stroke", colGrid), attr("stroke-width", "1"))
		}
		cv.Text(l.left-8, y+4, strconv.Itoa(p)+"%", tick, attr("fill", colText), attr("text-anchor", "end"))
	}
	ylabel := c.YLabel
	if ylabel == "" {
		ylabel = "Survival probability"
	}
	ymid := (l.top + l.bottom) / 2
	yx := l.left - 52
	cv.Text(yx, ymid, ylabel, attr("font-size", "13"), attr("fill", colText), attr("text-anchor", "middle"),
		attr("transform", "rotate(-90 "+num(yx)+" "+num(ymid)+")"))

	axisStyle := []string{attr("stroke", colAxis), attr("stroke-width", "1")}
	cv.Line(l.left, l.top, l.left, l.bottom, axisStyle...)
	cv.Line(l.left, l.bottom, l.right, l.bottom, axisStyle...)
	for _, u := range l.axis.ticks() {
		x := l.x(u * l.axis.unitDays)
		cv.Line(x, l.bottom, x, l.bottom+5, axisStyle...)
		cv.Text(x, l.bottom+20, strconv.FormatFloat(u, 'f', -1, 64), tick, attr("fill", colText), attr("text-anchor", "middle"))
	}
	cv.Text((l.left+l.right)/2, l.bottom+42, l.axis.unitName+" since infusion",
		attr("font-size", "13"), attr("fill", colText), attr("text-anchor", "middle"))
}

func (c SurvivalChart) drawLegend(cv *canvas, l *survLayout) {
	for r, row := range l.legendRows {
		y := l.legendTop + float64(r)*survRowHeight + 11
		for _, it := range row {
			st := styleFor(it.curve)
			cv.Group(attr("class", "legend-item"))
			if c.DrawsBands() {
				cv.Rect(it.x, y-6, 24, 12, attr("fill", st.line), attr("fill-opacity", "0.15"))
			}
			a := []string{attr("stroke", st.line), attr("stroke-width", "2.2")}
			if st.dash != "" {
				a = append(a, attr("stroke-dasharray", st.dash))
			}
			cv.Line(it.x, y, it.x+24, y, a...)
			cv.Text(it.x+32, y+4.5, it.text, attr("font-size", num(legendFont)), attr("fill", colText))
			cv.Gend()
		}
	}
}

// drawRiskTable writes one row per curve under the x axis, each number
// centred on its time (snapped to a tick within a day) so it reads against
// the tick above it.
func (c SurvivalChart) drawRiskTable(cv *canvas, l *survLayout) {
	if len(c.Curves) == 0 || len(l.riskTimes) == 0 {
		return
	}
	cv.Group(attr("class", "risk-table"))
	defer cv.Gend()
	cv.Text(20, l.tableTop, "Number at risk", attr("font-size", "13"), attr("font-weight", "bold"), attr("fill", colText))
	for i, curve := range c.Curves {
		st := styleFor(i)
		y := l.tableTop + 14 + float64(i)*survRowHeight + 6
		cv.Group(attr("class", "risk-row"))
		cv.Text(20, y, l.tableLabels[i], attr("font-size", num(tableFont)), attr("fill", st.text))
		for _, t := range l.riskTimes {
			cv.Text(l.x(l.axis.snap(t)), y, curve.atRiskText(t),
				attr("font-size", num(tableFont)), attr("fill", st.text), attr("text-anchor", "middle"))
		}
		cv.Gend()
	}
}

// stepPath is the KM curve as a post-step line: flat until each time, then
// a vertical step to the new estimate. It starts at (0, start), 1 for
// survival and 0 for cumulative incidence, and ends at the last point or the
// end of the axis.
func (l *survLayout) stepPath(pts []Point, start float64) string {
	var b strings.Builder
	b.WriteString("M" + num(l.x(0)) + "," + num(l.y(start)))
	level, at := start, 0.0
	for _, p := range pts {
		if p.Days > l.axis.end {
			b.WriteString(" H" + num(l.x(l.axis.end)))
			return b.String()
		}
		if p.Days > at {
			b.WriteString(" H" + num(l.x(p.Days)))
			at = p.Days
		}
		if s := clamp01(p.Survival); s != level {
			b.WriteString(" V" + num(l.y(s)))
			level = s
		}
	}
	return b.String()
}

// bandPaths returns one closed step-shaped polygon per run of consecutive
// points with a confidence interval; a point without one (NaN limits) breaks
// the band rather than interpolating across it.
func (l *survLayout) bandPaths(pts []Point) []string {
	type span struct{ x0, x1, lo, hi float64 }
	var runs [][]span
	var run []span
	flush := func() {
		if len(run) > 0 {
			runs = append(runs, run)
			run = nil
		}
	}
	for i, p := range pts {
		if p.Days >= l.axis.end {
			break
		}
		end := p.Days
		if i+1 < len(pts) {
			end = pts[i+1].Days
		}
		end = math.Min(end, l.axis.end)
		if math.IsNaN(p.Lower) || math.IsNaN(p.Upper) {
			flush()
			continue
		}
		if end <= p.Days {
			continue // zero width: nothing to shade, but the run goes on
		}
		lo, hi := clamp01(p.Lower), clamp01(p.Upper)
		if lo > hi {
			lo, hi = hi, lo
		}
		run = append(run, span{l.x(p.Days), l.x(end), l.y(lo), l.y(hi)})
	}
	flush()

	paths := make([]string, 0, len(runs))
	for _, r := range runs {
		var b strings.Builder
		for i, s := range r {
			cmd := " L"
			if i == 0 {
				cmd = "M"
			}
			b.WriteString(cmd + num(s.x0) + "," + num(s.hi) + " L" + num(s.x1) + "," + num(s.hi))
		}
		for i := len(r) - 1; i >= 0; i-- {
			s := r[i]
			b.WriteString(" L" + num(s.x1) + "," + num(s.lo) + " L" + num(s.x0) + "," + num(s.lo))
		}
		b.WriteString(" Z")
		paths = append(paths, b.String())
	}
	return paths
}

// censorPath draws a small "+" on the curve at every time with censoring.
func (l *survLayout) censorPath(pts []Point) string {
	const arm = 4.0
	var b strings.Builder
	for _, p := range pts {
		if p.Censored == 0 || p.Days > l.axis.end {
			continue
		}
		x, y := l.x(p.Days), l.y(p.Survival)
		fmt.Fprintf(&b, "M%s,%s h%s M%s,%s v%s ",
			num(x-arm), num(y), num(2*arm), num(x), num(y-arm), num(2*arm))
	}
	return strings.TrimSpace(b.String())
}
