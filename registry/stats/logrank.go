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
	// Each group's event and censoring times, sorted as plain numbers, are walked together
	// time by time: sorting the pooled observations as structs was most of the test's time.
	k := len(groups)
	type times struct {
		events, censors []float64
		e, c            int // the next of each not yet passed
	}
	byGroup := make([]times, k)
	res := LogRank{Observed: make([]float64, k), Expected: make([]float64, k), P: math.NaN()}
	v := mat.NewSymDense(max(k, 1), nil)
	atRisk := make([]float64, k)
	total := 0.0
	for g, obs := range groups {
		gt := &byGroup[g]
		for _, o := range obs {
			switch {
			case math.IsNaN(o.Time):
			case o.Event:
				gt.events = append(gt.events, o.Time)
			default:
				gt.censors = append(gt.censors, o.Time)
			}
		}
		slices.Sort(gt.events)
		slices.Sort(gt.censors)
		atRisk[g] = float64(len(gt.events) + len(gt.censors))
		total += atRisk[g]
	}
	died, leaving := make([]float64, k), make([]float64, k)
	for {
		// The next time any group has an event or a censoring at.
		t, found := math.Inf(1), false
		for g := range byGroup {
			gt := &byGroup[g]
			if gt.e < len(gt.events) && (!found || gt.events[gt.e] < t) {
				t, found = gt.events[gt.e], true
			}
			if gt.c < len(gt.censors) && (!found || gt.censors[gt.c] < t) {
				t, found = gt.censors[gt.c], true
			}
		}
		if !found {
			break
		}
		clear(died)
		clear(leaving)
		events := 0.0
		for g := range byGroup {
			gt := &byGroup[g]
			for ; gt.e < len(gt.events) && gt.events[gt.e] == t; gt.e++ {
				died[g]++
				leaving[g]++
				events++
			}
			for ; gt.c < len(gt.censors) && gt.censors[gt.c] == t; gt.c++ {
				leaving[g]++
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
