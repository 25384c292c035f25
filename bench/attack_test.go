package main

import (
	"strings"
	"testing"
)

// The soak's verdict: what makes it fail, and that its report says why.
func TestSoakVerdict(t *testing.T) {
	ok := &SoakResult{PeakRSSMB: 200, LimitRSSMB: 500, Attacks: []AttackResult{{Name: "a", Requests: 3, Statuses: map[string]int{"400": 2, "timeout": 1}}}}
	cases := map[string]struct {
		change func(r *SoakResult)
		want   string
	}{
		"within limits": {func(*SoakResult) {}, ""},
		"RSS at limit":  {func(r *SoakResult) { r.PeakRSSMB = 500 }, "peak RSS 500 MB"},
		"a 5xx":         {func(r *SoakResult) { r.ServerFault = 2 }, "2 answers were 5xx"},
		"killed":        {func(r *SoakResult) { r.Killed, r.Exited, r.PeakRSSMB = true, true, 3100 }, "killed"},
		"crashed":       {func(r *SoakResult) { r.Exited = true }, "exited"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := *ok
			tc.change(&r)
			got := r.Failed()
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("Failed() = %q, want %q", got, tc.want)
			}
			var out strings.Builder
			printSoak(&out, &r)
			if !strings.Contains(out.String(), "| a | 3 | 400×2 timeout×1 |") {
				t.Fatalf("report:\n%s", out.String())
			}
			if tc.want != "" && !strings.Contains(out.String(), "FAIL: ") {
				t.Fatalf("the report does not say it failed:\n%s", out.String())
			}
		})
	}
}

func TestIncompressibleValuesDiffer(t *testing.T) {
	a, b := incompressible(10_000, 1), incompressible(10_000, 2)
	if len(a) != 10_000 || a == b || strings.Count(a, "a") > 1000 {
		t.Fatalf("not a varied 10,000-letter value: %d %.40s %.40s", len(a), a, b)
	}
}
