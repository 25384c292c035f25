package synth

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func count(t *testing.T, pool *pgxpool.Pool, sql string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// Generated Bundles load through the FHIR API as serve wires it, with the registry attached
// so that its business rules apply (a broken rule fails the transaction); loading them
// again creates nothing, and the registry reads each patient as the model has it.
func TestBundlesLoadThroughTheAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx := context.Background()
	pool := pgtest.NewDatabase(t)
	params := searchparam.Default()
	store := fhir.NewStore(pool, params, time.Now)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := registry.New(registry.Config{}, pool, store, time.Now, logger)
	if err != nil {
		t.Fatal(err)
	}
	store.AddHook(reg.Projection())
	if err := reg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const base = "http://localhost/fhir"
	api := fhir.NewAPI(store, fhir.NewSearcher(store, params, base), logger, fhir.APIConfig{
		BaseURL: base, DefaultCount: 20, MaxCount: 1000,
		Bundles: fhir.BundleConfig{MaxEntries: 10000, ReferentialIntegrity: true},
	})

	c := generate(t, Options{Patients: 30, Seed: 3, AsOf: cutoff})
	load := func() (created, found int) {
		t.Helper()
		for i := range c.Patients {
			raw, err := c.Bundle(i)
			if err != nil {
				t.Fatal(err)
			}
			out, err := api.ProcessBundle(ctx, raw, base)
			if err != nil {
				t.Fatalf("patient %d (%s): %s", i, c.Patients[i].Identifier, err)
			}
			var resp struct {
				Type  string
				Entry []struct{ Response struct{ Status string } }
			}
			if err := json.Unmarshal(out, &resp); err != nil || resp.Type != "transaction-response" {
				t.Fatalf("patient %d: response %s (%v)", i, out, err)
			}
			for _, e := range resp.Entry {
				switch e.Response.Status {
				case "201 Created":
					created++
				case "200 OK":
					found++
				default:
					t.Errorf("patient %d: entry status %s", i, e.Response.Status)
				}
			}
		}
		return created, found
	}

	created, _ := load()
	before := count(t, pool, `SELECT count(*) FROM resource`)
	versions := count(t, pool, `SELECT count(*) FROM resource_version`)
	if created != c.Resources() {
		t.Errorf("the first load created %d resources, want %d (sites once)", created, c.Resources())
	}
	again, found := load()
	if again != 0 || count(t, pool, `SELECT count(*) FROM resource`) != before ||
		count(t, pool, `SELECT count(*) FROM resource_version`) != versions {
		t.Errorf("loading again created %d resources (%d found): %d resources, %d before", again, found,
			count(t, pool, `SELECT count(*) FROM resource`), before)
	}

	// The registry's reading agrees with the model.
	deaths, assessments, toxicities, medAdms := 0, 0, 0, 0
	for _, p := range c.Patients {
		if p.Death != nil {
			deaths++
		}
		assessments += len(p.Assessments)
		toxicities += len(p.Toxicities)
		if p.Infusion.Resource == MedicationAdministration {
			medAdms++
		}
	}
	for _, check := range []struct {
		what, sql string
		want      int
	}{
		{"infusions", `SELECT count(*) FROM registry_infusion`, len(c.Patients)},
		{"infusions as MedicationAdministration", `SELECT count(*) FROM registry_infusion WHERE resource_type = 'MedicationAdministration'`, medAdms},
		{"infusions with a disease and a site", `SELECT count(*) FROM registry_infusion WHERE disease IS NOT NULL AND effective_site_id IS NOT NULL`, len(c.Patients)},
		{"assessments", `SELECT count(*) FROM registry_assessment`, assessments},
		{"toxicities linked to an infusion", `SELECT count(*) FROM registry_toxicity WHERE grade BETWEEN 1 AND 4 AND infusion_ref IS NOT NULL`, toxicities},
		{"deaths", `SELECT count(*) FROM registry_patient WHERE deceased_on IS NOT NULL`, deaths},
	} {
		if got := count(t, pool, check.sql); got != check.want {
			t.Errorf("the registry has %d %s, the model %d", got, check.what, check.want)
		}
	}

	// Survival is censored where the model last saw each patient (a follow-up Encounter when
	// nothing else happened that day): the same dates, patient for patient.
	want := map[string]int{}
	for _, p := range c.Patients {
		want[p.LastContact.Format("2006-01-02")]++
	}
	rows, err := pool.Query(ctx, `SELECT to_char(last_contact_on, 'YYYY-MM-DD'), count(*) FROM registry_infusion GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var day string
		var n int
		if err := rows.Scan(&day, &n); err != nil {
			t.Fatal(err)
		}
		got[day] = n
	}
	if rows.Err() != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("last contacts in the registry %v, in the model %v (%v)", got, want, rows.Err())
	}
}
