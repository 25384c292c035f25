package registry_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/registry"
)

// outcomeCohort loads eight patients whose outcomes are worked out by hand below. Lymphoma
// patients are infused on 2024-01-01 at one site; two myeloma patients recently at another.
func outcomeCohort(t *testing.T, tr *testRegistry) {
	t.Helper()
	day := func(infused string, n int) string {
		d, _ := time.Parse("2006-01-02", infused)
		return d.AddDate(0, 0, n).Format("2006-01-02")
	}
	type visit struct {
		day      int
		category string
	}
	add := func(name, icd, product, site, infused string, death int, visits ...visit) {
		p := patient("urn:uuid:site")
		p["identifier"] = []any{map[string]any{"system": "urn:test", "value": name}}
		if death > 0 {
			p["deceasedDateTime"] = day(infused, death)
		}
		entries := []entry{
			{"fullUrl": "urn:uuid:site", "resource": organization(site),
				"request": map[string]any{"method": "POST", "url": "Organization", "ifNoneExist": "name=" + strings.ReplaceAll(site, " ", "%20")}},
			post("urn:uuid:pat", p),
			post("urn:uuid:dx", condition("urn:uuid:pat", icd)),
			post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", infused, product)),
		}
		for i, v := range visits {
			entries = append(entries, post(fmt.Sprintf("urn:uuid:a%d", i), assessment("urn:uuid:pat", "urn:uuid:inf", day(infused, v.day), v.category)))
		}
		tr.expect(200, "POST", "/fhir", transaction(entries...))
	}
	const lymphoma, myeloma = "2024-01-01", ""
	add("P1", "C83.30", "axi-cel", "Riverside", lymphoma, 0, visit{30, "lugano-cmr"}, visit{90, "lugano-cmr"}, visit{365, "lugano-cmr"}, visit{730, "lugano-cmr"})
	add("P2", "C83.30", "axi-cel", "Riverside", lymphoma, 200, visit{30, "lugano-pmr"}, visit{90, "lugano-pmd"})
	add("P3", "C83.30", "axi-cel", "Riverside", lymphoma, 0, visit{30, "lugano-cmr"}, visit{365, "lugano-pmr"})
	add("P4", "C83.30", "axi-cel", "Riverside", lymphoma, 20)
	add("P5", "C83.30", "axi-cel", "Riverside", lymphoma, 0, visit{35, "lugano-nmr"})
	add("P8", "C83.30", "axi-cel", "Riverside", lymphoma, 0, visit{30, "lugano-pmd"})
	add("P6", "C90.00", "cilta-cel", "Harbour", "2026-10-01", 0, visit{30, "imwg-vgpr"})
	add("P7", "C90.00", "cilta-cel", "Harbour", "2026-10-20", 0)
}

func intp(v any) string {
	if v == nil {
		return "null"
	}
	return fmt.Sprint(v)
}

func TestResponseByTimepoint(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	report := tr.expect(200, "GET", "/registry/outcomes/response", nil).json(t)
	groups := report["groups"].([]any)
	if len(groups) != 1 || report["as_of"] != "2026-11-22" {
		t.Fatalf("groups %d, as_of %v", len(groups), report["as_of"])
	}
	g := groups[0].(map[string]any)
	if g["n"] != float64(8) {
		t.Fatalf("n = %v, want 8", g["n"])
	}
	byMilestone := map[string]map[string]any{}
	for _, tp := range g["timepoints"].([]any) {
		m := tp.(map[string]any)
		byMilestone[m["milestone"].(string)] = m
	}
	want := map[string]map[string]float64{
		"m1": {"not_yet_due": 0, "dead_before": 1, "due": 7, "assessed": 6, "progressed_before": 0, "pending": 1, "missing": 0},
		"m3": {"not_yet_due": 2, "dead_before": 1, "due": 5, "assessed": 2, "progressed_before": 1, "pending": 0, "missing": 2},
		"y1": {"not_yet_due": 2, "dead_before": 2, "due": 4, "assessed": 2, "progressed_before": 1, "pending": 0, "missing": 1},
		// Year 3's window opens on day 1065, 2026-12-01: after as_of even for P8, who progressed.
		"y3": {"not_yet_due": 6, "dead_before": 2, "due": 0, "assessed": 0, "progressed_before": 0, "pending": 0, "missing": 0},
	}
	for milestone, fields := range want {
		tp := byMilestone[milestone]
		for field, n := range fields {
			if tp[field] != n {
				t.Errorf("%s %s = %v, want %v", milestone, field, intp(tp[field]), n)
			}
		}
	}
	m1 := byMilestone["m1"]
	cats := map[string]float64{}
	for _, c := range m1["categories"].([]any) {
		cm := c.(map[string]any)
		cats[cm["code"].(string)] = cm["count"].(float64)
	}
	for code, n := range map[string]float64{"lugano-cmr": 2, "lugano-pmr": 1, "lugano-nmr": 1, "lugano-pmd": 1, "imwg-vgpr": 1, "imwg-scr": 0} {
		if cats[code] != n {
			t.Errorf("m1 %s = %v, want %v", code, cats[code], n)
		}
	}
	cr := m1["complete_response"].(map[string]any)
	orr := m1["overall_response"].(map[string]any)
	if cr["count"] != 2.0 || cr["of"] != 6.0 || math.Abs(cr["rate"].(float64)-2.0/6) > 1e-12 {
		t.Errorf("m1 CR %v", cr)
	}
	// Wilson 95% interval of 4/6, worked out from the formula: centre (p + z²/2n)/(1 + z²/n).
	z := 1.959963984540054
	n, p := 6.0, 4.0/6
	centre := (p + z*z/(2*n)) / (1 + z*z/n)
	half := z / (1 + z*z/n) * math.Sqrt(p*(1-p)/n+z*z/(4*n*n))
	if orr["count"] != 4.0 || math.Abs(orr["lower"].(float64)-(centre-half)) > 1e-9 || math.Abs(orr["upper"].(float64)-(centre+half)) > 1e-9 {
		t.Errorf("m1 ORR %v, want Wilson [%g, %g]", orr, centre-half, centre+half)
	}

	t.Run("filters", func(t *testing.T) {
		r := tr.expect(200, "GET", "/registry/outcomes/response?disease=myeloma", nil).json(t)
		if n := r["groups"].([]any)[0].(map[string]any)["n"]; n != 2.0 {
			t.Errorf("myeloma n = %v", n)
		}
		r = tr.expect(200, "GET", "/registry/outcomes/response?site=Riverside&infused_from=2023-12-01&infused_to=2024-01-31&target=CD19", nil).json(t)
		if n := r["groups"].([]any)[0].(map[string]any)["n"]; n != 6.0 {
			t.Errorf("Riverside lymphoma n = %v", n)
		}
		r = tr.expect(200, "GET", "/registry/outcomes/response?product=ide-cel", nil).json(t)
		if len(r["groups"].([]any)) != 0 {
			t.Errorf("no ide-cel patients, got groups %v", r["groups"])
		}
		for _, bad := range []string{"disease=lymphomaa", "infused_from=2024-13-01", "group_by=patient", "infused_from=2025-01-01&infused_to=2024-01-01"} {
			tr.expect(400, "GET", "/registry/outcomes/response?"+bad, nil)
		}
	})

	t.Run("Accept with qualities", func(t *testing.T) {
		for accept, want := range map[string]string{
			"text/csv;q=0.5, application/json": "application/json",
			"application/json;q=0.5, text/csv": "text/csv",
			"text/csv, application/json":       "text/csv", // a tie: the first listed
			"text/csv;q=0, */*":                "application/json",
			"text/*":                           "text/csv",
			"*/*":                              "application/json",
			"application/xml":                  "application/json", // nothing offered: JSON, as ever
		} {
			r := tr.expect(200, "GET", "/registry/outcomes/response", nil, "Accept", accept)
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, want) {
				t.Errorf("Accept: %s gave %s, want %s", accept, ct, want)
			}
		}
		r := tr.expect(200, "GET", "/registry/outcomes/survival?_format=csv", nil, "Accept", "application/json")
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
			t.Errorf("_format=csv gave %s", ct)
		}
	})

	t.Run("CSV", func(t *testing.T) {
		r := tr.expect(200, "GET", "/registry/outcomes/response?group_by=disease", nil, "Accept", "text/csv")
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
			t.Errorf("Content-Type %s", ct)
		}
		rows, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1+2*7 || rows[0][0] != "group" {
			t.Fatalf("%d rows, header %v", len(rows), rows[0])
		}
		col := map[string]int{}
		for i, h := range rows[0] {
			col[h] = i
		}
		for _, row := range rows[1:] {
			if row[col["group"]] == "lbcl" && row[col["milestone"]] == "m3" && (row[col["missing"]] != "2" || row[col["n_lugano-pmd"]] != "1") {
				t.Errorf("lbcl m3 row %v", row)
			}
		}
	})
}

func TestSmallCellsAreSuppressed(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 5})
	outcomeCohort(t, tr)
	for _, path := range []string{"/registry/outcomes/response", "/registry/outcomes/response?group_by=disease",
		"/registry/outcomes/survival?group_by=disease", "/registry/outcomes/survival?endpoint=pfs"} {
		r := tr.expect(200, "GET", path, nil)
		var walk func(key string, v any)
		walk = func(key string, v any) {
			switch x := v.(type) {
			case map[string]any:
				for k, v := range x {
					walk(k, v)
				}
			case []any:
				if key == "curve" {
					// A curve's steps are the published Kaplan-Meier table: they stop where
					// fewer than 5 remain at risk, checked below, and carry per-step counts.
					for _, p := range x {
						if n := p.(map[string]any)["at_risk"].(float64); n < 5 {
							t.Errorf("%s: a curve step with %v at risk", path, n)
						}
					}
					return
				}
				for _, v := range x {
					walk(key, v)
				}
			case float64:
				counts := map[string]bool{"n": true, "events": true, "count": true, "of": true, "not_yet_due": true, "dead_before": true,
					"due": true, "assessed": true, "progressed_before": true, "pending": true, "missing": true, "at_risk": true}
				if counts[key] && x > 0 && x < 5 {
					t.Errorf("%s: %s = %v shown", path, key, x)
				}
			}
		}
		walk("", r.json(t))
	}
	// A group of 2 is not listed, exactly as a group of none is not: "suppressed" would say
	// that the site or disease had patients.
	for _, path := range []string{"/registry/outcomes/survival?group_by=disease", "/registry/outcomes/response?group_by=disease"} {
		r := tr.expect(200, "GET", path, nil).json(t)
		var names []string
		for _, g := range r["groups"].([]any) {
			names = append(names, g.(map[string]any)["group"].(string))
		}
		if len(names) != 1 || names[0] != "lbcl" {
			t.Errorf("%s: groups %v, want lbcl alone (myeloma has 2 patients)", path, names)
		}
	}
}

func TestSurvivalEndpoints(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	get := func(endpoint string) map[string]any {
		r := tr.expect(200, "GET", "/registry/outcomes/survival?disease=lbcl&endpoint="+endpoint, nil).json(t)
		return r["groups"].([]any)[0].(map[string]any)
	}
	type step struct{ t, atRisk, events, censored float64 }
	check := func(endpoint string, n, events float64, want []step, survival []float64) {
		t.Helper()
		g := get(endpoint)
		if g["n"] != n || g["events"] != events {
			t.Errorf("%s: n %v events %v, want %v and %v", endpoint, g["n"], g["events"], n, events)
		}
		curve := g["curve"].([]any)
		if len(curve) != len(want) {
			t.Fatalf("%s: %d steps, want %d: %v", endpoint, len(curve), len(want), curve)
		}
		for i, w := range want {
			p := curve[i].(map[string]any)
			got := step{p["t_days"].(float64), p["at_risk"].(float64), p["events"].(float64), p["censored"].(float64)}
			if got != w || math.Abs(p["survival"].(float64)-survival[i]) > 1e-9 {
				t.Errorf("%s step %d: %+v S=%v, want %+v S=%v", endpoint, i, got, p["survival"], w, survival[i])
			}
		}
	}
	// OS: deaths on days 20 (P4) and 200 (P2); censored at last contact 30, 35, 365, 730.
	check("os", 6, 2, []step{{20, 6, 1, 0}, {30, 5, 0, 1}, {35, 4, 0, 1}, {200, 3, 1, 0}, {365, 2, 0, 1}, {730, 1, 0, 1}},
		[]float64{5.0 / 6, 5.0 / 6, 5.0 / 6, 5.0 / 9, 5.0 / 9, 5.0 / 9})
	// PFS: death 20 (P4), progression 30 (P8) and 90 (P2); censored at the last assessment
	// without progression: 35 (P5), 365 (P3), 730 (P1).
	check("pfs", 6, 3, []step{{20, 6, 1, 0}, {30, 5, 1, 0}, {35, 4, 0, 1}, {90, 3, 1, 0}, {365, 2, 0, 1}, {730, 1, 0, 1}},
		[]float64{5.0 / 6, 4.0 / 6, 4.0 / 6, 4.0 / 9, 4.0 / 9, 4.0 / 9})
	// DOR, responders only (first response day 30): P2 progresses 60 days later; P3 and P1
	// are censored 335 and 700 days after responding.
	check("dor", 3, 1, []step{{60, 3, 1, 0}, {335, 2, 0, 1}, {700, 1, 0, 1}}, []float64{2.0 / 3, 2.0 / 3, 2.0 / 3})

	g := get("pfs")
	if g["median_days"] != 90.0 {
		t.Errorf("PFS median %v, want 90 (S first at or below 0.5 there)", g["median_days"])
	}
	lm := g["landmarks"].(map[string]any)
	if s := lm["365"].(map[string]any)["survival"].(float64); math.Abs(s-4.0/9) > 1e-9 {
		t.Errorf("PFS at 1 year %v", s)
	}
	if lm["1825"] != nil {
		t.Errorf("5-year landmark beyond follow-up: %v", lm["1825"])
	}
	if g["median_follow_up_days"] == nil {
		t.Error("no median follow-up")
	}
	tr.expect(400, "GET", "/registry/outcomes/survival?endpoint=efs", nil)

	r := tr.expect(200, "GET", "/registry/outcomes/survival?group_by=product", nil, "Accept", "text/csv")
	rows, err := csv.NewReader(strings.NewReader(string(r.body))).ReadAll()
	if err != nil || len(rows) < 8 || rows[0][1] != "group" {
		t.Errorf("survival CSV: %v, %d rows", err, len(rows))
	}
}

func TestChartsAreSVG(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	for path, want := range map[string]string{
		"/registry/outcomes/survival.svg?group_by=product": "axicabtagene ciloleucel",
		"/registry/outcomes/survival.svg?endpoint=pfs":     "Progression-free survival",
		"/registry/outcomes/response.svg":                  "Complete metabolic response",
	} {
		r := tr.expect(200, "GET", path, nil)
		if ct := r.header.Get("Content-Type"); ct != "image/svg+xml" {
			t.Errorf("%s: Content-Type %s", path, ct)
		}
		dec := xml.NewDecoder(bytes.NewReader(r.body))
		for {
			if _, err := dec.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: not well-formed XML: %v", path, err)
			}
		}
		if !bytes.Contains(r.body, []byte(want)) || bytes.Contains(r.body, []byte("NaN")) {
			t.Errorf("%s: want %q in the chart, and no NaN", path, want)
		}
	}
	tr.expect(400, "GET", "/registry/outcomes/survival.svg?endpoint=x", nil)
}

// Without a filter, outcome queries read each patient's first infusion as the projection
// numbered it; with one, the first infusion the filter selects. A filter that selects
// everything must give the same answer as none, re-treated patients included, and a filter
// on the re-treatment's product must count that course.
func TestUnfilteredOutcomesCountEachPatientsFirstInfusion(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	p := patient("urn:uuid:site")
	p["identifier"] = []any{map[string]any{"system": "urn:test", "value": "P9"}}
	tr.expect(200, "POST", "/fhir", transaction(
		entry{"fullUrl": "urn:uuid:site", "resource": organization("Riverside"),
			"request": map[string]any{"method": "POST", "url": "Organization", "ifNoneExist": "name=Riverside"}},
		post("urn:uuid:pat", p),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
		post("urn:uuid:inf1", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2024-02-01", "axi-cel")),
		post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:inf1", "2024-03-02", "lugano-pmd")),
		post("urn:uuid:inf2", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2024-06-01", "liso-cel")),
		post("urn:uuid:a2", assessment("urn:uuid:pat", "urn:uuid:inf2", "2024-07-01", "lugano-cmr")),
	))
	groups := func(path string) string {
		b, err := json.Marshal(tr.expect(200, "GET", path, nil).json(t)["groups"])
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for _, q := range []string{"response?group_by=product", "survival?group_by=product", "survival?endpoint=pfs", "response?group_by=site"} {
		none, all := groups("/registry/outcomes/"+q), groups("/registry/outcomes/"+q+"&infused_from=1900-01-01")
		if none != all {
			t.Errorf("%s: without a filter\n%s\nwith one that selects every infusion\n%s", q, none, all)
		}
	}
	var byProduct map[string]float64
	for _, g := range tr.expect(200, "GET", "/registry/outcomes/response?group_by=product", nil).json(t)["groups"].([]any) {
		m := g.(map[string]any)
		if byProduct == nil {
			byProduct = map[string]float64{}
		}
		byProduct[m["group"].(string)] = m["n"].(float64)
	}
	if byProduct["axicabtagene ciloleucel (Yescarta)"] != 7 || len(byProduct) != 2 {
		t.Errorf("unfiltered, by product: %v; want P9 once, under axi-cel with the other six", byProduct)
	}
	filtered := tr.expect(200, "GET", "/registry/outcomes/response?product=liso-cel", nil).json(t)["groups"].([]any)
	if len(filtered) != 1 || filtered[0].(map[string]any)["n"] != float64(1) {
		t.Errorf("product=liso-cel: %v; want P9's second course", filtered)
	}
}
