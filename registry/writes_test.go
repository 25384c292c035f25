package registry_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/registry"
)

// logWrites makes the database record every row written to the registry's assessment and
// infusion tables, and returns a function that reads and clears the record: how many times
// each row (by its id) was inserted or updated.
func logWrites(t *testing.T, tr *testRegistry) func() map[string]int {
	t.Helper()
	ctx := context.Background()
	if _, err := tr.db.Exec(ctx, `
		CREATE TABLE test_write_log (row_id text NOT NULL);
		CREATE FUNCTION test_log_assessment() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO test_write_log VALUES (NEW.observation_id); RETURN NEW; END $$;
		CREATE FUNCTION test_log_infusion() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO test_write_log VALUES (NEW.resource_id); RETURN NEW; END $$;
		CREATE TRIGGER test_log AFTER INSERT OR UPDATE ON registry_assessment FOR EACH ROW EXECUTE FUNCTION test_log_assessment();
		CREATE TRIGGER test_log AFTER INSERT OR UPDATE ON registry_infusion FOR EACH ROW EXECUTE FUNCTION test_log_infusion();`); err != nil {
		t.Fatal(err)
	}
	return func() map[string]int {
		t.Helper()
		rows, err := tr.db.Query(ctx, `DELETE FROM test_write_log RETURNING row_id`)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		writes := map[string]int{}
		for _, id := range ids {
			writes[id]++
		}
		return writes
	}
}

// A write stores each registry row once, with its final values, and leaves alone the rows
// whose derived values it does not change (issue 20: an assessment was inserted, then updated
// three times, and every assessment of the patient rewritten by each of the patient's writes).
func TestEachRegistryRowIsWrittenOnceAndOnlyWhenItChanges(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	written := logWrites(t, tr)
	// Infused 2024-01-01: day 30 is month 1's target; days 85 and 95 are both 5 from month
	// 3's (90), and the later one counts.
	r := lymphomaCourse(t, tr, 200, nil, "2024-01-01",
		post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-01-31", "lugano-pmr")),
		post("urn:uuid:a2", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-03-26", "lugano-pmr")),
		post("urn:uuid:a3", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-04-05", "lugano-cmr")))
	patientRef, infusionID := location(t, r, 1), strings.TrimPrefix(location(t, r, 3), "Procedure/")
	a1, a2, a3 := location(t, r, 4), location(t, r, 5), location(t, r, 6)
	id := func(ref string) string { return ref[strings.Index(ref, "/")+1:] }

	type derived struct {
		Day       int
		Milestone *string
		Counted   bool
	}
	state := func() (map[string]derived, string) {
		t.Helper()
		rows, err := tr.db.Query(context.Background(), `SELECT observation_id, day, milestone, counted FROM registry_assessment`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]derived{}
		for rows.Next() {
			var id string
			var d derived
			if err := rows.Scan(&id, &d.Day, &d.Milestone, &d.Counted); err != nil {
				t.Fatal(err)
			}
			out[id] = d
		}
		var timepoints string
		if err := tr.db.QueryRow(context.Background(), `SELECT timepoints::text FROM registry_infusion WHERE resource_id = $1`,
			infusionID).Scan(&timepoints); err != nil {
			t.Fatal(err)
		}
		return out, timepoints
	}
	m1, m3 := "m1", "m3"
	check := func(step string, writes map[string]int, want map[string]int, wantRows map[string]derived, wantTimepoints string) {
		t.Helper()
		if !reflect.DeepEqual(writes, want) {
			t.Errorf("%s: rows written %v, want %v", step, writes, want)
		}
		got, timepoints := state()
		for id, w := range wantRows {
			if g := got[id]; !reflect.DeepEqual(g, w) {
				t.Errorf("%s: assessment %s is %s, want %s", step, id, show(g), show(w))
			}
		}
		if timepoints != wantTimepoints {
			t.Errorf("%s: infusion's timepoints %s, want %s", step, timepoints, wantTimepoints)
		}
	}
	// The infusion is inserted, then completed once its patient's facts are read.
	check("the course", written(), map[string]int{id(a1): 1, id(a2): 1, id(a3): 1, infusionID: 2},
		map[string]derived{id(a1): {30, &m1, true}, id(a2): {85, &m3, false}, id(a3): {95, &m3, true}},
		`{"m1": "lugano-pmr", "m3": "lugano-cmr"}`)

	// A later contact changes the infusion's last contact, and nothing of the assessments.
	visit := map[string]any{"resourceType": "Encounter", "status": "finished", "class": map[string]any{
		"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
		"subject": ref(patientRef), "period": map[string]any{"start": "2024-06-01T09:00:00Z", "end": "2024-06-01T10:00:00Z"}}
	tr.expect(201, "POST", "/fhir/Encounter", visit)
	check("a contact", written(), map[string]int{infusionID: 1},
		map[string]derived{id(a1): {30, &m1, true}, id(a2): {85, &m3, false}, id(a3): {95, &m3, true}},
		`{"m1": "lugano-pmr", "m3": "lugano-cmr"}`)

	// One nearer month 3's target counts there instead: it is written once, the one it
	// displaces once, the infusion once; month 1's assessment not at all.
	r = tr.expect(201, "POST", "/fhir/Observation", assessment(patientRef, "", "2024-03-31", "lugano-pmd"))
	created, _ := r.json(t)["id"].(string)
	check("a nearer assessment", written(), map[string]int{created: 1, id(a3): 1, infusionID: 1},
		map[string]derived{id(a1): {30, &m1, true}, id(a2): {85, &m3, false}, id(a3): {95, &m3, false},
			created: {90, &m3, true}},
		`{"m1": "lugano-pmr", "m3": "lugano-pmd"}`)

	// The same contact again changes nothing derived: no registry row is written.
	tr.expect(201, "POST", "/fhir/Encounter", visit)
	check("the same contact again", written(), map[string]int{}, nil, `{"m1": "lugano-pmr", "m3": "lugano-pmd"}`)
}

func show(d any) string {
	v := reflect.ValueOf(d)
	var parts []string
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() == reflect.Pointer {
			if f.IsNil() {
				parts = append(parts, "nil")
				continue
			}
			f = f.Elem()
		}
		parts = append(parts, fmt.Sprint(f.Interface()))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// The timepoints a write assigns in Go are those the plan's SQL assigns to every row when the
// plan changes: the same milestone, the same assessment counted (ties included) and the same
// timepoints on each infusion, over a synthetic cohort and a patient whose assessments tie.
func TestTimepointsAssignedOnWriteAreThoseAPlanChangeAssigns(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	tr.now = cohortAsOf
	cohort := generate(t, 60, 7)
	for i := range cohort.Patients {
		raw, err := cohort.Bundle(i)
		if err != nil {
			t.Fatal(err)
		}
		tr.expect(200, "POST", "/fhir", raw)
	}
	// Two pairs at the same distance from month 3's target, one pair on one day.
	lymphomaCourse(t, tr, 200, nil, "2024-01-01",
		post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-03-26", "lugano-pmr")),
		post("urn:uuid:a2", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-04-05", "lugano-pmr")),
		post("urn:uuid:a3", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-04-05", "lugano-cmr")),
		post("urn:uuid:a4", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-01-24", "lugano-pmr")),
		post("urn:uuid:a5", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-02-07", "lugano-cmr")))

	ctx := context.Background()
	snapshot := func() string {
		t.Helper()
		var s string
		if err := tr.db.QueryRow(ctx, `SELECT
			(SELECT string_agg(concat_ws(' ', observation_id, infusion_type, infusion_id, day, milestone, counted), E'\n'
				ORDER BY observation_id) FROM registry_assessment) || E'\n' ||
			(SELECT string_agg(concat_ws(' ', resource_type, resource_id, timepoints::text), E'\n' ORDER BY resource_type, resource_id)
				FROM registry_infusion)`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	onWrite := snapshot()
	if n := tr.count(`SELECT count(*) FROM registry_assessment WHERE counted`); n < 60 {
		t.Fatalf("only %d assessments counted: the cohort is too thin to compare", n)
	}
	// Forget the timepoints and the plan they were assigned by, and have the SQL assign them.
	if _, err := tr.db.Exec(ctx, `UPDATE registry_assessment SET milestone = 'x', counted = NOT counted;
		UPDATE registry_infusion SET timepoints = '{"x": "y"}';
		DELETE FROM registry_state WHERE key = 'plan'`); err != nil {
		t.Fatal(err)
	}
	if err := tr.reg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if bySQL := snapshot(); bySQL != onWrite {
		t.Errorf("the plan's SQL assigns other timepoints than a write did:\n%s", lineDiff(onWrite, bySQL))
	}
}

// lineDiff lists the lines of a and b that the other lacks.
func lineDiff(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ina, inb := in(a), in(b)
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !inb[l] {
			out = append(out, "write: "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ina[l] {
			out = append(out, "SQL:   "+l)
		}
	}
	return strings.Join(out, "\n")
}

// A new Patient on its own is not re-derived (it has no facts), except for what a death alone
// gives: the day counted as its last contact.
func TestANewPatientAloneKeepsItsDeathAsLastContact(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	lastContact := func(body map[string]any) string {
		t.Helper()
		id, _ := tr.expect(201, "POST", "/fhir/Patient", body).json(t)["id"].(string)
		var on *string
		if err := tr.db.QueryRow(context.Background(), `SELECT last_contact_on::text FROM registry_patient WHERE patient_id = $1`,
			id).Scan(&on); err != nil {
			t.Fatal(err)
		}
		if on == nil {
			return "none"
		}
		return *on
	}
	if got := lastContact(patient("")); got != "none" {
		t.Errorf("a living new patient's last contact is %s, want none", got)
	}
	dead := patient("")
	dead["deceasedDateTime"] = "2025-03-04"
	if got := lastContact(dead); got != "2025-03-04" {
		t.Errorf("a new patient who died on 2025-03-04 has last contact %s", got)
	}
}
