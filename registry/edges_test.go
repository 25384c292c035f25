package registry_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/registry"
)

// Edge cases of the registry's reading of FHIR data: each a defect an independent check of a
// held-back cohort found.

// infusionDates reads one infusion's derived dates as "2006-01-02", "" for NULL.
func infusionDates(t *testing.T, tr *testRegistry, infusionRef string, columns ...string) map[string]string {
	t.Helper()
	typ, id, _ := strings.Cut(infusionRef, "/")
	out := map[string]string{}
	for _, c := range columns {
		var on *time.Time
		if err := tr.db.QueryRow(context.Background(), `SELECT `+c+` FROM registry_infusion
			WHERE resource_type = $1 AND resource_id = $2`, typ, id).Scan(&on); err != nil {
			t.Fatalf("%s of %s: %v", c, infusionRef, err)
		}
		if on != nil {
			out[c] = on.Format("2006-01-02")
		} else {
			out[c] = ""
		}
	}
	return out
}

// Only a final, amended or corrected assessment counts: a preliminary PMD between two final
// CMRs is not a progression.
func TestPreliminaryAssessmentDoesNotCount(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	preliminary := assessment("urn:uuid:pat", "urn:uuid:inf", "2024-01-20", "lugano-pmd")
	preliminary["status"] = "preliminary"
	r := tr.expect(200, "POST", "/fhir", transaction(
		post("urn:uuid:site", organization("Site")),
		post("urn:uuid:pat", patient("urn:uuid:site")),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
		post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2023-11-22", "axi-cel")),
		post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:inf", "2023-12-22", "lugano-cmr")),
		post("urn:uuid:a2", preliminary),
		post("urn:uuid:a3", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-02-20", "lugano-cmr")),
	))
	got := infusionDates(t, tr, location(t, r, 3), "progression_on", "last_progression_free_on")
	if got["progression_on"] != "" || got["last_progression_free_on"] != "2024-02-20" {
		t.Errorf("with a preliminary PMD between two final CMRs: %v, want no progression, progression-free to 2024-02-20", got)
	}
	patientID := strings.TrimPrefix(location(t, r, 1), "Patient/")
	if n := tr.count(`SELECT count(*) FROM registry_assessment WHERE patient_id = $1`, patientID); n != 2 {
		t.Errorf("%d assessments projected, want the 2 final ones", n)
	}
}

// Only a completed Procedure or MedicationAdministration is an infusion: an on-hold or unknown
// one is not day 0, and an undated on-hold one does not reject the Bundle it comes in.
func TestOnlyACompletedInfusionIsDayZero(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	onHold := infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2023-11-01", "axi-cel")
	onHold["status"] = "on-hold"
	undated := infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "", "axi-cel")
	undated["status"] = "on-hold"
	delete(undated, "performedDateTime")
	unknown := infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2023-11-15", "axi-cel")
	unknown["status"] = "unknown"
	r := tr.expect(200, "POST", "/fhir", transaction(
		post("urn:uuid:site", organization("Site")),
		post("urn:uuid:pat", patient("urn:uuid:site")),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
		post("urn:uuid:hold", onHold),
		post("urn:uuid:undated", undated),
		post("urn:uuid:unknown", unknown),
		post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2023-11-22", "axi-cel")),
		post("urn:uuid:a1", assessment("urn:uuid:pat", "", "2023-12-22", "lugano-cmr")),
	))
	patientID := strings.TrimPrefix(location(t, r, 1), "Patient/")
	if n := tr.count(`SELECT count(*) FROM registry_infusion WHERE patient_id = $1`, patientID); n != 1 {
		t.Errorf("%d infusions projected, want only the completed one", n)
	}
	real := strings.TrimPrefix(location(t, r, 6), "Procedure/")
	if n := tr.count(`SELECT count(*) FROM registry_infusion WHERE resource_id = $1 AND sequence = 1`, real); n != 1 {
		t.Error("the completed infusion is not the patient's first")
	}
	if n := tr.count(`SELECT count(*) FROM registry_assessment WHERE infusion_id = $1 AND day = 30`, real); n != 1 {
		t.Error("the assessment is not day 30 of the completed infusion")
	}
}
