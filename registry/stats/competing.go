package stats

import (
	"cmp"
	"math"
	"slices"
)

// CompetingObservation is one patient's follow-up where more than one kind of event can end
// it, such as relapse and death without relapse: Cause 0 means censored at Time (event-free
// when last seen); Cause k ≥ 1 means the first event, of kind k, happened at Time.
type CompetingObservation struct {
	Time  float64
	Cause int
}

// IncidenceStep is the cumulative incidence of every cause at one distinct observed time.
// Slices are indexed by cause − 1.
type IncidenceStep struct {
	Time     float64
	AtRisk   int   // patients still under observation just before Time
	Events   []int // events of each cause at Time
	Censored int   // censorings at Time; they still count as at risk at Time
	// Incidence is the Aalen-Johansen estimate of each cause's cumulative incidence,
	// P(event of that cause by Time).
	Incidence []float64
	// Variance is each estimate's variance by Gray's delta-method formula (what R's
	// cmprsk::cuminc reports). It changes only at times with an event of that cause; between
	// them it is the last value, as cuminc's step function has it.
	Variance []float64
}

// Incidence is the cumulative incidence of each of Causes competing causes.
type Incidence struct {
	N      int
	Causes int
	Events []int // total events of each cause
	Steps  []IncidenceStep
}

// CumulativeIncidence estimates the cumulative incidence function of each cause 1…causes
// with the Aalen-Johansen estimator, F_k(t) = Σ_{t_j ≤ t} S(t_j−)·d_kj/n_j, where S is the
// Kaplan-Meier estimate of being free of every cause: unlike 1 − KM with the other causes
// censored, it does not count patients who died of one cause as still at risk of the other.
// It agrees with R's cmprsk::cuminc and survival's multi-state survfit. Observations with a
// NaN time or a cause outside 0…causes are dropped.
func CumulativeIncidence(obs []CompetingObservation, causes int) Incidence {
	sorted := make([]CompetingObservation, 0, len(obs))
	for _, o := range obs {
		if !math.IsNaN(o.Time) && o.Cause >= 0 && o.Cause <= causes {
			sorted = append(sorted, o)
		}
	}
	slices.SortStableFunc(sorted, func(a, b CompetingObservation) int { return cmp.Compare(a.Time, b.Time) })
	inc := Incidence{N: len(sorted), Causes: causes, Events: make([]int, causes)}
	if causes < 1 {
		return inc
	}
	free := 1.0 // S(t−): free of every cause just before the current time
	F := make([]float64, causes)
	variance := make([]float64, causes)
	// Gray's variance is v1 + F²·v3 − 2F·v2, with three sums per cause over the times so far.
	v1, v2, v3 := make([]float64, causes), make([]float64, causes), make([]float64, causes)
	atRisk := len(sorted)
	for i := 0; i < len(sorted); {
		j := i
		step := IncidenceStep{Time: sorted[i].Time, AtRisk: atRisk, Events: make([]int, causes)}
		for ; j < len(sorted) && sorted[j].Time == sorted[i].Time; j++ {
			if c := sorted[j].Cause; c == 0 {
				step.Censored++
			} else {
				step.Events[c-1]++
				inc.Events[c-1]++
			}
		}
		events := j - i - step.Censored
		if events > 0 {
			n := float64(atRisk)
			freeAfter := free * (n - float64(events)) / n
			// tieWeight corrects the binomial variance of d events among n for ties.
			tieWeight := func(d int) float64 {
				if d <= 1 {
					return 1
				}
				return 1 - float64(d-1)/(n-1)
			}
			add := func(k int, a, b, w float64) {
				v1[k] += b * b * w
				v2[k] += a * b * w
				v3[k] += a * a * w
			}
			for k := 0; k < causes; k++ {
				own, other := step.Events[k], events-step.Events[k]
				F[k] += free * float64(own) / n
				if other > 0 && freeAfter > 0 {
					w := free * free * tieWeight(other) * float64(other) / (n * n)
					add(k, 1/freeAfter, F[k]/freeAfter, w)
				}
				if own > 0 {
					w := free * free * tieWeight(own) * float64(own) / (n * n)
					a := 0.0
					if freeAfter > 0 {
						a = 1 / freeAfter
					}
					add(k, a, 1+a*F[k], w)
					variance[k] = v1[k] + F[k]*F[k]*v3[k] - 2*F[k]*v2[k]
				}
			}
			free = freeAfter
		}
		step.Incidence = slices.Clone(F)
		step.Variance = slices.Clone(variance)
		inc.Steps = append(inc.Steps, step)
		atRisk -= j - i
		i = j
	}
	return inc
}

// At is cause's cumulative incidence at time t with its pointwise confidence interval at
// level, on the log(−log) scale, F^exp(±z·SE/(F·log F)), which keeps the limits inside (0, 1).
// Before the first event of the cause the estimate is 0 and the limits NaN; so are they
// once the estimate is 1.
func (inc Incidence) At(t float64, cause int, level float64) (estimate, lower, upper float64) {
	k := cause - 1
	if k < 0 || k >= inc.Causes {
		return math.NaN(), math.NaN(), math.NaN()
	}
	i, _ := slices.BinarySearchFunc(inc.Steps, t, func(s IncidenceStep, t float64) int {
		if s.Time <= t {
			return -1
		}
		return 1
	})
	if i == 0 {
		return 0, math.NaN(), math.NaN()
	}
	s := inc.Steps[i-1]
	f, v := s.Incidence[k], s.Variance[k]
	if f <= 0 || f >= 1 || !(level > 0 && level < 1) {
		return f, math.NaN(), math.NaN()
	}
	sd := zQuantile(level) * math.Sqrt(v) / (f * math.Abs(math.Log(f)))
	return f, math.Pow(f, math.Exp(sd)), math.Pow(f, math.Exp(-sd))
}
