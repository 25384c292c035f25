package registry

import (
	"testing"

	"github.com/cartreg/cartreg/registry/stats"
)

func TestRounded(t *testing.T) {
	r := &Registry{cfg: Config{RoundTo: 5}}
	for n, want := range map[int]int{0: 0, 2: 0, 3: 5, 5: 5, 7: 5, 8: 10, 12: 10, 13: 15, 1002: 1000} {
		if got := r.rounded(n); got != want {
			t.Errorf("rounded(%d) = %d, want %d", n, got, want)
		}
	}
	if off := (&Registry{cfg: Config{RoundTo: 1}}).rounded(7); off != 7 {
		t.Errorf("rounding off: 7 became %d", off)
	}
}

func TestDiffersBy(t *testing.T) {
	for _, c := range []struct {
		a, b  cohort
		limit int
		want  int
	}{
		{cohort{1, 2, 3}, cohort{1, 2, 3}, 5, 0},
		{cohort{1, 2, 3}, cohort{1, 2, 3, 4}, 5, 1},
		{cohort{1, 2, 3, 4}, cohort{1, 3}, 5, 2},
		{cohort{-5, 1, 9}, cohort{-7, 1, 8}, 5, 4},
		{cohort{}, cohort{1, 2, 3, 4, 5, 6, 7}, 5, 5}, // stops at the limit
		{cohort{1, 2}, cohort{}, 5, 2},
	} {
		if got := differsBy(c.a, c.b, c.limit); got != c.want {
			t.Errorf("differsBy(%v, %v) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

// A published curve's every step stands for at least MinCell events, at an exact step of the
// curve, and stops where fewer than MinCell remain at risk.
func TestPublishedCurvePoolsSteps(t *testing.T) {
	var obs []stats.Observation
	for i := 1; i <= 40; i++ {
		obs = append(obs, stats.Observation{Time: float64(i * 10), Event: i%3 != 0})
	}
	curve := stats.KaplanMeier(obs, 0.95)
	r := &Registry{cfg: Config{MinCell: 5, RoundTo: 5}}
	published := r.publishedCurve(curve.Steps)
	if len(published) < 3 {
		t.Fatalf("%d steps published", len(published))
	}
	i, prev := 0, -1.0
	for _, p := range published {
		events := 0
		for ; curve.Steps[i].Time < p.TDays; i++ {
			events += curve.Steps[i].Events
		}
		s := curve.Steps[i]
		events += s.Events
		i++
		if s.Time != p.TDays || s.Survival != p.Survival || events < 5 || p.Events != r.rounded(events) || p.AtRisk%5 != 0 {
			t.Errorf("step at %v (after %v): %+v, exact %+v with %d events since the last", p.TDays, prev, p, s, events)
		}
		if s.AtRisk < 5 {
			t.Errorf("a step with %d at risk", s.AtRisk)
		}
		prev = p.TDays
	}
}
