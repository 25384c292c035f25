package fhir_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestDotIDsAndYearZeroAreRefused(t *testing.T) {
	s := newTestServer(t)
	for _, id := range []string{".", ".."} {
		r := s.do("POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","id":"`+id+`"},
			"request":{"method":"PUT","url":"Patient/`+id+`"}}]}`)
		s.expect(r, http.StatusBadRequest)
		// In a body the id is located.
		r = s.do("POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:6b2c7a9e-1d2f-4e5a-9b8c-7d6e5f4a3b2c",
			"resource":{"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"`+id+`"}]},
			"request":{"method":"POST","url":"Patient"}}]}`)
		s.expect(r, http.StatusBadRequest)
		// Among the body's problems (an unreferenced contained resource is another, dom-3).
		located := false
		for _, is := range r.json(t)["issue"].([]any) {
			for _, e := range asSlice(is.(map[string]any)["expression"]) {
				located = located || strings.HasSuffix(fmt.Sprint(e), "contained[0].id")
			}
		}
		if !located {
			t.Errorf("id %q not located at …contained[0].id: %s", id, r.body)
		}
	}
	if n := s.countRows("resource"); n != 0 {
		t.Errorf("%d resources written", n)
	}

	for _, c := range []struct{ body, location string }{
		{`{"resourceType":"Patient","birthDate":"0000-01-01"}`, "Patient.birthDate"},
		{`{"resourceType":"Patient","birthDate":"0000"}`, "Patient.birthDate"},
		{`{"resourceType":"Patient","deceasedDateTime":"0000-12-31T23:00:00-05:00"}`, "Patient.deceasedDateTime"},
		{`{"resourceType":"Patient","name":[{"family":"x"},{"period":{"start":"0000-06"}}]}`, "Patient.name[1].period.start"},
	} {
		r := s.do("POST", "/Patient", c.body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400: %s", c.body, r.status, r.body)
			continue
		}
		if code, _, expr := outcomeIssue(t, r); code != "value" || len(expr) != 1 || expr[0] != c.location {
			t.Errorf("%s: issue %s at %v, want value at %s", c.body, code, expr, c.location)
		}
	}
	s.expect(s.do("POST", "/Patient", `{"resourceType":"Patient","birthDate":"0001-01-01"}`), http.StatusCreated)
}
