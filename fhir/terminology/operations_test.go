package terminology_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// params flattens a Parameters answer to name → values, a property as "code=value".
func params(t *testing.T, r *apptest.Reply) map[string][]string {
	t.Helper()
	var p struct {
		ResourceType string `json:"resourceType"`
		Parameter    []struct {
			Name         string `json:"name"`
			ValueString  string `json:"valueString"`
			ValueBoolean *bool  `json:"valueBoolean"`
			Part         []struct {
				Name        string `json:"name"`
				ValueCode   string `json:"valueCode"`
				ValueString string `json:"valueString"`
			} `json:"part"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(r.Body, &p); err != nil || p.ResourceType != "Parameters" {
		t.Fatalf("not a Parameters answer (%v): %s", err, r.Body)
	}
	out := map[string][]string{}
	for _, x := range p.Parameter {
		v := x.ValueString
		if x.ValueBoolean != nil {
			v = fmt.Sprint(*x.ValueBoolean)
		}
		if len(x.Part) == 2 {
			v = x.Part[0].ValueCode + "=" + x.Part[1].ValueCode + x.Part[1].ValueString
		}
		out[x.Name] = append(out[x.Name], v)
	}
	return out
}

func TestLookup(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	researcher := h.Token(auth.RoleResearcher) // definitions are anyone's to read

	r := h.As(researcher, "GET", "/fhir/CodeSystem/$lookup?system="+url.QueryEscape(registry.SystemResponse)+"&code=lugano-cmr", nil)
	if r.Status != 200 {
		t.Fatalf("lookup: %d %s", r.Status, r.Body)
	}
	got := params(t, r)
	if got["name"][0] != "ResponseCategory" || got["version"][0] != "1.0.0" || got["display"][0] == "" {
		t.Errorf("lookup of lugano-cmr: %v", got)
	}
	for _, want := range []string{"parent=lugano", "scheme=lugano", "rank=1"} {
		if !slices.Contains(got["property"], want) {
			t.Errorf("properties %v, want %s", got["property"], want)
		}
	}

	// By the CodeSystem's id, and with a coding in a Parameters body.
	r = h.Expect(200, "POST", "/fhir/CodeSystem/cart-product/$lookup", map[string]any{"resourceType": "Parameters",
		"parameter": []any{map[string]any{"name": "coding", "valueCoding": map[string]any{"system": registry.SystemProduct, "code": "axi-cel"}}}})
	if got := params(t, r); !strings.Contains(got["display"][0], "Yescarta") {
		t.Errorf("lookup of axi-cel: %v", got)
	}
	// R4's own code systems, as google/fhir carries them.
	r = h.Expect(200, "GET", "/fhir/CodeSystem/$lookup?system=http://hl7.org/fhir/administrative-gender&code=unknown", nil)
	if got := params(t, r); got["version"][0] != "4.0.1" {
		t.Errorf("lookup of administrative-gender: %v", got)
	}

	for path, want := range map[string]string{
		"/fhir/CodeSystem/$lookup?system=http://example.org/nothing&code=x":         "http://example.org/nothing",
		"/fhir/CodeSystem/$lookup?system=" + registry.SystemResponse + "&code=nope": `"nope"`,
		"/fhir/CodeSystem/nothing/$lookup?code=x":                                   "CodeSystem/nothing",
	} {
		r := h.Expect(404, "GET", path, nil)
		if !strings.Contains(string(r.Body), "OperationOutcome") || !strings.Contains(strings.ReplaceAll(string(r.Body), `\"`, `"`), want) {
			t.Errorf("%s: %s, want an OperationOutcome naming %s", path, r.Body, want)
		}
	}
	r = h.Expect(400, "GET", "/fhir/CodeSystem/$lookup?code=x", nil)
	if !strings.Contains(string(r.Body), "system") {
		t.Errorf("lookup without a system: %s", r.Body)
	}
	h.Expect(400, "GET", "/fhir/CodeSystem/$lookup?system=a&code=b&colour=red", nil)
}

// expansion reads the codes and total of a ValueSet/$expand answer.
func expansion(t *testing.T, r *apptest.Reply) (codes []string, total int) {
	t.Helper()
	var vs struct {
		ResourceType string `json:"resourceType"`
		Expansion    struct {
			Total    int `json:"total"`
			Contains []struct {
				System, Code string
			} `json:"contains"`
		} `json:"expansion"`
	}
	if err := json.Unmarshal(r.Body, &vs); err != nil || vs.ResourceType != "ValueSet" {
		t.Fatalf("not a ValueSet (%v): %s", err, r.Body)
	}
	for _, c := range vs.Expansion.Contains {
		codes = append(codes, c.Code)
	}
	return codes, vs.Expansion.Total
}

func TestExpand(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	terms, err := registry.LoadTerminology()
	if err != nil {
		t.Fatal(err)
	}

	r := h.Expect(200, "GET", "/fhir/ValueSet/$expand?url="+url.QueryEscape(registry.ValueSetResponseOf("lugano")), nil)
	codes, total := expansion(t, r)
	var want []string
	for _, c := range terms.Schemes["lugano"] {
		want = append(want, c.Code)
	}
	slices.Sort(want)
	sorted := slices.Sorted(slices.Values(codes))
	if !slices.Equal(sorted, want) || total != len(want) {
		t.Errorf("Lugano's expansion %v (total %d), want %v", codes, total, want)
	}

	// Every category, by id; a page of it; a filter.
	r = h.Expect(200, "GET", "/fhir/ValueSet/response-category/$expand", nil)
	if codes, total := expansion(t, r); total != len(terms.Categories) || len(codes) != total || slices.Contains(codes, "lugano") {
		t.Errorf("response-category: %d codes, total %d, want the %d categories and no scheme", len(codes), total, len(terms.Categories))
	}
	r = h.Expect(200, "POST", "/fhir/ValueSet/response-category/$expand", map[string]any{"resourceType": "Parameters", "parameter": []any{
		map[string]any{"name": "count", "valueInteger": 2}, map[string]any{"name": "offset", "valueInteger": 1}}})
	if page, total := expansion(t, r); len(page) != 2 || total != len(terms.Categories) || page[0] != codes[1] {
		t.Errorf("page %v of %d, want 2 from %v", page, total, codes[1:3])
	}
	r = h.Expect(200, "GET", "/fhir/ValueSet/response-category/$expand?filter=IMWG-SC", nil)
	if codes, _ := expansion(t, r); !slices.Equal(codes, []string{"imwg-scr"}) {
		t.Errorf("filtered %v", codes)
	}
	// R4's value sets.
	r = h.Expect(200, "GET", "/fhir/ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/administrative-gender", nil)
	if codes, _ := expansion(t, r); !slices.Equal(codes, []string{"male", "female", "other", "unknown"}) {
		t.Errorf("administrative-gender: %v", codes)
	}

	h.Expect(404, "GET", "/fhir/ValueSet/$expand?url=http://example.org/ValueSet/none", nil)
	h.Expect(404, "GET", "/fhir/ValueSet/none/$expand", nil)
	h.Expect(400, "GET", "/fhir/ValueSet/$expand", nil)
	h.Expect(400, "GET", "/fhir/ValueSet/response-category/$expand?count=-1", nil)

	// The published ValueSets stay resources: read, and the type's other routes, still work.
	h.Expect(200, "GET", "/fhir/ValueSet/response-lugano", nil)
	h.Expect(200, "GET", "/fhir/ValueSet?url="+url.QueryEscape(registry.ValueSetResponse), nil)
	h.Expect(201, "POST", "/fhir/ValueSet", map[string]any{"resourceType": "ValueSet", "status": "draft"})
	h.Expect(200, "GET", "/fhir/CodeSystem/cart-product", nil)
}

func TestValidateCode(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	imwg := url.QueryEscape(registry.ValueSetResponseOf("imwg"))
	system := url.QueryEscape(registry.SystemResponse)
	for _, c := range []struct {
		query, result, message string
	}{
		{"url=" + imwg + "&system=" + system + "&code=imwg-cr", "true", ""},
		{"url=" + imwg + "&system=" + system + "&code=lugano-cmr", "false", "is not in value set"},
		{"url=" + imwg + "&system=" + system + "&code=nope", "false", `has no code "nope"`},
		{"url=" + imwg + "&system=http://example.org/cs&code=imwg-cr", "false", "not known to this server"},
		{"url=" + imwg + "&code=imwg-cr", "true", ""},
		{"url=" + imwg + "&coding=" + system + "|imwg-vgpr", "true", ""},
		{"url=" + imwg + "&system=" + system + "&code=imwg-cr&display=Nonsense", "false", "display"},
		{"url=http://hl7.org/fhir/ValueSet/observation-status&system=http://hl7.org/fhir/observation-status&code=final", "true", ""},
	} {
		r := h.Expect(200, "GET", "/fhir/ValueSet/$validate-code?"+c.query, nil)
		got := params(t, r)
		if got["result"][0] != c.result || (c.message != "" && (len(got["message"]) == 0 || !strings.Contains(got["message"][0], c.message))) {
			t.Errorf("%s: %v, want result %s and a message with %q", c.query, got, c.result, c.message)
		}
	}
	r := h.Expect(200, "POST", "/fhir/ValueSet/response-imwg/$validate-code", map[string]any{"resourceType": "Parameters", "parameter": []any{
		map[string]any{"name": "codeableConcept", "valueCodeableConcept": map[string]any{"coding": []any{
			map[string]any{"system": registry.SystemSNOMED, "code": "268910001"},
			map[string]any{"system": registry.SystemResponse, "code": "imwg-pr"}}}}}})
	if got := params(t, r); got["result"][0] != "true" {
		t.Errorf("a CodeableConcept with one coding in the value set: %v", got)
	}
	h.Expect(404, "GET", "/fhir/ValueSet/$validate-code?url=http://example.org/none&code=x", nil)
	h.Expect(400, "GET", "/fhir/ValueSet/$validate-code?url="+imwg, nil)
}

func TestCapabilityStatementListsTheOperations(t *testing.T) {
	t.Parallel()
	h := apptest.New(t)
	var cs struct {
		Rest []struct {
			Resource []struct {
				Type      string
				Operation []struct{ Name, Definition string }
			}
		}
	}
	if err := json.Unmarshal(h.Expect(200, "GET", "/fhir/metadata", nil).Body, &cs); err != nil {
		t.Fatal(err)
	}
	ops := map[string][]string{}
	for _, r := range cs.Rest[0].Resource {
		for _, op := range r.Operation {
			ops[r.Type] = append(ops[r.Type], op.Name)
		}
	}
	for typ, want := range map[string][]string{
		"CodeSystem": {"lookup", "validate"},
		"ValueSet":   {"expand", "validate", "validate-code"},
		"Patient":    {"everything", "export", "validate"},
		"Condition":  {"validate"},
	} {
		if !slices.Equal(ops[typ], want) {
			t.Errorf("%s operations %v, want %v", typ, ops[typ], want)
		}
	}
}
