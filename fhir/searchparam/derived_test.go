package searchparam

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/internal/shareddata"
	"github.com/cartreg/cartreg/migrations"
)

// rowsOf renders the index values of codes, without the code, one string per row, sorted and
// without repeats: what a search on those codes can match. With targetType, only references
// pointing at that type count.
func rowsOf(v Values, codes []string, targetType string) []string {
	var out []string
	for _, list := range []any{v.Strings, v.Tokens, v.Dates, v.References, v.Numbers, v.Quantities, v.URIs} {
		values := reflect.ValueOf(list)
		for i := range values.Len() {
			row := reflect.New(values.Type().Elem()).Elem()
			row.Set(values.Index(i))
			code := row.FieldByName("Code")
			if !slices.Contains(codes, code.String()) {
				continue
			}
			if ref, ok := row.Interface().(ReferenceValue); ok && targetType != "" && ref.Type != targetType {
				continue
			}
			code.SetString("")
			out = append(out, fmt.Sprintf("%+v", row.Interface()))
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// A derived parameter's own values, on every official R4 example (and every resource inside
// the example Bundles), are exactly the rows it reads from its sources: leaving it out of the
// index loses no match.
func TestDerivedParametersLoseNoRows(t *testing.T) {
	r := Default()
	var resources []map[string]any
	for _, f := range shareddata.Glob(t, "fhir-r4/examples/*.json") {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		res := decode(t, data)
		resources = append(resources, res)
		if entries, ok := res["entry"].([]any); ok {
			for _, e := range entries {
				if inner, ok := e.(map[string]any)["resource"].(map[string]any); ok {
					resources = append(resources, inner)
				}
			}
		}
	}
	checked := map[string]int{} // derived parameter -> resources where it had values
	for _, res := range resources {
		rt, _ := res["resourceType"].(string)
		tp, ok := r.byType[rt]
		if !ok || len(tp.derived) == 0 {
			continue
		}
		all, err := r.Extract(rt, res)
		if err != nil {
			continue // examples of other versions' shapes are the extractor's tests' business
		}
		stored, err := r.ExtractExcept(rt, res, nil)
		if err != nil {
			t.Fatal(err)
		}
		for code, d := range tp.derived {
			own := rowsOf(all, []string{code}, "")
			read := rowsOf(stored, d.From, d.TargetType)
			if !slices.Equal(own, read) {
				t.Errorf("%s/%v: %s has rows\n%v\nbut reading %v (target %q) gives\n%v", rt, res["id"], code, own, d.From, d.TargetType, read)
			}
			if len(rowsOf(stored, []string{code}, "")) != 0 {
				t.Errorf("%s/%v: derived %s was indexed", rt, res["id"], code)
			}
			if len(own) > 0 {
				checked[code]++
			}
		}
	}
	for _, want := range []string{"patient", "combo-code", "combo-value-quantity", "combo-value-concept"} {
		if checked[want] == 0 {
			t.Errorf("no example exercised %s: %v", want, checked)
		}
	}
}

// The derivations the store relies on for Observation, the registry's commonest resource.
func TestObservationsDerivedParameters(t *testing.T) {
	r := Default()
	want := map[string]Derived{
		"patient":              {From: []string{"subject"}, TargetType: "Patient"},
		"combo-code":           {From: []string{"code", "component-code"}},
		"combo-value-concept":  {From: []string{"component-value-concept", "value-concept"}},
		"combo-value-quantity": {From: []string{"component-value-quantity", "value-quantity"}},
	}
	for code, w := range want {
		got, ok := r.Derived("Observation", code)
		if !ok || !slices.Equal(got.From, w.From) || got.TargetType != w.TargetType {
			t.Errorf("Observation.%s: derived %v %+v, want %+v", code, ok, got, w)
		}
	}
	for _, code := range []string{"subject", "code", "value-concept", "component-code"} {
		if _, ok := r.Derived("Observation", code); ok {
			t.Errorf("Observation.%s is derived; it must be stored", code)
		}
	}
}

// Migration 023 deletes the rows that stores indexed for derived parameters before they were
// derived: it must name exactly the registry's derived parameters, each in its kind's table.
func TestMigrationDeletesExactlyTheDerivedParameters(t *testing.T) {
	sql, err := migrations.Files.ReadFile("023_derived_search_parameters.sql")
	if err != nil {
		t.Fatal(err)
	}
	table := map[Type]string{String: "search_string", Token: "search_token", Date: "search_date", Reference: "search_reference",
		Number: "search_number", Quantity: "search_quantity", URI: "search_uri"}
	var want []string
	r := Default()
	for rt, tp := range r.byType {
		for code := range tp.derived {
			d, _ := r.Lookup(rt, code)
			want = append(want, table[d.Type]+" "+rt+" "+code)
		}
	}
	var got []string
	for _, stmt := range strings.Split(string(sql), ";") {
		_, rest, ok := strings.Cut(stmt, "DELETE FROM ")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, " ")
		for _, m := range regexp.MustCompile(`\('([A-Za-z]+)', '([a-z-]+)'\)`).FindAllStringSubmatch(rest, -1) {
			got = append(got, name+" "+m[1]+" "+m[2])
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("migration 023 deletes\n%v\nthe registry derives\n%v", got, want)
	}
}
