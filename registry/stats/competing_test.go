package stats

import (
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// competingCohort reads testdata/competing/NAME.csv: the observations and their groups.
func competingCohort(t *testing.T, name string) ([]CompetingObservation, []string) {
	t.Helper()
	var obs []CompetingObservation
	var groups []string
	for _, row := range readTable(t, filepath.Join("testdata", "competing", name+".csv")) {
		cause, err := strconv.Atoi(row["cause"])
		if err != nil {
			t.Fatal(err)
		}
		obs = append(obs, CompetingObservation{Time: num(t, row["time"]), Cause: cause})
		groups = append(groups, row["group"])
	}
	return obs, groups
}

var competingNames = []string{"cr_tiny", "cr_ties", "cr_last_all", "cr_cart600"}

// The Aalen-Johansen estimates, Gray's variances and the log(-log) limits agree with
// cmprsk::cuminc and timepoints() at every time R was asked about (event and censoring
// times, between them, and before the first).
func TestCumulativeIncidenceMatchesR(t *testing.T) {
	for _, name := range competingNames {
		obs, _ := competingCohort(t, name)
		inc := CumulativeIncidence(obs, 2)
		rows := readTable(t, filepath.Join("testdata", "r", "competing", name+".csv"))
		if len(rows) == 0 {
			t.Fatalf("%s: no reference rows", name)
		}
		for _, row := range rows {
			cause, _ := strconv.Atoi(row["cause"])
			at := num(t, row["time"])
			est, lower, upper := inc.At(at, cause, 0.95)
			v := inc.variance(at, cause)
			for _, c := range []struct {
				what      string
				got, want float64
			}{{"estimate", est, num(t, row["est"])}, {"variance", v, num(t, row["var"])},
				{"lower", lower, num(t, row["lower"])}, {"upper", upper, num(t, row["upper"])}} {
				if !same(c.got, c.want) {
					t.Errorf("%s cause %d at %v: %s %v, R %v", name, cause, at, c.what, c.got, c.want)
				}
			}
		}
	}
}

// variance is the Gray variance at t, for comparing with R (0 before the first step).
func (inc Incidence) variance(t float64, cause int) float64 {
	v := 0.0
	for _, s := range inc.Steps {
		if s.Time > t {
			break
		}
		v = s.Variance[cause-1]
	}
	return v
}

// By hand, cr_tiny: eight patients; day 2 relapse (F1 = 1/8); day 3 censored; day 5 a relapse
// and a death among 6 (S(5−) = 7/8, so each adds 7/8 · 1/6); day 8 a death among 4 and a
// censoring (S(8−) = 7/8 · 4/6); day 11 a relapse among 2.
func TestCumulativeIncidenceByHand(t *testing.T) {
	obs, _ := competingCohort(t, "cr_tiny")
	inc := CumulativeIncidence(obs, 2)
	s5 := 7.0 / 8
	s8 := s5 * 4 / 6
	s11 := s8 * 3 / 4
	want := map[float64][2]float64{
		2:  {1.0 / 8, 0},
		5:  {1.0/8 + s5/6, s5 / 6},
		8:  {1.0/8 + s5/6, s5/6 + s8/4},
		11: {1.0/8 + s5/6 + s11/2, s5/6 + s8/4},
	}
	for at, w := range want {
		for cause := 1; cause <= 2; cause++ {
			if got, _, _ := inc.At(at, cause, 0.95); math.Abs(got-w[cause-1]) > 1e-12 {
				t.Errorf("F%d(%v) = %v, want %v", cause, at, got, w[cause-1])
			}
		}
	}
	// Every patient ends in exactly one state: the incidences and the event-free
	// probability add up to 1 at every step.
	free := 1.0
	for _, s := range inc.Steps {
		free *= float64(s.AtRisk-s.Events[0]-s.Events[1]) / float64(s.AtRisk)
		if sum := s.Incidence[0] + s.Incidence[1] + free; math.Abs(sum-1) > 1e-12 {
			t.Errorf("day %v: F1 + F2 + S = %v", s.Time, sum)
		}
	}
	if inc.N != 8 || inc.Events[0] != 3 || inc.Events[1] != 2 {
		t.Errorf("N %d events %v", inc.N, inc.Events)
	}
}

// The log-rank statistic, its degrees of freedom and p-value, and each group's observed and
// expected events agree with survival::survdiff.
func TestLogRankMatchesR(t *testing.T) {
	want := map[string]map[string]string{}
	for _, row := range readTable(t, filepath.Join("testdata", "r", "logrank.csv")) {
		want[row["cohort"]] = row
	}
	groupRows := map[string][]map[string]string{}
	for _, row := range readTable(t, filepath.Join("testdata", "r", "logrank_groups.csv")) {
		groupRows[row["cohort"]] = append(groupRows[row["cohort"]], row)
	}
	for _, name := range competingNames {
		obs, groups := competingCohort(t, name)
		// R orders groups by their labels (factor levels); so does this.
		labels := map[string]bool{}
		for _, g := range groups {
			labels[g] = true
		}
		var order []string
		for g := range labels {
			order = append(order, g)
		}
		sort.Strings(order)
		index := map[string]int{}
		for i, g := range order {
			index[g] = i
		}
		byGroup := make([][]Observation, len(order))
		for i, o := range obs {
			byGroup[index[groups[i]]] = append(byGroup[index[groups[i]]], Observation{Time: o.Time, Event: o.Cause > 0})
		}
		got := LogRankTest(byGroup)
		w := want[name]
		if w == nil {
			t.Fatalf("%s: no reference", name)
		}
		if !same(got.ChiSquare, num(t, w["chisq"])) || strconv.Itoa(got.DF) != w["df"] || !same(got.P, num(t, w["p"])) {
			t.Errorf("%s: chisq %v df %d p %v, R %s %s %s", name, got.ChiSquare, got.DF, got.P, w["chisq"], w["df"], w["p"])
		}
		for _, row := range groupRows[name] {
			i := index[row["group"]]
			if !same(got.Observed[i], num(t, row["obs"])) || !same(got.Expected[i], num(t, row["exp"])) {
				t.Errorf("%s group %s: observed %v expected %v, R %s %s", name, row["group"], got.Observed[i], got.Expected[i], row["obs"], row["exp"])
			}
		}
	}
}

func TestLogRankDegenerate(t *testing.T) {
	if got := LogRankTest(nil); got.DF != 0 || !math.IsNaN(got.P) {
		t.Errorf("no groups: %+v", got)
	}
	one := []Observation{{Time: 1, Event: true}, {Time: 2}}
	if got := LogRankTest([][]Observation{one}); got.DF != 0 || !math.IsNaN(got.P) {
		t.Errorf("one group: %+v", got)
	}
	// Identical groups: nothing to find.
	if got := LogRankTest([][]Observation{one, one}); got.DF != 1 || math.Abs(got.ChiSquare) > 1e-12 || math.Abs(got.P-1) > 1e-12 {
		t.Errorf("identical groups: %+v", got)
	}
}
