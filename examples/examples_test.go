package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// identifierBase is the system of every example resource's identifier, followed by the
// resource type in lower case.
const identifierBase = "http://cartreg.org/fhir/example/"

// What the five Bundles hold once loaded (shared sites created once).
const (
	wantFiles         = 5
	wantPatients      = 5
	wantInfusions     = 5 // Procedures and MedicationAdministrations
	wantMedAdms       = 1
	wantObservations  = 26
	wantConditions    = 6
	wantOrganizations = 3
	wantAdverseEvents = 6
)

type bundleEntry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
	Request  struct {
		Method      string `json:"method"`
		URL         string `json:"url"`
		IfNoneExist string `json:"ifNoneExist"`
	} `json:"request"`
}

type example struct {
	name   string
	raw    []byte
	bundle struct {
		ResourceType string        `json:"resourceType"`
		Type         string        `json:"type"`
		Entry        []bundleEntry `json:"entry"`
	}
}

func loadExamples(t *testing.T) []*example {
	t.Helper()
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	if len(files) != wantFiles {
		t.Fatalf("%d example files, want %d: %v", len(files), wantFiles, files)
	}
	var out []*example
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ex := &example{name: f, raw: raw}
		if err := json.Unmarshal(raw, &ex.bundle); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, ex)
	}
	return out
}

var (
	urnUUID  = regexp.MustCompile(`^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	dateLike = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}`)
)

// walk calls fn for every key and string value in a decoded JSON value.
func walk(v any, fn func(key, value string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok {
				fn(k, s)
			} else {
				walk(e, fn)
			}
		}
	case []any:
		for _, e := range x {
			walk(e, fn)
		}
	}
}

// identifierOf returns the first identifier of a resource (AdverseEvent has a single one).
func identifierOf(res map[string]any) (system, value string) {
	id := res["identifier"]
	if l, ok := id.([]any); ok && len(l) > 0 {
		id = l[0]
	}
	m, _ := id.(map[string]any)
	system, _ = m["system"].(string)
	value, _ = m["value"].(string)
	return system, value
}

func day(s string) time.Time {
	t, err := time.Parse("2006-01-02", s[:10])
	if err != nil {
		panic(err)
	}
	return t
}

// Every file is a transaction Bundle whose every resource the server's strict R4 parser
// accepts, written for idempotent loading, self-contained and dated consistently.
func TestExamplesAreValidTransactions(t *testing.T) {
	t.Parallel()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	for _, ex := range loadExamples(t) {
		t.Run(ex.name, func(t *testing.T) {
			b := ex.bundle
			if b.ResourceType != "Bundle" || b.Type != "transaction" {
				t.Fatalf("a %s of type %q, want a transaction Bundle", b.ResourceType, b.Type)
			}
			if len(b.Entry) == 0 {
				t.Fatal("no entries")
			}
			if _, err := fhir.Parse(ex.raw); err != nil {
				t.Errorf("the Bundle: %s", err)
			}
			fullURLs := map[string]bool{}
			for _, e := range b.Entry {
				if !urnUUID.MatchString(e.FullURL) || fullURLs[e.FullURL] {
					t.Errorf("fullUrl %q: want a urn:uuid: unique in the Bundle", e.FullURL)
				}
				fullURLs[e.FullURL] = true
			}

			var infusionOn time.Time
			type dated struct{ what, on string }
			var after []dated // must not precede the infusion
			patients := 0
			for i, e := range b.Entry {
				where := fmt.Sprintf("entry[%d] (%s)", i, e.FullURL)
				parsed, err := fhir.Parse(e.Resource)
				if err != nil {
					t.Errorf("%s: %s", where, err)
					continue
				}
				var res map[string]any
				if err := json.Unmarshal(e.Resource, &res); err != nil {
					t.Fatal(err)
				}
				typ := parsed.Type
				where += " " + typ

				// Conditional create on the resource's own identifier.
				system, value := identifierOf(res)
				if system != identifierBase+strings.ToLower(typ) || value == "" {
					t.Errorf("%s: identifier %s|%s, want system %s", where, system, value, identifierBase+strings.ToLower(typ))
				}
				criteria := "identifier=" + system + "|" + value
				if typ == "AdverseEvent" {
					// R4 has no identifier search parameter on AdverseEvent: the identifier is
					// repeated as a tag, which _tag finds.
					criteria = "_tag=" + system + "|" + value
					tagged := false
					meta, _ := res["meta"].(map[string]any)
					tags, _ := meta["tag"].([]any)
					for _, tag := range tags {
						m, _ := tag.(map[string]any)
						tagged = tagged || (m["system"] == system && m["code"] == value)
					}
					if !tagged {
						t.Errorf("%s: no meta.tag %s|%s for its conditional create", where, system, value)
					}
				}
				if e.Request.Method != "POST" || e.Request.URL != typ || e.Request.IfNoneExist != criteria {
					t.Errorf("%s: request %s %s ifNoneExist=%q, want POST %s ifNoneExist=%q",
						where, e.Request.Method, e.Request.URL, e.Request.IfNoneExist, typ, criteria)
				}

				// References stay inside the Bundle; dates are not in the future.
				walk(res, func(key, s string) {
					if key == "reference" && !fullURLs[s] {
						t.Errorf("%s: reference %q is not an entry of this Bundle", where, s)
					}
					if dateLike.MatchString(s) && day(s).After(today) {
						t.Errorf("%s: %s %s is in the future", where, key, s)
					}
				})
				switch typ {
				case "Patient":
					patients++
					if _, dead := res["deceasedDateTime"]; dead {
						t.Errorf("%s: the example patients are alive", where)
					}
				case "Procedure":
					infusionOn = day(res["performedDateTime"].(string))
				case "MedicationAdministration":
					infusionOn = day(res["effectiveDateTime"].(string))
				case "Observation":
					after = append(after, dated{where, res["effectiveDateTime"].(string)})
				case "AdverseEvent":
					after = append(after, dated{where, res["date"].(string)})
				}
			}
			if patients != 1 {
				t.Errorf("%d Patients, want 1 per file", patients)
			}
			if infusionOn.IsZero() {
				t.Fatal("no infusion")
			}
			for _, d := range after {
				if day(d.on).Before(infusionOn) {
					t.Errorf("%s on %s is before the infusion on %s", d.what, d.on, infusionOn.Format(time.DateOnly))
				}
			}
		})
	}
}

// newAPI builds the FHIR API as the import command does; attach, if given, attaches more to
// the store first (the registry's projection).
func newAPI(t *testing.T, pool *pgxpool.Pool, attach func(*fhir.Store)) *fhir.API {
	t.Helper()
	params := searchparam.Default()
	store := fhir.NewStore(pool, params, time.Now)
	if attach != nil {
		attach(store)
	}
	return fhir.NewAPI(store, fhir.NewSearcher(store, params, ""), discard, fhir.APIConfig{
		DefaultCount: 20, MaxCount: 1000,
		Bundles: fhir.BundleConfig{MaxEntries: 10000, ReferentialIntegrity: true},
	})
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// loadAll posts every example Bundle and returns, per file, the response statuses.
func loadAll(t *testing.T, api *fhir.API, examples []*example) map[string][]string {
	t.Helper()
	statuses := map[string][]string{}
	for _, ex := range examples {
		out, err := api.ProcessBundle(context.Background(), ex.raw, "http://localhost/fhir")
		if err != nil {
			t.Fatalf("%s: %s", ex.name, err)
		}
		var resp struct {
			Type  string
			Entry []struct{ Response struct{ Status string } }
		}
		if err := json.Unmarshal(out, &resp); err != nil {
			t.Fatalf("%s: response: %v", ex.name, err)
		}
		if resp.Type != "transaction-response" || len(resp.Entry) != len(ex.bundle.Entry) {
			t.Fatalf("%s: a %s with %d entries for %d", ex.name, resp.Type, len(resp.Entry), len(ex.bundle.Entry))
		}
		for _, e := range resp.Entry {
			statuses[ex.name] = append(statuses[ex.name], e.Response.Status)
		}
	}
	return statuses
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func countType(t *testing.T, pool *pgxpool.Pool, types ...string) int {
	t.Helper()
	return count(t, pool, `SELECT count(*) FROM resource WHERE resource_type = ANY($1) AND NOT deleted`, types)
}

// The five Bundles load through the FHIR API, and loading them again creates nothing.
func TestExamplesLoadIdempotently(t *testing.T) {
	t.Parallel()
	examples := loadExamples(t)
	pool := pgtest.NewDatabase(t)
	api := newAPI(t, pool, nil)

	first := loadAll(t, api, examples)
	for name, st := range first {
		for i, s := range st {
			if s != "201 Created" && s != "200 OK" {
				t.Errorf("%s entry[%d]: %s", name, i, s)
			}
		}
	}
	resources := count(t, pool, `SELECT count(*) FROM resource`)
	versions := count(t, pool, `SELECT count(*) FROM resource_version`)
	entries := 0
	for _, ex := range examples {
		entries += len(ex.bundle.Entry)
	}
	// Every entry is new except a site already created by an earlier file.
	if want := entries - (len(examples) - wantOrganizations); resources != want {
		t.Errorf("%d resources after the first load, want %d", resources, want)
	}

	second := loadAll(t, api, examples)
	for name, st := range second {
		for i, s := range st {
			if s != "200 OK" {
				t.Errorf("second load: %s entry[%d]: %s, want 200 OK (found by ifNoneExist)", name, i, s)
			}
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM resource`); n != resources {
		t.Errorf("%d resources after loading twice, %d after once", n, resources)
	}
	if n := count(t, pool, `SELECT count(*) FROM resource_version`); n != versions {
		t.Errorf("%d resource versions after loading twice, %d after once", n, versions)
	}

	for _, c := range []struct {
		types []string
		want  int
	}{
		{[]string{"Patient"}, wantPatients},
		{[]string{"Procedure", "MedicationAdministration"}, wantInfusions},
		{[]string{"MedicationAdministration"}, wantMedAdms},
		{[]string{"Observation"}, wantObservations},
		{[]string{"Condition"}, wantConditions},
		{[]string{"Organization"}, wantOrganizations},
		{[]string{"AdverseEvent"}, wantAdverseEvents},
	} {
		if got := countType(t, pool, c.types...); got != c.want {
			t.Errorf("%d %s, want %d", got, strings.Join(c.types, "+"), c.want)
		}
	}
}
