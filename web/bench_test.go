package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/registry/synth"
	"github.com/cartreg/cartreg/web"
)

// benchAsOf is the synthetic cohort's cut-off and the benchmarks' today.
var benchAsOf = time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)

// bench100k is cartreg with a synthetic cohort written straight into its tables, its
// follow-up Tasks made by a first scheduler run, and a coordinator, a researcher and an
// administrator signed in.
type bench100k struct {
	h        *apptest.Harness
	browsers map[string]*browser
}

func newBench100k(b *testing.B) *bench100k {
	if testing.Short() {
		b.Skip("loads 100,000 patients")
	}
	patients := 100_000
	if n, err := strconv.Atoi(os.Getenv("BENCH_PATIENTS")); err == nil && n > 0 {
		patients = n
	}
	cohort, err := synth.Generate(synth.Options{Patients: patients, Seed: 2026, AsOf: benchAsOf})
	if err != nil {
		b.Fatal(err)
	}
	h := apptest.New(b, apptest.WithConfig(func(c *app.Config) {
		c.FollowUp.LeadDays = 14
		// The recomputed cases move the clock a minute at a time: sessions outlive them.
		c.Web.SessionIdleTimeout, c.Web.SessionLifetime = 24*time.Hour, 48*time.Hour
		// As cartreg serve runs by default: suppression, rounding, the overlap control and
		// the report cache, each of which the outcome pages pay for.
		c.Registry = registry.Config{MinCell: 5, RoundTo: 5, OverlapWindow: 30 * 24 * time.Hour,
			QueryTimeout: time.Minute, ReportCacheMB: 64, ReportMaxStale: time.Minute}
	}))
	h.SetNow(benchAsOf)
	ctx := auth.WithPrincipal(context.Background(), auth.Operator("bench"))
	start := time.Now()
	if err := synth.LoadDirect(ctx, h.DB, cohort, h.App.Registry.Terminology()); err != nil {
		b.Fatal(err)
	}
	if err := writePatients(ctx, h, cohort); err != nil {
		b.Fatal(err)
	}
	if err := h.App.Registry.Start(ctx); err != nil {
		b.Fatal(err)
	}
	s, err := h.App.FollowUp.Run(ctx, benchAsOf)
	if err != nil {
		b.Fatal(err)
	}
	// A settled database, as autovacuum keeps a live one.
	if _, err := h.DB.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d patients and made %d Tasks in %s", patients, s.Created, time.Since(start).Round(time.Millisecond))
	bb := &bench100k{h: h, browsers: map[string]*browser{}}
	for _, u := range []struct {
		name  string
		role  auth.Role
		sites []string
	}{{"cora", auth.RoleCoordinator, []string{"s0"}}, {"rhea", auth.RoleResearcher, nil}, {"ada", auth.RoleAdmin, nil}} {
		if _, _, err := h.App.Web.Users().AddUser(context.Background(), web.NewUser{Name: u.name, Role: u.role, Sites: u.sites, Password: password}); err != nil {
			b.Fatal(err)
		}
		jar, _ := cookiejar.New(nil)
		br := &browser{t: b, base: h.URL, client: &http.Client{Jar: jar,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
		if p := br.signIn(u.name, password); p.status != http.StatusSeeOther {
			b.Fatalf("%s signing in: %d", u.name, p.status)
		}
		bb.browsers[u.name] = br
	}
	return bb
}

// writePatients stores the cohort's Patient resources (p0, p1, ...: the ids synth.LoadDirect
// gives the registry's rows), with their names, MRN and phone, and their search index rows, so
// that the work list's rows and its search by name or MRN read what a registry with patients
// holds. They go through a store of their own, without the registry's and follow-up's write
// hooks, whose work LoadDirect has already done; 2,000 to a transaction.
func writePatients(ctx context.Context, h *apptest.Harness, c *synth.Cohort) error {
	store := fhir.NewStore(h.DB, searchparam.Default(), func() time.Time { return benchAsOf })
	const batch = 2000
	for from := 0; from < len(c.Patients); from += batch {
		var resources []*fhir.Resource
		for i := from; i < min(from+batch, len(c.Patients)); i++ {
			p := c.Patients[i]
			resources = append(resources, &fhir.Resource{Type: "Patient", ID: fmt.Sprintf("p%d", i), Body: map[string]any{
				"resourceType": "Patient", "id": fmt.Sprintf("p%d", i), "active": true,
				"identifier": []any{map[string]any{"system": synth.IdentifierBase + "patient", "value": p.Identifier,
					"type": map[string]any{"coding": []any{map[string]any{
						"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}}}}},
				"name":                 []any{map[string]any{"use": "official", "family": p.Family, "given": []any{p.Given}}},
				"telecom":              []any{map[string]any{"system": "phone", "value": fmt.Sprintf("+1 555 %07d", i)}},
				"gender":               p.Gender,
				"birthDate":            p.BirthDate.Format(time.DateOnly),
				"managingOrganization": map[string]any{"reference": fmt.Sprintf("Organization/s%d", p.Site)},
			}})
		}
		if err := pgx.BeginFunc(ctx, h.DB, func(tx pgx.Tx) error {
			_, err := store.CreateBatch(ctx, tx, resources)
			return err
		}); err != nil {
			return fmt.Errorf("writing patients from %d: %w", from, err)
		}
	}
	return nil
}

// time GETs path as user b.N times and reports the median.
// time times GET path as user, its median over b.N requests. A path of several, separated
// by spaces, is one page with what its browser fetches next (the charts), timed together.
func (bb *bench100k) time(b *testing.B, user, path string, before func(b *testing.B)) {
	br := bb.browsers[user]
	took := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if before != nil {
			before(b)
		}
		start := time.Now()
		for _, path := range strings.Fields(path) {
			if p := br.get(path); p.status != http.StatusOK {
				b.Fatalf("GET %s as %s: %d\n%.2000s", path, user, p.status, p.body)
			}
		}
		took[i] = time.Since(start)
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "median-ms")
}

// The pages at 100,000 patients (issue 16: under 200 ms each):
//
//	go test ./web -run '^$' -bench 100k -benchtime 5x
func BenchmarkPages100k(b *testing.B) {
	bb := newBench100k(b)
	ctx := context.Background()
	// As if an EHR had just written an assessment: the registry's data version moves.
	aWrite := func(b *testing.B) {
		if err := pgx.BeginFunc(ctx, bb.h.DB, func(tx pgx.Tx) error { return registry.DataChanged(ctx, tx) }); err != nil {
			b.Fatal(err)
		}
	}
	// A write, with the kept reports older than CARTREG_OUTCOMES_MAX_STALE: they are
	// computed again, as the first researcher after a quiet minute finds them.
	aWriteAMinuteOn := func(b *testing.B) {
		aWrite(b)
		bb.h.SetNow(bb.h.Now().Add(time.Minute + time.Second))
	}
	for _, c := range []struct {
		name, user, path string
		before           func(*testing.B)
	}{
		{"WorkList/coordinator", "cora", "/work", nil},
		{"WorkList/coordinator-search", "cora", "/work?q=smith", nil},
		{"WorkList/coordinator-search-two-letters", "cora", "/work?q=sm", nil},
		{"WorkList/coordinator-search-one-letter", "cora", "/work?q=s", nil},
		{"WorkList/admin-all-sites", "ada", "/work", nil},
		{"WorkListCSV/coordinator", "cora", "/work.csv", nil},
		{"Patient", "cora", "/patients/p0", nil},
		{"Outcomes", "rhea", "/outcomes", nil},
		{"Outcomes/by-product", "rhea", "/outcomes?group_by=product", nil},
		{"Outcomes/after-a-write", "rhea", "/outcomes", aWrite},
		{"Outcomes/recomputed", "rhea", "/outcomes", aWriteAMinuteOn},
		{"Outcomes/by-product-recomputed", "rhea", "/outcomes?group_by=product", aWriteAMinuteOn},
		{"Outcomes/with-charts", "rhea", "/outcomes /outcomes/response.svg? /outcomes/survival.svg?", nil},
		{"Outcomes/with-charts-recomputed", "rhea", "/outcomes /outcomes/response.svg? /outcomes/survival.svg?", aWriteAMinuteOn},
		{"Status", "ada", "/status", nil},
	} {
		b.Run(c.name, func(b *testing.B) { bb.time(b, c.user, c.path, c.before) })
	}
}
