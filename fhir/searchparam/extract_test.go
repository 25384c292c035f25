package searchparam

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/internal/shareddata"
)

func decode(t testing.TB, data []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// example reads one official R4 example; without it, shareddata decides whether the test
// skips or fails.
func example(t testing.TB, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(shareddata.File(t, "fhir-r4/examples/"+name))
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, data)
}

func extract(t testing.TB, resource map[string]any) Values {
	t.Helper()
	v, err := Default().Extract(resource["resourceType"].(string), resource)
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	return v
}

func TestExtractEveryExample(t *testing.T) {
	files := shareddata.Glob(t, "fhir-r4/examples/*.json")
	if len(files) != 708 {
		t.Errorf("%d examples, expected the 708 of R4", len(files))
	}
	var total int
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		res := decode(t, data)
		rt := res["resourceType"].(string)
		v, err := Default().Extract(rt, res)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		// Every example has an id, which _id must carry.
		if id, _ := res["id"].(string); id != "" && !hasToken(v, "_id", "", id) {
			t.Errorf("%s: no _id token %q", filepath.Base(f), id)
		}
		checkWellFormed(t, filepath.Base(f), rt, v)
		total += len(v.Strings) + len(v.Tokens) + len(v.Dates) + len(v.References) + len(v.Numbers) + len(v.Quantities) + len(v.URIs)
	}
	t.Logf("%d index values from %d examples", total, len(files))
}

// checkWellFormed asserts what holds for every value: it names a parameter of its type
// and kind, and carries something to match.
func checkWellFormed(t *testing.T, file, rt string, v Values) {
	t.Helper()
	kind := func(code string, want Type) {
		d, ok := Default().Lookup(rt, code)
		if !ok || d.Type != want {
			t.Errorf("%s: value for %s:%s, which is not a %s parameter", file, rt, code, want)
		}
	}
	for _, s := range v.Strings {
		kind(s.Code, String)
		if s.Value == "" || s.Normalized != NormalizeString(s.Value) {
			t.Errorf("%s: bad string %+v", file, s)
		}
	}
	for _, s := range v.Tokens {
		kind(s.Code, Token)
		if s.Value == "" && s.System == "" && s.Text == "" {
			t.Errorf("%s: empty token %+v", file, s)
		}
	}
	for _, d := range v.Dates {
		kind(d.Code, Date)
		if !d.Low.Before(d.High) || d.Low.Location() != time.UTC || d.High.Location() != time.UTC {
			t.Errorf("%s: bad date range %+v", file, d)
		}
	}
	for _, r := range v.References {
		kind(r.Code, Reference)
		if r.URL == "" && (r.Type == "" || r.ID == "") {
			t.Errorf("%s: bad reference %+v", file, r)
		}
	}
	for _, n := range v.Numbers {
		kind(n.Code, Number)
		if !(n.Low < n.Value && n.Value < n.High) {
			t.Errorf("%s: bad number %+v", file, n)
		}
	}
	for _, q := range v.Quantities {
		kind(q.Code, Quantity)
		if q.Low > q.High || math.IsNaN(q.Value) || q.Value < q.Low || q.Value > q.High {
			t.Errorf("%s: bad quantity %+v", file, q)
		}
	}
	for _, u := range v.URIs {
		kind(u.Code, URI)
		if u.Value == "" {
			t.Errorf("%s: empty uri %+v", file, u)
		}
	}
}

func hasToken(v Values, code, system, value string) bool {
	for _, tok := range v.Tokens {
		if tok.Code == code && tok.System == system && tok.Value == value {
			return true
		}
	}
	return false
}

func tokens(v Values, code string) []TokenValue {
	var out []TokenValue
	for _, x := range v.Tokens {
		if x.Code == code {
			out = append(out, x)
		}
	}
	return out
}

func stringsOf(v Values, code string) []StringValue {
	var out []StringValue
	for _, x := range v.Strings {
		if x.Code == code {
			out = append(out, x)
		}
	}
	return out
}

func datesOf(v Values, code string) []DateValue {
	var out []DateValue
	for _, x := range v.Dates {
		if x.Code == code {
			out = append(out, x)
		}
	}
	return out
}

func refsOf(v Values, code string) []ReferenceValue {
	var out []ReferenceValue
	for _, x := range v.References {
		if x.Code == code {
			out = append(out, x)
		}
	}
	return out
}

func quantitiesOf(v Values, code string) []QuantityValue {
	var out []QuantityValue
	for _, x := range v.Quantities {
		if x.Code == code {
			out = append(out, x)
		}
	}
	return out
}

func numbersOf(v Values, code string) []NumberValue {
	var out []NumberValue
	for _, x := range v.Numbers {
		if x.Code == code {
			out = append(out, x)
		}
	}
	return out
}

func urisOf(v Values, code string) []URIValue {
	var out []URIValue
	for _, x := range v.URIs {
		if x.Code == code {
			out = append(out, x)
		}
	}
	return out
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func TestExtractPatientExample(t *testing.T) {
	v := extract(t, example(t, "Patient-example.json"))

	names := map[string]string{}
	for _, s := range stringsOf(v, "name") {
		names[s.Value] = s.Normalized
	}
	for value, normalized := range map[string]string{"Chalmers": "chalmers", "Peter": "peter", "James": "james", "Jim": "jim", "Windsor": "windsor"} {
		if names[value] != normalized {
			t.Errorf("name %q: normalized %q, want %q (all: %v)", value, names[value], normalized, names)
		}
	}
	if len(stringsOf(v, "name")) != 5 {
		t.Errorf("name values %v: want the 5 distinct parts", stringsOf(v, "name"))
	}
	if got := stringsOf(v, "family"); len(got) != 2 {
		t.Errorf("family = %v, want Chalmers and Windsor", got)
	}
	if got := stringsOf(v, "address-city"); len(got) != 1 || got[0].Value != "PleasantVille" || got[0].Normalized != "pleasantville" {
		t.Errorf("address-city = %v", got)
	}
	if got := datesOf(v, "birthdate"); len(got) != 1 || got[0].Low != utc("1974-12-25T00:00:00Z") || got[0].High != utc("1974-12-26T00:00:00Z") {
		t.Errorf("birthdate = %v, want the day 1974-12-25", got)
	}
	if got := tokens(v, "gender"); len(got) != 1 || got[0] != (TokenValue{Code: "gender", Value: "male"}) {
		t.Errorf("gender = %v", got)
	}
	if got := tokens(v, "identifier"); len(got) != 1 || got[0] != (TokenValue{Code: "identifier", System: "urn:oid:1.2.36.146.595.217.0.1", Value: "12345"}) {
		t.Errorf("identifier = %v", got)
	}
	if got := tokens(v, "_id"); len(got) != 1 || got[0].Value != "example" {
		t.Errorf("_id = %v", got)
	}
	if got := tokens(v, "active"); len(got) != 1 || got[0].Value != "true" {
		t.Errorf("active = %v", got)
	}
	// deceasedBoolean false: "Patient.deceased.exists() and Patient.deceased != false".
	if got := tokens(v, "deceased"); len(got) != 1 || got[0].Value != "false" {
		t.Errorf("deceased = %v, want false", got)
	}
	if got := tokens(v, "phone"); len(got) != 3 {
		t.Errorf("phone = %v, want the 3 phone numbers", got)
	}
	if got := tokens(v, "email"); len(got) != 0 {
		t.Errorf("email = %v, want none (only the contact has one)", got)
	}
	if got := refsOf(v, "organization"); len(got) != 1 || got[0] != (ReferenceValue{Code: "organization", Type: "Organization", ID: "1"}) {
		t.Errorf("organization = %v", got)
	}
}

func TestExtractObservationExample(t *testing.T) {
	v := extract(t, example(t, "Observation-example.json"))
	if !hasToken(v, "code", "http://loinc.org", "29463-7") {
		t.Errorf("code tokens %v lack LOINC 29463-7", tokens(v, "code"))
	}
	for _, tok := range tokens(v, "code") {
		if tok.Value == "29463-7" && tok.Text != "Body Weight" {
			t.Errorf("code token text %q, want the coding's display", tok.Text)
		}
	}
	if got := len(tokens(v, "code")); got != 4 {
		t.Errorf("%d code tokens, want one per coding (4)", got)
	}
	for _, code := range []string{"subject", "patient"} {
		if got := refsOf(v, code); len(got) != 1 || got[0] != (ReferenceValue{Code: code, Type: "Patient", ID: "example"}) {
			t.Errorf("%s = %v, want Patient/example", code, got)
		}
	}
	want := QuantityValue{Code: "value-quantity", Value: 185, Low: 185, High: 185, System: "http://unitsofmeasure.org", Unit: "[lb_av]"}
	if got := quantitiesOf(v, "value-quantity"); len(got) != 1 || got[0] != want {
		t.Errorf("value-quantity = %v, want %v", got, want)
	}
	if got := datesOf(v, "date"); len(got) != 1 || got[0].Low != utc("2016-03-28T00:00:00Z") || got[0].High != utc("2016-03-29T00:00:00Z") {
		t.Errorf("date = %v, want the day of effectiveDateTime 2016-03-28", got)
	}
	if got := tokens(v, "status"); len(got) != 1 || got[0].Value != "final" {
		t.Errorf("status = %v", got)
	}
	if got := tokens(v, "value-concept"); len(got) != 0 {
		t.Errorf("value-concept = %v, want none for a Quantity value", got)
	}
}

func TestExtractSpecificExamples(t *testing.T) {
	t.Run("Period date", func(t *testing.T) {
		v := extract(t, example(t, "Encounter-home.json"))
		// 16:00:00+10:00 to 16:30:00+10:00, the end to the end of its second.
		want := DateValue{Code: "date", Low: utc("2015-01-17T06:00:00Z"), High: utc("2015-01-17T06:30:01Z")}
		if got := datesOf(v, "date"); len(got) != 1 || got[0] != want {
			t.Errorf("date = %v, want %v", got, want)
		}
		// The location is "#home", a contained resource: not indexed.
		if got := refsOf(v, "location"); len(got) != 0 {
			t.Errorf("location = %v, want nothing for a contained reference", got)
		}
	})
	t.Run("choice-type token", func(t *testing.T) {
		v := extract(t, example(t, "Observation-bloodgroup.json"))
		want := TokenValue{Code: "value-concept", System: "http://snomed.info/sct", Value: "112144000", Text: "A"}
		if got := tokens(v, "value-concept"); len(got) != 1 || got[0] != want {
			t.Errorf("value-concept = %v, want %v (Text from the concept's text)", got, want)
		}
		if got := quantitiesOf(v, "value-quantity"); len(got) != 0 {
			t.Errorf("value-quantity = %v for a CodeableConcept value", got)
		}
		// value-string is "(Observation.value as string) | (Observation.value as
		// CodeableConcept).text".
		if got := stringsOf(v, "value-string"); len(got) != 1 || got[0] != (StringValue{Code: "value-string", Value: "A", Normalized: "a"}) {
			t.Errorf("value-string = %v, want the concept's text", got)
		}
	})
	t.Run("patient only for a Patient subject", func(t *testing.T) {
		v := extract(t, example(t, "Observation-herd1.json"))
		if got := refsOf(v, "patient"); len(got) != 0 {
			t.Errorf("patient = %v for a Group subject", got)
		}
		if got := refsOf(v, "subject"); len(got) != 1 || got[0].Type != "Group" || got[0].ID != "herd1" {
			t.Errorf("subject = %v, want Group/herd1", got)
		}
	})
	t.Run("email", func(t *testing.T) {
		v := extract(t, example(t, "Patient-f001.json"))
		if got := tokens(v, "email"); len(got) != 1 || got[0] != (TokenValue{Code: "email", Value: "p.heuvel@gmail.com"}) {
			t.Errorf("email = %v", got)
		}
		if !hasToken(v, "telecom", "", "p.heuvel@gmail.com") || !hasToken(v, "phone", "", "0648352638") {
			t.Errorf("telecom/phone = %v / %v", tokens(v, "telecom"), tokens(v, "phone"))
		}
	})
	t.Run("deceased", func(t *testing.T) {
		for file, want := range map[string]string{
			"Patient-pat3.json":    "true", // deceasedDateTime
			"Patient-pat4.json":    "true", // deceasedBoolean true
			"Patient-f001.json":    "false",
			"Patient-animal.json":  "false", // no deceased[x] at all
			"Patient-example.json": "false",
		} {
			v := extract(t, example(t, file))
			if got := tokens(v, "deceased"); len(got) != 1 || got[0].Value != want {
				t.Errorf("%s: deceased = %v, want %s", file, got, want)
			}
		}
	})
	t.Run("contained subject", func(t *testing.T) {
		// The Apgar scores' subject is "#newborn", a contained Patient: resolve() finds it,
		// but a contained resource is not indexed, so there is no value.
		v := extract(t, example(t, "Observation-1minute-apgar-score.json"))
		if got := refsOf(v, "patient"); len(got) != 0 {
			t.Errorf("patient = %v", got)
		}
	})
	t.Run("Money", func(t *testing.T) {
		v := extract(t, example(t, "Invoice-example.json"))
		want := QuantityValue{Code: "totalnet", Value: 40, Low: 40, High: 40, System: "urn:iso:std:iso:4217", Unit: "EUR"}
		if got := quantitiesOf(v, "totalnet"); len(got) != 1 || got[0] != want {
			t.Errorf("totalnet = %v, want %v", got, want)
		}
	})
	t.Run("Range", func(t *testing.T) {
		v := extract(t, example(t, "ActivityDefinition-administer-zika-virus-exposure-assessment.json"))
		got := quantitiesOf(v, "context-quantity")
		if len(got) != 1 || got[0].Low != 12 || !math.IsInf(got[0].High, 1) || got[0].Value != 12 || got[0].Unit != "a" || got[0].System != "" {
			t.Errorf("context-quantity = %v, want [12, +Inf) in a", got)
		}
		if !hasToken(v, "context-type", "http://terminology.hl7.org/CodeSystem/usage-context-type", "age") {
			t.Errorf("context-type = %v", tokens(v, "context-type"))
		}
		if got := refsOf(v, "depends-on"); len(got) != 2 {
			t.Errorf("depends-on = %v, want the library and the questionnaire canonicals", got)
		}
	})
	t.Run("decimal precision", func(t *testing.T) {
		v := extract(t, example(t, "RiskAssessment-genetic.json"))
		var found bool
		for _, n := range numbersOf(v, "probability") {
			if n.Value == 0.00153 {
				found = true
				if n.Low != 0.0015295 || n.High != 0.0015305 {
					t.Errorf("0.001530: range [%v, %v), want [0.0015295, 0.0015305)", n.Low, n.High)
				}
			}
		}
		if !found {
			t.Errorf("probability = %v lacks 0.001530", numbersOf(v, "probability"))
		}
	})
	t.Run("accents", func(t *testing.T) {
		v := extract(t, example(t, "RelatedPerson-benedicte.json"))
		got := map[string]string{}
		for _, s := range stringsOf(v, "name") {
			got[s.Value] = s.Normalized
		}
		if got["du Marché"] != "du marche" || got["Bénédicte"] != "benedicte" {
			t.Errorf("name = %v", got)
		}
		want := TokenValue{Code: "identifier", System: "urn:oid:1.2.250.1.61", Value: "272117510400399", Text: "INSEE"}
		if got := tokens(v, "identifier"); len(got) != 1 || got[0] != want {
			t.Errorf("identifier = %v, want %v (Text from type.text)", got, want)
		}
	})
	t.Run("Timing", func(t *testing.T) {
		v := extract(t, example(t, "CarePlan-preg.json"))
		want := DateValue{Code: "activity-date", Low: utc("2013-02-14T00:00:00Z"), High: utc("2013-03-01T00:00:00Z")}
		var found bool
		for _, d := range datesOf(v, "activity-date") {
			found = found || d == want
		}
		if !found {
			t.Errorf("activity-date = %v lacks the boundsPeriod %v", datesOf(v, "activity-date"), want)
		}
	})
	t.Run("document Bundle", func(t *testing.T) {
		for file, wantComposition := range map[string]bool{
			"Bundle-father.json":         true,  // a document: its first entry is the Composition
			"Bundle-bundle-example.json": false, // a searchset
		} {
			v := extract(t, example(t, file))
			got := refsOf(v, "composition")
			if wantComposition != (len(got) == 1 && got[0].Type == "Composition") {
				t.Errorf("%s: composition = %v", file, got)
			}
		}
	})
}

// synthetic starts from an official example and changes it.
func synthetic(t *testing.T, file string, change func(m map[string]any)) Values {
	t.Helper()
	m := example(t, file)
	change(m)
	return extract(t, m)
}

func TestExtractDatePrecision(t *testing.T) {
	cases := []struct{ birthDate, low, high string }{
		{"1974", "1974-01-01T00:00:00Z", "1975-01-01T00:00:00Z"},
		{"1974-02", "1974-02-01T00:00:00Z", "1974-03-01T00:00:00Z"},
		{"1974-12", "1974-12-01T00:00:00Z", "1975-01-01T00:00:00Z"},
		{"2000-02-29", "2000-02-29T00:00:00Z", "2000-03-01T00:00:00Z"},
	}
	for _, c := range cases {
		v := synthetic(t, "Patient-example.json", func(m map[string]any) { m["birthDate"] = c.birthDate })
		want := DateValue{Code: "birthdate", Low: utc(c.low), High: utc(c.high)}
		if got := datesOf(v, "birthdate"); len(got) != 1 || got[0] != want {
			t.Errorf("birthDate %s: %v, want %v", c.birthDate, got, want)
		}
	}
	v := synthetic(t, "Patient-example.json", func(m map[string]any) { m["birthDate"] = "1974-13" })
	if got := datesOf(v, "birthdate"); len(got) != 0 {
		t.Errorf("invalid birthDate indexed as %v", got)
	}
	// Seconds and fractions, with and without a zone: Observation.effective as dateTime
	// and Resource.meta.lastUpdated as instant.
	v = synthetic(t, "Observation-example.json", func(m map[string]any) {
		m["effectiveDateTime"] = "2016-03-28T10:20:30"
		m["meta"] = map[string]any{"lastUpdated": "2016-03-28T10:20:30.125-05:00"}
	})
	if got := datesOf(v, "date"); len(got) != 1 || got[0].Low != utc("2016-03-28T10:20:30Z") || got[0].High != utc("2016-03-28T10:20:31Z") {
		t.Errorf("date = %v, want the second, as UTC", got)
	}
	if got := datesOf(v, "_lastUpdated"); len(got) != 1 || got[0].Low != utc("2016-03-28T15:20:30.125Z") || got[0].High != utc("2016-03-28T15:20:30.126Z") {
		t.Errorf("_lastUpdated = %v, want the millisecond", got)
	}
	// A Period open at the end.
	v = synthetic(t, "Observation-example.json", func(m map[string]any) {
		delete(m, "effectiveDateTime")
		m["effectivePeriod"] = map[string]any{"start": "2016-03"}
	})
	if got := datesOf(v, "date"); len(got) != 1 || got[0].Low != utc("2016-03-01T00:00:00Z") || got[0].High != MaxTime {
		t.Errorf("open Period = %v", got)
	}
}

func TestExtractSynthetic(t *testing.T) {
	t.Run("accent and case", func(t *testing.T) {
		v := synthetic(t, "Patient-example.json", func(m map[string]any) {
			m["name"] = []any{map[string]any{"family": "  Érica   DA\tSilva ", "given": []any{"ÉRICA"}, "text": "Zoë Ångström"}}
		})
		got := map[string]string{}
		for _, s := range stringsOf(v, "name") {
			got[s.Value] = s.Normalized
		}
		want := map[string]string{"  Érica   DA\tSilva ": "erica da silva", "ÉRICA": "erica", "Zoë Ångström": "zoe angstrom"}
		for value, norm := range want {
			if got[value] != norm {
				t.Errorf("%q normalized to %q, want %q", value, got[value], norm)
			}
		}
	})
	t.Run("canonical with version", func(t *testing.T) {
		cm := map[string]any{
			"resourceType":    "ConceptMap",
			"id":              "cm",
			"url":             "http://example.org/ConceptMap/cm",
			"status":          "draft",
			"sourceCanonical": "http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1",
			"targetUri":       "http://example.org/ValueSet/gender",
		}
		v := extract(t, cm)
		want := ReferenceValue{Code: "source", URL: "http://hl7.org/fhir/ValueSet/administrative-gender", Version: "4.0.1"}
		if got := refsOf(v, "source"); len(got) != 1 || got[0] != want {
			t.Errorf("source = %v, want %v", got, want)
		}
		if got := refsOf(v, "source-uri"); len(got) != 0 {
			t.Errorf("source-uri = %v for a canonical source", got)
		}
		if got := refsOf(v, "target-uri"); len(got) != 1 || got[0].URL != "http://example.org/ValueSet/gender" {
			t.Errorf("target-uri = %v", got)
		}
		if got := urisOf(v, "url"); len(got) != 1 || got[0].Value != "http://example.org/ConceptMap/cm" {
			t.Errorf("url = %v", got)
		}
	})
	t.Run("reference forms", func(t *testing.T) {
		v := synthetic(t, "Patient-example.json", func(m map[string]any) {
			m["generalPractitioner"] = []any{
				map[string]any{"reference": "Practitioner/p1/_history/2"},
				map[string]any{"reference": "https://example.org/fhir/Practitioner/p2"},
				map[string]any{"reference": "urn:uuid:0b3f2a10-8e4c-4d52-9f5d-6a7e8b9c0d1e"},
				map[string]any{"reference": "#contained"},
				map[string]any{"identifier": map[string]any{"system": "urn:npi", "value": "1"}},
				map[string]any{"reference": "Practitioner/p1"}, // the same as the first
			}
		})
		got := refsOf(v, "general-practitioner")
		want := []ReferenceValue{
			{Code: "general-practitioner", Type: "Practitioner", ID: "p1"},
			{Code: "general-practitioner", Type: "Practitioner", ID: "p2", URL: "https://example.org/fhir/Practitioner/p2"},
			{Code: "general-practitioner", URL: "urn:uuid:0b3f2a10-8e4c-4d52-9f5d-6a7e8b9c0d1e"},
		}
		if len(got) != len(want) {
			t.Fatalf("general-practitioner = %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("general-practitioner[%d] = %v, want %v", i, got[i], want[i])
			}
		}
	})
	t.Run("quantity comparator and unit", func(t *testing.T) {
		v := synthetic(t, "Observation-example.json", func(m map[string]any) {
			m["valueQuantity"] = map[string]any{"value": json.Number("5.0"), "comparator": "<", "unit": "mg"}
		})
		got := quantitiesOf(v, "value-quantity")
		if len(got) != 1 || !math.IsInf(got[0].Low, -1) || got[0].High != 5 || got[0].Value != 5 || got[0].Unit != "mg" {
			t.Errorf("value-quantity = %v, want (-Inf, 5] in mg", got)
		}
	})
	t.Run("integer precision", func(t *testing.T) {
		v := synthetic(t, "RiskAssessment-genetic.json", func(m map[string]any) {
			m["prediction"] = []any{map[string]any{"probabilityDecimal": json.Number("100")}}
		})
		if got := numbersOf(v, "probability"); len(got) != 1 || got[0] != (NumberValue{Code: "probability", Value: 100, Low: 99.5, High: 100.5}) {
			t.Errorf("probability = %v, want 100 in [99.5, 100.5)", got)
		}
	})
	t.Run("CodeableConcept with text only", func(t *testing.T) {
		v := synthetic(t, "Observation-example.json", func(m map[string]any) {
			m["code"] = map[string]any{"text": "Weight"}
		})
		if got := tokens(v, "code"); len(got) != 1 || got[0] != (TokenValue{Code: "code", Text: "Weight"}) {
			t.Errorf("code = %v", got)
		}
	})
	t.Run("duplicates kept once", func(t *testing.T) {
		v := synthetic(t, "Patient-example.json", func(m map[string]any) {
			m["identifier"] = []any{
				map[string]any{"system": "urn:x", "value": "1"},
				map[string]any{"system": "urn:x", "value": "1", "use": "old"},
			}
		})
		if got := tokens(v, "identifier"); len(got) != 1 {
			t.Errorf("identifier = %v, want one", got)
		}
	})
}

func TestExtractErrors(t *testing.T) {
	r := Default()
	patient := map[string]any{"resourceType": "Patient", "id": "x"}
	if _, err := r.Extract("Observation", patient); err == nil || !strings.Contains(err.Error(), "not a Observation") {
		t.Errorf("type mismatch: %v", err)
	}
	if _, err := r.Extract("Nope", patient); err == nil {
		t.Error("unknown type: no error")
	}
	if _, err := r.Extract("Patient", map[string]any{"id": "x"}); err == nil {
		t.Error("no resourceType: no error")
	}
	// Malformed content is skipped, not an error.
	odd := map[string]any{
		"resourceType": "Patient", "birthDate": "yesterday", "name": "Peter",
		"gender": json.Number("1"), "telecom": []any{nil, "x"}, "identifier": map[string]any{"value": 1},
	}
	if _, err := r.Extract("Patient", odd); err != nil {
		t.Errorf("malformed Patient: %v", err)
	}
}

func TestExtractExceptLeavesOutTheSkippedCodes(t *testing.T) {
	patient := map[string]any{"resourceType": "Patient", "id": "p", "gender": "female",
		"meta": map[string]any{"lastUpdated": "2026-01-02T03:04:05.678Z"}}
	all, err := Default().ExtractExcept("Patient", patient, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens(all, "_id")) != 1 || len(datesOf(all, "_lastUpdated")) != 1 {
		t.Fatalf("without skip: _id %v, _lastUpdated %v", tokens(all, "_id"), datesOf(all, "_lastUpdated"))
	}
	some, err := Default().ExtractExcept("Patient", patient, map[string]bool{"_id": true, "_lastUpdated": true})
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens(some, "_id")) != 0 || len(datesOf(some, "_lastUpdated")) != 0 {
		t.Fatalf("skipped codes extracted: _id %v, _lastUpdated %v", tokens(some, "_id"), datesOf(some, "_lastUpdated"))
	}
	if got := tokens(some, "gender"); len(got) != 1 || got[0].Value != "female" {
		t.Fatalf("gender = %v, want it kept", got)
	}
}

// TestExtractManyValues checks the map path of dedupe: every distinct value once, in the
// order first seen, and no time quadratic in the count (100,000 identifiers took minutes).
func TestExtractManyValues(t *testing.T) {
	const n = 100_000
	v := extract(t, manyIdentifiers(n))
	var ids, families []string
	for _, tok := range v.Tokens {
		if tok.Code == "identifier" {
			ids = append(ids, tok.Value)
		}
	}
	for _, s := range v.Strings {
		if s.Code == "family" {
			families = append(families, s.Value)
		}
	}
	if len(ids) != n || ids[0] != "id-0" || ids[n-1] != "id-"+strconv.Itoa(n-1) {
		t.Errorf("identifier tokens: %d, want %d in order", len(ids), n)
	}
	if len(families) != n/2 || families[1] != "Family1" {
		t.Errorf("family strings: %d, want %d distinct in order", len(families), n/2)
	}
}
