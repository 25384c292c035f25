package registry_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/registry"
)

// exact is the registry with counts as they are, so that a report that is one patient out of
// date differs from the right one.
var exact = registry.Config{MinCell: 1, RoundTo: 1}

// cachedQueries are the reports the cache keeps, each with a filter or grouping that a
// particular kind of write changes.
var cachedQueries = []string{
	"response", "response?group_by=site", "response?group_by=product&disease=lbcl",
	"survival", "survival?endpoint=pfs", "survival?group_by=site",
}

// uncached answers query from a registry without a cache on tr's database and clock: what
// the served (cached) answer must equal.
func uncached(t *testing.T, tr *testRegistry, query string) string {
	t.Helper()
	reg, err := registry.New(exact, tr.db, tr.h.App.Store, func() time.Time { return tr.now }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse("/" + query)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	f, err := registry.ParseFilter(q)
	if err != nil {
		t.Fatal(err)
	}
	var report any
	if u.Path == "/response" {
		report, err = reg.Response(context.Background(), f, q.Get("group_by"), tr.now)
	} else {
		endpoint := q.Get("endpoint")
		if endpoint == "" {
			endpoint = registry.EndpointOS
		}
		report, err = reg.Survival(context.Background(), f, endpoint, q.Get("group_by"))
	}
	if err != nil {
		t.Fatal(err)
	}
	return canonicalJSON(t, report)
}

func canonicalJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(m)
	return string(b)
}

func (tr *testRegistry) served(t *testing.T, query string) string {
	t.Helper()
	var m any
	if err := json.Unmarshal(tr.expect(200, "GET", "/registry/outcomes/"+query, nil).body, &m); err != nil {
		t.Fatal(err)
	}
	return canonicalJSON(t, m)
}

func (tr *testRegistry) dataVersion(t *testing.T) int {
	t.Helper()
	return tr.count(`SELECT sum(version)::int FROM registry_data_version`)
}

// A report is computed once and served again while the registry's data stay as they were;
// it is computed again once a transaction says they changed.
func TestReportsAreServedFromTheCacheUntilTheDataChange(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, exact)
	outcomeCohort(t, tr)
	before := map[string]string{}
	for _, q := range cachedQueries {
		before[q] = tr.served(t, q)
	}
	// Behind the cache's back, without moving the data version: every alive lymphoma
	// patient dies on day 100. Only a cached report can still say otherwise.
	ctx := context.Background()
	if _, err := tr.db.Exec(ctx, `UPDATE registry_infusion SET death_on = infused_on + 100 WHERE death_on IS NULL AND disease = 'lbcl'`); err != nil {
		t.Fatal(err)
	}
	for _, q := range cachedQueries {
		if got := tr.served(t, q); got != before[q] {
			t.Errorf("%s was computed again, not served from the cache:\n%s\nthen\n%s", q, before[q], got)
		}
	}
	changed := 0
	for _, q := range cachedQueries {
		if uncached(t, tr, q) != before[q] {
			changed++
		}
	}
	if changed == 0 {
		t.Fatal("the change behind the cache's back changes no report: the test shows nothing")
	}
	if err := pgx.BeginFunc(ctx, tr.db, func(tx pgx.Tx) error { return registry.DataChanged(ctx, tx) }); err != nil {
		t.Fatal(err)
	}
	for _, q := range cachedQueries {
		if got, want := tr.served(t, q), uncached(t, tr, q); got != want {
			t.Errorf("%s after the data version moved:\n%s\nwant\n%s", q, got, want)
		}
	}
}

// Every kind of write a report can see moves the data version in its own transaction, so the
// served reports stay exactly the ones computed afresh; a write no report sees leaves the
// cache alone.
func TestEveryWriteKeepsTheCachedReportsExact(t *testing.T) {
	t.Parallel()
	tr := newTestRegistryWith(t, func(c *app.Config) { c.Registry = exact })
	outcomeCohort(t, tr)
	check := func(after string) {
		t.Helper()
		for _, q := range cachedQueries {
			if got, want := tr.served(t, q), uncached(t, tr, q); got != want {
				t.Errorf("after %s, %s served\n%s\nwant\n%s", after, q, got, want)
			}
		}
	}
	check("the first load")
	find := func(query string) map[string]any {
		t.Helper()
		r := tr.expect(200, "GET", "/fhir/"+query, nil).json(t)
		return r["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
	}
	p1 := find("Patient?identifier=urn:test|P1")
	p1ID := "Patient/" + p1["id"].(string)
	inf := find("Procedure?subject=" + p1ID)
	infID := "Procedure/" + inf["id"].(string)

	// A new patient in a Bundle.
	enrol(t, tr, "Riverside", "2024-06-03", 0)
	check("a new patient")

	// An assessment of an existing infusion, then its deletion.
	r := tr.expect(201, "POST", "/fhir/Observation", assessment(p1ID, infID, "2025-01-02", "lugano-pmd"))
	check("a progression")
	tr.expect(204, "DELETE", "/fhir/Observation/"+r.json(t)["id"].(string), nil)
	check("the progression deleted")

	// A death.
	p1["deceasedDateTime"] = "2025-06-01"
	tr.expect(200, "PUT", "/fhir/"+p1ID, p1)
	check("a death")

	// An end of follow-up re-derives no patient's rows.
	p3 := find("Patient?identifier=urn:test|P3")
	tr.expect(201, "POST", "/fhir/EpisodeOfCare", map[string]any{"resourceType": "EpisodeOfCare", "status": "finished",
		"patient": ref("Patient/" + p3["id"].(string)), "period": map[string]any{"end": "2024-02-01"},
		"type": []any{cc(registry.SystemCartreg, registry.CodeFollowUpEpisode), cc(registry.SystemCartreg, registry.CodeLostToFollowUp)}})
	check("an end of follow-up")

	// A site renamed, which no patient's rows change with either.
	site := find("Organization?name=Harbour")
	site["name"] = "Harbour General"
	tr.expect(200, "PUT", "/fhir/Organization/"+site["id"].(string), site)
	check("a site renamed")

	// A vital sign is no assessment: the cached reports stay valid and are kept.
	version := tr.dataVersion(t)
	tr.expect(201, "POST", "/fhir/Observation", map[string]any{"resourceType": "Observation", "status": "final",
		"code": cc("http://loinc.org", "8867-4"), "subject": ref(p1ID), "effectiveDateTime": "2025-01-05",
		"valueQuantity": map[string]any{"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
	if got := tr.dataVersion(t); got != version {
		t.Errorf("a heart rate moved the data version from %d to %d: every cached report was dropped for nothing", version, got)
	}
	check("a heart rate")
}

// With a maximum staleness, a kept report is served after a write until it is that old, and
// then computed again: figures lag the data by no more than the setting.
func TestAKeptReportLagsTheDataNoLongerThanMaxStale(t *testing.T) {
	t.Parallel()
	cfg := exact
	cfg.ReportMaxStale = time.Minute
	tr := newTestRegistry(t, cfg)
	outcomeCohort(t, tr)
	kept := tr.served(t, "survival")
	computed := tr.now

	p1 := tr.expect(200, "GET", "/fhir/Patient?identifier=urn:test|P1", nil).json(t)["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
	p1["deceasedDateTime"] = "2025-06-01"
	tr.expect(200, "PUT", "/fhir/Patient/"+p1["id"].(string), p1)
	if uncached(t, tr, "survival") == kept {
		t.Fatal("the death does not change the survival report: the test shows nothing")
	}
	for _, after := range []time.Duration{0, 30 * time.Second, time.Minute} {
		tr.now = computed.Add(after)
		if got := tr.served(t, "survival"); got != kept {
			t.Errorf("%s after it was computed, the kept report was not served:\n%s", after, got)
		}
	}
	tr.now = computed.Add(time.Minute + time.Second)
	if got, want := tr.served(t, "survival"), uncached(t, tr, "survival"); got != want {
		t.Errorf("past the maximum staleness, served\n%s\nwant\n%s", got, want)
	}
}
