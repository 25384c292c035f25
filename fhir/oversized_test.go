package fhir

import (
	"strings"
	"testing"

	"github.com/cartreg/cartreg/fhir/fhirpath"
)

// TestLocalReferenceBound: a search for a local reference reads the lookup partition alone
// when localReferenceOversized says no matching row can be oversized. Every row that
// local_reference accepts has url ” or base/Type/id, so for each R4 type and bases around the
// limit, a url the writer would call oversized must be one the search calls possible, with
// the type named and with it left open.
func TestLocalReferenceBound(t *testing.T) {
	id := strings.Repeat("i", 64)
	for _, typ := range fhirpath.ResourceTypes() {
		for baseLen := maxIndexedBytes - 200; baseLen <= maxIndexedBytes; baseLen++ {
			base := "http://" + strings.Repeat("b", baseLen-len("http://"))
			if !referenceOversized(base + "/" + typ + "/" + id) {
				continue
			}
			if !localReferenceOversized(base, typ, id) || !localReferenceOversized(base, "", id) {
				t.Fatalf("%s/%s on a %d-byte base is oversized when written, but a search would skip the oversized rows", typ, id, baseLen)
			}
		}
	}
	// And the bound is not so loose that an ordinary server gives it up.
	if localReferenceOversized("https://registry.example.org/fhir", "", id) {
		t.Error("a reference on an ordinary base is taken for oversized")
	}
}

// MaxIndexedBytes lets the package's outside tests write values just past the limit.
const MaxIndexedBytes = maxIndexedBytes
