package registry_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cartreg/cartreg/registry"
)

// lymphomaPatient is one patient's first Bundle: site, patient, DLBCL, an axi-cel infusion on
// 2023-11-22 and assessments on days 30 (CMR), 90 (CMR) and 200 (PMR, outside every window).
func lymphomaPatient() map[string]any {
	return transaction(
		post("urn:uuid:site", organization("Riverside Cancer Centre")),
		post("urn:uuid:pat", patient("urn:uuid:site")),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
		post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2023-11-22", "axi-cel")),
		post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:inf", "2023-12-22", "lugano-cmr")),
		post("urn:uuid:a3", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-02-20", "lugano-cmr")),
		post("urn:uuid:ax", assessment("urn:uuid:pat", "", "2024-06-09", "lugano-pmr")),
		post("urn:uuid:crs", toxicity("urn:uuid:pat", "urn:uuid:inf", "crs", "2023-11-24", 2)),
	)
}

func TestProjectionFollowsWrites(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	r := tr.expect(200, "POST", "/fhir", lymphomaPatient())
	patientRef, infusionRef := location(t, r, 1), location(t, r, 3)
	patientID := strings.TrimPrefix(patientRef, "Patient/")
	infusionID := strings.TrimPrefix(infusionRef, "Procedure/")

	type row struct {
		day       int
		milestone *string
		category  string
	}
	assessments := func() map[string]row {
		rows, err := tr.db.Query(context.Background(), `SELECT observation_id, day, milestone, category FROM registry_assessment
			WHERE patient_id = $1`, patientID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]row{}
		for rows.Next() {
			var id string
			var x row
			if err := rows.Scan(&id, &x.day, &x.milestone, &x.category); err != nil {
				t.Fatal(err)
			}
			out[id] = x
		}
		return out
	}
	got := assessments()
	if len(got) != 3 {
		t.Fatalf("%d assessments projected, want 3", len(got))
	}
	byDay := map[int]row{}
	for _, x := range got {
		byDay[x.day] = x
	}
	for day, want := range map[int]string{30: "m1", 90: "m3", 200: ""} {
		x, ok := byDay[day]
		switch {
		case !ok:
			t.Errorf("no assessment on day %d; have %v", day, got)
		case want == "" && x.milestone != nil:
			t.Errorf("day %d assigned to %s, want unscheduled", day, *x.milestone)
		case want != "" && (x.milestone == nil || *x.milestone != want):
			t.Errorf("day %d assigned to %v, want %s", day, x.milestone, want)
		}
	}

	var disease, product, site string
	var targets []string
	var seq int
	var firstResponse, lastContact time.Time
	err := tr.db.QueryRow(context.Background(), `SELECT i.disease, i.product, i.targets, s.name, i.sequence, i.first_response_on, i.last_contact_on
		FROM registry_infusion i JOIN registry_site s ON s.organization_id = i.effective_site_id
		WHERE resource_id = $1`, infusionID).Scan(&disease, &product, &targets, &site, &seq, &firstResponse, &lastContact)
	if err != nil {
		t.Fatal(err)
	}
	if disease != "lbcl" || product != "axi-cel" || strings.Join(targets, "+") != "CD19" || site != "Riverside Cancer Centre" || seq != 1 {
		t.Errorf("infusion projected as disease %s, product %s, targets %v, site %s, sequence %d", disease, product, targets, site, seq)
	}
	if firstResponse.Format("2006-01-02") != "2023-12-22" || lastContact.Format("2006-01-02") != "2024-06-09" {
		t.Errorf("first response %s, last contact %s", firstResponse, lastContact)
	}
	if n := tr.count(`SELECT count(*) FROM registry_toxicity WHERE patient_id = $1 AND kind = 'crs' AND grade = 2`, patientID); n != 1 {
		t.Errorf("%d CRS rows", n)
	}

	t.Run("an update moves the assessment", func(t *testing.T) {
		var obsID string
		for id, x := range got {
			if x.day == 200 {
				obsID = id
			}
		}
		moved := assessment(patientRef, infusionRef, "2024-11-25", "lugano-pmd") // day 369: year 1
		moved["id"] = obsID
		tr.expect(200, "PUT", "/fhir/Observation/"+obsID, moved)
		x := assessments()[obsID]
		if x.day != 369 || x.milestone == nil || *x.milestone != "y1" || x.category != "lugano-pmd" {
			t.Errorf("after update: %+v", x)
		}
		var progression time.Time
		if err := tr.db.QueryRow(context.Background(), `SELECT progression_on FROM registry_infusion WHERE resource_id = $1`,
			infusionID).Scan(&progression); err != nil || progression.Format("2006-01-02") != "2024-11-25" {
			t.Errorf("progression_on %s, %v", progression, err)
		}
		tr.expect(204, "DELETE", "/fhir/Observation/"+obsID, nil)
		if _, ok := assessments()[obsID]; ok {
			t.Error("deleted Observation still projected")
		}
		if n := tr.count(`SELECT count(*) FROM registry_infusion WHERE resource_id = $1 AND progression_on IS NULL`, infusionID); n != 1 {
			t.Error("progression not cleared after its assessment was deleted")
		}
	})

	t.Run("a Procedure that is not an infusion is not projected", func(t *testing.T) {
		other := map[string]any{"resourceType": "Procedure", "status": "completed", "subject": ref(patientRef),
			"code": cc("http://snomed.info/sct", "80146002"), "performedDateTime": "2024-01-05"}
		tr.expect(201, "POST", "/fhir/Procedure", other)
		if n := tr.count(`SELECT count(*) FROM registry_infusion WHERE patient_id = $1`, patientID); n != 1 {
			t.Errorf("%d infusions, want 1", n)
		}
	})

	t.Run("an encounter is a contact that survival is censored at", func(t *testing.T) {
		lastContact := func() string {
			var on time.Time
			if err := tr.db.QueryRow(context.Background(), `SELECT last_contact_on FROM registry_infusion WHERE resource_id = $1`,
				infusionID).Scan(&on); err != nil {
				t.Fatal(err)
			}
			return on.Format("2006-01-02")
		}
		before := lastContact()
		visit := map[string]any{"resourceType": "Encounter", "status": "finished", "class": map[string]any{
			"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
			"subject": ref(patientRef), "period": map[string]any{"start": "2024-10-01T09:00:00Z", "end": "2024-10-01T10:00:00Z"}}
		r := tr.expect(201, "POST", "/fhir/Encounter", visit)
		if got := lastContact(); got != "2024-10-01" {
			t.Errorf("last contact %s after a finished encounter on 2024-10-01", got)
		}
		planned := map[string]any{"resourceType": "Encounter", "status": "planned", "class": visit["class"],
			"subject": ref(patientRef), "period": map[string]any{"start": "2026-01-01"}}
		tr.expect(201, "POST", "/fhir/Encounter", planned)
		if got := lastContact(); got != "2024-10-01" {
			t.Errorf("a planned encounter moved last contact to %s", got)
		}
		tr.expect(204, "DELETE", "/fhir/Encounter/"+r.json(t)["id"].(string), nil)
		if got := lastContact(); got != before {
			t.Errorf("last contact %s after the encounter was deleted, want %s", got, before)
		}
	})

	t.Run("a second infusion starts a new sequence", func(t *testing.T) {
		second := infusion(patientRef, "", "", "2025-03-01", "liso-cel")
		delete(second, "reasonReference")
		delete(second, "performer")
		r := tr.expect(201, "POST", "/fhir/Procedure", second)
		_ = r
		var seq int
		var next time.Time
		if err := tr.db.QueryRow(context.Background(), `SELECT sequence, next_infused_on FROM registry_infusion WHERE resource_id = $1`,
			infusionID).Scan(&seq, &next); err != nil || seq != 1 || next.Format("2006-01-02") != "2025-03-01" {
			t.Errorf("first infusion: sequence %d, next %s, %v", seq, next, err)
		}
		if n := tr.count(`SELECT count(*) FROM registry_infusion WHERE patient_id = $1 AND sequence = 2
			AND effective_site_id IS NOT NULL`, patientID); n != 1 {
			t.Error("second infusion not sequence 2 with the managing organization as site")
		}
	})
}

func TestBusinessRulesRejectWithNothingWritten(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	r := tr.expect(200, "POST", "/fhir", lymphomaPatient())
	patientRef, infusionRef := location(t, r, 1), location(t, r, 3)

	tables := `SELECT (SELECT count(*) FROM resource_version) + (SELECT count(*) FROM registry_assessment)
		+ (SELECT count(*) FROM registry_infusion) + (SELECT count(*) FROM registry_patient)`
	before := tr.count(tables)

	cases := []struct {
		name       string
		method     string
		path       string
		body       any
		expression string
		message    string
	}{
		{"assessment before the infusion", "POST", "/fhir/Observation",
			assessment(patientRef, infusionRef, "2023-11-01", "lugano-cmr"), "Observation.effective", "before the CAR-T infusion"},
		{"category of another disease's scheme", "POST", "/fhir/Observation",
			assessment(patientRef, infusionRef, "2024-11-20", "imwg-cr"), "Observation.value", "IMWG"},
		{"unknown category", "POST", "/fhir/Observation",
			assessment(patientRef, infusionRef, "2024-11-20", "lugano-xx"), "Observation.value", "not a response category"},
		{"death before the infusion", "PUT", "/fhir/" + patientRef,
			func() map[string]any {
				p := patient("Organization/none")
				delete(p, "managingOrganization")
				p["id"] = strings.TrimPrefix(patientRef, "Patient/")
				p["deceasedDateTime"] = "2023-10-01"
				return p
			}(), "Patient.deceasedDateTime", "before the CAR-T infusion"},
		{"infusion without a date", "POST", "/fhir/Procedure",
			func() map[string]any {
				p := infusion(patientRef, "", "", "2024-01-01", "axi-cel")
				delete(p, "performedDateTime")
				return p
			}(),
			"Procedure.performed", "needs its date"},
		{"assessment in a transaction, located at its entry", "POST", "/fhir",
			transaction(post("urn:uuid:x", assessment(patientRef, infusionRef, "2023-01-01", "lugano-cmr"))),
			"Bundle.entry[0].resource.effective", "Bundle.entry[0]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := tr.expect(422, c.method, c.path, c.body)
			oo := r.json(t)
			issues, _ := oo["issue"].([]any)
			if len(issues) == 0 {
				t.Fatalf("no issues: %s", r.body)
			}
			is := issues[0].(map[string]any)
			if is["code"] != "business-rule" || !strings.Contains(is["diagnostics"].(string), c.message) {
				t.Errorf("issue %v, want business-rule mentioning %q", is, c.message)
			}
			if exprs, _ := is["expression"].([]any); len(exprs) == 0 || exprs[0] != c.expression {
				t.Errorf("expression %v, want %s", is["expression"], c.expression)
			}
			if after := tr.count(tables); after != before {
				t.Errorf("rows changed from %d to %d", before, after)
			}
		})
	}

	t.Run("assessment for a patient with no infusion", func(t *testing.T) {
		r := tr.expect(201, "POST", "/fhir/Patient", patient(""))
		_ = r
		var id string
		if err := tr.db.QueryRow(context.Background(), `SELECT resource_id FROM resource WHERE resource_type = 'Patient'
			ORDER BY last_updated DESC LIMIT 1`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		before := tr.count(tables)
		r = tr.expect(422, "POST", "/fhir/Observation", assessment("Patient/"+id, "", "2024-01-01", "lugano-cmr"))
		if !strings.Contains(string(r.body), "has no CAR-T infusion") {
			t.Errorf("body %s", r.body)
		}
		if after := tr.count(tables); after != before {
			t.Errorf("rows changed from %d to %d", before, after)
		}
	})

	t.Run("deleting an infusion its assessments follow", func(t *testing.T) {
		r := tr.expect(422, "DELETE", "/fhir/"+infusionRef, nil)
		if !strings.Contains(string(r.body), "not a CAR-T infusion of Patient") {
			t.Errorf("body %s", r.body)
		}
	})
}

// Concurrent writers for one patient: each assessment's transaction re-derives the patient's
// rows, and the per-patient lock makes the last one see every other.
func TestConcurrentAssessmentsOfOnePatient(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	patientRef, infusionRef := myelomaInfusion(t, tr)
	start := time.Date(2022, 2, 1, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			on := start.AddDate(0, 0, 20*i).Format("2006-01-02")
			category := "imwg-sd"
			if i == 11 {
				category = "imwg-pd"
			}
			tr.expect(201, "POST", "/fhir/Observation", assessment(patientRef, infusionRef, on, category))
		}(i)
	}
	wg.Wait()
	var progression, lastPFS time.Time
	if err := tr.db.QueryRow(context.Background(), `SELECT progression_on, last_progression_free_on FROM registry_infusion`).
		Scan(&progression, &lastPFS); err != nil {
		t.Fatal(err)
	}
	if got := progression.Format("2006-01-02"); got != start.AddDate(0, 0, 220).Format("2006-01-02") {
		t.Errorf("progression %s", got)
	}
	if got := lastPFS.Format("2006-01-02"); got != start.AddDate(0, 0, 200).Format("2006-01-02") {
		t.Errorf("last progression-free %s", got)
	}
	if n := tr.count(`SELECT count(*) FROM registry_assessment WHERE day IS NULL`); n != 0 {
		t.Errorf("%d assessments without a day", n)
	}
}

func TestDefinitionsArePublished(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	r := tr.expect(200, "GET", "/fhir/CodeSystem?url="+registry.SystemResponse, nil)
	if entries, _ := r.json(t)["entry"].([]any); len(entries) != 1 {
		t.Errorf("CodeSystem?url= found %d, want 1", len(entries))
	}
	versions := tr.count(`SELECT count(*) FROM resource_version`)
	if err := tr.reg.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if again := tr.count(`SELECT count(*) FROM resource_version`); again != versions {
		t.Errorf("a second start wrote %d versions; unchanged definitions must not be rewritten", again-versions)
	}
	if n := tr.count(`SELECT count(*) FROM resource WHERE resource_type = 'CodeSystem'`); n < 6 {
		t.Errorf("%d CodeSystems published", n)
	}
}

// A write for a patient waits for the patient's lock, and what it derives includes what the
// lock's holder committed: the registry's rows of one patient are re-derived by one writer at
// a time, each seeing the last one's commit.
func TestAWriterWaitsForThePatientsLockAndSeesItsHoldersCommit(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	patientRef, infusionRef := myelomaInfusion(t, tr)
	patientID := patientRef[strings.LastIndex(patientRef, "/")+1:]

	ctx := context.Background()
	holder, err := tr.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('cartreg.registry.patient:' || $1, 0))`, patientID); err != nil {
		t.Fatal(err)
	}
	// What the holder knows, which the waiting writer must derive from.
	if _, err := holder.Exec(ctx, `UPDATE registry_patient SET deceased_on = '2022-06-01' WHERE patient_id = $1`, patientID); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 1)
	go func() {
		done <- tr.do("POST", "/fhir/Observation", assessment(patientRef, infusionRef, "2022-02-10", "imwg-sd")).status
	}()
	select {
	case status := <-done:
		t.Fatalf("the write finished (%d) while another transaction held the patient's lock", status)
	case <-time.After(500 * time.Millisecond):
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case status := <-done:
		if status != 201 {
			t.Fatalf("the write: status %d", status)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the write did not finish once the lock was released")
	}
	var death *time.Time
	if err := tr.db.QueryRow(ctx, `SELECT death_on FROM registry_infusion`).Scan(&death); err != nil {
		t.Fatal(err)
	}
	if death == nil || death.Format(time.DateOnly) != "2022-06-01" {
		t.Errorf("the infusion's death_on is %v: the writer derived from facts read before the holder's commit", death)
	}
}

// myelomaInfusion loads one site, patient, myeloma diagnosis and cilta-cel infusion (on
// 2022-01-10) and returns the patient's and the infusion's references.
func myelomaInfusion(t *testing.T, tr *testRegistry) (patientRef, infusionRef string) {
	t.Helper()
	r := tr.expect(200, "POST", "/fhir", transaction(
		post("urn:uuid:site", organization("Site")),
		post("urn:uuid:pat", patient("urn:uuid:site")),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C90.00")),
		post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2022-01-10", "cilta-cel")),
	))
	return location(t, r, 1), location(t, r, 3)
}
