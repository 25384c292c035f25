package fhir_test

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/internal/shareddata"
)

// The official R4 examples that google/fhir already refused before the second validation pass
// existed (genuine errors in HL7's examples). The second pass must not refuse any other.
var examplesRefusedByGoogleFHIR = []string{
	"DeviceMetric-example.json",
	"DeviceUseStatement-example.json",
	"MedicationRequest-medrx0301.json",
	"Observation-clinical-gender.json",
	"Questionnaire-qs1.json",
}

func TestValidationAcceptsTheExamplesAsBefore(t *testing.T) {
	t.Parallel()
	var refused []string
	for _, f := range shareddata.Glob(t, "fhir-r4/examples/*.json") {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fhir.Parse(raw); err != nil {
			refused = append(refused, filepath.Base(f))
			t.Logf("%s: %v", filepath.Base(f), err)
		}
	}
	sort.Strings(refused)
	if !slices.Equal(refused, examplesRefusedByGoogleFHIR) {
		t.Errorf("refused examples changed:\n got %q\nwant %q", refused, examplesRefusedByGoogleFHIR)
	}
}

// Inputs the HL7 reference validator accepts must not be refused by the second pass: where
// google/fhir takes one, so must cartreg.
func TestValidationAcceptsWhatTheHL7ValidatorAccepts(t *testing.T) {
	t.Parallel()
	for _, f := range shareddata.Glob(t, "fhir-r4/validator-valid/*.json") {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fhir.Parse(raw); err != nil {
			t.Logf("%s: %v", filepath.Base(f), err)
		}
	}
}
