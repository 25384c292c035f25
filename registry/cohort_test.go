package registry_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/registry/synth"
)

var cohortAsOf = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

// loadCohortDirect writes a synthetic cohort straight into the registry tables
// (synth.LoadDirect), then settles it as a live database would be: the plan's timepoints
// assigned and the tables analysed. TestDirectLoadMatchesTheAPI keeps it honest.
func loadCohortDirect(tb testing.TB, tr *testRegistry, c *synth.Cohort) {
	tb.Helper()
	ctx := context.Background()
	if err := synth.LoadDirect(ctx, tr.db, c, tr.reg.Terminology()); err != nil {
		tb.Fatal(err)
	}
	if err := tr.reg.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	// A settled database, as autovacuum keeps a live one: ApplyPlan just rewrote every row.
	if _, err := tr.db.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		tb.Fatal(err)
	}
}

func generate(tb testing.TB, patients int, seed uint64) *synth.Cohort {
	tb.Helper()
	c, err := synth.Generate(synth.Options{Patients: patients, Seed: seed, AsOf: cohortAsOf})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// outcomesOf asks every outcome question a researcher might, as JSON for comparison.
func outcomesOf(t *testing.T, tr *testRegistry) map[string]string {
	out := map[string]string{}
	for _, q := range []string{
		"response", "response?group_by=disease", "response?group_by=product&disease=myeloma",
		"survival?endpoint=os&group_by=disease", "survival?endpoint=pfs&group_by=target",
		"survival?endpoint=dor&group_by=site", "survival?endpoint=os&group_by=product&infused_from=2022-01-01",
		"toxicity", "toxicity?group_by=disease", "survival?endpoint=os&group_by=age_band", "best-response?group_by=prior_lines",
		"incidence?group_by=age_band",
	} {
		out[q] = string(tr.expect(200, "GET", "/registry/outcomes/"+q, nil).body)
	}
	return out
}

// The same synthetic cohort loaded through the FHIR API (the projection derives everything)
// and written directly as benchmarks do gives the same outcomes, to the last digit.
func TestDirectLoadMatchesTheAPI(t *testing.T) {
	t.Parallel()
	cohort := generate(t, 120, 11)
	viaAPI := newTestRegistry(t, registry.Config{MinCell: 1})
	viaAPI.now = cohortAsOf
	for i := range cohort.Patients {
		raw, err := cohort.Bundle(i)
		if err != nil {
			t.Fatal(err)
		}
		viaAPI.expect(200, "POST", "/fhir", raw)
	}
	direct := newTestRegistry(t, registry.Config{MinCell: 1})
	direct.now = cohortAsOf
	loadCohortDirect(t, direct, cohort)

	a, b := outcomesOf(t, viaAPI), outcomesOf(t, direct)
	for q := range a {
		var x, y any
		_ = json.Unmarshal([]byte(a[q]), &x)
		_ = json.Unmarshal([]byte(b[q]), &y)
		if !reflect.DeepEqual(x, y) {
			t.Errorf("%s differs:\nAPI:    %.600s\ndirect: %.600s", q, a[q], b[q])
		}
	}
	if n := viaAPI.count(`SELECT count(*) FROM registry_assessment WHERE milestone IS NOT NULL`); n == 0 {
		t.Error("no assessment got a timepoint")
	}
}

// BenchmarkOutcomes100k runs researchers' queries over a 100,000-patient synthetic cohort
// (about 300,000 assessments), loaded directly into the registry tables.
func BenchmarkOutcomes100k(b *testing.B) {
	patients := 100_000
	if n, err := strconv.Atoi(os.Getenv("BENCH_PATIENTS")); err == nil && n > 0 {
		patients = n // a quicker look
	}
	cohort := generate(b, patients, 2026)
	// As served: rounding, and the overlap control remembering each query's patients.
	cfg := served
	if os.Getenv("BENCH_OVERLAP") == "off" {
		cfg.OverlapWindow = 0
	}
	tr := newTestRegistry(b, cfg)
	tr.now = cohortAsOf
	start := time.Now()
	loadCohortDirect(b, tr, cohort)
	b.Logf("loaded %d patients, %d assessments in %s", len(cohort.Patients),
		tr.count(`SELECT count(*) FROM registry_assessment`), time.Since(start).Round(time.Millisecond))
	for _, q := range []string{
		"response", "response?group_by=product", "response?disease=myeloma&infused_from=2022-01-01",
		"survival?endpoint=os", "survival?endpoint=os&group_by=product", "survival?endpoint=pfs&group_by=disease",
		"survival?endpoint=dor&group_by=site", "survival.svg?endpoint=os&group_by=disease",
	} {
		b.Run(strings.NewReplacer("?", "/", "&", ",").Replace(q), func(b *testing.B) {
			took := make([]time.Duration, b.N)
			for i := 0; i < b.N; i++ {
				// Each request computes its report: the data version moves, as after a write,
				// so no kept report is served.
				if err := pgx.BeginFunc(context.Background(), tr.db, func(tx pgx.Tx) error {
					return registry.DataChanged(context.Background(), tx)
				}); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				tr.expect(200, "GET", "/registry/outcomes/"+q, nil)
				took[i] = time.Since(start)
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
		})
	}
}

// perPatientResponse is the response report's question asked the slow, obvious way: every
// patient's first infusion crossed with every milestone, the counting assessment ranked on
// the spot. It checks the report's shortcuts (the counted flag, timepoints, the standings worked out in Go).
const perPatientResponse = `WITH plan AS (
	SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[]) AS p(code, target, first_day, last_day)
), chosen AS (
	SELECT DISTINCT ON (a.infusion_type, a.infusion_id, a.milestone) a.infusion_type, a.infusion_id, a.milestone, a.category
	FROM registry_assessment a JOIN plan p ON p.code = a.milestone
	ORDER BY a.infusion_type, a.infusion_id, a.milestone, abs(a.day - p.target), a.day DESC, a.observation_id
)
SELECT p.code,
	CASE
		WHEN ch.category IS NOT NULL THEN 'assessed'
		WHEN c.death_on <= c.infused_on + p.last_day THEN 'dead_before'
		WHEN c.infused_on + p.first_day > $5::date THEN 'not_yet_due'
		WHEN c.progression_on < c.infused_on + p.first_day THEN 'progressed_before'
		WHEN c.infused_on + p.last_day >= $5::date THEN 'pending'
		ELSE 'missing'
	END, coalesce(ch.category, ''), count(*)
FROM registry_infusion c CROSS JOIN plan p
LEFT JOIN chosen ch ON ch.infusion_type = c.resource_type AND ch.infusion_id = c.resource_id AND ch.milestone = p.code
WHERE c.sequence = 1
GROUP BY 1, 2, 3`

func TestResponseAgreesWithAPerPatientCount(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	loadCohortDirect(t, tr, generate(t, 1500, 5))
	ctx := context.Background()
	var codes []string
	var targets, starts, ends []int32
	for _, m := range tr.reg.Plan().Milestones {
		codes = append(codes, m.Code)
		targets, starts, ends = append(targets, int32(m.TargetDay)), append(starts, int32(m.WindowStart)), append(ends, int32(m.WindowEnd))
	}
	// Cut-offs a day either side of window bounds catch an off-by-one in the standings.
	for _, asOf := range []time.Time{cohortAsOf, cohortAsOf.AddDate(0, 0, -1), cohortAsOf.AddDate(0, -7, -3), cohortAsOf.AddDate(-2, 0, 0)} {
		want := map[string]int{}
		rows, err := tr.db.Query(ctx, perPatientResponse, codes, targets, starts, ends, asOf)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var code, status, category string
			var n int
			if err := rows.Scan(&code, &status, &category, &n); err != nil {
				t.Fatal(err)
			}
			want[code+" "+status] += n
			if category != "" {
				want[code+" "+category] += n
			}
		}
		if rows.Close(); rows.Err() != nil {
			t.Fatal(rows.Err())
		}

		report, err := tr.reg.Response(ctx, registry.Filter{}, "", asOf)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		add := func(key string, n *int) {
			if n != nil && *n > 0 {
				got[key] += *n
			}
		}
		for _, tp := range report.Groups[0].Timepoints {
			for status, n := range map[string]*int{"assessed": tp.Assessed, "dead_before": tp.DeadBefore, "not_yet_due": tp.NotYetDue,
				"progressed_before": tp.ProgressedBefore, "pending": tp.Pending, "missing": tp.Missing} {
				add(tp.Milestone+" "+status, n)
			}
			for _, c := range tp.Categories {
				add(tp.Milestone+" "+c.Code, c.Count)
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("as of %s the report counts\n%v\nand patient by patient\n%v", asOf.Format(time.DateOnly), got, want)
		}
		if want["y1 missing"]+want["m3 pending"] == 0 || want["y5 not_yet_due"] == 0 {
			t.Errorf("as of %s the cohort exercises too few statuses: %v", asOf.Format(time.DateOnly), want)
		}
	}
}

// CRS and ICANS as the report counts them agree with a count made patient by patient from the
// generated cohort itself: worst grade per patient, any, grade 3 or above, and the median
// onset day.
func TestToxicityAgreesWithAPerPatientCount(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	cohort := generate(t, 800, 9)
	loadCohortDirect(t, tr, cohort)
	type tally struct {
		any, grade3plus int
		byGrade         map[int]int
		onsets          []float64
	}
	want := map[string]*tally{"crs": {byGrade: map[int]int{}}, "icans": {byGrade: map[int]int{}}}
	for _, p := range cohort.Patients {
		worst, first := map[string]int{}, map[string]float64{}
		for _, tox := range p.Toxicities {
			if tox.Date.Before(p.Infusion.Date) {
				continue
			}
			day := tox.Date.Sub(p.Infusion.Date).Hours() / 24
			if _, seen := worst[tox.Kind]; !seen || day < first[tox.Kind] {
				first[tox.Kind] = day
			}
			worst[tox.Kind] = max(worst[tox.Kind], tox.Grade)
		}
		for kind, g := range worst {
			w := want[kind]
			w.any++
			w.byGrade[g]++
			if g >= 3 {
				w.grade3plus++
			}
			w.onsets = append(w.onsets, first[kind])
		}
	}
	report, err := tr.reg.Toxicity(context.Background(), registry.Filter{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(report.Groups) != 1 || *report.Groups[0].N != len(cohort.Patients) {
		t.Fatalf("groups %+v", report.Groups)
	}
	g := report.Groups[0]
	for kind, got := range map[string]registry.ToxicitySummary{"crs": g.CRS, "icans": g.ICANS} {
		w := want[kind]
		if *got.Any.Count != w.any || *got.Grade3Plus.Count != w.grade3plus {
			t.Errorf("%s: any %d, grade ≥3 %d; patient by patient %d and %d", kind, *got.Any.Count, *got.Grade3Plus.Count, w.any, w.grade3plus)
		}
		for grade := 1; grade <= 4; grade++ {
			if n := got.MaxGrade[strconv.Itoa(grade)]; n == nil || *n != w.byGrade[grade] {
				t.Errorf("%s: worst grade %d in %v courses, patient by patient %d", kind, grade, n, w.byGrade[grade])
			}
		}
		slices.Sort(w.onsets)
		median := w.onsets[len(w.onsets)/2]
		if len(w.onsets)%2 == 0 {
			median = (w.onsets[len(w.onsets)/2-1] + median) / 2
		}
		if got.OnsetDays == nil || got.OnsetDays.Median != median {
			t.Errorf("%s: median onset %+v, patient by patient %v", kind, got.OnsetDays, median)
		}
		if w.any == 0 || w.grade3plus == 0 {
			t.Errorf("%s: the cohort exercises too little: %+v", kind, w)
		}
	}
}

// Relapses and deaths without relapse as the competing-risks report counts them agree with a
// count patient by patient from the generated cohort: the first progression category, or a
// death before any.
func TestIncidenceAgreesWithAPerPatientCount(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	cohort := generate(t, 800, 11)
	loadCohortDirect(t, tr, cohort)
	terms := tr.reg.Terminology()
	relapses, deaths := 0, 0
	for _, p := range cohort.Patients {
		var progression *time.Time
		for _, a := range p.Assessments {
			if terms.Categories[a.Category].Progression && !a.Date.Before(p.Infusion.Date) {
				d := a.Date
				progression = &d
				break
			}
		}
		switch {
		case p.Death != nil && (progression == nil || p.Death.Before(*progression)):
			deaths++
		case progression != nil:
			relapses++
		}
	}
	report, err := tr.reg.Incidence(context.Background(), registry.Filter{}, registry.IncidenceRelapse, "")
	if err != nil {
		t.Fatal(err)
	}
	g := report.Groups[0]
	if *g.N != len(cohort.Patients) || *g.Events != relapses || *g.Competing != deaths {
		t.Errorf("report: n %d, relapses %d, deaths without relapse %d; patient by patient: %d, %d, %d",
			*g.N, *g.Events, *g.Competing, len(cohort.Patients), relapses, deaths)
	}
	if relapses == 0 || deaths == 0 {
		t.Errorf("the cohort exercises too little: %d relapses, %d deaths", relapses, deaths)
	}
	// Every course ends in one state: at each step the two incidences and PFS add up to 1.
	pfs, err := tr.reg.Survival(context.Background(), registry.Filter{}, registry.EndpointPFS, "")
	if err != nil {
		t.Fatal(err)
	}
	for day, lm := range g.Landmarks {
		s := pfs.Groups[0].Landmarks[day]
		if lm == nil || s == nil {
			continue
		}
		if sum := *lm.Incidence.Survival + *lm.Competing.Survival + *s.Survival; math.Abs(sum-1) > 1e-9 {
			t.Errorf("day %s: relapse + NRM + PFS = %v", day, sum)
		}
	}
}

// Best overall response agrees with a count patient by patient from the generated cohort: the
// best category from infusion to the first progression; response among all infused and among
// the assessed; MRD negativity among those tested.
func TestBestResponseAgreesWithAPerPatientCount(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	cohort := generate(t, 800, 13)
	loadCohortDirect(t, tr, cohort)
	terms := tr.reg.Terminology()
	assessed, responders, complete, tested, negative := 0, 0, 0, 0, 0
	best := map[string]int{}
	for _, p := range cohort.Patients {
		var top *registry.Category
		mrdTested, mrdNegative := false, false
		for _, a := range p.Assessments { // in date order
			if a.Date.Before(p.Infusion.Date) {
				continue
			}
			cat := terms.Categories[a.Category]
			if top == nil || cat.Rank < top.Rank {
				top = cat
			}
			if a.MRDNegative != nil {
				mrdTested = true
				mrdNegative = mrdNegative || *a.MRDNegative
			}
			if cat.Progression {
				break
			}
		}
		if top == nil {
			continue
		}
		assessed++
		best[top.Code]++
		if top.Response {
			responders++
		}
		if top.Complete {
			complete++
		}
		if mrdTested {
			tested++
		}
		if mrdNegative {
			negative++
		}
	}
	report, err := tr.reg.BestResponse(context.Background(), registry.Filter{}, "")
	if err != nil {
		t.Fatal(err)
	}
	g := report.Groups[0]
	got := map[string]int{}
	for _, c := range g.Categories {
		if *c.Count > 0 {
			got[c.Code] = *c.Count
		}
	}
	if !reflect.DeepEqual(got, best) {
		t.Errorf("best responses %v, patient by patient %v", got, best)
	}
	if *g.N != len(cohort.Patients) || *g.Assessed != assessed || *g.OverallResponseITT.Count != responders ||
		*g.CompleteResponseAssessed.Count != complete || *g.MRDTested != tested || *g.MRDNegative.Count != negative {
		t.Errorf("report n %d assessed %d responders %d complete %d MRD tested %d negative %d; patient by patient %d %d %d %d %d %d",
			*g.N, *g.Assessed, *g.OverallResponseITT.Count, *g.CompleteResponseAssessed.Count, *g.MRDTested, *g.MRDNegative.Count,
			len(cohort.Patients), assessed, responders, complete, tested, negative)
	}
	if itt, among := *g.OverallResponseITT.Rate, *g.OverallResponseAssessed.Rate; !(itt < among) {
		t.Errorf("response among all infused %v is not below that among the assessed %v", itt, among)
	}
	if tested == 0 || negative == 0 || assessed == len(cohort.Patients) {
		t.Errorf("the cohort exercises too little: %d tested, %d negative, %d of %d assessed", tested, negative, assessed, len(cohort.Patients))
	}
}
