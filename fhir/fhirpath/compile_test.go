package fhirpath

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/internal/shareddata"
)

func TestCompileErrors(t *testing.T) {
	cases := map[string]string{ // expression -> part of the error
		"Patient.name.matches('x')":       "function matches() is not supported",
		"Patient.name.where()":            "where() takes one argument, not 0",
		"Patient.name.exists(a, b)":       "exists() takes at most one argument, not 2",
		"Patient.name.empty(1)":           "empty() takes no argument, not 1",
		"Patient.birthDate < @2020":       `operator "<" is not supported`,
		"Patient.birthDate = @2020-01-01": "date and time literals are not supported",
		"Patient.a + 1":                   `operator "+" is not supported`,
		"-1":                              "arithmetic is not supported",
		"Patient.a implies Patient.b":     `operator "implies" is not supported`,
		"Patient.a xor Patient.b":         `operator "xor" is not supported`,
		"Patient.a ~ 'x'":                 `operator "~" is not supported`,
		"Patient.a in Patient.b":          `operator "in" is not supported`,
		"Patient.a & 'x'":                 `operator "&" is not supported`,
		"Patient.a div 2":                 `operator "div" is not supported`,
		"Patient.value as Quantityy":      `unknown type "Quantityy"`,
		"Patient.value.as(DateTime)":      `unknown type "DateTime"`,
		"Patient.value is System.String":  "System types (System.String) are not supported",
		"Patient.value.ofType(1)":         "expected a type name",
		"Patientt.name":                   `unknown type "Patientt"`,
		"%ucum":                           "variable %ucum is not supported",
		"$index":                          "$index is not supported",
		"Patient.name.given[":             "unexpected end of expression",
		"Patient.name.given[0":            `expected "]"`,
		"(Patient.name":                   `expected ")"`,
		"Patient..name":                   `expected a name after '.'`,
		"Patient.name)":                   `unexpected ")"`,
		"Patient.name 'x'":                "unexpected string 'x'",
		"'unterminated":                   "unterminated string",
		"`unterminated":                   "unterminated identifier",
		"'bad \\q escape'":                `unknown escape \q`,
		"'bad \\u12'":                     `bad \u escape`,
		"Patient.name /* open":            "unterminated comment",
		"Patient.name # x":                `unexpected character '#'`,
		"Patient.extension(url)":          "extension() takes a string literal URL",
		"":                                "unexpected end of expression",
		"{ }.x |":                         "unexpected end of expression",
		"Patient.name as":                 "expected a type name, found end of expression",
		"Patient.``":                      "empty identifier",
		strings.Repeat("(", 101) + "1" + strings.Repeat(")", 101):                     "nested more than 100 deep",
		"a.where(" + strings.Repeat("b.where(", 100) + "c" + strings.Repeat(")", 101): "nested more than 100 deep",
		"a" + strings.Repeat("[a", 101) + strings.Repeat("]", 101):                    "nested more than 100 deep",
	}
	for expr, want := range cases {
		_, err := Compile(expr)
		var ce *CompileError
		if !errors.As(err, &ce) {
			t.Errorf("Compile(%q) = %v, want a *CompileError", expr, err)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Compile(%q) = %q, want it to mention %q", expr, err, want)
		}
		if ce.Pos < 0 || ce.Pos > len(expr) {
			t.Errorf("Compile(%q): position %d out of range", expr, ce.Pos)
		}
	}
}

func TestCompileAccepts(t *testing.T) {
	for _, expr := range []string{
		"Patient.name.given",
		"Patient.name.where(use = 'official' and family.exists()).given",
		"(Observation.value as Quantity) | (Observation.value as SampledData)",
		"Observation.value.as(FHIR.Quantity)",
		strings.Repeat("(", 99) + "1" + strings.Repeat(")", 99),
		"Bundle.entry[0].resource",
		"Patient.deceased.exists() and Patient.deceased != false",
		"Patient.name.first() | Patient.name.last()",
		"{}",
		"'it\\'s' = 'it''s'.x",
		"$this.id",
		"%resource.id",
		"1.5 = 1.50",
		"Patient.telecom.where(system='email' or system = \"x\")",
	} {
		if strings.Contains(expr, `"`) || strings.Contains(expr, "''") {
			// Not FHIRPath: double quotes and doubled quotes are errors, not panics.
			if _, err := Compile(expr); err == nil {
				t.Errorf("Compile(%q) accepted", expr)
			}
			continue
		}
		if _, err := Compile(expr); err != nil {
			t.Errorf("Compile(%q): %v", expr, err)
		}
	}
}

func TestMustCompilePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MustCompile of a bad expression did not panic")
		}
	}()
	MustCompile("Patient.name.matches('x')")
}

// FuzzCompile checks that no input makes Compile (or evaluating what it accepts) panic.
// As a test it runs the seeds; `go test -fuzz FuzzCompile` explores further.
func FuzzCompile(f *testing.F) {
	for _, seed := range []string{
		"Patient.name.given", "(a | b) as Quantity", "x.where(resolve() is Patient)", "a[0].b",
		"a.exists() and b != false", "'\\u00e9'", "`x`", "%resource", "a.extension('u').value",
		"((((", "``", "%``", "a.as(", "a is", "a[", "@", "1.", ".5", "a..b", "true.not()", "{}.count()",
	} {
		f.Add(seed)
	}
	patient := map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"given": []any{"A"}}}}
	f.Fuzz(func(t *testing.T, expr string) {
		e, err := Compile(expr)
		if err != nil {
			return
		}
		_, _ = e.Evaluate(patient)
		_ = e.Check("Patient")
	})
}

// The specification's own search parameters are what this package exists for: every one
// with an expression must compile (composites' expressions too), fit the R4 model, and
// evaluate to the same thing whole and narrowed by ForResourceType on every example.
func TestSearchParameterExpressions(t *testing.T) {
	data, err := os.ReadFile(shareddata.File(t, "fhir-r4/search-parameters.json"))
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		Entry []struct {
			Resource struct {
				Code       string   `json:"code"`
				Type       string   `json:"type"`
				Base       []string `json:"base"`
				Expression string   `json:"expression"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(data, &bundle); err != nil {
		t.Fatal(err)
	}
	type param struct {
		code string
		expr *Expression
	}
	byBase := map[string][]param{}
	compiled := 0
	for _, e := range bundle.Entry {
		r := e.Resource
		if r.Expression == "" {
			continue
		}
		expr, err := Compile(r.Expression)
		if err != nil {
			t.Errorf("%s (%s): %v", r.Code, r.Expression, err)
			continue
		}
		compiled++
		if r.Type == "composite" || r.Type == "special" {
			continue
		}
		for _, b := range r.Base {
			byBase[b] = append(byBase[b], param{r.Code, expr})
			if IsResourceType(b) {
				if err := expr.Check(b); err != nil {
					t.Error(err)
				}
			}
		}
	}
	if compiled != 1372 {
		t.Errorf("%d expressions compiled, want all 1372", compiled)
	}

	for name, res := range loadExamples(t) {
		rt := res["resourceType"].(string)
		for _, p := range append(append(byBase[rt], byBase["Resource"]...), byBase["DomainResource"]...) {
			full, err := p.expr.Evaluate(res)
			if err != nil {
				t.Errorf("%s: %s: %v", name, p.code, err)
				continue
			}
			narrowed, err := p.expr.ForResourceType(rt).Evaluate(res)
			if err != nil {
				t.Errorf("%s: %s narrowed: %v", name, p.code, err)
				continue
			}
			if render(full) != render(narrowed) {
				t.Errorf("%s: %s: whole %s, narrowed %s", name, p.code, render(full), render(narrowed))
			}
		}
	}
}
