package stats

import (
	"cmp"
	"math"
	"slices"
)

// tolerance is R's sqrt(.Machine$double.eps), the slack survival uses when it asks whether a
// step sits exactly at the probability sought: products of fractions like 10/20 land within a
// few ulps of 0.5, not on it.
var tolerance = math.Sqrt(0x1p-52)

// Estimate is a point estimate with its confidence limits. Any of the three is NaN where R
// answers NA: a median the curve never reaches, a limit whose curve never reaches 0.5.
type Estimate struct {
	Estimate, Lower, Upper float64
}

// Median is the median survival time with confidence limits at level (0.95 for 95%), as R
// prints it: print(fit) and summary(fit)$table (median, 0.95LCL, 0.95UCL) for
// survfit(..., conf.type = "log-log", conf.int = level). The level need not be the curve's:
// the limits are rebuilt from the Greenwood errors.
//
// The median is the first time at which S(t) <= 0.5. If S is exactly 0.5 there (within R's
// tolerance) and drops below later, R takes the midpoint between that time and the time of the
// next drop, the next event time (censorings inside the flat stretch do not count), mirroring
// the median of an even-sized uncensored sample. If S stays at exactly 0.5 to the end of
// follow-up, the median is the time it got there. The limits are the same reading of the
// lower and upper curves, skipping their NaN (NA) points: the lower limit is where the lower
// curve reaches 0.5, and the upper limit is NaN whenever the upper curve stays above 0.5,
// which is common. Everything NaN on an empty curve.
//
// This can differ from Quantile(0.5), which follows quantile.survfit: see there.
func (c Curve) Median(level float64) Estimate {
	t := make([]float64, len(c.Steps))
	s := make([]float64, len(c.Steps))
	for i, st := range c.Steps {
		t[i], s[i] = st.Time, st.Survival
	}
	lo, up := c.limits(level)
	return Estimate{minmin(s, t), minmin(lo, t), minmin(up, t)}
}

// limits are the pointwise log-log limits of every step at level.
func (c Curve) limits(level float64) (lower, upper []float64) {
	z := zQuantile(level)
	lower = make([]float64, len(c.Steps))
	upper = make([]float64, len(c.Steps))
	for i, st := range c.Steps {
		lower[i], upper[i] = logLogLimits(st.Survival, st.LogStdErr, z)
	}
	return lower, upper
}

// minmin is the median rule of R survival's survmean (the function behind print.survfit).
func minmin(y, x []float64) float64 {
	first := -1
	for i, v := range y {
		if math.IsNaN(v) || v >= 0.5+tolerance {
			continue
		}
		if first < 0 {
			first = i
			if math.Abs(v-0.5) >= tolerance {
				return x[i]
			}
			continue
		}
		if v < y[first] {
			return (x[first] + x[i]) / 2
		}
	}
	if first < 0 {
		return math.NaN()
	}
	return x[first]
}

// Quantile returns the time by which a fraction p of patients has had the event, the time at
// which S(t) falls to 1 - p, with confidence limits at the curve's Level, as R's
// quantile(fit, probs = p) (quantile.survfit). Quantile(0.5) is the median, Quantile(0.25)
// the first quartile.
//
// If S has a flat stretch at exactly 1 - p, the answer is its midpoint: the mean of the time S
// got there and the time it next drops, or, when it never drops again, the mean of the time S
// got there and the last observed time (a censoring). In that last case R's print, and so
// [Curve.Median], answers differently: it takes the start of the stretch. The limits are read
// the same way from the Lower and Upper curves. Quantile(0) is 0. NaN when the curve does not
// fall to 1 - p, or for p outside [0, 1].
func (c Curve) Quantile(p float64) Estimate {
	if !(p >= 0 && p <= 1) || len(c.Steps) == 0 {
		return Estimate{math.NaN(), math.NaN(), math.NaN()}
	}
	// R: doquant(p, time, surv, upper, lower, firstx = 0) looks at the cumulative incidence
	// 1 - S, starting from (0, 0).
	x := make([]float64, len(c.Steps)+1)
	ys := make([]float64, len(c.Steps)+1)
	yl := make([]float64, len(c.Steps)+1)
	yu := make([]float64, len(c.Steps)+1)
	for i, st := range c.Steps {
		x[i+1] = st.Time
		ys[i+1], yl[i+1], yu[i+1] = 1-st.Survival, 1-st.Lower, 1-st.Upper
	}
	return Estimate{findq(x, ys, p), findq(x, yl, p), findq(x, yu, p)}
}

// findq is R survival's findq: the x at which the non-decreasing step function y first
// reaches p, with the midpoint rule for a flat stretch at p. NaN entries of y (NA limits) are
// skipped, as R's approx skips them. Its steps, kept literally so as to keep R's corner cases:
//
//   - NA if every y is below p;
//   - drop repeated y values (keeping the first x of each), treating all NaNs as one value;
//   - i1 = first index with y + tol >= p, i2 = first index with y - tol >= p (R's
//     approx(..., method = "constant", f = 1)), answer (x[i1] + x[i2]) / 2, NA if either is
//     missing;
//   - p == 0 answers x[0];
//   - if the last remaining y is within tol of p, answer (x[i1] + last x of all) / 2.
func findq(x, y []float64, p float64) float64 {
	maxY := math.Inf(-1)
	for _, v := range y {
		if !math.IsNaN(v) {
			maxY = max(maxY, v)
		}
	}
	if maxY < p {
		return math.NaN()
	}
	xmax := x[len(x)-1]

	// duplicated(y): NaN counts as equal to NaN.
	var dx, dy []float64
	seen := make(map[float64]bool)
	seenNaN := false
	for i, v := range y {
		if math.IsNaN(v) {
			if seenNaN {
				continue
			}
			seenNaN = true
		} else {
			if seen[v] {
				continue
			}
			seen[v] = true
		}
		dx, dy = append(dx, x[i]), append(dy, v)
	}

	i1 := approxConstant(dy, tolerance, p)
	i2 := approxConstant(dy, -tolerance, p)
	q := math.NaN()
	if i1 >= 0 && i2 >= 0 {
		q = (dx[i1] + dx[i2]) / 2
	}
	if p == 0 {
		q = dx[0]
	}
	if last := dy[len(dy)-1]; !math.IsNaN(last) && math.Abs(p-last) < tolerance {
		q = math.NaN()
		if i1 >= 0 {
			q = (dx[i1] + xmax) / 2
		}
	}
	return q
}

// approxConstant is R's approx(y + shift, seq_along(y), xout = p, method = "constant", f = 1,
// rule = 1) returning a 0-based index, or -1 for R's NA: pairs with a NaN y are dropped, the
// rest sorted by y + shift; p outside their range is NA; p on a knot gives that knot, p
// between two knots the right one.
func approxConstant(y []float64, shift, p float64) int {
	type knot struct {
		v   float64
		idx int
	}
	knots := make([]knot, 0, len(y))
	for i, v := range y {
		if !math.IsNaN(v) {
			knots = append(knots, knot{v + shift, i})
		}
	}
	slices.SortStableFunc(knots, func(a, b knot) int { return cmp.Compare(a.v, b.v) })
	if len(knots) == 0 || p < knots[0].v || p > knots[len(knots)-1].v {
		return -1
	}
	k, _ := slices.BinarySearchFunc(knots, p, func(a knot, p float64) int { return cmp.Compare(a.v, p) })
	return knots[k].idx
}
