// Command gencohorts writes the deterministic cohorts that registry/stats is checked against.
//
// The cohorts are inputs only: testdata/reference.R reads them and has R's survival package
// compute the expected curves, medians and intervals, so the Go code is compared with an
// independent implementation rather than with itself. Every random cohort comes from a
// math/rand/v2 PCG source with a fixed seed, so running this program again rewrites the same
// files byte for byte (on the same Go release). Run it from anywhere in the repository, or
// through `make fixtures`, which also reruns R.
//
// Files written (under -dir, by default registry/stats/testdata of the module the working
// directory is in):
//
//	cohorts/NAME.csv   columns time,status: time in whole days, status 1 = event, 0 = censored
//	wilson_cases.csv   columns x,n: successes and trials for the Wilson interval checks
//	competing/NAME.csv columns time,cause,group: cause 0 = censored, 1 = relapse or
//	                   progression, 2 = death without it; group a label for the log-rank test
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
)

// obs is one patient: follow-up time in days and whether it ended in the event.
type obs struct {
	time  float64
	event bool
}

func main() {
	flagDir := flag.String("dir", "", "registry/stats/testdata, to write cohorts/ and wilson_cases.csv into (default: found from the working directory)")
	flag.Parse()

	dir, err := testdataDir(*flagDir)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cohorts"), 0o755); err != nil {
		log.Fatal(err)
	}
	for _, c := range cohorts() {
		if err := writeCohort(filepath.Join(dir, "cohorts", c.name+".csv"), c.obs); err != nil {
			log.Fatal(err)
		}
	}
	if err := writeWilson(filepath.Join(dir, "wilson_cases.csv")); err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "competing"), 0o755); err != nil {
		log.Fatal(err)
	}
	for _, c := range competingCohorts() {
		if err := writeCSV(filepath.Join(dir, "competing", c.name+".csv"), c.rows()); err != nil {
			log.Fatal(err)
		}
	}
}

// crObs is one patient with competing events: time, cause (0 censored) and group.
type crObs struct {
	time  float64
	cause int
	group string
}

type crCohort struct {
	name string
	obs  []crObs
}

func (c crCohort) rows() [][]string {
	rows := [][]string{{"time", "cause", "group"}}
	for _, o := range c.obs {
		rows = append(rows, []string{strconv.FormatFloat(o.time, 'g', -1, 64), strconv.Itoa(o.cause), o.group})
	}
	return rows
}

// competingCohorts are the inputs of the cumulative incidence (Aalen-Johansen, Gray's
// variance) and log-rank checks; each pins down a convention.
func competingCohorts() []crCohort {
	return []crCohort{
		// Hand-checkable, with a relapse and a death on the same day (day 5) and censorings
		// tied with events (day 8), two groups.
		{"cr_tiny", crTriples("a", 2, 1, 3, 0, 5, 1, 5, 2, 8, 2, 8, 0, 11, 1, 13, 0)},
		// Heavy ties over a few days, three groups, several events of both causes per day.
		{"cr_ties", crRandom(rand.New(rand.NewPCG(21, 1)), 150, 30, []string{"a", "b", "c"}, true)},
		// The last patients all relapse: the event-free curve reaches 0, where the variance
		// formula's 1/S(t) terms are dropped.
		{"cr_last_all", append(crTriples("a", 4, 2, 6, 0, 9, 1, 12, 2), crTriples("b", 15, 1, 15, 1, 20, 1)...)},
		// A CAR-T registry: early relapses, non-relapse deaths, a cured fraction, accrual and
		// administrative censoring, three products.
		{"cr_cart600", crCart(rand.New(rand.NewPCG(600, 2024)), 600)},
	}
}

// crTriples builds a cohort from (time, cause) pairs, alternating the group between the given
// one and "z" so that every cohort has two groups at least.
func crTriples(group string, v ...float64) []crObs {
	var out []crObs
	for i := 0; i+1 < len(v); i += 2 {
		g := group
		if (i/2)%2 == 1 {
			g = "z"
		}
		out = append(out, crObs{v[i], int(v[i+1]), g})
	}
	return out
}

func crRandom(r *rand.Rand, n, days int, groups []string, ties bool) []crObs {
	out := make([]crObs, n)
	for i := range out {
		t := float64(r.IntN(days) + 1)
		if !ties {
			t += r.Float64()
		}
		out[i] = crObs{t, r.IntN(3), groups[r.IntN(len(groups))]}
	}
	return out
}

// crCart: products differ in relapse hazard so the log-rank test has something to find.
func crCart(r *rand.Rand, n int) []crObs {
	products := []string{"axi-cel", "tisa-cel", "liso-cel"}
	relapseMedian := map[string]float64{"axi-cel": 300, "tisa-cel": 180, "liso-cel": 360}
	out := make([]crObs, n)
	for i := range out {
		p := products[r.IntN(len(products))]
		admin := 5*365 - r.Float64()*3*365
		relapse := math.Inf(1)
		if r.Float64() > 0.4 {
			relapse = expDays(r, relapseMedian[p])
		}
		nrm := expDays(r, 15*365)
		lost := expDays(r, 10*365)
		t := math.Round(min(relapse, nrm, admin, lost))
		cause := 0
		switch {
		case relapse <= min(nrm, admin, lost):
			cause = 1
		case nrm <= min(admin, lost):
			cause = 2
		}
		out[i] = crObs{t, cause, p}
	}
	return out
}

// testdataDir returns the directory to write into: dir when given, else registry/stats/testdata
// under the nearest directory upwards from the working directory that holds go.mod. Either way
// it must already hold reference.R, the script that reads what is written: a path resolved
// against the wrong working directory then fails, rather than growing a second testdata tree
// inside the first that the tests never read.
func testdataDir(dir string) (string, error) {
	if dir == "" {
		root, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for {
			if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(root)
			if parent == root {
				return "", fmt.Errorf("no go.mod above the working directory: run inside the repository or give -dir")
			}
			root = parent
		}
		dir = filepath.Join(root, "registry", "stats", "testdata")
	}
	if _, err := os.Stat(filepath.Join(dir, "reference.R")); err != nil {
		abs, _ := filepath.Abs(dir)
		return "", fmt.Errorf("%s has no reference.R: it is not the repository's registry/stats/testdata", abs)
	}
	return dir, nil
}

type cohort struct {
	name string
	obs  []obs
}

// cohorts lists every fixture cohort. Each one exists to pin down one convention of R's
// survfit; the comment says which.
func cohorts() []cohort {
	return []cohort{
		// Hand-checkable: S = 0.9, 0.675, 0.54, 0.36, 0 at days 2, 5, 8, 13, 21; day 5 has two
		// events and a censoring at the same time; the last observation is an event.
		{"tiny10", pairs(2, 1, 3, 0, 5, 1, 5, 1, 5, 0, 8, 1, 11, 0, 13, 1, 17, 0, 21, 1)},
		// Heavy ties on a handful of integer days, events and censorings on the same days.
		{"ties_small", tied(rand.New(rand.NewPCG(11, 1)), 40, 1, 6, 0.5)},
		// Heavy ties on days 0..30, including day 0.
		{"ties_heavy", tied(rand.New(rand.NewPCG(12, 1)), 300, 0, 30, 0.55)},
		// Events and censorings at time 0 (infusion-day deaths, withdrawn consent).
		{"time_zero", timeZero(rand.New(rand.NewPCG(13, 1)))},
		// The largest time is an event, so S reaches exactly 0 and its interval is NA in R.
		{"last_event", lastEvent(rand.New(rand.NewPCG(14, 1)))},
		// Ten deaths on days 1..10, no censoring: S = 0.5 on [5, 6), median 5.5.
		{"half_flat", pairs(1, 1, 2, 1, 3, 1, 4, 1, 5, 1, 6, 1, 7, 1, 8, 1, 9, 1, 10, 1)},
		// S = 0.5 exactly from day 100, censorings inside the flat stretch, next death on day
		// 150: the median is the midpoint of 100 and the next *event* time, 125.
		{"half_flat_censored", halfFlatCensored()},
		// S = 0.5 from day 4 to the end of follow-up (only censorings after it): here R's
		// print(survfit) and quantile.survfit disagree (4 against (4 + 9) / 2).
		{"half_flat_end", pairs(1, 1, 2, 1, 3, 1, 4, 1, 5, 0, 6, 0, 7, 0, 9, 0)},
		// Median not reached: S stays well above 0.5.
		{"not_reached", notReached(rand.New(rand.NewPCG(15, 1)))},
		// Censorings at time 0 and nothing else there: the curve starts at 0 with S = 1 and NA
		// limits, so R's summary(times = 0) reads that row (limits NA) instead of adding its
		// own time-0 row (limits 1).
		{"censored_at_zero", pairs(0, 0, 0, 0, 5, 1, 8, 0, 9, 1, 12, 1, 15, 0)},
		// Censorings before the first event: S = 1 steps, whose interval is NA in R.
		{"early_censoring", earlyCensoring(rand.New(rand.NewPCG(16, 1)))},
		// No event at all: a flat curve at 1, every interval NA, median NA.
		{"no_events", pairs(3, 0, 10, 0, 10, 0, 45, 0, 90, 0, 180, 0, 180, 0, 365, 0)},
		// Everyone dies on the same day: one step straight to 0.
		{"all_same_day", pairs(10, 1, 10, 1, 10, 1, 10, 1, 10, 1)},
		{"single_event", pairs(30, 1)},
		{"single_censored", pairs(30, 0)},
		// Realistic CAR-T registries.
		{"cart500", cart(rand.New(rand.NewPCG(500, 2024)), 500)},
		{"cart5000", cart(rand.New(rand.NewPCG(5000, 2024)), 5000)},
	}
}

// pairs builds a cohort from (time, status) pairs written out by hand.
func pairs(v ...float64) []obs {
	out := make([]obs, 0, len(v)/2)
	for i := 0; i+1 < len(v); i += 2 {
		out = append(out, obs{v[i], v[i+1] == 1})
	}
	return out
}

// tied draws n integer times uniformly in [lo, hi], each an event with probability pEvent.
func tied(r *rand.Rand, n, lo, hi int, pEvent float64) []obs {
	out := make([]obs, n)
	for i := range out {
		out[i] = obs{float64(lo + r.IntN(hi-lo+1)), r.Float64() < pEvent}
	}
	return out
}

func expDays(r *rand.Rand, median float64) float64 {
	return r.ExpFloat64() * median / math.Ln2
}

func timeZero(r *rand.Rand) []obs {
	out := pairs(0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1)
	for range 42 {
		out = append(out, obs{math.Round(expDays(r, 120)), r.Float64() < 0.7})
	}
	return out
}

func lastEvent(r *rand.Rand) []obs {
	var out []obs
	for range 24 {
		out = append(out, obs{1 + math.Round(expDays(r, 60)), r.Float64() < 0.6})
	}
	maxT := 0.0
	for _, o := range out {
		maxT = max(maxT, o.time)
	}
	return append(out, obs{maxT + 7, true})
}

func halfFlatCensored() []obs {
	var out []obs
	for d := 10.0; d <= 100; d += 10 {
		out = append(out, obs{d, true}) // 10 deaths among 20: S(100) = 10/20
	}
	out = append(out, pairs(110, 0, 120, 0, 150, 1, 150, 0, 200, 1, 240, 0, 300, 1, 310, 0, 400, 0, 420, 1)...)
	return out
}

func notReached(r *rand.Rand) []obs {
	out := make([]obs, 200)
	for i := range out {
		t := math.Round(expDays(r, 3000))
		c := math.Round(365 + r.Float64()*730)
		out[i] = obs{min(t, c), t <= c}
	}
	return out
}

func earlyCensoring(r *rand.Rand) []obs {
	out := pairs(1, 0, 2, 0, 2, 0, 4, 0)
	for range 26 {
		out = append(out, obs{5 + math.Round(expDays(r, 90)), r.Float64() < 0.65})
	}
	return out
}

// cart simulates a CAR-T registry: accrual spread over three years, a data cut-off five years
// after the first infusion (administrative censoring), a cured fraction with a low hazard and
// early relapses/deaths with a median of about 200 days, and some patients lost to follow-up.
// Times are whole days since infusion, so ties are common, as in real registry data.
func cart(r *rand.Rand, n int) []obs {
	out := make([]obs, n)
	for i := range out {
		infusion := r.Float64() * 3 * 365
		admin := 5*365 - infusion
		var event float64
		if r.Float64() < 0.35 {
			event = expDays(r, 10*365)
		} else {
			event = expDays(r, 200)
		}
		lost := expDays(r, 8*365)
		t := math.Round(min(event, admin, lost))
		out[i] = obs{t, event <= admin && event <= lost}
	}
	return out
}

func writeCohort(path string, cohort []obs) error {
	rows := [][]string{{"time", "status"}}
	for _, o := range cohort {
		status := "0"
		if o.event {
			status = "1"
		}
		rows = append(rows, []string{strconv.FormatFloat(o.time, 'g', -1, 64), status})
	}
	return writeCSV(path, rows)
}

// writeWilson writes the (x, n) pairs: the edges (0/n, n/n, n = 1), small and large n, and a
// few random ones.
func writeWilson(path string) error {
	cases := [][2]int{
		{0, 1}, {1, 1}, {0, 2}, {1, 2}, {2, 2}, {0, 10}, {3, 10}, {10, 10},
		{5, 20}, {17, 23}, {37, 100}, {0, 500}, {1, 500}, {250, 500}, {499, 500}, {500, 500},
		{123, 4567}, {4999, 5000}, {1, 1000000}, {999999, 1000000},
	}
	r := rand.New(rand.NewPCG(42, 7))
	for range 30 {
		n := 1 + int(math.Exp(r.Float64()*math.Log(5000)))
		cases = append(cases, [2]int{r.IntN(n + 1), n})
	}
	rows := [][]string{{"x", "n"}}
	for _, c := range cases {
		rows = append(rows, []string{strconv.Itoa(c[0]), strconv.Itoa(c[1])})
	}
	return writeCSV(path, rows)
}

func writeCSV(path string, rows [][]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if err := w.WriteAll(rows); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
