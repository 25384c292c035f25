package stats

import "math"

// Wilson is the Wilson score interval for a proportion of successes out of n trials, without
// continuity correction, at the given confidence level (0.95 for 95%): the interval for
// response and remission rates in registry reports. It is what R's
// prop.test(successes, n, correct = FALSE, conf.level = level)$conf.int gives (and
// binom::binom.confint(method = "wilson")). Unlike the textbook Wald interval it stays inside
// [0, 1] and does not collapse to a point at 0/n or n/n, which small CAR-T cohorts hit often.
//
// At 0/n the lower limit is exactly 0 and at n/n the upper is exactly 1, as in R. n = 0, a
// negative count, more successes than trials or a level outside (0, 1) give NaN, NaN.
func Wilson(successes, n int, level float64) (lower, upper float64) {
	z := zQuantile(level)
	if n <= 0 || successes < 0 || successes > n || math.IsNaN(z) {
		return math.NaN(), math.NaN()
	}
	nf := float64(n)
	p := float64(successes) / nf
	z22n := z * z / (2 * nf)
	half := z * math.Sqrt(p*(1-p)/nf+z22n/(2*nf))
	lower, upper = 0, 1
	if p > 0 {
		lower = max((p+z22n-half)/(1+2*z22n), 0)
	}
	if p < 1 {
		upper = min((p+z22n+half)/(1+2*z22n), 1)
	}
	return lower, upper
}
