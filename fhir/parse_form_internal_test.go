package fhir

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/cartreg/cartreg/internal/shareddata"
)

// Parse stores a valid resource as its body decoded, not as google/fhir's rendering of what
// it parsed, which would cost a marshal and a second decode. That is sound only while the two
// are the same JSON: this checks it on every official R4 example and the resources of five
// Synthea histories, so an upgrade of google/fhir that starts to rewrite what it reads shows
// here.
func TestTheParsedFormIsTheBodyAsSent(t *testing.T) {
	var bodies [][]byte
	for _, f := range shareddata.Glob(t, "fhir-r4/examples/*.json") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	histories := shareddata.Glob(t, "synthea/hiv-bundles/*.json.gz")
	for _, f := range histories[:min(5, len(histories))] {
		b := shareddata.ReadGzip(t, f)
		var bundle struct {
			Entry []struct{ Resource json.RawMessage }
		}
		if err := json.Unmarshal(b, &bundle); err != nil {
			t.Fatal(err)
		}
		for _, e := range bundle.Entry {
			bodies = append(bodies, e.Resource)
		}
	}
	u, err := r4Parser()
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, body := range bodies {
		res, err := Parse(body)
		if err != nil {
			continue // invalid examples are the validation tests' business
		}
		msg, err := u.Unmarshal(body)
		if err != nil {
			t.Fatalf("%s/%s: Parse accepted what google/fhir refuses: %v", res.Type, res.ID, err)
		}
		rendered, err := compactMarshaller.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := decodeResource(rendered)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(res.Body, theirs.Body) {
			a, _ := json.Marshal(res.Body)
			t.Errorf("%s/%s: stored as sent\n%s\nbut google/fhir renders it\n%s", res.Type, res.ID, a, rendered)
		}
		compared++
	}
	if compared < 1000 {
		t.Errorf("only %d resources compared", compared)
	}
}
