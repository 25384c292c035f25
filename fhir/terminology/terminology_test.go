package terminology_test

import (
	"strings"
	"testing"

	"github.com/cartreg/cartreg/fhir/terminology"
)

func TestR4FromGoogleFHIR(t *testing.T) {
	t.Parallel()
	r4, err := terminology.R4()
	if err != nil {
		t.Fatal(err)
	}
	systems, valueSets := r4.Counts()
	t.Logf("R4: %d code systems, %d value sets", systems, valueSets)
	if systems < 200 || valueSets < 200 {
		t.Errorf("R4 has %d code systems and %d value sets, fewer than google/fhir carries", systems, valueSets)
	}
	// A code whose enum name differs from it (google/fhir renames "<" to LESS_THAN).
	ok, err := r4.InValueSet("http://hl7.org/fhir/ValueSet/quantity-comparator", "http://hl7.org/fhir/quantity-comparator", "<=")
	if err != nil || !ok {
		t.Errorf("<= in quantity-comparator: %v %v", ok, err)
	}
	// A value set of codes from several systems (valuesets.proto).
	vs := r4.ValueSet("http://hl7.org/fhir/ValueSet/all-types")
	if vs == nil {
		t.Fatal("all-types missing")
	}
	if ok, _ := r4.InValueSet(vs.URL, "http://hl7.org/fhir/resource-types", "Patient"); !ok {
		t.Error("Patient is not in all-types")
	}
}

func TestComposeRules(t *testing.T) {
	t.Parallel()
	s := terminology.New(nil)
	for _, raw := range []string{
		`{"resourceType":"CodeSystem","id":"cs","url":"http://x/cs","concept":[
			{"code":"a","display":"A","property":[{"code":"kind","valueCode":"k1"}],"concept":[
				{"code":"a1","display":"A one","property":[{"code":"kind","valueCode":"k2"}]}]},
			{"code":"b","display":"B","property":[{"code":"kind","valueCode":"k2"}]}]}`,
		`{"resourceType":"ValueSet","id":"k2","url":"http://x/vs/k2","compose":{"include":[{"system":"http://x/cs","filter":[{"property":"kind","op":"=","value":"k2"}]}]}}`,
		`{"resourceType":"ValueSet","url":"http://x/vs/under-a","compose":{"include":[{"system":"http://x/cs","filter":[{"property":"concept","op":"descendent-of","value":"a"}]}]}}`,
		`{"resourceType":"ValueSet","url":"http://x/vs/not-b","compose":{"include":[{"system":"http://x/cs"}],"exclude":[{"system":"http://x/cs","concept":[{"code":"b"}]}]}}`,
		`{"resourceType":"ValueSet","url":"http://x/vs/k2-under-a","compose":{"include":[{"valueSet":["http://x/vs/k2","http://x/vs/under-a"]}]}}`,
		`{"resourceType":"ValueSet","url":"http://x/vs/loop1","compose":{"include":[{"valueSet":["http://x/vs/loop2"]}]}}`,
		`{"resourceType":"ValueSet","url":"http://x/vs/loop2","compose":{"include":[{"valueSet":["http://x/vs/loop1"]}]}}`,
		`{"resourceType":"ValueSet","url":"http://x/vs/regex","compose":{"include":[{"system":"http://x/cs","filter":[{"property":"concept","op":"regex","value":"a.*"}]}]}}`,
	} {
		if err := s.AddJSON([]byte(raw), "test"); err != nil {
			t.Fatal(err)
		}
	}
	for url, want := range map[string]string{
		"http://x/vs/k2": "a1 b", "http://x/vs/under-a": "a1", "http://x/vs/not-b": "a a1", "http://x/vs/k2-under-a": "a1",
	} {
		codes, err := s.Expansion(s.ValueSet(url))
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		var got []string
		for _, c := range codes {
			got = append(got, c.Code)
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s expands to %v, want %s", url, got, want)
		}
	}
	if _, err := s.Expansion(s.ValueSet("http://x/vs/loop1")); err == nil || !strings.Contains(err.Error(), "imports itself") {
		t.Errorf("a cycle of imports: %v", err)
	}
	if _, err := s.Expansion(s.ValueSet("http://x/vs/regex")); err == nil || !strings.Contains(err.Error(), "regex") {
		t.Errorf("an unsupported filter: %v", err)
	}
	v, err := s.ValidateCode(s.ValueSet("http://x/vs/k2"), "http://x/cs", "a1", "a ONE")
	if err != nil || !v.Result || v.Display != "A one" {
		t.Errorf("a1 with its display in other case: %+v %v", v, err)
	}
	if _, err := s.InValueSet("http://x/vs/none", "http://x/cs", "a"); err == nil {
		t.Error("an unknown value set is no error")
	}
}
