package fhir

import (
	"os"
	"testing"
)

// The second pass alone, on the same bodies as BenchmarkParse*: what it adds to Parse.
// BENCH_BODY names a file to run it on (a Synthea history, decompressed).
func BenchmarkValidateJSON(b *testing.B) {
	body := []byte(`{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.36.146.595.217.0.1","value":"12345"}],
	"name":[{"family":"Chalmers","given":["Peter","James"]}],"gender":"male","birthDate":"1974-12-25"}`) // the API tests' patientJSON
	if f := os.Getenv("BENCH_BODY"); f != "" {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		body = raw
	}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		res, err := decodeResource(body) // decoded here too, as Parse decodes the body once for it
		if err != nil {
			b.Fatal(err)
		}
		if issues := validateJSON(res.Body); hasErrors(issues) {
			b.Fatal(issues)
		}
	}
}
