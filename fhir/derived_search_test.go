package fhir_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
)

// Parameters derived from others (Observation's patient is its subject pointing at a
// Patient; combo-code is code and component-code) have no index rows of their own, and every
// way of searching with them finds what their own rows would have found.
func TestDerivedParametersAreSearchedThroughTheirSources(t *testing.T) {
	s := newTestServer(t)
	put := func(path, body string) {
		t.Helper()
		s.expect(s.do("PUT", path, body), http.StatusCreated)
	}
	put("/Patient/p1", `{"resourceType":"Patient","id":"p1","name":[{"family":"Derivata"}]}`)
	put("/Group/g1", `{"resourceType":"Group","id":"g1","type":"person","actual":true}`)
	put("/Observation/o1", `{"resourceType":"Observation","id":"o1","status":"final",
		"code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},
		"subject":{"reference":"Patient/p1"},
		"valueCodeableConcept":{"coding":[{"system":"http://snomed.info/sct","code":"373066001"}]},
		"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},
		  "valueQuantity":{"value":120,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]}`)
	put("/Observation/o2", `{"resourceType":"Observation","id":"o2","status":"final",
		"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"subject":{"reference":"Group/g1"}}`)
	put("/Condition/c1", `{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},
		"code":{"coding":[{"system":"http://snomed.info/sct","code":"118600007"}]}}`)

	var stored int
	if err := s.db.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM search_reference WHERE resource_type IN ('Observation', 'Condition') AND code = 'patient') +
		(SELECT count(*) FROM search_token WHERE resource_type = 'Observation' AND code LIKE 'combo-%') +
		(SELECT count(*) FROM search_quantity WHERE resource_type = 'Observation' AND code LIKE 'combo-%')`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != 0 {
		t.Errorf("%d index rows stored for derived parameters", stored)
	}

	ids := func(path string) []string {
		t.Helper()
		return matchIDs(s.expect(s.do("GET", path, ""), http.StatusOK).json(t))
	}
	all := func(path string) []string { // matches and includes
		t.Helper()
		var out []string
		for _, e := range asSlice(s.expect(s.do("GET", path, ""), http.StatusOK).json(t)["entry"]) {
			r := e.(map[string]any)["resource"].(map[string]any)
			out = append(out, r["resourceType"].(string)+"/"+r["id"].(string))
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		path string
		want []string
	}{
		{"/Observation?patient=Patient/p1", []string{"o1"}},
		{"/Observation?patient=p1", []string{"o1"}},
		{"/Observation?patient=g1", nil},
		{"/Observation?subject=Group/g1", []string{"o2"}},
		{"/Observation?patient:missing=true", []string{"o2"}},
		{"/Observation?patient:missing=false", []string{"o1"}},
		{"/Observation?patient.family=Derivata", []string{"o1"}},
		{"/Observation?combo-code=8480-6", []string{"o1", "o2"}},
		{"/Observation?combo-code=http://loinc.org|85354-9", []string{"o1"}},
		{"/Observation?combo-code:not=85354-9", []string{"o2"}},
		{"/Observation?combo-value-concept=373066001", []string{"o1"}},
		{"/Observation?combo-value-quantity=120", []string{"o1"}},
		{"/Observation?combo-value-quantity:missing=true", []string{"o2"}},
		{"/Condition?patient=Patient/p1", []string{"c1"}},
		{"/Patient?_has:Observation:patient:code=85354-9", []string{"p1"}},
		{"/Patient?_has:Observation:patient:combo-code=8480-6", []string{"p1"}},
		{"/Patient/p1/Condition", []string{"c1"}},
		{"/Observation?_sort=patient", []string{"o1", "o2"}},
	} {
		if got := ids(c.path); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.path, got, c.want)
		}
	}
	if got, want := all("/Observation?_id=o1&_include=Observation:patient"), []string{"Observation/o1", "Patient/p1"}; !slices.Equal(got, want) {
		t.Errorf("_include=Observation:patient: %v, want %v", got, want)
	}
	if got, want := all("/Observation?_id=o2&_include=Observation:patient"), []string{"Observation/o2"}; !slices.Equal(got, want) {
		t.Errorf("_include=Observation:patient of a Group's observation: %v, want %v", got, want)
	}
	if got, want := all("/Patient?_id=p1&_revinclude=Observation:patient&_revinclude=Condition:patient"), []string{"Condition/c1", "Observation/o1", "Patient/p1"}; !slices.Equal(got, want) {
		t.Errorf("_revinclude: %v, want %v", got, want)
	}
	if got, want := all("/Group?_id=g1&_revinclude=Observation:patient"), []string{"Group/g1"}; !slices.Equal(got, want) {
		t.Errorf("_revinclude=Observation:patient of a Group: %v, want %v", got, want)
	}
	if got, want := all("/Patient/p1/$everything"), []string{"Condition/c1", "Observation/o1", "Patient/p1"}; !slices.Equal(got, want) {
		t.Errorf("$everything: %v, want %v", got, want)
	}
}
