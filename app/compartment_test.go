package app_test

import (
	"context"
	"slices"
	"testing"

	"github.com/cartreg/cartreg/auth"
)

// A patient's compartment is searched by those who may see the patient: a coordinator their
// own sites' patients only, without includes; the EHR as its scopes allow the type's search;
// never a researcher. Each search is audited, naming the patient.
func TestCompartmentSearchAccess(t *testing.T) {
	n := newNetwork(t)
	coordinator := n.h.Token(auth.RoleCoordinator, n.siteA)
	researcher := n.h.Token(auth.RoleResearcher)
	ehr := n.h.Token(auth.RoleEHR)
	client, _, err := n.h.App.Auth.AddClient(context.Background(), auth.NewClient{Name: "demographics", Role: auth.RoleEHR,
		Scopes: "system/Patient.rs"})
	if err != nil {
		t.Fatal(err)
	}
	patientsOnly, _, err := n.h.App.Auth.IssueToken(context.Background(), client.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	a, b := "/fhir/Patient/"+n.patientA, "/fhir/Patient/"+n.patientB
	for _, c := range []struct {
		who, token, path string
		want             int
	}{
		{"coordinator of A", coordinator, a + "/Observation", 200},
		{"coordinator of A", coordinator, a + "/Observation/_search?code=weight", 200},
		{"coordinator of A", coordinator, b + "/Observation", 404},
		{"coordinator of A", coordinator, a + "/Observation?_include=Observation:performer", 403},
		{"coordinator of A", coordinator, a + "/Observation?_revinclude=Provenance:target", 403},
		{"coordinator of A", coordinator, a + "/Task", 404}, // not in the compartment
		{"researcher", researcher, a + "/Observation", 403},
		{"ehr", ehr, b + "/Observation", 200},
		{"ehr with Patient scopes only", patientsOnly, b + "/Observation", 403},
		{"ehr with Patient scopes only", patientsOnly, b + "/Patient", 200},
	} {
		res := n.h.As(c.token, "GET", c.path, nil)
		if res.Status != c.want {
			t.Errorf("%s: GET %s: %d, want %d: %s", c.who, c.path, res.Status, c.want, res.Body)
			continue
		}
		if c.want == 200 && c.path == a+"/Observation" {
			entries, _ := res.JSON(t)["entry"].([]any)
			if len(entries) != 1 || entries[0].(map[string]any)["resource"].(map[string]any)["id"] != n.observationA {
				t.Errorf("%s: GET %s: %v", c.who, c.path, entries)
			}
		}
	}

	res := n.h.As(coordinator, "GET", a+"/Observation", nil)
	if err := n.h.App.Audit.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var interaction string
	var outcome int
	var patients []string
	if err := n.h.DB.QueryRow(context.Background(), `SELECT interaction, outcome, patients FROM audit_event WHERE request_id = $1`,
		res.Header.Get("X-Request-Id")).Scan(&interaction, &outcome, &patients); err != nil {
		t.Fatalf("the compartment search's audit record: %v", err)
	}
	if interaction != "search-type" || outcome != 200 || !slices.Contains(patients, n.patientA) {
		t.Errorf("audited as %s %d, patients %v", interaction, outcome, patients)
	}
}
