package stats

import (
	"math"
	"slices"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat/distuv"
)

// LogRank is the result of a log-rank test of equal survival across groups.
type LogRank struct {
	Observed, Expected []float64 // events in each group, and under equal hazards
	ChiSquare          float64
	DF                 int     // groups with any expected events, minus one
	P                  float64 // NaN when DF is 0: there is nothing to compare
}

// LogRankTest compares the survival of groups with the log-rank test, as R's
// survival::survdiff(Surv(time, status) ~ group) with rho = 0: at each event time the
// events are shared out in proportion to the numbers at risk, and the differences between
// observed and expected events are weighed with the hypergeometric variance. Groups with no
// expected events take no part in the statistic (survdiff drops them too); one of the rest
// is left out of the quadratic form, whose degrees of freedom are their number minus one.
func LogRankTest(groups [][]Observation) LogRank {
	type record struct {
		time  float64
		event bool
		group int
	}
	var all []record
	for g, obs := range groups {
		for _, o := range obs {
			if !math.IsNaN(o.Time) {
				all = append(all, record{o.Time, o.Event, g})
			}
		}
	}
	// The order within a time does not matter: its events and departures are summed as one.
	slices.SortFunc(all, func(a, b record) int {
		switch {
		case a.time < b.time:
			return -1
		case a.time > b.time:
			return 1
		}
		return 0
	})
	k := len(groups)
	res := LogRank{Observed: make([]float64, k), Expected: make([]float64, k), P: math.NaN()}
	v := mat.NewSymDense(max(k, 1), nil)
	atRisk := make([]float64, k)
	for _, r := range all {
		atRisk[r.group]++
	}
	total := float64(len(all))
	died := make([]float64, k)
	for i := 0; i < len(all); {
		j := i
		clear(died)
		leaving := make([]float64, k)
		events := 0.0
		for ; j < len(all) && all[j].time == all[i].time; j++ {
			leaving[all[j].group]++
			if all[j].event {
				died[all[j].group]++
				events++
			}
		}
		if events > 0 {
			for g := range k {
				res.Observed[g] += died[g]
				res.Expected[g] += events * atRisk[g] / total
			}
			if total > 1 {
				w := events * (total - events) / (total - 1)
				for g := range k {
					for h := g; h < k; h++ {
						cov := -atRisk[g] * atRisk[h] / (total * total)
						if g == h {
							cov += atRisk[g] / total
						}
						v.SetSym(g, h, v.At(g, h)+w*cov)
					}
				}
			}
		}
		for g := range k {
			atRisk[g] -= leaving[g]
			total -= leaving[g]
		}
		i = j
	}
	var kept []int
	for g := range k {
		if res.Expected[g] > 0 {
			kept = append(kept, g)
		}
	}
	if len(kept) < 2 {
		return res
	}
	kept = kept[1:]
	n := len(kept)
	diff := mat.NewVecDense(n, nil)
	sub := mat.NewSymDense(n, nil)
	for a, g := range kept {
		diff.SetVec(a, res.Observed[g]-res.Expected[g])
		for b := a; b < n; b++ {
			sub.SetSym(a, b, v.At(g, kept[b]))
		}
	}
	var x mat.VecDense
	if err := x.SolveVec(sub, diff); err != nil {
		return res
	}
	res.ChiSquare = mat.Dot(diff, &x)
	res.DF = n
	res.P = distuv.ChiSquared{K: float64(n)}.Survival(res.ChiSquare)
	return res
}
