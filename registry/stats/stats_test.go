package stats

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// tol is the agreement required with R. The fixtures carry 17 significant digits, so the real
// differences are rounding-level; 1e-6 is the contract the registry's reports promise.
const tol = 1e-6

// table is a CSV fixture: the header and the rows as column → text.
type table []map[string]string

func readTable(t *testing.T, path string) table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comment = '#' // the provenance line R writes on top
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(recs) == 0 {
		t.Fatalf("%s: no header", path)
	}
	var out table
	for _, rec := range recs[1:] {
		row := make(map[string]string, len(rec))
		for i, h := range recs[0] {
			row[h] = rec[i]
		}
		out = append(out, row)
	}
	return out
}

// num parses a number as R wrote it: NA and NaN become NaN, Inf stays infinite.
func num(t *testing.T, s string) float64 {
	t.Helper()
	if s == "NA" {
		return math.NaN()
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("bad number %q: %v", s, err)
	}
	return v
}

// same reports whether got matches R's want: both NaN (R's NA or NaN), the same infinity, or
// within tol.
func same(got, want float64) bool {
	switch {
	case math.IsNaN(want) || math.IsNaN(got):
		return math.IsNaN(want) && math.IsNaN(got)
	case math.IsInf(want, 0) || math.IsInf(got, 0):
		return got == want
	}
	return math.Abs(got-want) <= tol
}

func loadCohort(t *testing.T, name string) []Observation {
	t.Helper()
	var obs []Observation
	for _, row := range readTable(t, filepath.Join("testdata", "cohorts", name+".csv")) {
		obs = append(obs, Observation{Time: num(t, row["time"]), Event: row["status"] == "1"})
	}
	return obs
}

// fitFor fits cohort name the way R fitted it for fixture fit: "km95", "km90" (the outcome
// curve at 95% or 90%) or "reverse95" (censoring as the event).
func fitFor(t *testing.T, name, fit string) Curve {
	t.Helper()
	obs := loadCohort(t, name)
	level := map[string]float64{"km95": 0.95, "km90": 0.90, "reverse95": 0.95}[fit]
	if level == 0 {
		t.Fatalf("unknown fit %q", fit)
	}
	if strings.HasPrefix(fit, "reverse") {
		for i := range obs {
			obs[i].Event = !obs[i].Event
		}
	}
	return KaplanMeier(obs, level)
}

// fixtures lists the per-fit files of a kind ("curves" or "landmarks") as (cohort, fit) pairs.
func fixtures(t *testing.T, kind string) [][2]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "r", kind, "*.csv"))
	if err != nil {
		t.Fatal(err)
	}
	// A missing fixture directory must fail, not pass vacuously.
	if len(paths) < 30 {
		t.Fatalf("only %d %s fixtures in testdata/r/%s: run `make fixtures`", len(paths), kind, kind)
	}
	var out [][2]string
	for _, p := range paths {
		name, fit, ok := strings.Cut(strings.TrimSuffix(filepath.Base(p), ".csv"), ".")
		if !ok {
			t.Fatalf("unexpected fixture name %s", p)
		}
		out = append(out, [2]string{name, fit})
	}
	return out
}

// checkStep compares one Step with one row of an R summary table.
func checkStep(t *testing.T, where string, got Step, want map[string]string) {
	t.Helper()
	ints := []struct {
		col string
		got int
	}{{"n.risk", got.AtRisk}, {"n.event", got.Events}, {"n.censor", got.Censored}}
	for _, c := range ints {
		if w := num(t, want[c.col]); float64(c.got) != w {
			t.Errorf("%s: %s = %d, R %v", where, c.col, c.got, w)
		}
	}
	floats := []struct {
		col string
		got float64
	}{
		{"time", got.Time}, {"surv", got.Survival}, {"std.err", got.StdErr},
		{"lower", got.Lower}, {"upper", got.Upper},
	}
	if _, ok := want["logse"]; ok {
		floats = append(floats, struct {
			col string
			got float64
		}{"logse", got.LogStdErr})
	}
	for _, c := range floats {
		if w := num(t, want[c.col]); !same(c.got, w) {
			t.Errorf("%s: %s = %.17g, R %.17g", where, c.col, c.got, w)
		}
	}
}

func TestKaplanMeierCurvesMatchR(t *testing.T) {
	for _, f := range fixtures(t, "curves") {
		name, fit := f[0], f[1]
		t.Run(name+"."+fit, func(t *testing.T) {
			want := readTable(t, filepath.Join("testdata", "r", "curves", name+"."+fit+".csv"))
			c := fitFor(t, name, fit)
			if len(c.Steps) != len(want) {
				t.Fatalf("%d steps, R has %d", len(c.Steps), len(want))
			}
			for i, row := range want {
				checkStep(t, fmt.Sprintf("step %d", i), c.Steps[i], row)
			}
		})
	}
}

func TestLandmarksMatchR(t *testing.T) {
	for _, f := range fixtures(t, "landmarks") {
		name, fit := f[0], f[1]
		t.Run(name+"."+fit, func(t *testing.T) {
			want := readTable(t, filepath.Join("testdata", "r", "landmarks", name+"."+fit+".csv"))
			c := fitFor(t, name, fit)
			times := make([]float64, len(want))
			for i, row := range want {
				times[i] = num(t, row["time"])
			}
			// Reversed, to check Landmarks sorts its times as R does.
			rev := slices.Clone(times)
			slices.Reverse(rev)
			got := c.Landmarks(rev...)
			if len(got) != len(want) {
				t.Fatalf("%d landmarks, R has %d", len(got), len(want))
			}
			for i, row := range want {
				where := fmt.Sprintf("t=%v", times[i])
				checkStep(t, where, got[i], row)
				s, lo, up := c.At(times[i])
				if !same(s, num(t, row["surv"])) || !same(lo, num(t, row["lower"])) || !same(up, num(t, row["upper"])) {
					t.Errorf("%s: At = %v, %v, %v; R %s, %s, %s", where, s, lo, up, row["surv"], row["lower"], row["upper"])
				}
			}
		})
	}
}

func TestQuantilesMatchR(t *testing.T) {
	rows := readTable(t, filepath.Join("testdata", "r", "quantiles.csv"))
	if len(rows) < 100 {
		t.Fatalf("only %d quantile rows", len(rows))
	}
	curves := map[string]Curve{}
	for _, row := range rows {
		key := row["cohort"] + "." + row["fit"]
		c, ok := curves[key]
		if !ok {
			c = fitFor(t, row["cohort"], row["fit"])
			curves[key] = c
		}
		p := num(t, row["p"])
		e := c.Quantile(p)
		q, lo, up := e.Estimate, e.Lower, e.Upper
		wq, wlo, wup := num(t, row["quantile"]), num(t, row["lower"]), num(t, row["upper"])
		if !same(q, wq) || !same(lo, wlo) || !same(up, wup) {
			t.Errorf("%s Quantile(%v) = %v (%v, %v); R %v (%v, %v)", key, p, q, lo, up, wq, wlo, wup)
		}
	}
}

func TestMediansMatchR(t *testing.T) {
	rows := readTable(t, filepath.Join("testdata", "r", "medians.csv"))
	if len(rows) < 30 {
		t.Fatalf("only %d median rows", len(rows))
	}
	for _, row := range rows {
		key := row["cohort"] + "." + row["fit"]
		c := fitFor(t, row["cohort"], row["fit"])
		lv := num(t, row["level"])
		if c.Level != lv {
			t.Errorf("%s: level %v, R %v", key, c.Level, lv)
		}
		if n, ev := num(t, row["n"]), num(t, row["events"]); float64(c.N) != n || float64(c.Events) != ev {
			t.Errorf("%s: N, Events = %d, %d; R %v, %v", key, c.N, c.Events, n, ev)
		}
		m, lo, up := unpack(c.Median(lv))
		wm, wlo, wup := num(t, row["median"]), num(t, row["lower"]), num(t, row["upper"])
		if !same(m, wm) || !same(lo, wlo) || !same(up, wup) {
			t.Errorf("%s Median = %v (%v, %v); R print %v (%v, %v)", key, m, lo, up, wm, wlo, wup)
		}
		// Median rebuilds its limits for any level: a 95% curve asked for a 90% median must
		// give R's 90% answer.
		if lv != 0.95 {
			m, lo, up := unpack(fitFor(t, row["cohort"], "km95").Median(lv))
			if !same(m, wm) || !same(lo, wlo) || !same(up, wup) {
				t.Errorf("%s from the 95%% curve: Median(%v) = %v (%v, %v); R %v (%v, %v)", key, lv, m, lo, up, wm, wlo, wup)
			}
		}
		if row["fit"] == "reverse95" {
			m, lo, up := unpack(MedianFollowUp(loadCohort(t, row["cohort"]), lv))
			if !same(m, wm) || !same(lo, wlo) || !same(up, wup) {
				t.Errorf("%s MedianFollowUp = %v (%v, %v); R %v (%v, %v)", row["cohort"], m, lo, up, wm, wlo, wup)
			}
		}
	}
}

func TestWilsonMatchesR(t *testing.T) {
	rows := readTable(t, filepath.Join("testdata", "r", "wilson.csv"))
	if len(rows) < 100 {
		t.Fatalf("only %d Wilson rows", len(rows))
	}
	for _, row := range rows {
		x, _ := strconv.Atoi(row["x"])
		n, _ := strconv.Atoi(row["n"])
		level := num(t, row["level"])
		lo, up := Wilson(x, n, level)
		if wlo, wup := num(t, row["lower"]), num(t, row["upper"]); !same(lo, wlo) || !same(up, wup) {
			t.Errorf("Wilson(%d, %d, %v) = %v, %v; R %v, %v", x, n, level, lo, up, wlo, wup)
		}
	}
}

// TestTiny10ByHand checks the hand-checkable cohort against fractions worked out on paper, so
// a wrong fixture could not hide a wrong estimator.
func TestTiny10ByHand(t *testing.T) {
	c := KaplanMeier(loadCohort(t, "tiny10"), 0.95)
	want := []struct {
		time                     float64
		atRisk, events, censored int
		surv                     float64
	}{
		{2, 10, 1, 0, 9.0 / 10},
		{3, 9, 0, 1, 9.0 / 10},
		{5, 8, 2, 1, 9.0 / 10 * 6 / 8},
		{8, 5, 1, 0, 0.675 * 4 / 5},
		{11, 4, 0, 1, 0.54},
		{13, 3, 1, 0, 0.54 * 2 / 3},
		{17, 2, 0, 1, 0.36},
		{21, 1, 1, 0, 0},
	}
	if c.N != 10 || c.Events != 6 || len(c.Steps) != len(want) {
		t.Fatalf("N=%d Events=%d steps=%d", c.N, c.Events, len(c.Steps))
	}
	for i, w := range want {
		s := c.Steps[i]
		if s.Time != w.time || s.AtRisk != w.atRisk || s.Events != w.events || s.Censored != w.censored || math.Abs(s.Survival-w.surv) > 1e-12 {
			t.Errorf("step %d = %+v, want %+v", i, s, w)
		}
	}
	// Greenwood at day 5: 1/(10·9) + 2/(8·6).
	if got, want := c.Steps[2].LogStdErr, math.Sqrt(1.0/90+2.0/48); math.Abs(got-want) > 1e-12 {
		t.Errorf("LogStdErr(5) = %v, want %v", got, want)
	}
	if m := c.Median(0.95).Estimate; m != 13 {
		t.Errorf("median %v, want 13", m)
	}
	last := c.Steps[len(c.Steps)-1]
	if !math.IsInf(last.LogStdErr, 1) || !math.IsNaN(last.StdErr) || !math.IsNaN(last.Lower) || !math.IsNaN(last.Upper) {
		t.Errorf("at S = 0: %+v, want LogStdErr +Inf, StdErr, Lower, Upper NaN", last)
	}
}

// TestPrintAndQuantileDisagreeOnAFinalFlatStretch pins down the one place where R's two
// median rules part: S = 0.5 from day 4 to the end of follow-up (day 9).
func TestPrintAndQuantileDisagreeOnAFinalFlatStretch(t *testing.T) {
	c := KaplanMeier(loadCohort(t, "half_flat_end"), 0.95)
	if m := c.Median(0.95).Estimate; m != 4 {
		t.Errorf("Median = %v, want 4 (print.survfit)", m)
	}
	if q := c.Quantile(0.5).Estimate; q != 6.5 {
		t.Errorf("Quantile(0.5) = %v, want 6.5 (quantile.survfit)", q)
	}
	// On a flat stretch that ends with an event both take the midpoint.
	c = KaplanMeier(loadCohort(t, "half_flat_censored"), 0.95)
	m := c.Median(0.95).Estimate
	q := c.Quantile(0.5).Estimate
	if m != 125 || q != 125 {
		t.Errorf("Median, Quantile(0.5) = %v, %v, want 125, 125", m, q)
	}
}

func TestEmptyAndDegenerateInput(t *testing.T) {
	for _, obs := range [][]Observation{nil, {}, {{Time: math.NaN(), Event: true}}} {
		c := KaplanMeier(obs, 0.95)
		if c.N != 0 || c.Events != 0 || len(c.Steps) != 0 {
			t.Errorf("KaplanMeier(%v) = %+v, want empty", obs, c)
		}
		for _, v := range []float64{c.Median(0.95).Estimate, c.Quantile(0.5).Estimate, first(c.At(10))} {
			if !math.IsNaN(v) {
				t.Errorf("empty curve gave %v, want NaN", v)
			}
		}
		if lm := c.Landmarks(365, 730); len(lm) != 2 || !math.IsNaN(lm[0].Survival) || lm[1].AtRisk != 0 {
			t.Errorf("Landmarks on empty curve = %+v", lm)
		}
		if m, lo, up := unpack(MedianFollowUp(obs, 0.95)); !math.IsNaN(m) || !math.IsNaN(lo) || !math.IsNaN(up) {
			t.Errorf("MedianFollowUp(%v) = %v, %v, %v", obs, m, lo, up)
		}
	}

	c := KaplanMeier([]Observation{{10, true}, {20, false}}, 1.5)
	if s := c.Steps[0]; s.Survival != 0.5 || !math.IsNaN(s.Lower) || !math.IsNaN(s.Upper) {
		t.Errorf("invalid level: %+v, want S 0.5 with NaN limits", s)
	}
	for _, p := range []float64{-0.1, 1.1, math.NaN()} {
		if q := c.Quantile(p).Estimate; !math.IsNaN(q) {
			t.Errorf("Quantile(%v) = %v, want NaN", p, q)
		}
	}
	if lm := c.Landmarks(math.Inf(1), math.NaN(), 15); len(lm) != 1 || lm[0].Time != 15 {
		t.Errorf("Landmarks keeps only finite times: %+v", lm)
	}

	for _, tc := range []struct{ x, n int }{{0, 0}, {-1, 5}, {6, 5}, {1, -2}} {
		if lo, up := Wilson(tc.x, tc.n, 0.95); !math.IsNaN(lo) || !math.IsNaN(up) {
			t.Errorf("Wilson(%d, %d) = %v, %v, want NaN, NaN", tc.x, tc.n, lo, up)
		}
	}
	if lo, up := Wilson(3, 10, 0); !math.IsNaN(lo) || !math.IsNaN(up) {
		t.Errorf("Wilson at level 0 = %v, %v, want NaN", lo, up)
	}
}

func first(a, _, _ float64) float64 { return a }

func unpack(e Estimate) (estimate, lower, upper float64) { return e.Estimate, e.Lower, e.Upper }

// TestNaNNeedsNullInJSON documents the contract with the JSON layer: the NaN this package uses
// for R's NA cannot be encoded as it is.
func TestNaNNeedsNullInJSON(t *testing.T) {
	c := KaplanMeier([]Observation{{5, false}, {10, true}, {20, false}}, 0.95)
	if !math.IsNaN(c.Steps[0].Lower) {
		t.Fatalf("S = 1 step should have a NaN lower limit, got %v", c.Steps[0].Lower)
	}
	if _, err := json.Marshal(c.Steps[0]); err == nil {
		t.Error("encoding/json accepted NaN; the JSON layer's conversion to null may no longer be needed")
	}
}

// randomCohort draws a cohort of one of several shapes: continuous times, heavy integer ties,
// many zeros, all censored, all events.
func randomCohort(r *rand.Rand) []Observation {
	n := r.IntN(300)
	shape := r.IntN(5)
	obs := make([]Observation, n)
	for i := range obs {
		var tm float64
		switch shape {
		case 0:
			tm = r.ExpFloat64() * 100
		case 1:
			tm = float64(r.IntN(8))
		default:
			tm = math.Round(r.ExpFloat64() * 200)
		}
		ev := r.Float64() < 0.6
		if shape == 3 {
			ev = false
		} else if shape == 4 {
			ev = true
		}
		obs[i] = Observation{tm, ev}
	}
	return obs
}

// TestCurveProperties checks invariants that hold for any input, on many random cohorts.
func TestCurveProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 500 {
		obs := randomCohort(r)
		c := KaplanMeier(obs, 0.95)
		where := fmt.Sprintf("cohort %d (n=%d)", iter, len(obs))

		events := 0
		for _, o := range obs {
			if o.Event {
				events++
			}
		}
		if c.N != len(obs) || c.Events != events {
			t.Fatalf("%s: N, Events = %d, %d; want %d, %d", where, c.N, c.Events, len(obs), events)
		}

		atRisk, prevS, prevT, sumEvents := len(obs), 1.0, math.Inf(-1), 0
		for i, s := range c.Steps {
			if s.Time <= prevT {
				t.Fatalf("%s: step %d time %v not after %v", where, i, s.Time, prevT)
			}
			if s.AtRisk != atRisk {
				t.Fatalf("%s: step %d at risk %d, bookkeeping says %d", where, i, s.AtRisk, atRisk)
			}
			if s.Events+s.Censored == 0 {
				t.Fatalf("%s: step %d has nothing happening", where, i)
			}
			if s.Survival > prevS || s.Survival < 0 {
				t.Fatalf("%s: step %d S = %v after %v", where, i, s.Survival, prevS)
			}
			if (s.Events == 0) != (s.Survival == prevS) {
				t.Fatalf("%s: step %d S changes iff there are events: %+v after %v", where, i, s, prevS)
			}
			defined := s.Survival > 0 && s.Survival < 1
			if defined != !math.IsNaN(s.Lower) || defined != !math.IsNaN(s.Upper) {
				t.Fatalf("%s: step %d limits %v, %v at S = %v", where, i, s.Lower, s.Upper, s.Survival)
			}
			if defined && !(0 < s.Lower && s.Lower <= s.Survival && s.Survival <= s.Upper && s.Upper < 1) {
				t.Fatalf("%s: step %d not 0 < %v <= %v <= %v < 1", where, i, s.Lower, s.Survival, s.Upper)
			}
			atRisk -= s.Events + s.Censored
			sumEvents += s.Events
			prevS, prevT = s.Survival, s.Time
		}
		if atRisk != 0 || sumEvents != events {
			t.Fatalf("%s: %d left at risk, %d events counted", where, atRisk, sumEvents)
		}

		// The step function and the landmarks agree with the steps, and the landmark counts
		// add up to the whole cohort.
		if len(c.Steps) > 0 {
			last := c.Steps[len(c.Steps)-1]
			var times []float64
			for _, s := range c.Steps {
				times = append(times, s.Time, s.Time+0.25)
				if got, _, _ := c.At(s.Time); got != s.Survival {
					t.Fatalf("%s: At(%v) = %v, step says %v", where, s.Time, got, s.Survival)
				}
			}
			lm := c.Landmarks(append(times, last.Time+1000)...)
			ev, cens := 0, 0
			for _, l := range lm {
				ev += l.Events
				cens += l.Censored
			}
			if ev != c.Events || ev+cens != c.N || lm[len(lm)-1].AtRisk != 0 {
				t.Fatalf("%s: landmarks count %d events, %d censored, %d at risk at the end", where, ev, cens, lm[len(lm)-1].AtRisk)
			}
		}

		// Quantiles grow with p, the median lies within its limits, and the reverse curve's
		// median is a follow-up time that was observed (or a midpoint of two).
		prevQ := math.Inf(-1)
		for _, p := range []float64{0.1, 0.25, 0.5, 0.75, 0.9} {
			q, lo, up := unpack(c.Quantile(p))
			if math.IsNaN(q) {
				prevQ = math.Inf(1)
				continue
			}
			if q < prevQ {
				t.Fatalf("%s: Quantile(%v) = %v below the previous %v", where, p, q, prevQ)
			}
			if (!math.IsNaN(lo) && lo > q) || (!math.IsNaN(up) && up < q) {
				t.Fatalf("%s: Quantile(%v) = %v outside (%v, %v)", where, p, q, lo, up)
			}
			prevQ = q
		}
		if m, lo, up := unpack(c.Median(0.95)); !math.IsNaN(m) && ((!math.IsNaN(lo) && lo > m) || (!math.IsNaN(up) && up < m)) {
			t.Fatalf("%s: median %v outside (%v, %v)", where, m, lo, up)
		}
	}
}

func TestWilsonProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		n := 1 + r.IntN(3000)
		x := r.IntN(n + 1)
		level := []float64{0.8, 0.9, 0.95, 0.99}[r.IntN(4)]
		lo, up := Wilson(x, n, level)
		p := float64(x) / float64(n)
		if !(0 <= lo && lo <= p && p <= up && up <= 1) {
			t.Fatalf("Wilson(%d, %d, %v) = %v, %v does not bracket %v inside [0, 1]", x, n, level, lo, up, p)
		}
		// Failures out of n are the mirror image of successes.
		mlo, mup := Wilson(n-x, n, level)
		if math.Abs(lo-(1-mup)) > 1e-12 || math.Abs(up-(1-mlo)) > 1e-12 {
			t.Fatalf("Wilson(%d, %d) = %v, %v not the mirror of %v, %v", x, n, lo, up, mlo, mup)
		}
		// A wider level gives a wider interval.
		wlo, wup := Wilson(x, n, 0.999)
		if wlo > lo || wup < up {
			t.Fatalf("Wilson(%d, %d) at 0.999 = %v, %v narrower than at %v: %v, %v", x, n, wlo, wup, level, lo, up)
		}
	}
}

func BenchmarkKaplanMeier100k(b *testing.B) {
	r := rand.New(rand.NewPCG(100, 0))
	obs := make([]Observation, 100_000)
	for i := range obs {
		obs[i] = Observation{Time: math.Round(r.ExpFloat64() * 400), Event: r.Float64() < 0.6}
	}
	b.ReportAllocs()
	for b.Loop() {
		c := KaplanMeier(obs, 0.95)
		if len(c.Steps) == 0 {
			b.Fatal("no steps")
		}
	}
}

// BenchmarkLogRank100k compares 21 groups of 100,000 observations in all, as a survival report
// of a large registry grouped by product does.
func BenchmarkLogRank100k(b *testing.B) {
	r := rand.New(rand.NewPCG(100, 1))
	groups := make([][]Observation, 21)
	for i := range 100_000 {
		g := i % len(groups)
		groups[g] = append(groups[g], Observation{Time: math.Round(r.ExpFloat64() * float64(300+20*g)), Event: r.Float64() < 0.6})
	}
	b.ReportAllocs()
	for b.Loop() {
		if lr := LogRankTest(groups); lr.DF != len(groups)-1 {
			b.Fatalf("df %d", lr.DF)
		}
	}
}
