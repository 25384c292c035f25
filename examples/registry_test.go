package examples_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
)

// With the registry attached (as serve and import run), the Bundles pass its business rules
// and it reads what the README's table says: each infusion's product, targets, disease and
// site, and each assessment's day and follow-up milestone under the default plan.
func TestExamplesAsTheRegistryReadsThem(t *testing.T) {
	t.Parallel()
	examples := loadExamples(t)
	pool := pgtest.NewDatabase(t)
	api := newAPI(t, pool, func(store *fhir.Store) {
		reg, err := registry.New(registry.Config{}, pool, store, time.Now, discard)
		if err != nil {
			t.Fatal(err)
		}
		store.AddHook(reg.Projection())
		if err := reg.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	loadAll(t, api, examples)
	loadAll(t, api, examples) // idempotent with the projection too
	ctx := context.Background()

	type infusion struct {
		on, product, disease, site string
		targets                    []string
		priorLines                 int
	}
	wantInfusionRows := map[string]infusion{
		"ex01-infusion": {"2024-03-12", "eque-cel", "myeloma", "Eastlake University Hospital", []string{"BCMA"}, 6},
		"ex02-infusion": {"2023-11-22", "axi-cel", "lbcl", "Northbridge Medical Center", []string{"CD19"}, 3},
		"ex03-infusion": {"2016-06-14", "other:", "b-all", "Northbridge Medical Center", []string{"CD19"}, 2},
		"ex04-infusion": {"2019-07-16", "other:", "lbcl", "Southgate People's Hospital", []string{"CD19", "BCMA"}, 2},
		"ex05-infusion": {"2026-08-18", "other:", "b-all", "Eastlake University Hospital", []string{"Ex02"}, 3},
	}
	rows, err := pool.Query(ctx, `
		SELECT v.body::jsonb #>> '{identifier,0,value}', i.infused_on::text, i.product, coalesce(i.disease, ''),
		       coalesce(s.name, ''), i.targets, coalesce(i.prior_lines, -1)
		FROM registry_infusion i
		JOIN resource r ON r.resource_type = i.resource_type AND r.resource_id = i.resource_id
		JOIN resource_version v ON v.resource_type = r.resource_type AND v.resource_id = r.resource_id AND v.version_id = r.version_id
		LEFT JOIN registry_site s ON s.organization_id = i.effective_site_id`)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for rows.Next() {
		var id string
		var got infusion
		if err := rows.Scan(&id, &got.on, &got.product, &got.disease, &got.site, &got.targets, &got.priorLines); err != nil {
			t.Fatal(err)
		}
		seen++
		want, ok := wantInfusionRows[id]
		switch {
		case !ok:
			t.Errorf("unexpected infusion %s", id)
		case got.on != want.on || !strings.HasPrefix(got.product, want.product) || got.disease != want.disease ||
			got.site != want.site || !slices.Equal(got.targets, want.targets) || got.priorLines != want.priorLines:
			t.Errorf("infusion %s: %+v, want %+v", id, got, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != len(wantInfusionRows) {
		t.Errorf("the registry has %d infusions, want %d", seen, len(wantInfusionRows))
	}

	// The README's table: day after infusion and milestone ("" = unscheduled).
	type assessment struct {
		day       int
		milestone string
		category  string
	}
	wantAssessments := map[string]assessment{
		"ex01-assessment-m1":     {30, "m1", "imwg-vgpr"},
		"ex01-assessment-m3":     {91, "m3", "imwg-cr"},
		"ex01-assessment-y1":     {366, "y1", "imwg-scr"},
		"ex01-assessment-y2":     {728, "y2", "imwg-scr"},
		"ex02-assessment-m1":     {29, "m1", "lugano-cmr"},
		"ex02-assessment-m3":     {91, "m3", "lugano-cmr"},
		"ex02-assessment-y1":     {364, "y1", "lugano-cmr"},
		"ex02-assessment-y2":     {733, "y2", "lugano-cmr"},
		"ex03-assessment-m1":     {28, "m1", "all-mrd-neg-cr"},
		"ex03-assessment-m3":     {91, "m3", "all-mrd-neg-cr"},
		"ex03-assessment-y1":     {364, "y1", "all-mrd-neg-cr"},
		"ex03-assessment-y2":     {728, "y2", "all-mrd-neg-cr"},
		"ex03-assessment-y3":     {1099, "y3", "all-mrd-neg-cr"},
		"ex03-assessment-y4":     {1456, "y4", "all-mrd-neg-cr"},
		"ex03-assessment-y5":     {1827, "y5", "all-mrd-neg-cr"},
		"ex03-assessment-y7":     {2555, "", "all-mrd-neg-cr"}, // beyond the default 5-year plan
		"ex04-assessment-m1":     {30, "m1", "lugano-cmr"},
		"ex04-assessment-m3":     {91, "m3", "lugano-cmr"},
		"ex04-assessment-sle-m9": {270, "", "sle-doris"}, // between M3 and year 1: unscheduled
		"ex04-assessment-y1":     {364, "y1", "lugano-cmr"},
		"ex04-assessment-y2":     {735, "y2", "lugano-cmr"},
		"ex04-assessment-y3":     {1092, "y3", "lugano-cmr"},
		"ex04-assessment-y4":     {1463, "y4", "lugano-cmr"},
		"ex04-assessment-y5":     {1827, "y5", "lugano-cmr"},
		"ex05-assessment-m1":     {28, "m1", "all-mrd-neg-cr"},
		"ex05-assessment-m3":     {90, "m3", "all-mrd-neg-cr"},
	}
	if len(wantAssessments) != wantObservations {
		t.Fatalf("the table has %d assessments, the files %d", len(wantAssessments), wantObservations)
	}
	rows, err = pool.Query(ctx, `
		SELECT v.body::jsonb #>> '{identifier,0,value}', coalesce(a.day, -1), coalesce(a.milestone, ''), a.category
		FROM registry_assessment a
		JOIN resource r ON r.resource_type = 'Observation' AND r.resource_id = a.observation_id
		JOIN resource_version v ON v.resource_type = r.resource_type AND v.resource_id = r.resource_id AND v.version_id = r.version_id`)
	if err != nil {
		t.Fatal(err)
	}
	seen = 0
	for rows.Next() {
		var id string
		var got assessment
		if err := rows.Scan(&id, &got.day, &got.milestone, &got.category); err != nil {
			t.Fatal(err)
		}
		seen++
		if want, ok := wantAssessments[id]; !ok {
			t.Errorf("unexpected assessment %s", id)
		} else if got != want {
			t.Errorf("assessment %s: %+v, want %+v", id, got, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != len(wantAssessments) {
		t.Errorf("the registry has %d assessments, want %d", seen, len(wantAssessments))
	}

	if n := count(t, pool, `SELECT count(*) FROM registry_assessment WHERE mrd_negative`); n != 3 {
		t.Errorf("%d MRD-negative myeloma assessments, want 3", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM registry_toxicity WHERE grade BETWEEN 1 AND 4 AND infusion_ref IS NOT NULL`); n != wantAdverseEvents {
		t.Errorf("%d graded toxicities linked to an infusion, want %d", n, wantAdverseEvents)
	}
	if n := count(t, pool, `SELECT count(*) FROM registry_patient WHERE deceased_on IS NULL`); n != wantPatients {
		t.Errorf("%d living patients in the registry, want %d", n, wantPatients)
	}
}

// The five patients in the researchers' outcomes (small cells shown, as on a demonstration
// instance): each at the timepoint its assessments fall in, in its own category.
func TestExamplesInTheOutcomes(t *testing.T) {
	t.Parallel()
	examples := loadExamples(t)
	pool := pgtest.NewDatabase(t)
	var reg *registry.Registry
	api := newAPI(t, pool, func(store *fhir.Store) {
		var err error
		if reg, err = registry.New(registry.Config{MinCell: 1}, pool, store, time.Now, discard); err != nil {
			t.Fatal(err)
		}
		store.AddHook(reg.Projection())
		if err := reg.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	loadAll(t, api, examples)
	asOf := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	report, err := reg.Response(context.Background(), registry.Filter{}, "", asOf)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]int{
		"m1": {"imwg-vgpr": 1, "lugano-cmr": 2, "all-mrd-neg-cr": 2},
		"m3": {"imwg-cr": 1, "lugano-cmr": 2, "all-mrd-neg-cr": 2},
		"y1": {"imwg-scr": 1, "lugano-cmr": 2, "all-mrd-neg-cr": 1},
		"y5": {"lugano-cmr": 1, "all-mrd-neg-cr": 1},
	}
	notYetDue := map[string]int{"m1": 0, "m3": 0, "y1": 1, "y5": 3}
	g := report.Groups[0]
	if *g.N != 5 {
		t.Fatalf("n = %d", *g.N)
	}
	for _, tp := range g.Timepoints {
		cats, ok := want[tp.Milestone]
		if !ok {
			continue
		}
		assessed := 0
		for _, c := range tp.Categories {
			if *c.Count != cats[c.Code] {
				t.Errorf("%s %s: %d, want %d", tp.Milestone, c.Code, *c.Count, cats[c.Code])
			}
			assessed += *c.Count
		}
		if *tp.Assessed != assessed || *tp.NotYetDue != notYetDue[tp.Milestone] {
			t.Errorf("%s: assessed %d (categories %d), not yet due %d, want %d", tp.Milestone, *tp.Assessed, assessed, *tp.NotYetDue, notYetDue[tp.Milestone])
		}
	}
	os, err := reg.Survival(context.Background(), registry.Filter{Diseases: []string{"lbcl"}}, registry.EndpointOS, "")
	if err != nil {
		t.Fatal(err)
	}
	if og := os.Groups[0]; *og.N != 2 || *og.Events != 0 {
		t.Errorf("lymphoma OS: n %d, events %d", *og.N, *og.Events)
	}
}
