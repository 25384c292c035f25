package fhirpath

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/internal/shareddata"
)

// loadExamples decodes every official R4 example as the server does (UseNumber); without
// them, shareddata decides whether the test skips or fails.
func loadExamples(t testing.TB) map[string]map[string]any {
	t.Helper()
	files := shareddata.Glob(t, "fhir-r4/examples/*.json")
	out := map[string]map[string]any{}
	for _, f := range files {
		out[filepath.Base(f)] = decodeFile(t, f)
	}
	return out
}

func decodeFile(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, data)
}

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

func TestSchemaResourceTypes(t *testing.T) {
	types := ResourceTypes()
	if len(types) != 146 {
		t.Errorf("%d resource types, want the 146 of R4 (google/fhir v0.7.4)", len(types))
	}
	if !sort.StringsAreSorted(types) {
		t.Error("ResourceTypes is not sorted")
	}
	for _, name := range []string{"Patient", "Observation", "Bundle", "Parameters", "MedicinalProductUndesirableEffect"} {
		if !IsResourceType(name) {
			t.Errorf("IsResourceType(%q) = false", name)
		}
	}
	for _, name := range []string{"Resource", "DomainResource", "HumanName", "patient", ""} {
		if IsResourceType(name) {
			t.Errorf("IsResourceType(%q) = true", name)
		}
	}
}

func TestTypeIs(t *testing.T) {
	cases := []struct {
		typ, base string
		want      bool
	}{
		{"Age", "Quantity", true},
		{"SimpleQuantity", "Quantity", true},
		{"Quantity", "Age", false},
		{"code", "string", false}, // primitives are only themselves
		{"canonical", "uri", false},
		{"positiveInt", "integer", false},
		{"code", "code", true},
		{"code", "Element", true},
		{"string", "code", false},
		{"Patient", "DomainResource", true},
		{"Patient", "Resource", true},
		{"Bundle", "DomainResource", false},
		{"Bundle", "Resource", true},
		{"HumanName", "Element", true},
		{"dateTime", "date", false},
		{"Patient", "FHIR.Patient", true},
		{"Nonsense", "Element", false},
	}
	for _, c := range cases {
		if got := TypeIs(c.typ, c.base); got != c.want {
			t.Errorf("TypeIs(%q, %q) = %v, want %v", c.typ, c.base, got, c.want)
		}
	}
}

// TestSchemaCoversExamples walks every official example with the schema and fails on any
// property the schema does not know: the proof that choice types, inline resources,
// Reference and the code wrappers are all mapped back to their JSON names.
func TestSchemaCoversExamples(t *testing.T) {
	examples := loadExamples(t)
	unknown := map[string]int{}
	for name, res := range examples {
		root, err := ResourceNode(res)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		walkSchema(root.info, res, root.Type, unknown)
	}
	for path, n := range unknown {
		t.Errorf("property not in schema: %s (%d times)", path, n)
	}
}

func walkSchema(t *typeInfo, obj map[string]any, path string, unknown map[string]int) {
	for key, v := range obj {
		if key == "resourceType" || strings.HasPrefix(key, "_") || key == "fhir_comments" {
			continue
		}
		var childType *typeInfo
		inline := false
		if el := t.elements[key]; el != nil && el.choices == nil {
			childType, inline = el.typ, el.inlineResource
		} else {
			for _, el := range t.elements {
				for _, c := range el.choices {
					if c.key == key {
						childType = c.typ
					}
				}
			}
			if childType == nil {
				unknown[path+"."+key]++
				continue
			}
		}
		items, ok := v.([]any)
		if !ok {
			items = []any{v}
		}
		for _, item := range items {
			m, ok := item.(map[string]any)
			if !ok {
				if childType != nil && !childType.primitive && item != nil {
					unknown[path+"."+key+" (primitive value for "+childType.name+")"]++
				}
				continue
			}
			if inline {
				n, err := ResourceNode(m)
				if err != nil {
					unknown[path+"."+key+" (bad resourceType)"]++
					continue
				}
				walkSchema(n.info, m, n.Type, unknown)
				continue
			}
			if childType.primitive {
				unknown[path+"."+key+" (object for primitive "+childType.name+")"]++
				continue
			}
			walkSchema(childType, m, path+"."+key, unknown)
		}
	}
}
