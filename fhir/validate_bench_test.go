package fhir_test

import (
	"slices"
	"testing"

	"github.com/cartreg/cartreg/fhir"
)

// What Parse costs, google/fhir and the second validation pass together, on the registry's
// common write (a Patient) and its largest (a Synthea patient history, posted whole).

func BenchmarkParsePatient(b *testing.B) {
	body := []byte(patientJSON)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := fhir.Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseSyntheaBundle(b *testing.B) {
	_, transactions := syntheaBundles(b)
	// The history of median size: typical, where the largest would be an outlier.
	slices.SortFunc(transactions, func(x, y []byte) int { return len(x) - len(y) })
	body := transactions[len(transactions)/2]
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := fhir.Parse(body); err != nil {
			b.Fatal(err)
		}
	}
}
