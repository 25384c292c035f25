package fhir

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/cartreg/cartreg/internal/shareddata"
)

// encodingJSON is what appendJSON must equal: encoding/json without HTML escaping.
func encodingJSON(t testing.TB, v any) ([]byte, error) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func sameAsEncodingJSON(t *testing.T, name string, v any) {
	t.Helper()
	want, wantErr := encodingJSON(t, v)
	got, err := appendJSON(nil, v)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%s: error %v, encoding/json's %v", name, err, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n%s\nencoding/json:\n%s", name, got, want)
	}
}

// Every stored version is rendered by appendJSON, so it must write what encoding/json wrote:
// the same bytes for every official R4 example, decoded as Parse decodes (numbers as
// json.Number) and with float64 numbers, and for the awkward values below.
func TestAppendJSONIsEncodingJSON(t *testing.T) {
	files := shareddata.Glob(t, "fhir-r4/examples/*.json")
	if len(files) < 100 {
		t.Fatalf("%d R4 examples found", len(files))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var numbers, floats map[string]any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&numbers); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &floats); err != nil {
			t.Fatal(err)
		}
		sameAsEncodingJSON(t, f, numbers)
		sameAsEncodingJSON(t, f+" (float64)", floats)

		// Resource.JSON: resourceType first, then the rest as encoding/json sorts them.
		res := &Resource{Type: numbers["resourceType"].(string), Body: numbers}
		got, err := res.JSON()
		if err != nil {
			t.Fatal(err)
		}
		rest := map[string]any{}
		for k, v := range numbers {
			if k != "resourceType" {
				rest[k] = v
			}
		}
		inner, err := encodingJSON(t, rest)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"resourceType":"` + res.Type + `"`
		if len(inner) > 2 {
			want += "," + string(inner[1:])
		} else {
			want += "}"
		}
		if string(got) != want {
			t.Errorf("%s: Resource.JSON\n%s\nwant\n%s", f, got, want)
		}
	}

	for name, v := range map[string]any{
		"control characters":     "a\x00b\x01\x08\x0c\n\r\t\x1f\x7f",
		"quotes and backslashes": `say "hi" \ there`,
		"HTML left alone":        "<b>&amp;</b>",
		"line separators":        "one\u2028two\u2029three",
		"invalid UTF-8":          "bad \xff\xfe and cut \xe2\x82",
		"non-ASCII":              "Müller, 北京, 🧬",
		"keys needing escapes":   map[string]any{"a\"b": 1.0, "\n": true, "é": nil, "": "empty"},
		"empty and nil":          map[string]any{"m": map[string]any{}, "nm": map[string]any(nil), "s": []any{}, "ns": []any(nil), "n": nil},
		"numbers":                []any{json.Number("0"), json.Number("-1.50"), json.Number("1e5"), json.Number("2E-7"), json.Number(""), 0.1, 1e21, 1e-7, math.Copysign(0, -1), 42.0},
		"bad number":             json.Number("01"),
		"not a number":           math.NaN(),
		"other types":            map[string]any{"strings": []string{"a", "<"}, "maps": []map[string]any{{"x": 1}}, "int": 3, "typed": map[string]string{"k": "v"}},
		"nested":                 map[string]any{"z": []any{map[string]any{"b": []any{"x", false}, "a": json.Number("3.0")}}, "a": "first"},
	} {
		sameAsEncodingJSON(t, name, v)
	}
}

// FuzzAppendJSONString holds appendJSON's strings, and object keys, to encoding/json's.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", "\x00\x1f\"\\", "\u2028", "\xff", "<&>", "é", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sameAsEncodingJSON(t, "string", s)
		sameAsEncodingJSON(t, "key", map[string]any{s: s, "k": []any{s}})
	})
}

// BenchmarkResourceJSON renders a follow-up Task the way the store does for every version.
func BenchmarkResourceJSON(b *testing.B) {
	var body map[string]any
	if err := json.Unmarshal([]byte(`{"resourceType":"Task","id":"01a23b34-5411-7a2b-bebe-bf1b861b93f5",
		"meta":{"versionId":"1","lastUpdated":"2026-11-22T00:00:00.000Z"},
		"identifier":[{"system":"https://cartreg.org/fhir/follow-up-task","value":"Procedure/i1/m3"}],
		"status":"requested","intent":"order","priority":"routine",
		"code":{"coding":[{"system":"https://cartreg.org/fhir/CodeSystem/milestone","code":"m3","display":"Month 3"}]},
		"for":{"reference":"Patient/p1"},"focus":{"reference":"Procedure/i1"},"authoredOn":"2026-03-01",
		"restriction":{"period":{"start":"2026-03-15","end":"2026-04-15"}},
		"description":"Month 3 follow-up after the 2025-12-01 infusion of Kymriah: remission assessment between 2026-03-15 and 2026-04-15 (target 2026-03-31)",
		"lastModified":"2026-11-22T00:00:00Z","owner":{"reference":"Organization/s1"},
		"businessStatus":{"coding":[{"system":"https://cartreg.org/fhir/CodeSystem/cartreg","code":"overdue","display":"Follow-up visit overdue"}]}}`), &body); err != nil {
		b.Fatal(err)
	}
	res := &Resource{Type: "Task", Body: body}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := res.JSON(); err != nil {
			b.Fatal(err)
		}
	}
}
