package fhir

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"sync"

	"github.com/cartreg/cartreg/fhir/fhirpath"
)

// The R4 StructureDefinitions state most of their rules as FHIRPath constraints. The ones
// cartreg evaluates are data, in invariants/r4-invariants.json (see invariants/README.md for
// what was taken and how): every error-level constraint whose expression the fhirpath
// package compiles and that needs no variable such as %resource. Each applies where the
// definition puts it: a type (Attachment, Extension, DomainResource for every resource that
// is one) or an element path (Patient.contact, Timing.repeat).

//go:embed invariants/r4-invariants.json
var invariantsJSON []byte

type invariant struct {
	Key        string   `json:"key"`
	Severity   string   `json:"severity"`
	Human      string   `json:"human"`
	Expression string   `json:"expression"`
	Context    []string `json:"context"`
	compiled   *fhirpath.Expression
}

var (
	invariantsOnce sync.Once
	invariantsBy   map[string][]*invariant // by context: type name or element path
	invariantsErr  error
)

func loadInvariants() (map[string][]*invariant, error) {
	invariantsOnce.Do(func() {
		var file struct {
			Constraint []*invariant `json:"constraint"`
		}
		if err := json.Unmarshal(invariantsJSON, &file); err != nil {
			invariantsErr = fmt.Errorf("invariants: %w", err)
			return
		}
		invariantsBy = map[string][]*invariant{}
		for _, inv := range file.Constraint {
			e, err := fhirpath.Compile(inv.Expression)
			if err != nil {
				invariantsErr = fmt.Errorf("invariant %s: %w", inv.Key, err)
				return
			}
			inv.compiled = e
			for _, c := range inv.Context {
				invariantsBy[c] = append(invariantsBy[c], inv)
			}
		}
	})
	return invariantsBy, invariantsErr
}

// Invariants lists the keys of the R4 constraints Parse evaluates, by where they apply; for
// documentation and tests.
func Invariants() map[string][]string {
	by, err := loadInvariants()
	if err != nil {
		panic(err) // the embedded file is checked by the tests
	}
	out := make(map[string][]string, len(by))
	for c, list := range by {
		for _, inv := range list {
			out[c] = append(out[c], inv.Key)
		}
	}
	return out
}

// invariants evaluates the constraints that apply to e, an object: a resource or a complex
// value.
func (v *validator) invariants(e fhirpath.Element) {
	by, err := loadInvariants()
	if err != nil || e.Node.Type == "" {
		return
	}
	contexts := [4]string{e.Node.Type, e.DefPath, e.TypePath}
	if fhirpath.IsResourceType(e.Node.Type) && fhirpath.TypeIs(e.Node.Type, "DomainResource") {
		contexts[3] = "DomainResource"
	}
	for i, c := range contexts {
		if c == "" || slices.Contains(contexts[:i], c) {
			continue
		}
		for _, inv := range by[c] {
			if !holds(inv, e.Node) {
				severity := Error
				if inv.Severity == "warning" {
					severity = Warning
				}
				v.add(severity, Invariant, e.Path, "%s: %s (%s)", inv.Key, inv.Human, inv.Expression)
			}
		}
	}
}

// holds tells whether inv is true of n. As in the HL7 validator, an empty result is false;
// an expression the evaluator cannot run on this data is not held against the resource.
func holds(inv *invariant, n fhirpath.Node) bool {
	out, err := inv.compiled.EvaluateNode(n)
	if err != nil {
		return true
	}
	if len(out) != 1 {
		return len(out) > 1 // several values are not a boolean; FHIRPath would be in error
	}
	b, ok := out[0].Value.(bool)
	return !ok || b
}
