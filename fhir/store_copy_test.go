package fhir_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
)

// copyBatchResources are resources whose index rows fill every search table, a value too long
// for a btree (an oversized token) among them. Each call makes them afresh under ids that end
// in suffix, since the store writes meta into their bodies.
func copyBatchResources(t *testing.T, suffix string) []*fhir.Resource {
	t.Helper()
	bodies := []string{
		`{"resourceType":"Task","id":"task-` + suffix + `","status":"requested","intent":"order","priority":"routine",
			"identifier":[{"system":"https://example.org/visit","value":"v-` + suffix + `"},
				{"system":"https://example.org/long","value":"` + strings.Repeat("x", 2100) + `"}],
			"code":{"coding":[{"system":"https://example.org/milestone","code":"m3","display":"Month 3"}]},
			"businessStatus":{"coding":[{"system":"https://example.org/urgency","code":"due"}]},
			"for":{"reference":"Patient/pat-` + suffix + `"},"focus":{"reference":"Procedure/inf-` + suffix + `"},
			"owner":{"reference":"Organization/site-` + suffix + `"},"authoredOn":"2026-03-01",
			"restriction":{"period":{"start":"2026-03-15","end":"2026-04-15"}},"lastModified":"2026-03-01T06:00:00Z"}`,
		`{"resourceType":"Patient","id":"pat-` + suffix + `","name":[{"family":"Copywright","given":["Ada"]}],
			"gender":"female","birthDate":"1961-05-04","telecom":[{"system":"email","value":"ada@example.org"}]}`,
		`{"resourceType":"Observation","id":"obs-` + suffix + `","status":"final",
			"code":{"coding":[{"system":"http://loinc.org","code":"2339-0"}]},"subject":{"reference":"Patient/pat-` + suffix + `"},
			"effectiveDateTime":"2026-03-20","valueQuantity":{"value":5.4,"unit":"mmol/L","system":"http://unitsofmeasure.org","code":"mmol/L"}}`,
		`{"resourceType":"RiskAssessment","id":"risk-` + suffix + `","status":"final","subject":{"reference":"Patient/pat-` + suffix + `"},
			"prediction":[{"probabilityDecimal":0.25}]}`,
		`{"resourceType":"ValueSet","id":"vs-` + suffix + `","status":"active","url":"https://example.org/ValueSet/vs-` + suffix + `"}`,
	}
	out := make([]*fhir.Resource, len(bodies))
	for i, b := range bodies {
		res, err := fhir.Parse([]byte(b))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = res
	}
	return out
}

// indexRows lists a resource's rows in every search table, its id written as ID, so that two
// resources' rows compare.
func indexRows(t *testing.T, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, resourceType, id string) []string {
	t.Helper()
	var out []string
	for _, table := range []string{"search_string", "search_token", "search_date", "search_reference", "search_number", "search_quantity", "search_uri"} {
		rows, err := db.Query(context.Background(), `SELECT row_to_json(t)::jsonb - 'resource_id' FROM `+table+` t
			WHERE resource_type = $1 AND resource_id = $2`, resourceType, id)
		if err != nil {
			t.Fatal(err)
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list {
			out = append(out, table+" "+strings.ReplaceAll(r, id[strings.Index(id, "-")+1:], "ID"))
		}
	}
	slices.Sort(out)
	return out
}

// CopyBatch, the follow-up scheduler's way of writing its new Tasks, stores exactly what
// CreateBatch does: the same index rows in every search table, a version in the history and
// a current row, so that searches, reads and history find its resources alike.
func TestCopyBatchStoresWhatCreateBatchStores(t *testing.T) {
	s := newTestServer(t)
	store := s.h.App.Store
	ctx := auth.WithPrincipal(context.Background(), auth.Operator("copy batch test"))
	inserted, copied := copyBatchResources(t, "ins"), copyBatchResources(t, "cpy")
	if err := store.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := store.CreateBatch(ctx, tx, inserted); err != nil {
			return err
		}
		b, err := store.PrepareCreates(copied)
		if err != nil {
			return err
		}
		versions, err := store.CopyBatch(ctx, tx, b)
		if err != nil {
			return err
		}
		if len(versions) != len(copied) || versions[0].VersionID != 1 || versions[0].ID != "task-cpy" {
			return fmt.Errorf("CopyBatch returned %+v", versions)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	for i, res := range copied {
		ins, cpy := indexRows(t, s.db, res.Type, inserted[i].ID), indexRows(t, s.db, res.Type, res.ID)
		if len(cpy) == 0 || !slices.Equal(ins, cpy) {
			t.Errorf("%s: index rows copied\n%s\nwant, as inserted,\n%s", res.ID, strings.Join(cpy, "\n"), strings.Join(ins, "\n"))
		}
	}
	var oversized int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM search_token_oversized WHERE resource_id = 'task-cpy'`).Scan(&oversized); err != nil {
		t.Fatal(err)
	}
	if oversized != 1 {
		t.Errorf("%d oversized token rows for the copied Task, want 1", oversized)
	}

	// Each parameter alone, so that a row missing from either path shows as the one search
	// that finds only the inserted resource.
	for _, c := range []struct{ path, want string }{
		{"/Task?status=requested", "task-"},
		{"/Task?intent=order", "task-"},
		{"/Task?priority=routine", "task-"},
		{"/Task?identifier=https://example.org/visit|v-", "task-"},
		{"/Task?identifier=" + strings.Repeat("x", 2100), "task-"},
		{"/Task?code=https://example.org/milestone|m3", "task-"},
		{"/Task?business-status=due", "task-"},
		{"/Task?patient=Patient/pat-", "task-"},
		{"/Task?subject=pat-", "task-"},
		{"/Task?focus=Procedure/inf-", "task-"},
		{"/Task?owner=Organization/site-", "task-"},
		{"/Task?authored-on=2026-03-01", "task-"},
		{"/Task?modified=ge2026-03-01", "task-"},
		{"/Task?window=ge2026-03-01", "task-"},
		{"/Task?_lastUpdated=gt2000-01-01", "task-"},
		{"/Patient?name=copywr", "pat-"},
		{"/Patient?gender=female", "pat-"},
		{"/Patient?birthdate=1961-05-04", "pat-"},
		{"/Patient?email=ada@example.org", "pat-"},
		{"/Observation?code=2339-0", "obs-"},
		{"/Observation?value-quantity=5.4", "obs-"},
		{"/Observation?date=2026-03-20", "obs-"},
		{"/Observation?patient=pat-", "obs-"},
		{"/RiskAssessment?probability=0.25", "risk-"},
		{"/RiskAssessment?subject=Patient/pat-", "risk-"},
		{"/ValueSet?url=https://example.org/ValueSet/vs-", "vs-"},
	} {
		path := c.path
		if strings.HasSuffix(path, "-") {
			path += "%s"
		}
		for _, suffix := range []string{"ins", "cpy"} {
			p := strings.ReplaceAll(path, "%s", suffix)
			if got := matchIDs(s.expect(s.do("GET", p, ""), http.StatusOK).json(t)); !slices.Contains(got, c.want+suffix) {
				t.Errorf("%s: %v, want %s among them", p, got, c.want+suffix)
			}
		}
	}

	history := s.expect(s.do("GET", "/Task/task-cpy/_history", ""), http.StatusOK).json(t)
	if n := len(asSlice(history["entry"])); n != 1 {
		t.Errorf("the copied Task's history has %d versions, want 1", n)
	}
	s.expect(s.do("GET", "/Task/task-cpy/_history/1", ""), http.StatusOK)
	// A later version replaces the copied rows as it would any others.
	updated := s.expect(s.do("PUT", "/Task/task-cpy", `{"resourceType":"Task","id":"task-cpy","status":"on-hold","intent":"order"}`), http.StatusOK).json(t)
	if v := updated["meta"].(map[string]any)["versionId"]; v != "2" {
		t.Errorf("update of the copied Task made version %v, want 2", v)
	}
	if got := matchIDs(s.expect(s.do("GET", "/Task?status=requested", ""), http.StatusOK).json(t)); slices.Contains(got, "task-cpy") {
		t.Errorf("the updated Task is still found by its first version's status: %v", got)
	}
}

// A batch of new resources cannot name one that exists: COPY has no ON CONFLICT, and the
// batch fails as a whole rather than adding a second version 1.
func TestCopyBatchRefusesAnExistingResource(t *testing.T) {
	s := newTestServer(t)
	store := s.h.App.Store
	ctx := auth.WithPrincipal(context.Background(), auth.Operator("copy batch test"))
	s.expect(s.do("PUT", "/Patient/pat-dup", `{"resourceType":"Patient","id":"pat-dup"}`), http.StatusCreated)
	before := s.countRows("resource_version")
	b, err := store.PrepareCreates([]*fhir.Resource{
		{Type: "Patient", ID: "pat-new", Body: map[string]any{"resourceType": "Patient"}},
		{Type: "Patient", ID: "pat-dup", Body: map[string]any{"resourceType": "Patient"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = store.InTx(ctx, func(tx pgx.Tx) error {
		_, err := store.CopyBatch(ctx, tx, b)
		return err
	})
	if err == nil {
		t.Fatal("CopyBatch wrote a second first version of Patient/pat-dup")
	}
	if after := s.countRows("resource_version"); after != before {
		t.Errorf("%d versions written by a failed batch", after-before)
	}
}
