package fhirpath_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/fhir/fhirpath"
)

// Walk meets every value with its location, its definition paths and its type: choice
// elements under their stem, contained resources as resources of their own, a primitive's
// extension object at the primitive's path, null and empty arrays included, and a property
// the type system does not know without a type.
func TestWalkLocatesAndTypesEveryValue(t *testing.T) {
	const body = `{"resourceType":"Observation","status":"final","code":{"text":"x"},
		"valueQuantity":{"value":1.5,"unit":"kg"},"note":[],
		"effectiveTiming":{"repeat":{"count":2}},
		"_status":{"id":"s"},
		"contained":[{"resourceType":"Patient","id":"p","name":[{"given":["Ann",null],"_given":[null,{"id":"g"}]}]}],
		"unknownThing":{"a":1}}`
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	var r map[string]any
	if err := dec.Decode(&r); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := fhirpath.Walk(r, func(e fhirpath.Element) bool {
		kind := fmt.Sprintf("%T", e.Node.Value)
		got = append(got, strings.Join([]string{e.Path, e.DefPath, e.TypePath, e.Node.Type, kind}, " | "))
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	want := []string{
		"Observation | Observation | Observation | Observation | map[string]interface {}",
		"Observation.code | Observation.code | Observation.code | CodeableConcept | map[string]interface {}",
		"Observation.code.text | Observation.code.text | CodeableConcept.text | string | string",
		"Observation.contained | Observation.contained | Observation.contained |  | []interface {}",
		"Observation.contained[0] | Patient | Patient | Patient | map[string]interface {}",
		"Observation.contained[0] | Observation.contained | Observation.contained |  | map[string]interface {}",
		"Observation.contained[0].id | Patient.id | Patient.id | id | string",
		"Observation.contained[0].name | Patient.name | Patient.name | HumanName | []interface {}",
		"Observation.contained[0].name[0] | Patient.name | Patient.name | HumanName | map[string]interface {}",
		"Observation.contained[0].name[0].given | Patient.name.given | HumanName.given | Element | []interface {}",
		"Observation.contained[0].name[0].given | Patient.name.given | HumanName.given | string | []interface {}",
		"Observation.contained[0].name[0].given[0] | Patient.name.given | HumanName.given | Element | <nil>",
		"Observation.contained[0].name[0].given[0] | Patient.name.given | HumanName.given | string | string",
		"Observation.contained[0].name[0].given[1] | Patient.name.given | HumanName.given | Element | map[string]interface {}",
		"Observation.contained[0].name[0].given[1] | Patient.name.given | HumanName.given | string | <nil>",
		"Observation.contained[0].name[0].given[1].id | Patient.name.given.id | HumanName.given.id | string | string",
		"Observation.effectiveTiming | Observation.effective | Observation.effective | Timing | map[string]interface {}",
		"Observation.effectiveTiming.repeat | Observation.effective.repeat | Timing.repeat | Element | map[string]interface {}",
		"Observation.effectiveTiming.repeat.count | Observation.effective.repeat.count | Timing.repeat.count | positiveInt | json.Number",
		"Observation.note | Observation.note | Observation.note | Annotation | []interface {}",
		"Observation.status | Observation.status | Observation.status | Element | map[string]interface {}",
		"Observation.status | Observation.status | Observation.status | code | string",
		"Observation.status.id | Observation.status.id | Observation.status.id | string | string",
		"Observation.unknownThing | Observation.unknownThing | Observation.unknownThing |  | map[string]interface {}",
		"Observation.valueQuantity | Observation.value | Observation.value | Quantity | map[string]interface {}",
		"Observation.valueQuantity.unit | Observation.value.unit | Quantity.unit | string | string",
		"Observation.valueQuantity.value | Observation.value.value | Quantity.value | decimal | json.Number",
	}
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\n\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
