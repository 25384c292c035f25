package plot

import (
	"bytes"
	"encoding/xml"
	"errors"
	"flag"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden SVGs in testdata/")

// element is one parsed SVG element with its attributes, direct text and
// the classes of its enclosing groups.
type element struct {
	name    string
	attrs   map[string]string
	text    string
	parents []string // class attributes of enclosing elements, outermost first
}

func (e element) class() string { return e.attrs["class"] }

func (e element) inside(class string) bool { return slices.Contains(e.parents, class) }

// parseSVG walks every token with a strict decoder, so any malformed markup
// (an unescaped "<" or "&", an unclosed element) fails the test, and returns
// the elements in document order.
func parseSVG(t *testing.T, doc []byte) []element {
	t.Helper()
	if bytes.Contains(doc, []byte("NaN")) || bytes.Contains(doc, []byte("Inf")) {
		t.Errorf("output contains NaN or Inf")
	}
	dec := xml.NewDecoder(bytes.NewReader(doc))
	dec.Strict = true
	var (
		els   []element
		stack []int // indexes into els
		root  string
	)
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := element{name: tok.Name.Local, attrs: map[string]string{}}
			if root == "" {
				root = tok.Name.Local
			}
			for _, a := range tok.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			for _, i := range stack {
				if c := els[i].class(); c != "" {
					e.parents = append(e.parents, c)
				}
			}
			els = append(els, e)
			stack = append(stack, len(els)-1)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				els[stack[len(stack)-1]].text += string(tok)
			}
		}
	}
	if len(stack) != 0 {
		t.Fatalf("%d unclosed elements", len(stack))
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	return els
}

func filter(els []element, keep func(element) bool) []element {
	var out []element
	for _, e := range els {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

func render(t *testing.T, c interface{ WriteSVG(io.Writer) error }) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := c.WriteSVG(&buf); err != nil {
		t.Fatalf("WriteSVG: %v", err)
	}
	return buf.Bytes()
}

// handMade is a 10-patient curve small enough to check by hand: events at
// days 30, 100 and 250 (two), censoring at 60, 100, 300 and 400 (three).
// The CI is undefined at day 250, which splits the band in two.
func handMade() Curve {
	nan := math.NaN()
	return Curve{Label: "Hand", N: 10, Events: 4, Points: []Point{
		{Days: 30, AtRisk: 10, Survival: 0.9, Lower: 0.6, Upper: 0.97},
		{Days: 60, AtRisk: 9, Survival: 0.9, Lower: 0.6, Upper: 0.97, Censored: 1},
		{Days: 100, AtRisk: 8, Survival: 0.7875, Lower: 0.5, Upper: 0.9, Censored: 1},
		{Days: 250, AtRisk: 6, Survival: 0.525, Lower: nan, Upper: nan},
		{Days: 300, AtRisk: 4, Survival: 0.525, Lower: 0.2, Upper: 0.8, Censored: 1},
		{Days: 400, AtRisk: 3, Survival: 0.525, Lower: 0.2, Upper: 0.8, Censored: 3},
	}}
}

func TestCurveAtRisk(t *testing.T) {
	c := handMade()
	for _, tc := range []struct {
		t    float64
		want int
	}{
		{0, 10}, {30, 10}, {31, 9}, {60, 9}, {61, 8}, {100, 8}, {101, 6},
		{250, 6}, {251, 4}, {300, 4}, {301, 3}, {400, 3}, {401, 0}, {10000, 0},
	} {
		if got := c.AtRisk(tc.t); got != tc.want {
			t.Errorf("AtRisk(%v) = %d, want %d", tc.t, got, tc.want)
		}
	}
	if got := (Curve{N: 5}).AtRisk(0); got != 0 {
		t.Errorf("empty curve AtRisk(0) = %d, want 0", got)
	}
}

func TestSurvivalStructure(t *testing.T) {
	other := Curve{Label: "Other", N: 3, Events: 1, Points: []Point{
		{Days: 50, AtRisk: 3, Survival: 2.0 / 3, Lower: math.NaN(), Upper: math.NaN()},
		{Days: 90, AtRisk: 2, Survival: 2.0 / 3, Lower: math.NaN(), Upper: math.NaN(), Censored: 2},
	}}
	chart := SurvivalChart{
		Title:     "Overall survival",
		Curves:    []Curve{handMade(), other},
		RiskTimes: []float64{0, 60, 120, 300, 450},
		MaxDays:   450,
	}
	els := parseSVG(t, render(t, chart))

	if got := len(filter(els, func(e element) bool { return e.class() == "km-curve" })); got != 2 {
		t.Errorf("%d curve paths, want 2", got)
	}
	// The hand-made curve has two runs of CI separated by the NaN at day
	// 250; the other curve has no CI at all.
	if got := len(filter(els, func(e element) bool { return e.class() == "km-ci" })); got != 2 {
		t.Errorf("%d CI bands, want 2", got)
	}
	if got := len(filter(els, func(e element) bool { return e.class() == "km-censor" })); got != 2 {
		t.Errorf("%d censor-mark paths, want 2", got)
	}
	legend := filter(els, func(e element) bool { return e.name == "text" && e.inside("legend-item") })
	wantLegend := []string{"Hand (n = 10, 4 events)", "Other (n = 3, 1 event)"}
	if got := texts(legend); !slices.Equal(got, wantLegend) {
		t.Errorf("legend %q, want %q", got, wantLegend)
	}

	rows := rowsOf(els)
	want := [][]string{
		{"Hand", "10", "9", "6", "4", "0"},
		{"Other", "3", "2", "0", "0", "0"},
	}
	if !slices.EqualFunc(rows, want, slices.Equal) {
		t.Errorf("at-risk table %q, want %q", rows, want)
	}

	// Each row's numbers sit at their time on the x axis: column 0 on the
	// y axis, and equal spacing for equal time differences.
	var xs []float64
	for _, e := range els {
		if e.name == "text" && e.inside("risk-row") && e.attrs["text-anchor"] == "middle" {
			x, _ := strconv.ParseFloat(e.attrs["x"], 64)
			xs = append(xs, x)
		}
		if len(xs) == 5 {
			break
		}
	}
	if len(xs) != 5 {
		t.Fatalf("found %d at-risk numbers in row 1, want 5", len(xs))
	}
	perDay := (xs[1] - xs[0]) / 60
	if d := math.Abs((xs[4]-xs[0])/450 - perDay); d > 0.01 {
		t.Errorf("at-risk columns not proportional to time: %v", xs)
	}
}

// rowsOf returns the at-risk table as text, one row per curve.
func rowsOf(els []element) [][]string {
	var rows [][]string
	for _, e := range els {
		switch {
		case e.class() == "risk-row":
			rows = append(rows, nil)
		case e.name == "text" && e.inside("risk-row"):
			rows[len(rows)-1] = append(rows[len(rows)-1], e.text)
		}
	}
	return rows
}

func texts(els []element) []string {
	out := make([]string, len(els))
	for i, e := range els {
		out[i] = e.text
	}
	return out
}

func TestSurvivalStepShape(t *testing.T) {
	chart := SurvivalChart{Curves: []Curve{handMade()}, MaxDays: 500}
	els := parseSVG(t, render(t, chart))
	curves := filter(els, func(e element) bool { return e.class() == "km-curve" })
	if len(curves) != 1 {
		t.Fatalf("%d curves", len(curves))
	}
	d := curves[0].attrs["d"]
	// Post-step: only horizontal and vertical moves after the start, and
	// one vertical drop per change in the estimate (0.9, 0.7875, 0.525).
	if strings.ContainsAny(d[1:], "LCQAM") {
		t.Errorf("curve path %q has non-step segments", d)
	}
	if got := strings.Count(d, "V"); got != 3 {
		t.Errorf("curve path %q has %d drops, want 3", d, got)
	}
}

func TestSurvivalDefaultRiskTimes(t *testing.T) {
	for _, tc := range []struct {
		last float64
		want []float64
	}{
		// Short follow-up: a 10-month axis, columns every 3 months.
		{300, []float64{0, 91, 182, 273}},
		// Two to three years: a 27-month axis, yearly columns.
		{800, []float64{0, 365, 730}},
		// Long follow-up: years.
		{1800, []float64{0, 365, 730, 1095, 1461, 1826}},
	} {
		a := newTimeAxis(0, tc.last)
		if got := a.defaultRiskTimes(); !slices.Equal(got, tc.want) {
			t.Errorf("last day %v: risk times %v, want %v", tc.last, got, tc.want)
		}
		// Every default column is drawn exactly on a tick.
		for _, d := range a.defaultRiskTimes() {
			u := a.snap(d) / a.unitDays / a.step
			if math.Abs(u-math.Round(u)) > 1e-9 {
				t.Errorf("last day %v: risk time %v is drawn off the ticks", tc.last, d)
			}
		}
	}
}

func TestSnapOnlyNearTicks(t *testing.T) {
	a := newTimeAxis(0, 1800) // years
	for _, tc := range []struct{ in, want float64 }{
		{365, 365.25}, {731, 730.5}, {0, 0}, {400, 400}, {1000, 1000},
	} {
		if got := a.snap(tc.in); got != tc.want {
			t.Errorf("snap(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestHugeAxisStaysSmall(t *testing.T) {
	doc := render(t, SurvivalChart{Curves: []Curve{handMade()}, MaxDays: 1e9})
	if len(doc) > 50_000 {
		t.Errorf("a 1e9-day axis produced %d bytes", len(doc))
	}
	parseSVG(t, doc)
}

func TestSurvivalAxisUnits(t *testing.T) {
	for _, tc := range []struct {
		maxDays float64
		want    string
	}{
		{365, "Months since infusion"},
		{3 * 365.25, "Months since infusion"},
		{4 * 365.25, "Years since infusion"},
	} {
		els := parseSVG(t, render(t, SurvivalChart{Curves: []Curve{handMade()}, MaxDays: tc.maxDays}))
		found := filter(els, func(e element) bool { return e.name == "text" && e.text == tc.want })
		if len(found) != 1 {
			t.Errorf("MaxDays %v: no %q axis title", tc.maxDays, tc.want)
		}
	}
}

func TestEscaping(t *testing.T) {
	const nasty = `A<&>"B' ]]> <script>`
	sc := SurvivalChart{
		Title: nasty, Subtitle: nasty,
		Curves: []Curve{{Label: nasty, N: 1, Events: 0, Points: []Point{{Days: 10, AtRisk: 1, Survival: 1, Lower: math.NaN(), Upper: math.NaN(), Censored: 1}}}},
	}
	rc := ResponseChart{
		Title: nasty, Subtitle: nasty,
		Bars: []Bar{{Label: nasty, Segments: []Segment{{Label: nasty, Count: 3}}}},
	}
	for name, doc := range map[string][]byte{"survival": render(t, sc), "response": render(t, rc)} {
		if bytes.Contains(doc, []byte("<script")) {
			t.Errorf("%s: raw markup from a label reached the document", name)
		}
		els := parseSVG(t, doc)
		var roundTripped int
		for _, e := range els {
			if strings.Contains(e.text, nasty) {
				roundTripped++
			}
		}
		// title, desc, heading, subtitle, legend, at-risk label or x label.
		if roundTripped < 5 {
			t.Errorf("%s: label round-tripped in %d elements, want ≥ 5", name, roundTripped)
		}
	}
}

func TestEmptyInputs(t *testing.T) {
	nan := math.NaN()
	for name, c := range map[string]interface{ WriteSVG(io.Writer) error }{
		"no curves":       SurvivalChart{},
		"empty curve":     SurvivalChart{Curves: []Curve{{Label: "Empty"}}},
		"single point":    SurvivalChart{Curves: []Curve{{Label: "One", N: 1, Events: 1, Points: []Point{{Days: 40, AtRisk: 1, Survival: 0, Lower: nan, Upper: nan}}}}},
		"day zero":        SurvivalChart{Curves: []Curve{{Label: "Zero", N: 2, Points: []Point{{Days: 0, AtRisk: 2, Survival: 0.5, Lower: nan, Upper: nan}}}}},
		"all NaN bounds":  SurvivalChart{Curves: []Curve{{Label: "Missing CI", Points: []Point{{Days: 5, AtRisk: 2, Survival: 0.5, Lower: nan, Upper: nan}, {Days: 9, AtRisk: 1, Survival: 0, Lower: nan, Upper: nan}}}}},
		"no bars":         ResponseChart{},
		"percent no bars": ResponseChart{Percent: true},
		"empty bar":       ResponseChart{Percent: true, Bars: []Bar{{Label: "Month 1"}}},
		"all suppressed":  ResponseChart{Bars: []Bar{{Label: "Month 1", Suppressed: true}}},
	} {
		t.Run(name, func(t *testing.T) {
			els := parseSVG(t, render(t, c))
			if len(els) < 5 {
				t.Errorf("only %d elements", len(els))
			}
		})
	}

	els := parseSVG(t, render(t, SurvivalChart{}))
	if len(filter(els, func(e element) bool { return e.text == "No data" })) != 1 {
		t.Error("empty survival chart has no \"No data\" note")
	}
	els = parseSVG(t, render(t, ResponseChart{}))
	if len(filter(els, func(e element) bool { return e.text == "No data" })) != 1 {
		t.Error("empty response chart has no \"No data\" note")
	}
}

func TestSurvivalRejectsBadInput(t *testing.T) {
	nan := math.NaN()
	for name, c := range map[string]SurvivalChart{
		"descending":    {Curves: []Curve{{Points: []Point{{Days: 10, Survival: 1}, {Days: 5, Survival: 1}}}}},
		"NaN survival":  {Curves: []Curve{{Points: []Point{{Days: 10, Survival: nan}}}}},
		"survival > 1":  {Curves: []Curve{{Points: []Point{{Days: 10, Survival: 1.5}}}}},
		"NaN days":      {Curves: []Curve{{Points: []Point{{Days: nan, Survival: 1}}}}},
		"NaN MaxDays":   {MaxDays: nan},
		"NaN risk time": {RiskTimes: []float64{0, nan}},
		"inf bound":     {Curves: []Curve{{Points: []Point{{Days: 1, Survival: 1, Lower: math.Inf(-1), Upper: 1}}}}},
	} {
		if err := c.WriteSVG(io.Discard); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := (ResponseChart{Bars: []Bar{{Segments: []Segment{{Count: -1}}}}}).WriteSVG(io.Discard); err == nil {
		t.Error("negative count: no error")
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrorIsReturned(t *testing.T) {
	if err := (SurvivalChart{}).WriteSVG(failingWriter{}); err == nil {
		t.Error("survival: write error swallowed")
	}
	if err := (ResponseChart{}).WriteSVG(failingWriter{}); err == nil {
		t.Error("response: write error swallowed")
	}
}

func TestPaletteCycles(t *testing.T) {
	var curves []Curve
	for i := range 10 {
		curves = append(curves, Curve{Label: "G" + strconv.Itoa(i), Points: []Point{{Days: 100, AtRisk: 1, Survival: 0.5, Lower: math.NaN(), Upper: math.NaN()}}})
	}
	els := parseSVG(t, render(t, SurvivalChart{Curves: curves}))
	paths := filter(els, func(e element) bool { return e.class() == "km-curve" })
	if len(paths) != 10 {
		t.Fatalf("%d curves, want 10", len(paths))
	}
	// Curve 9 reuses curve 1's colour, so it must differ by dash pattern.
	if paths[8].attrs["stroke"] != paths[0].attrs["stroke"] || paths[8].attrs["stroke-dasharray"] == "" {
		t.Errorf("curve 9: stroke %q dash %q; want curve 1's colour with a dash",
			paths[8].attrs["stroke"], paths[8].attrs["stroke-dasharray"])
	}
	seen := map[string]bool{}
	for _, p := range paths[:8] {
		seen[p.attrs["stroke"]] = true
	}
	if len(seen) != 8 {
		t.Errorf("first 8 curves use %d colours, want 8", len(seen))
	}
}

func TestResponseStructure(t *testing.T) {
	chart := ResponseChart{
		Percent: true,
		Bars: []Bar{
			{Label: "Month 1", N: 40, Segments: []Segment{{Label: "CR", Count: 20}, {Label: "PR", Count: 10}, {Label: "SD", Count: 6}, {Label: "PD", Count: 4}}},
			{Label: "Month 3", Suppressed: true, N: 3, Segments: []Segment{{Label: "CR", Count: 2}, {Label: "Secret", Count: 1}}},
			// PR is missing here; "NE" first appears here, after PD.
			{Label: "Month 6", Segments: []Segment{{Label: "CR", Count: 15}, {Label: "SD", Count: 5}, {Label: "PD", Count: 10}, {Label: "NE", Count: 0}}},
		},
	}
	doc := render(t, chart)
	els := parseSVG(t, doc)

	legend := texts(filter(els, func(e element) bool { return e.name == "text" && e.inside("legend-item") }))
	if want := []string{"CR", "PR", "SD", "PD", "NE"}; !slices.Equal(legend, want) {
		t.Errorf("legend %q, want %q", legend, want)
	}
	// Nothing of the suppressed bar may leak: not its categories, not its N.
	if bytes.Contains(doc, []byte("Secret")) {
		t.Error("suppressed bar's category reached the document")
	}
	if len(filter(els, func(e element) bool { return e.text == "n = 3" })) > 0 {
		t.Error("suppressed bar's N reached the document")
	}
	supp := filter(els, func(e element) bool { return e.inside("bar suppressed") && e.name == "text" })
	if got := strings.Join(texts(supp), " "); !strings.Contains(got, "suppressed") || !strings.Contains(got, "(<5)") {
		t.Errorf("suppressed bar text %q", got)
	}

	// The same label keeps its colour across bars.
	fill := map[string]map[string]bool{}
	bars := 0
	var segs []element
	for _, e := range els {
		if e.class() == "bar" {
			bars++
		}
		if e.class() == "segment" {
			segs = append(segs, e)
		}
	}
	if bars != 2 || len(segs) != 7 {
		t.Fatalf("%d bars with %d segments, want 2 and 7 (zero counts are not drawn)", bars, len(segs))
	}
	labels := []string{"CR", "PR", "SD", "PD", "CR", "SD", "PD"}
	for i, s := range segs {
		if fill[labels[i]] == nil {
			fill[labels[i]] = map[string]bool{}
		}
		fill[labels[i]][s.attrs["fill"]] = true
	}
	for l, f := range fill {
		if len(f) != 1 {
			t.Errorf("%s drawn in %d colours", l, len(f))
		}
	}
	// 100% stacked: both bars reach the same height.
	if a, b := sumAll(segs[:4]), sumAll(segs[4:]); math.Abs(a-b) > 0.5 {
		t.Errorf("100%% bars differ in height: %v vs %v", a, b)
	}
	// Percent labels inside segments, and n above each bar.
	var inside []string
	for _, e := range els {
		if e.name == "text" && e.inside("bar") && !e.inside("bar suppressed") {
			inside = append(inside, e.text)
		}
	}
	for _, want := range []string{"50%", "25%", "15%", "10%", "n = 40", "n = 30", "33%"} {
		if !slices.Contains(inside, want) {
			t.Errorf("bar texts %q lack %q", inside, want)
		}
	}
}

func sumAll(els []element) float64 {
	var s float64
	for _, e := range els {
		v, _ := strconv.ParseFloat(e.attrs["height"], 64)
		s += v
	}
	return s
}

func TestResponseCountAxis(t *testing.T) {
	chart := ResponseChart{Bars: []Bar{
		{Label: "Month 1", Segments: []Segment{{Label: "CR", Count: 30}, {Label: "PD", Count: 7}}},
		{Label: "Month 3", Segments: []Segment{{Label: "CR", Count: 12}}},
	}}
	els := parseSVG(t, render(t, chart))
	var inside []string
	for _, e := range els {
		if e.name == "text" && e.inside("bar") {
			inside = append(inside, e.text)
		}
	}
	for _, want := range []string{"30", "7", "12", "n = 37", "n = 12"} {
		if !slices.Contains(inside, want) {
			t.Errorf("bar texts %q lack %q", inside, want)
		}
	}
	segs := filter(els, func(e element) bool { return e.class() == "segment" })
	h := func(i int) float64 { v, _ := strconv.ParseFloat(segs[i].attrs["height"], 64); return v }
	// Heights proportional to counts (30 vs 12), within rounding.
	if r := h(0) / h(2); math.Abs(r-2.5) > 0.02 {
		t.Errorf("count bars not proportional: %v / %v", h(0), h(2))
	}
}

func TestCategoriesMerge(t *testing.T) {
	c := ResponseChart{Bars: []Bar{
		{Segments: []Segment{{Label: "CR", Count: 1}, {Label: "PD", Count: 1}}},
		{Segments: []Segment{{Label: "CR", Count: 1}, {Label: "PR", Count: 1}, {Label: "PD", Count: 1}}},
		{Segments: []Segment{{Label: "sCR", Count: 1}, {Label: "CR", Count: 1}}},
		{Segments: []Segment{{Label: "PD", Count: 1}, {Label: "Death", Count: 1}}},
	}}
	want := []string{"sCR", "CR", "PR", "PD", "Death"}
	if got := c.categories(); !slices.Equal(got, want) {
		t.Errorf("categories %q, want %q", got, want)
	}
}

// TestGolden compares fresh output with testdata/*.svg; run
// `go test ./registry/plot -update` to regenerate them after a deliberate
// change, then look at them.
func TestGolden(t *testing.T) {
	for name, c := range map[string]interface{ WriteSVG(io.Writer) error }{
		"survival-example.svg": exampleSurvival(),
		"response-example.svg": exampleResponse(),
	} {
		t.Run(name, func(t *testing.T) {
			got := render(t, c)
			parseSVG(t, got)
			path := filepath.Join("testdata", name)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the golden file; if the change is intended, run go test -update and review the SVG", path)
			}
		})
	}
}

// exampleSurvival simulates three products with a cure fraction (the
// plateau typical of CAR-T) and administrative censoring, and estimates KM
// curves with log-log 95% CIs, as the registry would.
func exampleSurvival() SurvivalChart {
	rng := rand.New(rand.NewPCG(2024, 7))
	groups := []struct {
		label        string
		n            int
		cure, median float64
		followUp     float64
	}{
		{"Axicabtagene ciloleucel", 120, 0.42, 150, 1400},
		{"Tisagenlecleucel", 85, 0.33, 120, 1300},
		{"Lisocabtagene maraleucel", 60, 0.50, 180, 900},
	}
	chart := SurvivalChart{
		Title:    "Overall survival",
		Subtitle: "Large B-cell lymphoma, by product; shaded: 95% CI (log-log)",
	}
	for _, g := range groups {
		times := make([]float64, g.n)
		events := make([]bool, g.n)
		for i := range times {
			censor := math.Floor(30 + rng.Float64()*g.followUp)
			ev := math.Inf(1)
			if rng.Float64() > g.cure {
				ev = math.Floor(1 + rng.ExpFloat64()*g.median/math.Ln2)
			}
			times[i], events[i] = math.Min(ev, censor), ev <= censor
		}
		chart.Curves = append(chart.Curves, kaplanMeier(g.label, times, events))
	}
	return chart
}

// kaplanMeier is a plain KM estimator with Greenwood variance on the
// log(-log) scale, for the example only.
func kaplanMeier(label string, times []float64, events []bool) Curve {
	idx := make([]int, len(times))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		switch {
		case times[a] < times[b]:
			return -1
		case times[a] > times[b]:
			return 1
		}
		return 0
	})
	c := Curve{Label: label, N: len(times)}
	s, greenwood, atRisk := 1.0, 0.0, len(times)
	for i := 0; i < len(idx); {
		t := times[idx[i]]
		d, cens := 0, 0
		for ; i < len(idx) && times[idx[i]] == t; i++ {
			if events[idx[i]] {
				d++
			} else {
				cens++
			}
		}
		n := atRisk
		if d > 0 {
			s *= 1 - float64(d)/float64(n)
			if n > d {
				greenwood += float64(d) / float64(n*(n-d))
			}
		}
		lo, hi := math.NaN(), math.NaN()
		if s > 0 && s < 1 {
			se := math.Sqrt(greenwood) / math.Abs(math.Log(s))
			lo, hi = math.Pow(s, math.Exp(1.96*se)), math.Pow(s, math.Exp(-1.96*se))
		}
		c.Points = append(c.Points, Point{Days: t, AtRisk: n, Survival: s, Lower: lo, Upper: hi, Censored: cens})
		c.Events += d
		atRisk -= d + cens
	}
	return c
}

func exampleResponse() ResponseChart {
	seg := func(cr, pr, sd, pd, ne int) []Segment {
		return []Segment{
			{Label: "Complete response", Count: cr}, {Label: "Partial response", Count: pr}, {Label: "Stable disease", Count: sd},
			{Label: "Progressive disease", Count: pd}, {Label: "Not evaluable", Count: ne},
		}
	}
	return ResponseChart{
		Title:    "Best response by timepoint",
		Subtitle: "Large B-cell lymphoma, Lugano 2014; patients assessed at each timepoint",
		Percent:  true,
		Bars: []Bar{
			{Label: "Month 1", N: 182, Segments: seg(78, 54, 21, 22, 7)},
			{Label: "Month 3", N: 151, Segments: seg(80, 24, 9, 33, 5)},
			{Label: "Month 6", N: 118, Segments: seg(70, 9, 6, 30, 3)},
			{Label: "Month 12", N: 83, Segments: seg(55, 4, 3, 19, 2)},
			{Label: "Month 24", N: 41, Segments: seg(31, 1, 1, 7, 1)},
			{Label: "Month 36", Suppressed: true},
		},
	}
}

// A curve cut for small numbers never shows a count past its end, and a suppressed event count
// is said to be hidden, not drawn as 0.
func TestSmallCellsInTheChart(t *testing.T) {
	c := Curve{Label: "A", N: 9, EventsHidden: true, StoppedBelow: 5,
		Points: []Point{{Days: 10, AtRisk: 9, Survival: 0.9, Lower: 0.5, Upper: 1}, {Days: 40, AtRisk: 6, Survival: 0.8, Lower: 0.4, Upper: 1}}}
	if got := c.atRiskText(40); got != "6" {
		t.Errorf("at risk on the last point's day: %s, want 6", got)
	}
	if got := c.atRiskText(41); got != "<5" {
		t.Errorf("at risk past the curve's end: %s, want <5", got)
	}
	if got := c.eventsText(); got != "events not shown" {
		t.Errorf("events %q", got)
	}
	c.StoppedBelow, c.EventsHidden, c.Events = 0, false, 0
	if got, events := c.atRiskText(41), c.eventsText(); got != "0" || events != "0 events" {
		t.Errorf("without suppression: at risk %s, %s; want 0, 0 events", got, events)
	}
}

func TestBandsOnlyForFewCurvesWithIntervals(t *testing.T) {
	withCI := Curve{N: 10, Points: []Point{{Days: 30, AtRisk: 10, Survival: 0.9, Lower: 0.5, Upper: 0.98}, {Days: 60, AtRisk: 9, Survival: 0.8, Lower: 0.4, Upper: 0.95}}}
	noCI := Curve{N: 10, Points: []Point{{Days: 30, AtRisk: 10, Survival: 1, Lower: math.NaN(), Upper: math.NaN(), Censored: 1}}}
	cases := []struct {
		name   string
		curves []Curve
		want   bool
	}{
		{"one curve with intervals", []Curve{withCI}, true},
		{"no intervals anywhere", []Curve{noCI, noCI}, false},
		{"more curves than MaxBandCurves", slices.Repeat([]Curve{withCI}, MaxBandCurves+1), false},
	}
	for _, c := range cases {
		chart := SurvivalChart{Curves: c.curves}
		doc := string(render(t, chart))
		if got := chart.DrawsBands(); got != c.want {
			t.Errorf("%s: DrawsBands %v, want %v", c.name, got, c.want)
		}
		if drawn := strings.Contains(doc, `class="km-ci"`); drawn != c.want {
			t.Errorf("%s: bands drawn %v, want %v", c.name, drawn, c.want)
		}
	}
}

// A cumulative incidence curve starts at 0 (the bottom of the plot) and climbs; a survival
// curve starts at 1 (the top).
func TestRisingCurvesStartAtZero(t *testing.T) {
	start := func(rising bool) float64 {
		chart := SurvivalChart{Rising: rising, Curves: []Curve{{N: 10, Points: []Point{
			{Days: 30, AtRisk: 10, Survival: 0.2, Lower: math.NaN(), Upper: math.NaN()}}}}}
		doc := string(render(t, chart))
		i := strings.Index(doc, `class="km-curve"`)
		if i < 0 {
			t.Fatal("no curve drawn")
		}
		tag := doc[strings.LastIndex(doc[:i], "<path"):]
		d := tag[strings.Index(tag, ` d="M`)+len(` d="M`):]
		y, err := strconv.ParseFloat(d[strings.Index(d, ",")+1:strings.IndexAny(d, " \"")], 64)
		if err != nil {
			t.Fatalf("path %q: %v", d[:40], err)
		}
		return y
	}
	if rising, falling := start(true), start(false); !(rising > falling) {
		t.Errorf("a rising curve starts at y=%v, a survival curve at y=%v: the rising one should start lower on the page", rising, falling)
	}
}
