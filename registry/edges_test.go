package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/migrations"
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

// lymphomaCourse posts a patient with DLBCL and an axi-cel infusion on infused, with the
// given extra entries (which may refer to urn:uuid:pat and urn:uuid:inf), and returns the
// transaction's reply: entry 1 is the Patient, 3 the infusion.
func lymphomaCourse(t testing.TB, tr *testRegistry, want int, patientBody func(map[string]any), infused string, extra ...entry) reply {
	t.Helper()
	p := patient("urn:uuid:site")
	if patientBody != nil {
		patientBody(p)
	}
	entries := append([]entry{
		post("urn:uuid:site", organization("Site")),
		post("urn:uuid:pat", p),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
		post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", infused, "axi-cel")),
	}, extra...)
	r := tr.h.DoURL("POST", tr.url+"/fhir", transaction(entries...))
	if r.Status != want {
		t.Fatalf("POST /fhir: status %d, want %d\n%s", r.Status, want, r.Body)
	}
	return reply{r.Status, r.Header, r.Body}
}

func died(on string) func(map[string]any) {
	return func(p map[string]any) { p["deceasedDateTime"] = on }
}

// A death known only to the month or year is a range of days: one in the infusion's month is
// after the infusion, and it is imputed at the mid-point of the days it can have been, which
// start no earlier than the last day the patient is known alive.
func TestPartialDatesAreRanges(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	cases := []struct {
		name, death string
		extra       []entry
		wantDeath   string
	}{
		// 2014-06-10 … 2014-06-30: 20 days, mid-point 10 days on.
		{"death in the infusion's month", "2014-06", nil, "2014-06-20"},
		// Alive (assessed) on 2014-07-10: 2014-07-10 … 2014-07-31, 21 days, 10 days on.
		{"death in the month of an assessment", "2014-07",
			[]entry{post("urn:uuid:a", assessment("urn:uuid:pat", "urn:uuid:inf", "2014-07-10", "lugano-cmr"))}, "2014-07-20"},
		// Alive at a visit on 2015-03-01: 2015-03-01 … 2015-12-31, 305 days, 152 days on.
		{"death known to the year", "2015",
			[]entry{post("urn:uuid:v", map[string]any{"resourceType": "Encounter", "status": "finished",
				"class":   map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
				"subject": ref("urn:uuid:pat"), "period": map[string]any{"start": "2015-03-01", "end": "2015-03-01"}})},
			"2015-07-31"},
		{"a full date is as written", "2014-06-12", nil, "2014-06-12"},
		{"a full date with a time is the date as written", "2014-06-12T23:30:00-05:00", nil, "2014-06-12"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := lymphomaCourse(t, tr, 200, died(c.death), "2014-06-10", c.extra...)
			got := infusionDates(t, tr, location(t, r, 3), "death_on", "last_contact_on")
			if got["death_on"] != c.wantDeath || got["last_contact_on"] != c.wantDeath {
				t.Errorf("death %q: %v, want death and last contact %s", c.death, got, c.wantDeath)
			}
		})
	}

	t.Run("a death in an earlier month is before the infusion", func(t *testing.T) {
		r := lymphomaCourse(t, tr, 422, died("2014-05"), "2014-06-10")
		if !strings.Contains(string(r.body), "before the CAR-T infusion") {
			t.Errorf("body %s", r.body)
		}
	})

	t.Run("a toxicity known to the month starts after the infusion", func(t *testing.T) {
		r := lymphomaCourse(t, tr, 200, nil, "2014-06-10",
			post("urn:uuid:crs", toxicity("urn:uuid:pat", "urn:uuid:inf", "crs", "2014-06", 2)))
		id := strings.TrimPrefix(location(t, r, 4), "AdverseEvent/")
		var onset time.Time
		if err := tr.db.QueryRow(context.Background(), `SELECT onset_imputed_on FROM registry_toxicity
			WHERE adverse_event_id = $1`, id).Scan(&onset); err != nil {
			t.Fatal(err)
		}
		if got := onset.Format("2006-01-02"); got != "2014-06-20" {
			t.Errorf("CRS onset 2014-06 after an infusion on 2014-06-10 imputed at %s, want 2014-06-20", got)
		}
		if got := infusionDates(t, tr, location(t, r, 3), "last_contact_on")["last_contact_on"]; got != "2014-06-20" {
			t.Errorf("last contact %s, want the imputed onset 2014-06-20", got)
		}
	})
}

// Only a finished Encounter is a contact: one in progress (or on leave) has not shown the
// patient through to its end, and its dates may yet change.
func TestOnlyAFinishedEncounterIsAContact(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	encounter := func(status, start string) entry {
		return post("urn:uuid:"+status, map[string]any{"resourceType": "Encounter", "status": status,
			"class":   map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
			"subject": ref("urn:uuid:pat"), "period": map[string]any{"start": start}})
	}
	r := lymphomaCourse(t, tr, 200, nil, "2023-11-22",
		encounter("finished", "2024-03-01"),
		encounter("in-progress", "2024-09-01"),
		encounter("onleave", "2024-10-01"),
	)
	if got := infusionDates(t, tr, location(t, r, 3), "last_contact_on")["last_contact_on"]; got != "2024-03-01" {
		t.Errorf("last contact %s, want the finished encounter's 2024-03-01", got)
	}
}

func medicationAdministration(patient, condition, on, product string) map[string]any {
	return map[string]any{"resourceType": "MedicationAdministration", "status": "completed",
		"meta":                      map[string]any{"profile": []any{registry.ProfileInfusionMedAdm}},
		"medicationCodeableConcept": cc(registry.SystemProduct, product),
		"subject":                   ref(patient),
		"effectiveDateTime":         on,
		"reasonReference":           []any{ref(condition)},
	}
}

// One course of CAR-T cells, however it is recorded: the same product given again within
// three days of the first dose (one infusion recorded as a Procedure and a
// MedicationAdministration, a split dose over consecutive days) is one course with day 0 the
// first day, not a re-infusion that ends the first course's follow-up.
func TestOneCourseOfCells(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	type row struct {
		ref      string
		sequence int
		next     *time.Time
	}
	infusionsOf := func(t *testing.T, r reply) []row {
		t.Helper()
		patientID := strings.TrimPrefix(location(t, r, 1), "Patient/")
		rows, err := tr.db.Query(context.Background(), `SELECT resource_type || '/' || resource_id, sequence, next_infused_on
			FROM registry_infusion WHERE patient_id = $1 ORDER BY infused_on, resource_type, resource_id`, patientID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []row
		for rows.Next() {
			var x row
			if err := rows.Scan(&x.ref, &x.sequence, &x.next); err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		}
		return out
	}
	assessedOn := func(t *testing.T, r reply, entry int) (infusion string, day int) {
		t.Helper()
		id := strings.TrimPrefix(location(t, r, entry), "Observation/")
		if err := tr.db.QueryRow(context.Background(), `SELECT infusion_type || '/' || infusion_id, day FROM registry_assessment
			WHERE observation_id = $1`, id).Scan(&infusion, &day); err != nil {
			t.Fatal(err)
		}
		return infusion, day
	}

	t.Run("a Procedure and a MedicationAdministration on the same day", func(t *testing.T) {
		ma := medicationAdministration("urn:uuid:pat", "urn:uuid:dx", "2023-11-22", "axi-cel")
		delete(ma, "reasonReference")
		noSite := func(p map[string]any) { delete(p, "managingOrganization") }
		r := lymphomaCourse(t, tr, 200, noSite, "2023-11-22",
			post("urn:uuid:ma", ma),
			post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:ma", "2023-12-22", "lugano-cmr")),
			post("urn:uuid:a3", assessment("urn:uuid:pat", "", "2024-02-20", "lugano-cmr")),
		)
		// On one day the first dose is the first in the order of resource type and id, which
		// every outcome query shares: the MedicationAdministration, with the Procedure's site.
		got := infusionsOf(t, r)
		if len(got) != 1 || got[0].ref != location(t, r, 4) || got[0].sequence != 1 || got[0].next != nil {
			t.Fatalf("infusions %+v, want one course: the MedicationAdministration, sequence 1, no next", got)
		}
		if n := tr.count(`SELECT count(*) FROM registry_infusion i JOIN registry_site s ON s.organization_id = i.effective_site_id
			WHERE i.resource_type || '/' || i.resource_id = $1 AND s.name = 'Site' AND i.disease = 'lbcl'`, got[0].ref); n != 1 {
			t.Error("the course does not take its site and disease from the Procedure")
		}
		for _, entry := range []int{5, 6} {
			if inf, day := assessedOn(t, r, entry); inf != got[0].ref || (day != 30 && day != 90) {
				t.Errorf("assessment %d follows %s on day %d, want the course %s", entry, inf, day, got[0].ref)
			}
		}
		if pf := infusionDates(t, tr, got[0].ref, "last_progression_free_on")["last_progression_free_on"]; pf != "2024-02-20" {
			t.Errorf("progression-free to %s, want 2024-02-20", pf)
		}
	})

	t.Run("a split dose over three days", func(t *testing.T) {
		r := lymphomaCourse(t, tr, 200, nil, "2023-11-22",
			post("urn:uuid:d2", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2023-11-23", "axi-cel")),
			post("urn:uuid:d3", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2023-11-24", "axi-cel")),
			post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:d3", "2023-12-22", "lugano-cmr")),
		)
		got := infusionsOf(t, r)
		if len(got) != 1 || got[0].ref != location(t, r, 3) || got[0].next != nil {
			t.Fatalf("infusions %+v, want one course from the first dose", got)
		}
		if inf, day := assessedOn(t, r, 6); inf != got[0].ref || day != 30 {
			t.Errorf("assessment partOf the third dose follows %s on day %d, want %s on day 30", inf, day, got[0].ref)
		}

		// Without its first dose the course starts at the second.
		tr.expect(204, "DELETE", "/fhir/"+location(t, r, 3), nil)
		if got := infusionsOf(t, r); len(got) != 1 || got[0].ref != location(t, r, 4) || got[0].sequence != 1 {
			t.Errorf("after the first dose's delete: %+v, want the second dose as the course", got)
		}
		if inf, day := assessedOn(t, r, 6); inf != location(t, r, 4) || day != 29 {
			t.Errorf("assessment follows %s on day %d, want the second dose on day 29", inf, day)
		}
	})

	t.Run("later, or another product, is another course", func(t *testing.T) {
		r := lymphomaCourse(t, tr, 200, nil, "2023-11-22",
			post("urn:uuid:other", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2023-11-23", "liso-cel")),
			post("urn:uuid:again", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2023-11-26", "axi-cel")),
		)
		if got := infusionsOf(t, r); len(got) != 3 || got[2].sequence != 3 {
			t.Errorf("infusions %+v, want three courses", got)
		}
	})
}

// An assessment that is partOf a procedure other than an infusion (the PET-CT it was read
// from) follows the patient's latest infusion on or before its date, as when it has no partOf.
// One partOf an infusion that is gone is still refused.
func TestAssessmentPartOfAnotherProcedureFollowsTheLatestInfusion(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	imaging := map[string]any{"resourceType": "Procedure", "status": "completed", "subject": ref("urn:uuid:pat"),
		"code": cc("http://snomed.info/sct", "450436003"), "performedDateTime": "2023-12-20"} // PET-CT
	r := lymphomaCourse(t, tr, 200, nil, "2023-11-22",
		post("urn:uuid:pet", imaging),
		post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:pet", "2023-12-22", "lugano-cmr")),
	)
	id := strings.TrimPrefix(location(t, r, 5), "Observation/")
	var infusion string
	var day int
	if err := tr.db.QueryRow(context.Background(), `SELECT infusion_type || '/' || infusion_id, day FROM registry_assessment
		WHERE observation_id = $1`, id).Scan(&infusion, &day); err != nil {
		t.Fatal(err)
	}
	if infusion != location(t, r, 3) || day != 30 {
		t.Errorf("assessment partOf a PET-CT follows %s on day %d, want %s on day 30", infusion, day, location(t, r, 3))
	}

	// Its own update, alone, is judged the same way.
	again := assessment(location(t, r, 1), location(t, r, 4), "2023-12-23", "lugano-cmr")
	again["id"] = id
	tr.expect(200, "PUT", "/fhir/Observation/"+id, again)

	// partOf the infusion, then the infusion deleted: refused as before.
	tr.expect(201, "POST", "/fhir/Observation", assessment(location(t, r, 1), location(t, r, 3), "2024-02-20", "lugano-cmr"))
	if r := tr.expect(422, "DELETE", "/fhir/"+location(t, r, 3), nil); !strings.Contains(string(r.body), "not a CAR-T infusion") {
		t.Errorf("body %s", r.body)
	}
}

// An event's day is the date as written, in the time zone it was recorded in; today is the
// date in the follow-up time zone, for outcomes as for the follow-up work list.
func TestWhichCalendarADayIsCountedIn(t *testing.T) {
	t.Parallel()
	auckland := time.FixedZone("UTC+13", 13*3600)
	tr := newTestRegistryWith(t, func(c *app.Config) {
		c.Registry = registry.Config{MinCell: 1}
		c.FollowUp.Location = auckland
	})
	// 23:30 in New York on 2023-11-21 is 2023-11-22 in UTC and in Auckland: day 0 is the 21st.
	r := lymphomaCourse(t, tr, 200, nil, "2023-11-21T23:30:00-05:00",
		post("urn:uuid:a1", assessment("urn:uuid:pat", "urn:uuid:inf", "2023-12-21T08:00:00+08:00", "lugano-cmr")))
	if got := infusionDates(t, tr, location(t, r, 3), "infused_on")["infused_on"]; got != "2023-11-21" {
		t.Errorf("infused on %s, want the date as written, 2023-11-21", got)
	}
	id := strings.TrimPrefix(location(t, r, 4), "Observation/")
	if n := tr.count(`SELECT day FROM registry_assessment WHERE observation_id = $1`, id); n != 30 {
		t.Errorf("assessment on day %d, want 30 (2023-11-21 to 2023-12-21 as written)", n)
	}

	// Noon UTC on 2026-11-22 is 01:00 on 2026-11-23 in Auckland.
	tr.now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	report := tr.expect(200, "GET", "/registry/outcomes/response", nil).json(t)
	if report["as_of"] != "2026-11-23" {
		t.Errorf("response as_of %v, want 2026-11-23, today in the follow-up time zone", report["as_of"])
	}
}

// svgTexts are the texts of an SVG's <text> elements after the first element with the class.
func svgTexts(body []byte, after string) []string {
	s := string(body)
	if i := strings.Index(s, `class="`+after+`"`); i >= 0 {
		s = s[i:]
	} else {
		return nil
	}
	var out []string
	for {
		i := strings.Index(s, "<text")
		if i < 0 {
			return out
		}
		s = s[i:]
		start, end := strings.Index(s, ">"), strings.Index(s, "</text>")
		out = append(out, s[start+1:end])
		s = s[end:]
	}
}

// Charts keep the tables' small-cell rules and say what they show: a suppressed count is not
// drawn as 0, groups are named by their labels, and a parameter a chart cannot honour is an
// error, not ignored.
func TestChartsKeepSmallCellsAndName(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 5})
	outcomeCohort(t, tr)

	// Eight patients, two deaths: the event count is suppressed.
	os := tr.expect(200, "GET", "/registry/outcomes/survival.svg", nil).body
	if bytes.Contains(os, []byte("0 events")) || !bytes.Contains(os, []byte("events not shown")) {
		t.Errorf("legend of a curve whose events are suppressed: %q", svgTexts(os, "legend-item"))
	}
	// Five more myeloma patients, recently infused: a curve that stops long before the
	// lymphoma one, where fewer than 5 remain. Past its end its number at risk is under 5,
	// not 0.
	for i := 0; i < 5; i++ {
		tr.expect(200, "POST", "/fhir", transaction(
			post("urn:uuid:site", organization("Harbour")),
			post("urn:uuid:pat", patient("urn:uuid:site")),
			post("urn:uuid:dx", condition("urn:uuid:pat", "C90.00")),
			post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2026-10-05", "cilta-cel"))))
	}
	byDisease := tr.expect(200, "GET", "/registry/outcomes/survival.svg?group_by=disease", nil).body
	risk := svgTexts(byDisease, "risk-table")
	if !slices.Contains(risk, "&lt;5") {
		t.Errorf("numbers at risk %q, want <5 where a curve has stopped", risk)
	}
	for _, n := range risk {
		if n == "0" || n == "1" || n == "2" || n == "3" || n == "4" {
			t.Errorf("numbers at risk %q show a count under 5", risk)
			break
		}
	}

	// Groups are named by their labels, not their codes.
	label := tr.reg.Terminology().Disease("lbcl").Display
	if !bytes.Contains(byDisease, []byte(label)) || slices.Contains(risk, "lbcl") {
		t.Errorf("survival by disease does not name lbcl %q: %q", label, risk)
	}

	// The response chart draws one bar per timepoint for all patients: it cannot group.
	r := tr.expect(400, "GET", "/registry/outcomes/response.svg?group_by=disease", nil)
	if !strings.Contains(string(r.body), "group_by") {
		t.Errorf("400 without naming group_by: %s", r.body)
	}
}

// A chart and its table show nothing past where the published curve stops: with a minimum
// cell of 5 the lymphoma OS curve stops before day 35 (4 at risk), so no landmark after it is
// shown, though the full curve runs to day 730.
func TestLandmarksStopWhereTheCurveStops(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 5})
	outcomeCohort(t, tr)
	g := tr.expect(200, "GET", "/registry/outcomes/survival?disease=lbcl&endpoint=os", nil).json(t)["groups"].([]any)[0].(map[string]any)
	curve := g["curve"].([]any)
	end := 0.0
	if len(curve) > 0 {
		end = curve[len(curve)-1].(map[string]any)["t_days"].(float64)
	}
	if end >= 35 {
		t.Fatalf("curve runs to day %v with fewer than 5 at risk", end)
	}
	for day, est := range g["landmarks"].(map[string]any) {
		if est != nil {
			t.Errorf("landmark at day %s shown past the curve's end (day %v): %v", day, end, est)
		}
	}
}

// One category under the minimum cell hides itself, not the whole bar: the month-1 bar keeps
// its n and shows its hidden categories as one hatched block.
func TestASmallCategoryHidesOnlyItself(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 5})
	outcomeCohort(t, tr)
	for i := 0; i < 5; i++ {
		tr.expect(200, "POST", "/fhir", transaction(
			post("urn:uuid:site", organization("Riverside")),
			post("urn:uuid:pat", patient("urn:uuid:site")),
			post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
			post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2024-01-01", "axi-cel")),
			post("urn:uuid:a", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-01-31", "lugano-cmr"))))
	}
	svg := string(tr.expect(200, "GET", "/registry/outcomes/response.svg?disease=lbcl", nil).body)
	month1 := svg[strings.Index(svg, `class="bar`):]
	month1 = month1[:strings.Index(month1, "</g>")]
	if strings.Contains(month1, `class="bar suppressed"`) {
		t.Fatalf("the month-1 bar (7 complete responses, 3 small categories) is withheld whole:\n%s", month1)
	}
	if !strings.Contains(month1, `class="segment hidden"`) || !strings.Contains(month1, "n = 10") {
		t.Errorf("month-1 bar without its hidden block or n = 10:\n%s", month1)
	}
	if !strings.Contains(svg, "Not shown: categories under 5 patients") {
		t.Error("no legend entry explains the hatched block")
	}
}

// A chart's subtitle promises confidence bands only where it draws them: five products are
// more curves than the chart shades.
func TestSurvivalChartsPromiseOnlyTheBandsTheyDraw(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	for _, product := range []string{"tisa-cel", "liso-cel", "brexu-cel"} {
		tr.expect(200, "POST", "/fhir", transaction(
			post("urn:uuid:site", organization("Riverside")),
			post("urn:uuid:pat", patient("urn:uuid:site")),
			post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
			post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2024-01-01", product)),
			post("urn:uuid:a", assessment("urn:uuid:pat", "urn:uuid:inf", "2024-01-31", "lugano-cmr"))))
	}
	for _, query := range []string{"", "?group_by=disease", "?group_by=product", "?group_by=site", "?endpoint=dor&group_by=disease"} {
		svg := string(tr.expect(200, "GET", "/registry/outcomes/survival.svg"+query, nil).body)
		promised, drawn := strings.Contains(svg, "95% CI"), strings.Contains(svg, `class="km-ci"`)
		if promised != drawn {
			t.Errorf("survival.svg%s: subtitle promises bands %v, bands drawn %v", query, promised, drawn)
		}
	}
}

// The CIBMTR preset: an assessment on day 100 is the day-100 timepoint, the response report
// follows CIBMTR's milestones, and every preset's milestones are codes the server publishes
// (its follow-up Tasks carry them).
func TestCIBMTRPlanPreset(t *testing.T) {
	t.Parallel()
	plan, err := registry.PlanNamed("cibmtr")
	if err != nil {
		t.Fatal(err)
	}
	tr := newTestRegistry(t, registry.Config{MinCell: 1, Plan: plan})
	tr.expect(200, "POST", "/fhir", transaction(
		post("urn:uuid:site", organization("Riverside")),
		post("urn:uuid:pat", patient("urn:uuid:site")),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
		post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2025-01-01", "axi-cel")),
		post("urn:uuid:a", assessment("urn:uuid:pat", "urn:uuid:inf", "2025-04-12", "lugano-cmr"))))
	if got := tr.count(`SELECT count(*) FROM registry_assessment WHERE milestone = 'd100'`); got != 1 {
		t.Errorf("assessments at day 100: %d, want 1", got)
	}
	report := tr.expect(200, "GET", "/registry/outcomes/response", nil).json(t)
	var labels []string
	for _, tp := range report["groups"].([]any)[0].(map[string]any)["timepoints"].([]any) {
		labels = append(labels, tp.(map[string]any)["label"].(string))
	}
	if len(labels) != 17 || labels[0] != "Day 100" || labels[1] != "Month 6" || labels[16] != "Year 15" {
		t.Errorf("timepoints %v, want Day 100, Month 6, Year 1 … Year 15", labels)
	}
	for name, preset := range registry.PlanPresets {
		for _, m := range preset().Milestones {
			if _, ok := tr.reg.Terminology().Milestones[m.Code]; !ok {
				t.Errorf("preset %s: milestone %s is not in the follow-up-milestone CodeSystem", name, m.Code)
			}
		}
	}
}

// adverseEvent is an AdverseEvent of one coding after the infusion, with an ASTCT grade
// extension when grade is above 0.
func adverseEvent(patient, infusion, system, code, on string, grade int) map[string]any {
	ae := map[string]any{"resourceType": "AdverseEvent", "actuality": "actual", "event": cc(system, code),
		"subject": ref(patient), "date": on, "suspectEntity": []any{map[string]any{"instance": ref(infusion)}}}
	if grade > 0 {
		ae["extension"] = []any{map[string]any{"url": registry.ExtASTCTGrade, "valueInteger": grade}}
	}
	return ae
}

// CRS and ICANS are read from ICD-10-CM's codes too, with the grade the code carries; the
// safety events of long-term follow-up are read from the registry's codes (and ICD-10-CM's
// T-cell malignancy and infection chapters); a grade that contradicts the code is refused.
func TestToxicityAndSafetyEventCodes(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	r := tr.expect(200, "POST", "/fhir", transaction(
		post("urn:uuid:site", organization("Riverside")),
		post("urn:uuid:pat", patient("urn:uuid:site")),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
		post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2025-01-01", "axi-cel")),
		post("urn:uuid:t1", adverseEvent("urn:uuid:pat", "urn:uuid:inf", registry.SystemICD10CM, "D89.833", "2025-01-03", 0)),
		post("urn:uuid:t2", adverseEvent("urn:uuid:pat", "urn:uuid:inf", registry.SystemICD10CM, "G92.02", "2025-01-06", 2)),
		post("urn:uuid:t3", adverseEvent("urn:uuid:pat", "urn:uuid:inf", registry.SystemCartreg, "crs", "2025-01-02", 5)),
		post("urn:uuid:t4", adverseEvent("urn:uuid:pat", "urn:uuid:inf", registry.SystemICD10CM, "C84.40", "2026-06-01", 0)),
		post("urn:uuid:t5", adverseEvent("urn:uuid:pat", "urn:uuid:inf", registry.SystemCartreg, "prolonged-cytopenia", "2025-02-15", 0)),
		post("urn:uuid:t6", adverseEvent("urn:uuid:pat", "urn:uuid:inf", registry.SystemICD10CM, "B25.9", "2025-03-01", 0)),
		post("urn:uuid:t7", adverseEvent("urn:uuid:pat", "urn:uuid:inf", registry.SystemCartreg, "subsequent-malignancy", "2027-01-01", 0)),
		// An EHR's own AdverseEvent with a cancer code is not a CAR-T record: ignored.
		post("urn:uuid:t8", adverseEvent("urn:uuid:pat", "urn:uuid:inf", registry.SystemICD10CM, "C83.30", "2026-01-01", 0))))
	ids := map[string]string{}
	for i, name := range []string{"t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"} {
		ids[name] = strings.TrimPrefix(location(t, r, 4+i), "AdverseEvent/")
	}
	type row struct {
		kind  string
		grade *int
	}
	read := func(name string) *row {
		var got row
		err := tr.db.QueryRow(context.Background(), `SELECT kind, grade FROM registry_toxicity WHERE adverse_event_id = $1`, ids[name]).Scan(&got.kind, &got.grade)
		if err != nil {
			return nil
		}
		return &got
	}
	grade := func(g int) *int { return &g }
	for name, want := range map[string]*row{
		"t1": {"crs", grade(3)}, "t2": {"icans", grade(2)}, "t3": {"crs", grade(5)},
		"t4": {"t-cell-malignancy", nil}, "t5": {"prolonged-cytopenia", nil}, "t6": {"infection", nil},
		"t7": {"subsequent-malignancy", nil}, "t8": nil,
	} {
		got := read(name)
		switch {
		case want == nil && got != nil:
			t.Errorf("%s: read as %+v, want not read", name, *got)
		case want != nil && (got == nil || got.kind != want.kind || (got.grade == nil) != (want.grade == nil) ||
			(got.grade != nil && *got.grade != *want.grade)):
			t.Errorf("%s: read as %+v, want %+v", name, got, *want)
		}
	}

	// The code says grade 3, the extension grade 2: refused, nothing written.
	before := tr.count(`SELECT count(*) FROM registry_toxicity`)
	bad := tr.expect(422, "POST", "/fhir/AdverseEvent",
		adverseEvent(location(t, r, 1), location(t, r, 3), registry.SystemICD10CM, "D89.833", "2025-01-04", 2))
	if !strings.Contains(string(bad.body), "contradicts") {
		t.Errorf("no reason given: %s", bad.body)
	}
	if tr.count(`SELECT count(*) FROM registry_toxicity`) != before {
		t.Error("a refused AdverseEvent was written")
	}
}

// The toxicity table and chart keep the small-cell rule: with 12 courses, 6 with CRS (4 of
// grade 1, 2 of grade 3), the grades under 5 are hidden, and the chart draws them as one
// hatched block instead of dropping the bar.
func TestToxicityKeepsSmallCells(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 5})
	for i, grade := range []int{1, 1, 1, 1, 3, 3, 0, 0, 0, 0, 0, 0} {
		entries := []entry{
			post("urn:uuid:site", organization("Riverside")),
			post("urn:uuid:pat", patient("urn:uuid:site")),
			post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
			post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2025-01-01", "axi-cel")),
		}
		if grade > 0 {
			entries = append(entries, post("urn:uuid:crs", toxicity("urn:uuid:pat", "urn:uuid:inf", "crs", fmt.Sprintf("2025-01-0%d", 2+i%3), grade)))
		}
		tr.expect(200, "POST", "/fhir", transaction(entries...))
	}
	g := tr.expect(200, "GET", "/registry/outcomes/toxicity", nil).json(t)["groups"].([]any)[0].(map[string]any)
	crs := g["crs"].(map[string]any)
	if crs["any"].(map[string]any)["count"] != 6.0 {
		t.Errorf("CRS in %v courses, want 6", crs["any"])
	}
	for grade, n := range crs["max_grade"].(map[string]any) {
		if n != nil && n.(float64) > 0 && n.(float64) < 5 {
			t.Errorf("worst grade %s shown for %v courses, under the minimum cell", grade, n)
		}
	}
	if crs["grade_3_plus"].(map[string]any)["count"] != nil {
		t.Errorf("grade ≥3 CRS in 2 courses shown: %v", crs["grade_3_plus"])
	}
	svg := string(tr.expect(200, "GET", "/registry/outcomes/toxicity.svg", nil).body)
	if !strings.Contains(svg, `class="segment hidden"`) || strings.Contains(svg, `class="bar suppressed"`) {
		t.Error("the chart does not show hidden grades as a hatched block")
	}
	csv := string(tr.expect(200, "GET", "/registry/outcomes/toxicity?_format=csv", nil).body)
	if !strings.HasPrefix(csv, "group,n,toxicity,any") || !strings.Contains(csv, "all,12,crs,6,") {
		t.Errorf("toxicity CSV:\n%s", csv)
	}
}

// Relapse with death without relapse competing (Aalen-Johansen), by hand for the lymphoma
// patients of outcomeCohort: death on day 20 (P4) among 6; relapse on day 30 (P8) among 5;
// censored 35; relapse on day 90 (P2) among 3. F_relapse(365) = 5/6·1/5 + 4/6·1/3 = 7/18 and
// F_death(365) = 1/6, which add up to 1 − PFS(365) = 5/9.
func TestIncidenceOfRelapseWithDeathCompeting(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	g := tr.expect(200, "GET", "/registry/outcomes/incidence?disease=lbcl", nil).json(t)["groups"].([]any)[0].(map[string]any)
	if g["n"] != 6.0 || g["events"] != 2.0 || g["competing"] != 1.0 {
		t.Errorf("n %v, relapses %v, deaths without relapse %v; want 6, 2, 1", g["n"], g["events"], g["competing"])
	}
	lm := g["landmarks"].(map[string]any)["365"].(map[string]any)
	relapse := lm["incidence"].(map[string]any)["survival"].(float64)
	nrm := lm["competing"].(map[string]any)["survival"].(float64)
	if math.Abs(relapse-7.0/18) > 1e-12 || math.Abs(nrm-1.0/6) > 1e-12 {
		t.Errorf("at 1 year: relapse %v (want 7/18), non-relapse mortality %v (want 1/6)", relapse, nrm)
	}
	pfs := tr.expect(200, "GET", "/registry/outcomes/survival?disease=lbcl&endpoint=pfs", nil).json(t)["groups"].([]any)[0].(map[string]any)
	s := pfs["landmarks"].(map[string]any)["365"].(map[string]any)["survival"].(float64)
	if math.Abs(relapse+nrm+s-1) > 1e-12 {
		t.Errorf("relapse %v + NRM %v + PFS %v at 1 year is not 1", relapse, nrm, s)
	}

	// A safety event: one prolonged cytopenia on day 60 among the lymphoma patients.
	var p1, inf1 string
	if err := tr.db.QueryRow(context.Background(), `SELECT patient_id, resource_type || '/' || resource_id FROM registry_infusion
		WHERE disease = 'lbcl' ORDER BY patient_id LIMIT 1`).Scan(&p1, &inf1); err != nil {
		t.Fatal(err)
	}
	tr.expect(201, "POST", "/fhir/AdverseEvent", adverseEvent("Patient/"+p1, inf1, registry.SystemCartreg, "prolonged-cytopenia", "2024-03-01", 0))
	cyto := tr.expect(200, "GET", "/registry/outcomes/incidence?disease=lbcl&event=prolonged-cytopenia", nil).json(t)["groups"].([]any)[0].(map[string]any)
	if cyto["events"] != 1.0 {
		t.Errorf("prolonged cytopenias: %v, want 1", cyto["events"])
	}
	tr.expect(400, "GET", "/registry/outcomes/incidence?event=sunburn", nil)
	svg := string(tr.expect(200, "GET", "/registry/outcomes/incidence.svg?disease=lbcl", nil).body)
	for _, want := range []string{"Relapse or progression", "Non-relapse mortality", "Cumulative incidence"} {
		if !strings.Contains(svg, want) {
			t.Errorf("incidence chart without %q", want)
		}
	}
	if strings.Contains(svg, "95% CI") || strings.Contains(svg, `class="km-ci"`) {
		t.Error("the incidence chart promises or draws confidence bands it has no steps for")
	}
	csv := string(tr.expect(200, "GET", "/registry/outcomes/incidence?_format=csv", nil).body)
	if !strings.HasPrefix(csv, "event,group,n,events,competing,t_days") {
		t.Errorf("incidence CSV:\n%s", csv)
	}
}

// Survival by group carries the log-rank test of the groups shown, as survdiff computes it:
// here OS of lymphoma (6 patients, 2 deaths) against myeloma (2, none; one censored on day
// 0, one on day 30), by hand: at day 20 1 death among 7 at risk, 6 of them lymphoma
// (E = 6/7); at day 200 1 death among 3, all lymphoma (E = 1). O − E = 1/7 for lymphoma;
// variance 6/7·1/7 + 0 = 6/49, so χ² = 1/6.
func TestSurvivalByGroupHasTheLogRankTest(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	report := tr.expect(200, "GET", "/registry/outcomes/survival?group_by=disease", nil).json(t)
	lr, ok := report["log_rank"].(map[string]any)
	if !ok {
		t.Fatalf("no log_rank: %v", report["log_rank"])
	}
	if math.Abs(lr["chi_square"].(float64)-1.0/6) > 1e-12 || lr["df"] != 1.0 || lr["p"] == nil {
		t.Errorf("log-rank %v, want χ² = 1/6 on 1 df", lr)
	}
	if _, ok := tr.expect(200, "GET", "/registry/outcomes/survival", nil).json(t)["log_rank"]; ok {
		t.Error("a single group has a log-rank test")
	}
}

// Best overall response by hand: A responds partially, progresses, then has a complete
// response on the next line of care (not counted: best is PMR); B is never assessed (a
// non-responder among all infused); C responds completely.
func TestBestResponseByHand(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	course := func(visits ...[2]string) {
		entries := []entry{
			post("urn:uuid:site", organization("Riverside")),
			post("urn:uuid:pat", patient("urn:uuid:site")),
			post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
			post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2024-01-01", "axi-cel")),
		}
		for i, v := range visits {
			entries = append(entries, post(fmt.Sprintf("urn:uuid:a%d", i), assessment("urn:uuid:pat", "urn:uuid:inf", v[0], v[1])))
		}
		tr.expect(200, "POST", "/fhir", transaction(entries...))
	}
	course([2]string{"2024-01-31", "lugano-pmr"}, [2]string{"2024-03-31", "lugano-pmd"}, [2]string{"2024-12-31", "lugano-cmr"})
	course()
	course([2]string{"2024-01-31", "lugano-cmr"})
	g := tr.expect(200, "GET", "/registry/outcomes/best-response", nil).json(t)["groups"].([]any)[0].(map[string]any)
	counts := map[string]any{}
	for _, c := range g["categories"].([]any) {
		counts[c.(map[string]any)["code"].(string)] = c.(map[string]any)["count"]
	}
	if counts["lugano-pmr"] != 1.0 || counts["lugano-cmr"] != 1.0 || counts["lugano-pmd"] != 0.0 {
		t.Errorf("best responses %v, want one PMR (not the CMR after progression) and one CMR", counts)
	}
	rate := func(key string) float64 { return g[key].(map[string]any)["rate"].(float64) }
	if g["n"] != 3.0 || g["assessed"] != 2.0 || math.Abs(rate("overall_response_itt")-2.0/3) > 1e-12 ||
		rate("overall_response_assessed") != 1 || math.Abs(rate("complete_response_itt")-1.0/3) > 1e-12 {
		t.Errorf("n %v assessed %v, ORR %v / %v, CR %v; want 3, 2, 2/3 of all infused, 1 of the assessed, CR 1/3",
			g["n"], g["assessed"], rate("overall_response_itt"), rate("overall_response_assessed"), rate("complete_response_itt"))
	}
	svg := string(tr.expect(200, "GET", "/registry/outcomes/best-response.svg?percent=false", nil).body)
	if !strings.Contains(svg, "Not assessed") || !strings.Contains(svg, "n = 3") {
		t.Errorf("best response chart without the never-assessed course or n = 3")
	}
}

// Outcomes by age band at infusion and by prior lines of therapy. Ages are whole years at
// the infusion, a partial birth date at the middle of its range; the migration that added
// birth dates reads stored patients the same way.
func TestStrataByAgeBandAndPriorLines(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	for _, p := range []struct {
		born       string
		priorLines int
	}{{"2010-03-01", 2}, {"1985-06", 2}, {"1950", 4}, {"1950-12-31", 7}, {"", 0}} {
		pat := patient("urn:uuid:site")
		if p.born == "" {
			delete(pat, "birthDate")
		} else {
			pat["birthDate"] = p.born
		}
		inf := infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2025-07-01", "axi-cel")
		if p.priorLines > 0 {
			ext, _ := inf["extension"].([]any)
			inf["extension"] = append(ext, map[string]any{"url": registry.ExtPriorLines, "valueInteger": p.priorLines})
		}
		tr.expect(200, "POST", "/fhir", transaction(
			post("urn:uuid:site", organization("Riverside")),
			post("urn:uuid:pat", pat),
			post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
			post("urn:uuid:inf", inf)))
	}
	groups := func(groupBy string) map[string]float64 {
		out := map[string]float64{}
		for _, g := range tr.expect(200, "GET", "/registry/outcomes/survival?group_by="+groupBy, nil).json(t)["groups"].([]any) {
			out[g.(map[string]any)["group"].(string)] = g.(map[string]any)["n"].(float64)
		}
		return out
	}
	// 2010-03-01: 15; 1985-06 (mid-June): 40 on 2025-07-01; 1950 (2 July): 74; 1950-12-31: 74.
	if got, want := groups("age_band"), map[string]float64{"<18": 1, "40–64": 1, "65–74": 2, "unknown": 1}; !maps.Equal(got, want) {
		t.Errorf("by age band %v, want %v", got, want)
	}
	if got, want := groups("prior_lines"), map[string]float64{"2": 2, "4–5": 1, "6+": 1, "unknown": 1}; !maps.Equal(got, want) {
		t.Errorf("by prior lines %v, want %v", got, want)
	}

	// The migration's backfill gives the days the projection gives.
	ctx := context.Background()
	before := map[string]string{}
	rows, _ := tr.db.Query(ctx, `SELECT patient_id, coalesce(birth_on::text, '') FROM registry_patient`)
	for rows.Next() {
		var id, born string
		if err := rows.Scan(&id, &born); err != nil {
			t.Fatal(err)
		}
		before[id] = born
	}
	migration, err := fs.ReadFile(migrations.Files, "016_registry_birth_date.sql")
	if err != nil {
		t.Fatal(err)
	}
	backfill := string(migration)[strings.Index(string(migration), "UPDATE registry_patient"):]
	if _, err := tr.db.Exec(ctx, `UPDATE registry_patient SET birth_on = NULL`); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.db.Exec(ctx, backfill); err != nil {
		t.Fatal(err)
	}
	after := map[string]string{}
	rows, _ = tr.db.Query(ctx, `SELECT patient_id, coalesce(birth_on::text, '') FROM registry_patient`)
	for rows.Next() {
		var id, born string
		if err := rows.Scan(&id, &born); err != nil {
			t.Fatal(err)
		}
		after[id] = born
	}
	if !maps.Equal(before, after) || len(before) != 5 {
		t.Errorf("birth dates projected %v, backfilled %v", before, after)
	}
}

// At each milestone, response among all whose window has closed beside among the assessed:
// at month 1, 6 assessed (4 responders), 1 dead before, 1 pending (not counted either way).
func TestResponseAmongAllInfusedAtEachMilestone(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	tp := tr.expect(200, "GET", "/registry/outcomes/response", nil).json(t)["groups"].([]any)[0].(map[string]any)["timepoints"].([]any)[0].(map[string]any)
	among := tp["overall_response"].(map[string]any)
	itt := tp["overall_response_itt"].(map[string]any)
	if among["count"] != 4.0 || among["of"] != 6.0 || itt["count"] != 4.0 || itt["of"] != 7.0 {
		t.Errorf("month 1: %v of the assessed, %v of all evaluable; want 4/6 and 4/7", among, itt)
	}
	csv := string(tr.expect(200, "GET", "/registry/outcomes/response?_format=csv", nil).body)
	if !strings.Contains(csv, ",evaluable,cr_itt_rate,") {
		t.Errorf("response CSV without the intention-to-treat rates:\n%s", csv[:200])
	}
}

// A patient whose follow-up ended before a milestone's window closed, unassessed, is counted
// there as lost to follow-up or withdrawn, not as a missed visit. At month 3 of the lymphoma
// patients of outcomeCohort, P3 and P5 were missing; P5 is then lost (finished follow-up
// episode typed lost-to-follow-up) and P3 withdraws (cancelled episode).
func TestLostAndWithdrawnAreNotMissedVisits(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 1})
	outcomeCohort(t, tr)
	month3 := func() map[string]any {
		t.Helper()
		return tr.expect(200, "GET", "/registry/outcomes/response?disease=lbcl", nil).json(t)["groups"].([]any)[0].(map[string]any)["timepoints"].([]any)[1].(map[string]any)
	}
	if m3 := month3(); m3["missing"] != 2.0 || m3["lost_to_follow_up"] != 0.0 {
		t.Fatalf("before: month 3 missing %v, lost %v; want 2 and 0", m3["missing"], m3["lost_to_follow_up"])
	}
	patientOf := func(name string) string {
		t.Helper()
		r := tr.expect(200, "GET", "/fhir/Patient?identifier=urn:test|"+name, nil).json(t)
		return "Patient/" + r["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)["id"].(string)
	}
	episode := func(patient, status, end string, types ...string) map[string]any {
		var cc []any
		for _, code := range types {
			cc = append(cc, map[string]any{"coding": []any{map[string]any{"system": registry.SystemCartreg, "code": code}}})
		}
		e := map[string]any{"resourceType": "EpisodeOfCare", "status": status,
			"patient": ref(patient), "period": map[string]any{"end": end}}
		if cc != nil {
			e["type"] = cc
		}
		return e
	}
	tr.expect(201, "POST", "/fhir/EpisodeOfCare", episode(patientOf("P5"), "finished", "2024-02-01", registry.CodeFollowUpEpisode, registry.CodeLostToFollowUp))
	tr.expect(201, "POST", "/fhir/EpisodeOfCare", episode(patientOf("P3"), "cancelled", "2024-03-01", registry.CodeFollowUpEpisode))
	// An episode of another kind says nothing about follow-up.
	tr.expect(201, "POST", "/fhir/EpisodeOfCare", episode(patientOf("P1"), "finished", "2024-02-01"))
	m3 := month3()
	if m3["missing"] != 0.0 || m3["lost_to_follow_up"] != 1.0 || m3["withdrawn"] != 1.0 || m3["due"] != 6.0-1 {
		t.Errorf("after: month 3 missing %v, lost %v, withdrawn %v, due %v; want 0, 1, 1, 5",
			m3["missing"], m3["lost_to_follow_up"], m3["withdrawn"], m3["due"])
	}
	// Month 1 came before either ended: P5 and P3 were assessed there and stay so.
	m1 := tr.expect(200, "GET", "/registry/outcomes/response?disease=lbcl", nil).json(t)["groups"].([]any)[0].(map[string]any)["timepoints"].([]any)[0].(map[string]any)
	if m1["lost_to_follow_up"] != 0.0 || m1["withdrawn"] != 0.0 {
		t.Errorf("month 1: lost %v, withdrawn %v; want 0", m1["lost_to_follow_up"], m1["withdrawn"])
	}
}
