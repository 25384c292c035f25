package registry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/registry"
)

// tableCounts is the number of rows of every table but the audit trail's, which records the
// $validate calls themselves.
func (tr *testRegistry) tableCounts() map[string]int {
	tr.t.Helper()
	rows, err := tr.db.Query(context.Background(), `SELECT tablename FROM pg_tables
		WHERE schemaname = current_schema() AND tablename NOT LIKE 'audit%' ORDER BY 1`)
	if err != nil {
		tr.t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			tr.t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	counts := map[string]int{}
	for _, table := range tables {
		counts[table] = tr.count(fmt.Sprintf(`SELECT count(*) FROM %q`, table))
	}
	return counts
}

// issuesOf returns the issues of an OperationOutcome answer as "severity code expression:
// diagnostics" lines.
func issuesOf(t testing.TB, r reply) []string {
	t.Helper()
	oo := r.json(t)
	if oo["resourceType"] != "OperationOutcome" {
		t.Fatalf("not an OperationOutcome: %s", r.body)
	}
	var out []string
	for _, x := range oo["issue"].([]any) {
		is := x.(map[string]any)
		expr := ""
		if e, ok := is["expression"].([]any); ok && len(e) > 0 {
			expr = e[0].(string)
		}
		out = append(out, fmt.Sprintf("%s %s %s: %v", is["severity"], is["code"], expr, is["diagnostics"]))
	}
	return out
}

func TestValidateOperationRunsTheWriteChecksAndWritesNothing(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{})
	r := tr.expect(200, "POST", "/fhir", lymphomaPatient())
	patientRef, infusionRef := location(t, r, 1), location(t, r, 3)
	patientID := strings.TrimPrefix(patientRef, "Patient/")
	researcher := tr.h.Token(auth.RoleResearcher)
	coordinator := tr.h.Token(auth.RoleCoordinator, "any")
	tr.expect(200, "GET", "/fhir/Patient", nil) // the administrator's token is issued
	before := tr.tableCounts()

	cases := []struct {
		name, path string
		body       any
		want       string // a line of issuesOf
	}{
		{"a valid assessment", "/fhir/Observation/$validate",
			assessment(patientRef, infusionRef, "2024-11-20", "lugano-cmr"), "information informational : All OK"},
		{"an assessment before its infusion: the registry's rule", "/fhir/Observation/$validate",
			assessment(patientRef, infusionRef, "2023-11-01", "lugano-cmr"), "error business-rule Observation.effective"},
		{"a category of another disease's scheme", "/fhir/Observation/$validate",
			assessment(patientRef, infusionRef, "2024-11-20", "imwg-cr"), "error business-rule Observation.value"},
		{"a Patient google/fhir refuses", "/fhir/Patient/$validate",
			map[string]any{"resourceType": "Patient", "birthDate": "1970-13-01"}, "error value Patient.birthDate"},
		{"an R4 invariant", "/fhir/Patient/$validate",
			map[string]any{"resourceType": "Patient", "name": []any{map[string]any{}}}, "error structure Patient.name[0]: ele-1"},
		{"the wrong type for the URL", "/fhir/Patient/$validate",
			organization("x"), "error invalid resourceType"},
		{"a Parameters body, update of the patient's death before the infusion", "/fhir/" + patientRef + "/$validate",
			map[string]any{"resourceType": "Parameters", "parameter": []any{
				map[string]any{"name": "mode", "valueCode": "update"},
				map[string]any{"name": "resource", "resource": map[string]any{"resourceType": "Patient", "id": patientID,
					"deceasedDateTime": "2023-10-01"}},
			}}, "error business-rule Patient.deceasedDateTime"},
		{"an update whose id is not the URL's", "/fhir/" + patientRef + "/$validate",
			map[string]any{"resourceType": "Patient", "id": "other"}, "error invalid Patient.id"},
		{"deleting an infusion assessments follow", "/fhir/" + infusionRef + "/$validate?mode=delete", nil,
			"error business-rule"},
		{"deleting a condition", "/fhir/" + location(t, r, 2) + "/$validate?mode=delete", nil,
			"information informational : All OK"},
		{"the registry profile: a toxicity without its grade", "/fhir/AdverseEvent/$validate?profile=" + registry.ProfileToxicity,
			func() map[string]any {
				tox := toxicity(patientRef, infusionRef, "crs", "2023-11-24", 2)
				delete(tox, "extension")
				return tox
			}(), "error invalid AdverseEvent.extension"},
		{"the registry profile: a toxicity as it asks", "/fhir/AdverseEvent/$validate?profile=" + registry.ProfileToxicity,
			toxicity(patientRef, infusionRef, "crs", "2023-11-24", 2), "information informational : All OK"},
		{"the registry profile: an infusion without its product", "/fhir/Procedure/$validate",
			map[string]any{"resourceType": "Parameters", "parameter": []any{
				map[string]any{"name": "profile", "valueUri": registry.ProfileInfusion},
				map[string]any{"name": "resource", "resource": func() map[string]any {
					p := infusion(patientRef, "", "", "2024-01-01", "axi-cel")
					delete(p, "usedCode")
					return p
				}()},
			}}, "error invalid Procedure.usedCode"},
		{"the registry profile's required binding: a scheme is no category", "/fhir/Observation/$validate?profile=" + registry.ProfileAssessment,
			assessment(patientRef, infusionRef, "2024-11-20", "lugano"), "error invalid Observation.valueCodeableConcept: must have a code from value set " + registry.ValueSetResponse},
		{"a Parameters resource is itself validated at /Parameters", "/fhir/Parameters/$validate",
			map[string]any{"resourceType": "Parameters", "parameter": []any{map[string]any{"name": "x", "valueBoolean": true}}},
			"information informational : All OK"},
		{"a profile of another type", "/fhir/Patient/$validate?profile=" + registry.ProfileToxicity,
			patient(""), "error invalid Patient"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := tr.expect(200, "POST", c.path, c.body)
			issues := issuesOf(t, r)
			found := false
			for _, is := range issues {
				found = found || strings.HasPrefix(is, c.want)
			}
			if !found {
				t.Errorf("issues %q, want one starting %q", issues, c.want)
			}
			if strings.HasPrefix(c.want, "information") && len(issues) != 1 {
				t.Errorf("a valid resource has issues %q", issues)
			}
		})
	}
	if after := tr.tableCounts(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("$validate wrote: table counts\n%v\nbecame\n%v", before, after)
	}

	t.Run("requests that cannot be validated", func(t *testing.T) {
		for _, c := range []struct {
			status     int
			path       string
			body       any
			diagnostic string
		}{
			{400, "/fhir/Patient/$validate?profile=http://example.org/StructureDefinition/nope", patient(""), "http://example.org/StructureDefinition/nope"},
			{400, "/fhir/Patient/$validate?mode=profile", patient(""), `mode "profile"`},
			{400, "/fhir/Patient/$validate?mode=delete", nil, "names the resource"},
			{404, "/fhir/Patient/nobody/$validate?mode=delete", nil, "Patient/nobody"},
			{400, "/fhir/Patient/$validate", map[string]any{"resourceType": "Parameters",
				"parameter": []any{map[string]any{"name": "onlyOne", "valueBoolean": true}}}, `"onlyOne"`},
			{404, "/fhir/Nothing/$validate", patient(""), "Nothing"},
		} {
			r := tr.expect(c.status, "POST", c.path, c.body)
			if !strings.Contains(strings.Join(issuesOf(t, r), "\n"), c.diagnostic) {
				t.Errorf("%s: %s, want it to name %s", c.path, r.body, c.diagnostic)
			}
		}
	})

	t.Run("it needs the scopes of a write", func(t *testing.T) {
		r := tr.h.As(researcher, "POST", "/fhir/Observation/$validate", assessment(patientRef, infusionRef, "2024-11-20", "lugano-cmr"))
		if r.Status != 403 {
			t.Errorf("a researcher's $validate: %d %s", r.Status, r.Body)
		}
		if r := tr.h.As(coordinator, "POST", "/fhir/Patient/$validate", patient("")); r.Status != 403 {
			t.Errorf("a coordinator's $validate of a Patient: %d %s", r.Status, r.Body)
		}
	})

	t.Run("the call is audited as an operation", func(t *testing.T) {
		r := tr.h.Do("POST", "/fhir/Observation/$validate", assessment(patientRef, infusionRef, "2024-11-20", "lugano-cmr"))
		if err := tr.h.App.Audit.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		var interaction string
		if err := tr.db.QueryRow(context.Background(), `SELECT interaction FROM audit_event WHERE request_id = $1`,
			r.Header.Get("X-Request-Id")).Scan(&interaction); err != nil {
			t.Fatalf("no audit record of the $validate call: %v", err)
		}
		if interaction != "operation" {
			t.Errorf("audited as %q", interaction)
		}
	})
	if after := tr.tableCounts(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("$validate wrote: table counts\n%v\nbecame\n%v", before, after)
	}
}
