package fhirpath

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

const patientJSON = `{
  "resourceType": "Patient",
  "id": "p1",
  "meta": {"lastUpdated": "2024-01-02T03:04:05Z", "tag": [{"system": "urn:t", "code": "a"}]},
  "extension": [
    {"url": "http://example.org/birthPlace", "valueAddress": {"city": "Lyon"}},
    {"url": "http://example.org/score", "valueDecimal": 1.50}
  ],
  "identifier": [{"system": "urn:mrn", "value": "12345"}],
  "active": true,
  "name": [
    {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
    {"use": "usual", "given": ["Jim"]},
    {"use": "maiden", "family": "Windsor", "given": ["Peter", "James"]}
  ],
  "telecom": [
    {"system": "phone", "value": "555-1234"},
    {"system": "email", "value": "peter@example.org"},
    {"use": "home"}
  ],
  "gender": "male",
  "birthDate": "1974-12-25",
  "_birthDate": {"extension": [{"url": "http://example.org/time", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
  "deceasedDateTime": "2015-02-14T13:42:00+10:00",
  "contained": [{"resourceType": "Organization", "id": "org1", "name": "Acme"}],
  "managingOrganization": {"reference": "#org1"},
  "generalPractitioner": [
    {"reference": "Practitioner/dr1"},
    {"reference": "https://example.org/fhir/Organization/o2/_history/3"},
    {"reference": "urn:uuid:5e3f9d2a-1c4b-4f6e-9a8d-2b7c6e5f4a3b", "type": "PractitionerRole"},
    {"identifier": {"system": "urn:npi", "value": "99"}, "type": "http://hl7.org/fhir/StructureDefinition/Practitioner"},
    {"display": "Someone"}
  ]
}`

const observationJSON = `{
  "resourceType": "Observation",
  "id": "o1",
  "status": "final",
  "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Weight"},
  "subject": {"reference": "Patient/p1"},
  "effectivePeriod": {"start": "2020-01-01", "end": "2020-01-02"},
  "valueQuantity": {"value": 185, "unit": "lbs", "system": "http://unitsofmeasure.org", "code": "[lb_av]"},
  "component": [
    {"code": {"text": "a"}, "valueCodeableConcept": {"text": "yes"}},
    {"code": {"text": "b"}, "valueString": "free text"},
    {"code": {"text": "c"}, "valueQuantity": {"value": 1.5}}
  ]
}`

const bundleJSON = `{
  "resourceType": "Bundle",
  "type": "document",
  "entry": [
    {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Composition", "id": "c1", "status": "final"}},
    {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Patient", "id": "p9", "gender": "female"}}
  ]
}`

func mustDecode(t testing.TB, s string) map[string]any {
	t.Helper()
	return decode(t, []byte(s))
}

// render writes a collection compactly: primitives as their value, complex values by
// type, each as type:value.
func render(nodes []Node) string {
	var parts []string
	for _, n := range nodes {
		var v string
		switch x := n.Value.(type) {
		case map[string]any:
			v = "{}"
			if id, ok := x["id"].(string); ok {
				v = "{" + id + "}"
			}
		default:
			v = fmt.Sprint(x)
		}
		parts = append(parts, n.Type+":"+v)
	}
	return strings.Join(parts, " ")
}

func TestEvaluate(t *testing.T) {
	resources := map[string]map[string]any{
		"Patient":     mustDecode(t, patientJSON),
		"Observation": mustDecode(t, observationJSON),
		"Bundle":      mustDecode(t, bundleJSON),
	}
	cases := []struct {
		on, expr, want string
	}{
		// Paths, flattening, missing elements.
		{"Patient", "Patient.name.given", "string:Peter string:James string:Jim string:Peter string:James"},
		{"Patient", "Patient.name.family", "string:Chalmers string:Windsor"},
		{"Patient", "name.given", "string:Peter string:James string:Jim string:Peter string:James"},
		{"Patient", "Patient.name.nickname", ""},
		{"Patient", "Patient.photo", ""},
		{"Patient", "Patient.gender", "code:male"},
		{"Patient", "Patient.active", "boolean:true"},
		{"Patient", "Patient.birthDate", "date:1974-12-25"},
		{"Patient", "Patient.id", "id:p1"},
		{"Patient", "Patient.meta.lastUpdated", "instant:2024-01-02T03:04:05Z"},
		{"Patient", "Resource.meta.tag", "Coding:{}"},
		{"Patient", "Patient.identifier", "Identifier:{}"},
		{"Patient", "Patient.telecom.system", "code:phone code:email"},
		// Backtick-delimited names and comments.
		{"Patient", "Patient.`name`.family // the family names", "string:Chalmers string:Windsor"},
		// Union removes duplicates; parentheses.
		{"Patient", "Patient.name.given | Patient.name.family", "string:Peter string:James string:Jim string:Chalmers string:Windsor"},
		{"Patient", "(Patient.gender | Patient.gender)", "code:male"},
		// A leading type name filters on the resource's type.
		{"Observation", "Patient.name.given | Observation.status", "code:final"},
		{"Patient", "Observation.status", ""},
		{"Patient", "DomainResource.id", "id:p1"},
		{"Bundle", "DomainResource.id", ""},
		// Choice types.
		{"Observation", "Observation.value", "Quantity:{}"},
		{"Observation", "Observation.value as Quantity", "Quantity:{}"},
		{"Observation", "Observation.value as CodeableConcept", ""},
		{"Observation", "(Observation.value as Quantity).value", "decimal:185"},
		{"Observation", "Observation.value.as(Quantity).code", "code:[lb_av]"},
		{"Observation", "Observation.effective", "Period:{}"},
		{"Observation", "Observation.effective.as(dateTime)", ""},
		{"Observation", "Observation.component.value", "CodeableConcept:{} string:free text Quantity:{}"},
		{"Observation", "Observation.component.value.ofType(string)", "string:free text"},
		{"Observation", "Observation.component.value as CodeableConcept", "CodeableConcept:{}"},
		{"Observation", "(Observation.component.value as CodeableConcept).text", "string:yes"},
		{"Patient", "Patient.deceased", "dateTime:2015-02-14T13:42:00+10:00"},
		{"Patient", "Patient.deceased is dateTime", "boolean:true"},
		{"Patient", "Patient.deceased is boolean", "boolean:false"},
		{"Patient", "Patient.deceased.is(dateTime)", "boolean:true"},
		{"Patient", "Patient.gender is string", "boolean:false"}, // primitives are only themselves
		{"Patient", "Patient.gender is FHIR.code", "boolean:true"},
		// where() and equality.
		{"Patient", "Patient.telecom.where(system='email')", "ContactPoint:{}"},
		{"Patient", "Patient.telecom.where(system='email').value", "string:peter@example.org"},
		{"Patient", "Patient.telecom.where(system!='email').value", "string:555-1234"},
		{"Patient", "Patient.name.where(use='official' or use='usual').given", "string:Peter string:James string:Jim"},
		{"Patient", "Patient.name.where(given='Jim').use", "code:usual"},
		{"Patient", "Patient.name.where($this.family = 'Windsor').use", "code:maiden"},
		{"Patient", "Patient.telecom.where(system='fax')", ""},
		{"Patient", "Patient.extension.where(url='http://example.org/score').value = 1.5", "boolean:true"},
		{"Patient", "Patient.extension.where(url='http://example.org/score').value != 1.5", "boolean:false"},
		{"Patient", "Patient.gender = {}", ""},
		// resolve(): by the reference's type, an absolute URL, Reference.type, contained.
		{"Observation", "Observation.subject.where(resolve() is Patient)", "Reference:{}"},
		{"Observation", "Observation.subject.where(resolve() is Group)", ""},
		{"Patient", "Patient.generalPractitioner.where(resolve() is Practitioner).reference", "string:Practitioner/dr1"},
		{"Patient", "Patient.generalPractitioner.where(resolve() is Organization).reference", "string:https://example.org/fhir/Organization/o2/_history/3"},
		{"Patient", "Patient.generalPractitioner.where(resolve() is PractitionerRole).reference", "string:urn:uuid:5e3f9d2a-1c4b-4f6e-9a8d-2b7c6e5f4a3b"},
		{"Patient", "Patient.generalPractitioner.where(resolve() is Practitioner).count()", "integer:2"},
		{"Patient", "Patient.generalPractitioner.where(resolve() is Resource).count()", "integer:4"},
		{"Patient", "Patient.managingOrganization.resolve()", "Organization:{org1}"},
		{"Observation", "Observation.subject.resolve()", "Patient:Patient/p1"},
		{"Observation", "Observation.subject.resolve().name", ""}, // nothing was fetched
		{"Patient", "Patient.generalPractitioner.resolve()", "Practitioner:Practitioner/dr1 Organization:https://example.org/fhir/Organization/o2/_history/3 PractitionerRole:urn:uuid:5e3f9d2a-1c4b-4f6e-9a8d-2b7c6e5f4a3b Practitioner:<nil>"},
		{"Patient", "Patient.managingOrganization.resolve().name", "string:Acme"},
		{"Patient", "Patient.managingOrganization.where(resolve() is Organization)", "Reference:{}"},
		// exists(), empty(), not(), and, three-valued logic.
		{"Patient", "Patient.deceased.exists() and Patient.deceased != false", "boolean:true"},
		{"Observation", "Observation.status.exists() and Observation.issued.exists()", "boolean:false"},
		{"Patient", "Patient.photo.exists()", "boolean:false"},
		{"Patient", "Patient.name.exists(given = 'Jim')", "boolean:true"},
		{"Patient", "Patient.name.exists(given = 'Bob')", "boolean:false"},
		{"Patient", "Patient.photo.empty()", "boolean:true"},
		{"Patient", "Patient.active.not()", "boolean:false"},
		{"Patient", "Patient.photo.exists().not()", "boolean:true"},
		{"Patient", "Patient.photo.url = 'x' and true", ""},
		{"Patient", "Patient.photo.url = 'x' and false", "boolean:false"},
		{"Patient", "Patient.photo.url = 'x' or true", "boolean:true"},
		{"Patient", "true or Patient.name.where(given)", "boolean:true"}, // short-circuit
		// Indexers and first/last/count.
		{"Bundle", "Bundle.entry[0].resource", "Composition:{c1}"},
		{"Bundle", "Bundle.entry[1].resource.gender", "code:female"},
		{"Bundle", "Bundle.entry[2].resource", ""},
		{"Bundle", "Bundle.entry.resource.ofType(Patient).id", "id:p9"},
		{"Bundle", "Bundle.entry.resource is Composition", "error"},
		{"Patient", "Patient.name[1].given", "string:Jim"},
		{"Patient", "Patient.name.first().family", "string:Chalmers"},
		{"Patient", "Patient.name.last().family", "string:Windsor"},
		{"Patient", "Patient.name.given.count()", "integer:5"},
		// extension(), %resource, contained.
		{"Patient", "Patient.extension('http://example.org/birthPlace').value.city", "string:Lyon"},
		{"Patient", "Patient.extension('http://example.org/score').value", "decimal:1.50"},
		{"Patient", "Patient.name.where(%resource.gender = 'male').family", "string:Chalmers string:Windsor"},
		{"Patient", "Patient.contained.name", "string:Acme"},
		{"Patient", "Patient.contained.ofType(Organization).id", "id:org1"},
		// Run-time errors.
		{"Patient", "Patient.name.where(given)", "error"},
		{"Patient", "Patient.name is HumanName", "error"},
		{"Patient", "Patient.name.given.not()", "error"},
		{"Patient", "Patient.name['a']", "error"},
	}
	for _, c := range cases {
		t.Run(c.expr, func(t *testing.T) {
			e, err := Compile(c.expr)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			nodes, err := e.Evaluate(resources[c.on])
			got := render(nodes)
			if err != nil {
				got = "error"
			}
			if got != c.want {
				t.Errorf("on %s:\n got %s\nwant %s (err %v)", c.on, got, c.want, err)
			}
		})
	}
}

// Age is a Quantity, and `as Quantity` must keep it; json.Number values are kept as
// written.
func TestEvaluateProfiledQuantity(t *testing.T) {
	cond := mustDecode(t, `{"resourceType":"Condition","onsetAge":{"value":52.0,"unit":"yr"},"abatementString":"gone"}`)
	for expr, want := range map[string]string{
		"Condition.onset as Quantity":                "Age:{}",
		"Condition.onset.as(Age).value":              "decimal:52.0",
		"Condition.onset.as(Range)":                  "",
		"Condition.abatement.as(string)":             "string:gone",
		"Condition.onset.as(Quantity) | Condition.x": "",
	} {
		e, err := Compile(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		nodes, err := e.Evaluate(cond)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if expr == "Condition.onset.as(Quantity) | Condition.x" {
			want = "Age:{}"
		}
		if got := render(nodes); got != want {
			t.Errorf("%s = %s, want %s", expr, got, want)
		}
	}
	nodes, _ := MustCompile("Condition.onset.value").Evaluate(cond)
	if len(nodes) != 1 || nodes[0].Value != json.Number("52.0") {
		t.Errorf("Condition.onset.value = %#v, want json.Number 52.0", nodes)
	}
}

// A local reference whose contained resource is missing falls back on Reference.type.
func TestResolveMissingContained(t *testing.T) {
	obs := mustDecode(t, `{"resourceType":"Observation","subject":{"reference":"#gone","type":"Patient"},
		"performer":[{"reference":"#gone"}]}`)
	for expr, want := range map[string]string{
		"Observation.subject.where(resolve() is Patient).reference": "string:#gone",
		"Observation.subject.resolve()":                             "Patient:#gone",
		"Observation.performer.resolve()":                           "",
	} {
		nodes, err := MustCompile(expr).Evaluate(obs)
		if err != nil {
			t.Fatal(err)
		}
		if got := render(nodes); got != want {
			t.Errorf("%s = %s, want %s", expr, got, want)
		}
	}
}

func TestEvaluateBadResource(t *testing.T) {
	e := MustCompile("Patient.name")
	for _, res := range []string{`{"name": []}`, `{"resourceType": "Patientt"}`, `{"resourceType": 12}`} {
		if _, err := e.Evaluate(mustDecode(t, res)); err == nil {
			t.Errorf("Evaluate(%s): no error", res)
		}
	}
	if _, err := e.EvaluateNode(Node{Value: map[string]any{}, Type: "Patient"}); err == nil {
		t.Error("EvaluateNode of a hand-made node: no error")
	}
}

// Values that are not what the schema says (a string where an object belongs, an array
// holding nulls) must not panic: evaluation skips what it cannot navigate.
func TestEvaluateMalformedJSON(t *testing.T) {
	res := mustDecode(t, `{"resourceType":"Patient","name":"Peter","telecom":[null,{"system":"email"}],
		"managingOrganization":"Organization/1","contained":[1,{"resourceType":"Nope"}],"deceasedBoolean":null}`)
	for _, expr := range []string{
		"Patient.name.given", "Patient.telecom.where(system='email')", "Patient.managingOrganization.where(resolve() is Organization)",
		"Patient.contained.id", "Patient.deceased.exists() and Patient.deceased != false", "Patient.extension('x')",
	} {
		if _, err := MustCompile(expr).Evaluate(res); err != nil {
			t.Errorf("%s: %v", expr, err)
		}
	}
}

func TestSplitReference(t *testing.T) {
	cases := map[string][2]string{
		"Patient/123":                               {"Patient", "123"},
		"Patient/123/_history/4":                    {"Patient", "123"},
		"https://example.org/fhir/Patient/a.b-c":    {"Patient", "a.b-c"},
		"http://x/fhir/Observation/9/_history/1":    {"Observation", "9"},
		"#p1":                                       {"", ""},
		"urn:uuid:5e3f9d2a-1c4b-4f6e-9a8d-2b7c6e5f": {"", ""},
		"Patient?identifier=urn:x|1":                {"", ""},
		"Patientt/1":                                {"", ""},
		"Patient/":                                  {"", ""},
		"Patient/a_b":                               {"", ""},
		"123":                                       {"", ""},
		"":                                          {"", ""},
	}
	for ref, want := range cases {
		typ, id := SplitReference(ref)
		if [2]string{typ, id} != want {
			t.Errorf("SplitReference(%q) = %q, %q; want %q", ref, typ, id, want)
		}
	}
}

func TestForResourceType(t *testing.T) {
	e := MustCompile("Account.subject.where(resolve() is Patient) | Observation.subject.where(resolve() is Patient) | (Observation.value as Quantity)")
	obs := mustDecode(t, observationJSON)
	full, err := e.Evaluate(obs)
	if err != nil {
		t.Fatal(err)
	}
	narrowed := e.ForResourceType("Observation")
	if narrowed.String() != e.String() {
		t.Errorf("String() changed to %q", narrowed.String())
	}
	got, err := narrowed.Evaluate(obs)
	if err != nil {
		t.Fatal(err)
	}
	if render(got) != render(full) || len(got) != 2 {
		t.Errorf("narrowed gives %s, full %s", render(got), render(full))
	}
	if u, ok := narrowed.root.(*union); !ok || leadingTypeFilter(u.left).typeName != "Observation" {
		t.Errorf("Account branch not dropped: %#v", narrowed.root)
	}
	if !e.ForResourceType("Patient").IsEmpty() {
		t.Error("nothing applies to Patient, yet the narrowed expression is not empty")
	}
	if e.IsEmpty() || MustCompile("Resource.id").ForResourceType("Patient").IsEmpty() {
		t.Error("IsEmpty true for an expression that applies")
	}
	if !MustCompile("{}").IsEmpty() {
		t.Error("{} is not empty")
	}
}

func TestCheck(t *testing.T) {
	cases := map[string]string{ // expression on Patient -> error substring, "" for none
		"Patient.name.given":                              "",
		"Patient.name.givn":                               `no element "givn" on HumanName`,
		"Patient.nmae":                                    `no element "nmae" on Patient`,
		"Patient.deceased as dateTime":                    "",
		"Patient.deceased as Quantity":                    "boolean or dateTime is never a Quantity",
		"Patient.managingOrganization.resolve().anything": "", // unknown target: anything goes
		"Patient.contained.whatever":                      "",
		"Patient.telecom.where(sytem='email')":            `no element "sytem" on ContactPoint`,
		"Observation.foo | Patient.gender":                "", // the Observation branch does not apply
		"Patient.name[nonsense]":                          `no element "nonsense" on Patient`,
	}
	for expr, want := range cases {
		err := MustCompile(expr).Check("Patient")
		switch {
		case want == "" && err != nil:
			t.Errorf("Check(%s): %v", expr, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("Check(%s) = %v, want an error with %q", expr, err, want)
		}
	}
	if err := MustCompile("Patient.name").Check("Nope"); err == nil {
		t.Error("Check on an unknown resource type: no error")
	}
}

func TestNodeTypesAreNamed(t *testing.T) {
	nodes, err := MustCompile("Patient.name | Patient.telecom | Patient.identifier | Patient.meta | Patient.extension.value").Evaluate(mustDecode(t, patientJSON))
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, n := range nodes {
		types = append(types, n.Type)
	}
	want := []string{"HumanName", "HumanName", "HumanName", "ContactPoint", "ContactPoint", "ContactPoint", "Identifier", "Meta", "Address", "decimal"}
	if !reflect.DeepEqual(types, want) {
		t.Errorf("types %v, want %v", types, want)
	}
}
