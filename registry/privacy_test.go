package registry_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/registry"
)

// served is the registry as cmd/cartreg configures it by default: small cells under 5
// suppressed, counts rounded to 5, each user's queries remembered for 30 days.
var served = registry.Config{MinCell: 5, RoundTo: 5, OverlapWindow: 30 * 24 * time.Hour}

// enrol adds one lymphoma patient of site, infused on the day given, dead deathDay days later
// (0: alive, last seen at a 30-day assessment).
func enrol(t *testing.T, tr *testRegistry, site, infused string, deathDay int) {
	t.Helper()
	d, err := time.Parse(time.DateOnly, infused)
	if err != nil {
		t.Fatal(err)
	}
	p := patient("urn:uuid:site")
	entries := []entry{
		{"fullUrl": "urn:uuid:site", "resource": organization(site),
			"request": map[string]any{"method": "POST", "url": "Organization", "ifNoneExist": "name:exact=" + urlQuery(site)}},
		post("urn:uuid:pat", p),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
		post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", infused, "axi-cel")),
		post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:inf", d.AddDate(0, 0, 30).Format(time.DateOnly), "lugano-cmr")),
	}
	if deathDay > 0 {
		p["deceasedDateTime"] = d.AddDate(0, 0, deathDay).Format(time.DateOnly)
	}
	tr.expect(200, "POST", "/fhir", transaction(entries...))
}

func urlQuery(s string) string {
	r := strings.NewReplacer("%", "%25", " ", "%20", "&", "%26", "=", "%3D", "+", "%2B", "\"", "%22", ",", "%2C", "#", "%23")
	return r.Replace(s)
}

// An Organization named as a spreadsheet formula reaches researchers' CSV as text.
func TestOutcomesCSVDefusesFormulas(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	const name = `=HYPERLINK("http://x","y")`
	enrol(t, tr, name, "2024-01-05", 200)
	for _, path := range []string{"response?group_by=site", "survival?group_by=site", "survival?group_by=site&endpoint=pfs"} {
		body := tr.expect(200, "GET", "/registry/outcomes/"+path+"&_format=csv", nil).body
		rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		found := false
		for _, row := range rows {
			for _, cell := range row {
				if cell == "'"+name {
					found = true
				}
				if strings.HasPrefix(cell, "=") || strings.HasPrefix(cell, "@") {
					t.Errorf("%s: a formula cell %q", path, cell)
				}
			}
		}
		if !found {
			t.Errorf("%s: the site's name is not in the CSV as '%s:\n%s", path, name, body)
		}
	}
}

// outcomeIssue is the first issue of an OperationOutcome: its code and its locations.
func outcomeIssue(t *testing.T, r reply) (code string, where []string) {
	t.Helper()
	issues, _ := r.json(t)["issue"].([]any)
	if len(issues) == 0 {
		t.Fatalf("not an OperationOutcome: %s", r.body)
	}
	is := issues[0].(map[string]any)
	for _, e := range is["expression"].([]any) {
		where = append(where, e.(string))
	}
	return is["code"].(string), where
}

func TestOutcomeParametersAreChecked(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	for path, param := range map[string]string{
		"response?sitee=Riverside":                            "sitee",
		"survival?group_by=site&group_by=disease":             "group_by",
		"survival?infused_to=2024-01&infused_to=2024-02":      "infused_to",
		"survival?endpoint=os&endpoint=pfs":                   "endpoint",
		"response?endpoint=os":                                "endpoint",
		"survival.svg?percent=false":                          "percent",
		"response.svg?group_by=":                              "", // checked below: a chart of all patients
		"response?infused_to=2024-01-15":                      "infused_to",
		"response?infused_from=2024-01-31":                    "infused_from",
		"survival?infused_to=2024-01-01":                      "infused_to",
		"survival?infused_from=2024-01-02&infused_to=2024-01": "infused_from",
		"survival?infused_from=2024-13":                       "infused_from",
		"survival?infused_from=2024-02&infused_to=2024-01":    "infused_to",
	} {
		if param == "" {
			continue
		}
		r := tr.expect(400, "GET", "/registry/outcomes/"+path, nil)
		if _, where := outcomeIssue(t, r); !slices.Contains(where, param) {
			t.Errorf("%s: 400 located at %v, want %s", path, where, param)
		}
	}
	// Whole months, in either spelling, select the same patients.
	n := func(path string) any {
		groups := tr.expect(200, "GET", "/registry/outcomes/"+path, nil).json(t)["groups"].([]any)
		if len(groups) != 1 {
			return fmt.Sprintf("%d groups", len(groups))
		}
		return groups[0].(map[string]any)["n"]
	}
	for _, path := range []string{"response?infused_from=2024-01&infused_to=2024-01", "response?infused_from=2024-01-01&infused_to=2024-01-31",
		"survival?infused_from=2023-12&infused_to=2024-02-29&_format=json&_pretty=true&disease=lbcl,myeloma&site=Riverside&site=Harbour"} {
		if got := n(path); got != 6.0 {
			t.Errorf("%s: n = %v, want the 6 infused in January 2024", path, got)
		}
	}
}

// "No patients" and "too few to show" are the same answer, in every format.
func TestNoneAndSuppressedLookAlike(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, served)
	outcomeCohort(t, tr) // Harbour infused two patients, in October 2026
	for _, q := range []string{"response", "survival", "survival?endpoint=dor", "response.svg", "survival.svg", "response?_format=csv", "survival?_format=csv"} {
		sep := "?"
		if strings.Contains(q, "?") {
			sep = "&"
		}
		base := "/registry/outcomes/" + q + sep
		for some, none := range map[string]string{
			"site=Harbour": "site=Nowhere",
			"site=Harbour&infused_from=2026-10&infused_to=2026-10": "site=Harbour&infused_from=2026-09&infused_to=2026-09",
			"disease=myeloma": "disease=b-all",
		} {
			a, b := tr.expect(200, "GET", base+some, nil).body, tr.expect(200, "GET", base+none, nil).body
			if string(a) != string(b) {
				t.Errorf("%s: two patients\n%s\nand none\n%s", q, a, b)
			}
		}
	}
	for _, q := range []string{"response?group_by=site", "survival?group_by=site"} {
		if body := tr.expect(200, "GET", "/registry/outcomes/"+q, nil).body; strings.Contains(string(body), "Harbour") ||
			strings.Contains(string(body), "suppressed") {
			t.Errorf("%s names the small site, or says something was suppressed:\n%s", q, body)
		}
	}
}

// The attack of issue 18: two survival queries whose cohorts differ by one patient, and a
// one-day site query. Neither gives anything away.
func TestDifferencingAttackRecoversNothing(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, served)
	for i := 0; i < 10; i++ {
		enrol(t, tr, "Riverside", fmt.Sprintf("2024-01-%02d", 2+i), []int{0, 300, 0, 0, 500, 0, 0, 0, 900, 0}[i])
	}
	enrol(t, tr, "Riverside", "2024-02-10", 637) // the patient the attack is after: dead on day 637

	// A day apart: refused, whichever bound moves.
	for _, q := range []string{"survival?infused_to=2024-02-10", "survival?infused_to=2024-02-09",
		"survival?site=Riverside&infused_from=2024-02-10&infused_to=2024-02-10", "response?infused_from=2024-02-10"} {
		tr.expect(400, "GET", "/registry/outcomes/"+q, nil)
	}

	// A month apart, one patient between them: the second is refused, in any form, by any
	// filter that reaches the same patients, and nothing about the refused query is kept.
	tr.expect(200, "GET", "/registry/outcomes/survival?infused_to=2024-01", nil)
	for _, q := range []string{"survival?infused_to=2024-02", "survival", "survival?disease=lbcl&endpoint=pfs",
		"response?infused_to=2024-02", "survival.svg?infused_to=2024-02", "survival?infused_to=2024-02&_format=csv",
		"response?group_by=site", "toxicity?infused_to=2024-02", "toxicity.svg?infused_to=2024-02",
		"incidence?infused_to=2024-02", "incidence.svg?infused_to=2024-02&event=infection",
		"best-response?infused_to=2024-02", "best-response.svg?infused_to=2024-02"} {
		r := tr.expect(422, "GET", "/registry/outcomes/"+q, nil)
		if code, _ := outcomeIssue(t, r); code != "business-rule" || !strings.Contains(string(r.body), "CARTREG_OUTCOMES_OVERLAP_WINDOW") {
			t.Errorf("%s: refused with %s, not naming the setting: %s", q, code, r.body)
		}
	}
	// The same patients asked again, another way, are answered: they give nothing new.
	tr.expect(200, "GET", "/registry/outcomes/response?infused_from=2023-06&infused_to=2024-01&group_by=disease", nil)
	// A cohort remembered is not compared again when asked again; one near it still is.
	tr.expect(200, "GET", "/registry/outcomes/survival?infused_to=2024-01", nil)
	tr.expect(422, "GET", "/registry/outcomes/survival?infused_to=2024-02", nil)

	// Another researcher who asks for the eleven first is refused the ten.
	other := tr.h.Token(auth.RoleResearcher)
	if r := tr.h.As(other, "GET", "/registry/outcomes/survival", nil); r.Status != 200 {
		t.Fatalf("another researcher's first query: %d %s", r.Status, r.Body)
	}
	if r := tr.h.As(other, "GET", "/registry/outcomes/survival?infused_to=2024-01", nil); r.Status != 422 {
		t.Errorf("another researcher's second query, one patient fewer: %d, want 422", r.Status)
	}

	// The one patient's month alone is what no patients is: nothing.
	alone := tr.expect(200, "GET", "/registry/outcomes/survival?site=Riverside&infused_from=2024-02&infused_to=2024-02", nil).body
	empty := tr.expect(200, "GET", "/registry/outcomes/survival?site=Riverside&infused_from=2024-03&infused_to=2024-03", nil).body
	if string(alone) != string(empty) {
		t.Errorf("a month with one infusion\n%s\nand one with none\n%s", alone, empty)
	}

	// Five more patients make a cohort that differs by enough to be answered.
	for i := 0; i < 5; i++ {
		enrol(t, tr, "Riverside", fmt.Sprintf("2024-03-%02d", 2+i), 0)
	}
	r := tr.expect(200, "GET", "/registry/outcomes/survival?infused_to=2024-03", nil).json(t)
	if n := r["groups"].([]any)[0].(map[string]any)["n"]; n != 15.0 {
		t.Errorf("16 patients shown as %v, want 15 (rounded to 5)", n)
	}

	// Once the window has passed, the memory has too.
	tr.now = tr.now.Add(served.OverlapWindow + time.Hour)
	tr.expect(200, "GET", "/registry/outcomes/survival?infused_to=2024-02", nil)
	if n := tr.count(`SELECT count(*) FROM registry_query_cohort WHERE asked_at < $1`, tr.now.Add(-served.OverlapWindow)); n != 0 {
		t.Errorf("%d cohorts kept past the window", n)
	}
}

// What researchers see is the exact computation coarsened: counts rounded to 5, rates of the
// rounded counts, curves in steps of at least 5 events with the exact estimate at each.
func TestPublishedOutcomesAreTheExactOnesCoarsened(t *testing.T) {
	t.Parallel()
	tr := newTestRegistryWith(t, func(c *app.Config) { c.Registry = served; c.Registry.OverlapWindow = 0 })
	loadCohortDirect(t, tr, generate(t, 400, 7))
	exact, err := registry.New(registry.Config{MinCell: 1}, tr.db, tr.h.App.Store, func() time.Time { return tr.now }, apptest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	round := func(n int) float64 { return float64((n + 2) / 5 * 5) }

	want, err := exact.Survival(ctx, registry.Filter{}, registry.EndpointOS, "disease")
	if err != nil {
		t.Fatal(err)
	}
	got := tr.expect(200, "GET", "/registry/outcomes/survival?group_by=disease", nil).json(t)
	if got["round_to"] != 5.0 || got["min_cell"] != 5.0 {
		t.Errorf("the report says round_to %v, min_cell %v; want 5 and 5", got["round_to"], got["min_cell"])
	}
	byGroup := map[string]map[string]any{}
	for _, g := range got["groups"].([]any) {
		byGroup[g.(map[string]any)["group"].(string)] = g.(map[string]any)
	}
	checked := 0
	for _, w := range want.Groups {
		g := byGroup[w.Group]
		if *w.N < 5 {
			if g != nil {
				t.Errorf("%s: a group of %d listed", w.Group, *w.N)
			}
			continue
		}
		if g == nil {
			t.Errorf("%s: a group of %d missing", w.Group, *w.N)
			continue
		}
		if g["n"] != round(*w.N) || (g["events"] != nil && g["events"] != round(*w.Events)) {
			t.Errorf("%s: n %v events %v, want %d and %d rounded", w.Group, g["n"], g["events"], *w.N, *w.Events)
		}
		if (w.MedianDays == nil) != (g["median_days"] == nil) || (w.MedianDays != nil && g["median_days"] != *w.MedianDays) {
			t.Errorf("%s: median %v, want %v", w.Group, g["median_days"], w.MedianDays)
		}
		exactAt := map[float64]registry.CurvePoint{}
		for _, p := range w.Curve {
			exactAt[p.TDays] = p
		}
		prev := -1.0
		for _, p := range g["curve"].([]any) {
			pm := p.(map[string]any)
			day := pm["t_days"].(float64)
			e, ok := exactAt[day]
			if !ok || math.Abs(pm["survival"].(float64)-e.Survival) > 1e-12 {
				t.Errorf("%s: published step at %v (S=%v) is not the exact curve's (%+v)", w.Group, day, pm["survival"], e)
			}
			events := 0
			for _, q := range w.Curve {
				if q.TDays > prev && q.TDays <= day {
					events += q.Events
				}
			}
			if events < 5 || pm["events"] != round(events) || math.Mod(pm["at_risk"].(float64), 5) != 0 || pm["at_risk"].(float64) < 5 {
				t.Errorf("%s: step at %v stands for %d events, shown as %v, at risk %v", w.Group, day, events, pm["events"], pm["at_risk"])
			}
			prev = day
			checked++
		}
	}
	if checked < 10 {
		t.Errorf("only %d published steps checked", checked)
	}

	exactResponse, err := exact.Response(ctx, registry.Filter{}, "", tr.now)
	if err != nil {
		t.Fatal(err)
	}
	published := tr.expect(200, "GET", "/registry/outcomes/response", nil).json(t)["groups"].([]any)[0].(map[string]any)
	if published["n"] != round(*exactResponse.Groups[0].N) {
		t.Errorf("response n %v, want %d rounded", published["n"], *exactResponse.Groups[0].N)
	}
	for i, tp := range published["timepoints"].([]any) {
		m, e := tp.(map[string]any), exactResponse.Groups[0].Timepoints[i]
		for field, n := range map[string]*int{"due": e.Due, "assessed": e.Assessed, "missing": e.Missing} {
			if m[field] != nil && m[field] != round(*n) {
				t.Errorf("%s %s: %v, want %d rounded", e.Milestone, field, m[field], *n)
			}
		}
		orr := m["overall_response"].(map[string]any)
		if orr["rate"] != nil && math.Abs(orr["rate"].(float64)-round(*e.OverallResponse.Count)/round(*e.Assessed)) > 1e-12 {
			t.Errorf("%s ORR %v, want %d/%d of rounded counts", e.Milestone, orr["rate"], *e.OverallResponse.Count, *e.Assessed)
		}
	}
}
