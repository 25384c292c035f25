package fhir

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"
)

var allIssueTypes = []IssueType{Invalid, Structure, Required, Value, NotFound, Deleted, NotSupported,
	Conflict, Duplicate, TooCostly, BusinessRule, Processing, Exception, Transient, Timeout, Security, Throttled, Informational}

func TestMarshalOutcomeIsValidR4(t *testing.T) {
	issues := []Issue{
		{Severity: Error, Code: Value, Diagnostics: "not a date", Expression: []string{"Patient.birthDate"}},
		{Severity: Warning, Code: NotSupported, Diagnostics: "unknown parameter"},
	}
	raw, err := MarshalOutcome(issues, false)
	if err != nil {
		t.Fatal(err)
	}
	// What we send must be what a strict R4 parser accepts.
	u, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Unmarshal(raw); err != nil {
		t.Fatalf("our OperationOutcome is not valid R4: %v\n%s", err, raw)
	}
	var got struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity, Code, Diagnostics string
			Expression                  []string
		}
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.ResourceType != "OperationOutcome" || len(got.Issue) != 2 {
		t.Fatalf("got %s", raw)
	}
	first := got.Issue[0]
	if first.Severity != "error" || first.Code != "value" || first.Diagnostics != "not a date" ||
		len(first.Expression) != 1 || first.Expression[0] != "Patient.birthDate" {
		t.Fatalf("first issue = %+v", first)
	}
	if got.Issue[1].Severity != "warning" || got.Issue[1].Code != "not-supported" || got.Issue[1].Expression != nil {
		t.Fatalf("second issue = %+v", got.Issue[1])
	}
}

func TestEveryIssueTypeAndSeverityMarshals(t *testing.T) {
	for _, code := range allIssueTypes {
		for _, sev := range []Severity{Fatal, Error, Warning, Information} {
			if _, err := MarshalOutcome([]Issue{{Severity: sev, Code: code}}, false); err != nil {
				t.Errorf("%s/%s: %v", sev, code, err)
			}
		}
	}
	if _, err := MarshalOutcome([]Issue{{Severity: Error, Code: "no-such-code"}}, false); err == nil {
		t.Error("an unknown issue type was accepted")
	}
}

func TestMarshalOutcomePretty(t *testing.T) {
	raw, err := MarshalOutcome([]Issue{{Severity: Error, Code: NotFound}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "\n  ") {
		t.Fatalf("not indented: %s", raw)
	}
}

func TestOutcomeErrorNamesLocations(t *testing.T) {
	o := NewOutcome(http.StatusBadRequest, Value, "not a date", "Patient.birthDate")
	if got, want := o.Error(), "400 Bad Request: Patient.birthDate: not a date"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

// Every error response pays for this: it should stay far below a request's other costs.
func BenchmarkMarshalOutcome(b *testing.B) {
	issues := []Issue{{Severity: Error, Code: Value, Diagnostics: "not a date", Expression: []string{"Patient.birthDate"}}}
	for b.Loop() {
		if _, err := MarshalOutcome(issues, false); err != nil {
			b.Fatal(err)
		}
	}
}
