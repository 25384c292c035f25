package registry_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testRegistry is the HTTP stack as serve wires it: FHIR API, registry projection and
// outcome endpoints, on a throwaway database, with a clock the test sets.
type testRegistry struct {
	t   testing.TB
	url string
	db  *pgxpool.Pool
	reg *registry.Registry
	h   *apptest.Harness
	now time.Time
}

func newTestRegistry(t testing.TB, cfg registry.Config) *testRegistry {
	t.Helper()
	return newTestRegistryWith(t, func(c *app.Config) { c.Registry = cfg })
}

// newTestRegistryWith is newTestRegistry with the whole app's configuration set by configure.
func newTestRegistryWith(t testing.TB, configure func(*app.Config), opts ...apptest.Option) *testRegistry {
	t.Helper()
	tr := &testRegistry{t: t, now: time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)}
	h := apptest.New(t, append([]apptest.Option{apptest.WithMaxBody("64M"),
		apptest.WithConfig(func(c *app.Config) {
			configure(c)
			if c.Registry.ReportCacheMB == 0 {
				c.Registry.ReportCacheMB = 64 // as served: every test's reports go through the cache
			}
		}),
		apptest.WithClock(func() time.Time { return tr.now })}, opts...)...)
	tr.url, tr.db, tr.reg, tr.h = h.URL, h.DB, h.App.Registry, h
	return tr
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not JSON: %v\n%s", err, r.body)
	}
	return m
}

func (tr *testRegistry) do(method, path string, body any, header ...string) reply {
	tr.t.Helper()
	r := tr.h.DoURL(method, tr.url+path, body, header...)
	return reply{r.Status, r.Header, r.Body}
}

func (tr *testRegistry) expect(want int, method, path string, body any, header ...string) reply {
	tr.t.Helper()
	r := tr.do(method, path, body, header...)
	if r.status != want {
		tr.t.Fatalf("%s %s: status %d, want %d\n%s", method, path, r.status, want, r.body)
	}
	return r
}

func (tr *testRegistry) count(sql string, args ...any) int {
	tr.t.Helper()
	var n int
	if err := tr.db.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		tr.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// Builders for the registry's resources, as an EHR following registry/definitions would send
// them. Each returns a Bundle entry with a urn:uuid fullUrl.

type entry = map[string]any

func post(fullURL string, resource map[string]any) entry {
	return entry{"fullUrl": fullURL, "resource": resource,
		"request": map[string]any{"method": "POST", "url": resource["resourceType"]}}
}

func transaction(entries ...entry) map[string]any {
	list := make([]any, len(entries))
	for i, e := range entries {
		list[i] = e
	}
	return map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": list}
}

func ref(to string) map[string]any { return map[string]any{"reference": to} }

func cc(system, code string) map[string]any {
	return map[string]any{"coding": []any{map[string]any{"system": system, "code": code}}}
}

func organization(name string) map[string]any {
	return map[string]any{"resourceType": "Organization", "name": name}
}

// patient is a Patient managed by site; with site "", by no one (R4 has no empty reference).
func patient(site string) map[string]any {
	p := map[string]any{"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01"}
	if site != "" {
		p["managingOrganization"] = ref(site)
	}
	return p
}

func condition(patient, icd10 string) map[string]any {
	return map[string]any{"resourceType": "Condition", "subject": ref(patient),
		"code": cc(registry.SystemICD10CM, icd10)}
}

func infusion(patient, condition, site, on, product string, targets ...string) map[string]any {
	p := map[string]any{"resourceType": "Procedure", "status": "completed",
		"meta":              map[string]any{"profile": []any{registry.ProfileInfusion}},
		"code":              cc(registry.SystemCartreg, "cart-infusion"),
		"subject":           ref(patient),
		"performedDateTime": on,
		"usedCode":          []any{cc(registry.SystemProduct, product)},
	}
	// R4 has no empty reference: "" leaves the element out.
	if condition != "" {
		p["reasonReference"] = []any{ref(condition)}
	}
	if site != "" {
		p["performer"] = []any{map[string]any{"actor": ref(site), "onBehalfOf": ref(site)}}
	}
	var ext []any
	for _, t := range targets {
		ext = append(ext, map[string]any{"url": registry.ExtTargetAntigen, "valueCodeableConcept": cc(registry.SystemTarget, t)})
	}
	if ext != nil {
		p["extension"] = ext
	}
	return p
}

func assessment(patient, infusion, on, category string) map[string]any {
	o := map[string]any{"resourceType": "Observation", "status": "final",
		"code":                 cc(registry.SystemLOINC, registry.CodeDiseaseStat),
		"subject":              ref(patient),
		"effectiveDateTime":    on,
		"valueCodeableConcept": cc(registry.SystemResponse, category),
	}
	if infusion != "" {
		o["partOf"] = []any{ref(infusion)}
	}
	return o
}

func toxicity(patient, infusion, kind, on string, grade int) map[string]any {
	event := cc("http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", registry.CodeCRSNCIt)
	if kind == "icans" {
		event = cc(registry.SystemCartreg, "icans")
	}
	return map[string]any{"resourceType": "AdverseEvent", "actuality": "actual", "event": event,
		"subject": ref(patient), "date": on, "suspectEntity": []any{map[string]any{"instance": ref(infusion)}},
		"extension": []any{map[string]any{"url": registry.ExtASTCTGrade, "valueInteger": grade}}}
}

// location returns the id a transaction response gave to entry i.
func location(t testing.TB, r reply, i int) string {
	t.Helper()
	entries, _ := r.json(t)["entry"].([]any)
	if i >= len(entries) {
		t.Fatalf("response has %d entries, want entry %d", len(entries), i)
	}
	loc := entries[i].(map[string]any)["response"].(map[string]any)["location"].(string)
	parts := strings.Split(loc, "/")
	return parts[len(parts)-4] + "/" + parts[len(parts)-3]
}
