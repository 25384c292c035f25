// Package searchparam knows the search parameters of FHIR R4 and turns a resource into the
// values a search can match.
//
// The definitions are the specification's own SearchParameter resources (see README.md) and
// the registry's few of its own (cartreg-search-parameters.json), embedded in the binary.
// Each parameter's FHIRPath expression is compiled once with the fhirpath package; Extract evaluates them on a resource and converts what they select,
// by FHIR type, into the index values of values.go.
package searchparam

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/cartreg/cartreg/fhir/fhirpath"
)

//go:generate go run ./gen -in ../../../shared/fhir-r4/search-parameters.json -out r4-search-parameters.json

//go:embed r4-search-parameters.json
var r4SearchParameters []byte

// cartregSearchParameters are the server's own SearchParameters, as whole FHIR resources (the
// fields spec reads are theirs): for what R4 has no parameter for, such as the window of a
// follow-up Task (Task's period is executionPeriod, when the work was done). The registry
// publishes them as they are (CustomDefinitions), so what clients read is what is searched.
//
//go:embed cartreg-search-parameters.json
var cartregSearchParameters []byte

// CustomDefinitions are the server's own SearchParameter resources, one JSON text each.
func CustomDefinitions() ([]json.RawMessage, error) {
	var out []json.RawMessage
	if err := json.Unmarshal(cartregSearchParameters, &out); err != nil {
		return nil, fmt.Errorf("searchparam: cartreg-search-parameters.json: %w", err)
	}
	return out, nil
}

// CustomBase is the canonical base of the server's own SearchParameters: the registry's
// canonical base (registry.Canonical, which this package cannot import) + "/SearchParameter/".
const CustomBase = "http://cartreg.org/fhir/SearchParameter/"

// spec is one SearchParameter of an embedded file (written by ./gen for the specification's).
type spec struct {
	URL         string   `json:"url"`
	Code        string   `json:"code"`
	Base        []string `json:"base"`
	Type        Type     `json:"type"`
	Expression  string   `json:"expression"`
	Target      []string `json:"target"`
	Description string   `json:"description"`
}

// Registry holds the supported search parameters of every resource type, compiled.
// It is immutable and safe for concurrent use. The Definitions it returns are shared and
// must not be modified.
type Registry struct {
	byType      map[string]*typeParams
	unsupported []Unsupported
}

// typeParams are the parameters of one resource type, sorted by code.
type typeParams struct {
	defs    []*Definition
	exprs   []*fhirpath.Expression // exprs[i] is defs[i]'s, narrowed to the type
	byCode  map[string]int
	derived map[string]Derived // parameters answered from others' rows, not indexed
}

// Unsupported is a SearchParameter of the specification that the registry leaves out, for
// all the resource types it would apply to, or (when its expression does not fit the R4
// model for some of them) for those listed in Resources only.
type Unsupported struct {
	URL        string
	Code       string
	Type       Type
	Resources  []string // the concrete resource types it would apply to
	Expression string
	Reason     string
}

// Reasons a parameter is left out, for Unsupported.Reason (a compile error is reported
// after ReasonCompile).
const (
	ReasonComposite    = "composite search parameters are not supported"
	ReasonSpecial      = "special search parameters are not supported"
	ReasonNoExpression = "no FHIRPath expression: needs full-text or query support"
	ReasonCompile      = "expression does not compile: "
	ReasonModel        = "expression does not fit the R4 model: "
)

var (
	defaultOnce     sync.Once
	defaultRegistry *Registry
)

// Default returns the process-wide registry of the search parameters, loading and
// compiling it on first use. The embedded definitions are checked by the tests, so a
// failure here is a build defect and panics.
func Default() *Registry {
	defaultOnce.Do(func() {
		r, err := Load()
		if err != nil {
			panic(err)
		}
		defaultRegistry = r
	})
	return defaultRegistry
}

// source is one file of definitions: the specification's, or the server's own (custom).
type source struct {
	name   string
	data   []byte
	custom bool
}

// Load reads and compiles the embedded R4 search parameters, then the server's own, into a
// new Registry. Parameters defined on Resource or DomainResource (_id, _lastUpdated, _tag,
// _profile, _security, _source) are given to every resource type they apply to.
//
// A parameter of the server's own must be usable as written (its expression compiles and fits
// the R4 model of every type it names), have its URL under CustomBase, and not reuse a code
// the specification gives the same type: any of these is an error, not a quiet omission.
func Load() (*Registry, error) {
	return load(
		source{name: "r4-search-parameters.json", data: r4SearchParameters},
		source{name: "cartreg-search-parameters.json", data: cartregSearchParameters, custom: true},
	)
}

func load(sources ...source) (*Registry, error) {
	r := &Registry{byType: map[string]*typeParams{}}
	for _, rt := range fhirpath.ResourceTypes() {
		r.byType[rt] = &typeParams{byCode: map[string]int{}}
	}
	owner := map[string]string{} // "Type:code" -> URL of the definition that has it
	for _, src := range sources {
		if err := r.add(src, owner); err != nil {
			return nil, err
		}
	}
	for rt, tp := range r.byType {
		sort.Sort(byCode(*tp))
		custom := map[string]bool{}
		for i, d := range tp.defs {
			tp.byCode[d.Code] = i
			custom[d.Code] = strings.HasPrefix(d.URL, CustomBase)
		}
		tp.derived = findDerived(rt, tp.defs, custom)
	}
	sort.Slice(r.unsupported, func(i, j int) bool { return r.unsupported[i].URL < r.unsupported[j].URL })
	return r, nil
}

// add compiles one source's definitions into r; owner records who defined each type's codes.
func (r *Registry) add(src source, owner map[string]string) error {
	var specs []spec
	if err := json.Unmarshal(src.data, &specs); err != nil {
		return fmt.Errorf("searchparam: embedded definitions %s: %w", src.name, err)
	}
	for _, s := range specs {
		resources, err := concreteTypes(s.Base)
		if err != nil {
			return fmt.Errorf("searchparam: %s: %s: %w", src.name, s.URL, err)
		}
		if src.custom && (!strings.HasPrefix(s.URL, CustomBase) || s.Code == "" || len(resources) == 0) {
			return fmt.Errorf("searchparam: %s: %q (code %q): a definition of the server's own needs a code, a base and a URL under %s",
				src.name, s.URL, s.Code, CustomBase)
		}
		reason := ""
		var compiled *fhirpath.Expression
		switch {
		case s.Type == Composite:
			reason = ReasonComposite
		case s.Type == Special:
			reason = ReasonSpecial
		case s.Expression == "":
			reason = ReasonNoExpression
		default:
			if compiled, err = fhirpath.Compile(s.Expression); err != nil {
				reason = ReasonCompile + err.Error()
			}
		}
		if reason != "" {
			if src.custom {
				return fmt.Errorf("searchparam: %s: %s: %s", src.name, s.URL, reason)
			}
			r.unsupported = append(r.unsupported, Unsupported{
				URL: s.URL, Code: s.Code, Type: s.Type, Resources: resources,
				Expression: s.Expression, Reason: reason,
			})
			continue
		}
		var misfits []string
		var misfit error
		for _, rt := range resources {
			narrowed := compiled.ForResourceType(rt)
			if err := narrowed.Check(rt); err != nil {
				if src.custom {
					return fmt.Errorf("searchparam: %s: %s on %s: %s%w", src.name, s.URL, rt, ReasonModel, err)
				}
				misfits = append(misfits, rt)
				if misfit == nil {
					misfit = err
				}
				continue
			}
			tp := r.byType[rt]
			if prev, dup := owner[rt+":"+s.Code]; dup {
				return fmt.Errorf("searchparam: %s: %s defines %s:%s, which %s already defines", src.name, s.URL, rt, s.Code, prev)
			}
			owner[rt+":"+s.Code] = s.URL
			tp.byCode[s.Code] = -1 // placed when sorted below
			tp.defs = append(tp.defs, &Definition{
				Code:        s.Code,
				Type:        s.Type,
				Resource:    rt,
				Expression:  s.Expression,
				Targets:     s.Target,
				URL:         s.URL,
				Description: descriptionFor(s.Description, rt),
			})
			tp.exprs = append(tp.exprs, narrowed)
		}
		if misfits != nil {
			r.unsupported = append(r.unsupported, Unsupported{
				URL: s.URL, Code: s.Code, Type: s.Type, Resources: misfits,
				Expression: s.Expression, Reason: ReasonModel + misfit.Error(),
			})
		}
	}
	return nil
}

// byCode sorts a type's definitions and expressions together.
type byCode typeParams

func (b byCode) Len() int           { return len(b.defs) }
func (b byCode) Less(i, j int) bool { return b.defs[i].Code < b.defs[j].Code }
func (b byCode) Swap(i, j int) {
	b.defs[i], b.defs[j] = b.defs[j], b.defs[i]
	b.exprs[i], b.exprs[j] = b.exprs[j], b.exprs[i]
}

// concreteTypes expands a SearchParameter's base into resource types: Resource means all
// of them, DomainResource all but Bundle, Binary and Parameters.
func concreteTypes(base []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	add := func(rt string) {
		if !seen[rt] {
			seen[rt] = true
			out = append(out, rt)
		}
	}
	for _, b := range base {
		switch {
		case b == "Resource" || b == "DomainResource":
			for _, rt := range fhirpath.ResourceTypes() {
				if fhirpath.TypeIs(rt, b) {
					add(rt)
				}
			}
		case fhirpath.IsResourceType(b):
			add(b)
		default:
			return nil, fmt.Errorf("base %q is not an R4 resource type", b)
		}
	}
	sort.Strings(out)
	return out, nil
}

// descriptionFor picks a resource type's own line out of the description of a parameter
// shared by several types, which reads
// "Multiple Resources: \r\n\r\n* [Condition](condition.html): Code for the condition\r\n...".
func descriptionFor(description, resourceType string) string {
	if !strings.HasPrefix(description, "Multiple Resources:") {
		return description
	}
	marker := "* [" + resourceType + "]("
	for _, line := range strings.Split(description, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, marker) {
			continue
		}
		if i := strings.Index(line, "): "); i >= 0 {
			return strings.TrimSpace(line[i+3:])
		}
	}
	return description
}

// Lookup returns the supported parameter code of resourceType.
func (r *Registry) Lookup(resourceType, code string) (*Definition, bool) {
	tp, ok := r.byType[resourceType]
	if !ok {
		return nil, false
	}
	i, ok := tp.byCode[code]
	if !ok {
		return nil, false
	}
	return tp.defs[i], true
}

// ForType returns the supported parameters of resourceType sorted by code (nil for an
// unknown type). The slice is the caller's; the Definitions are shared.
func (r *Registry) ForType(resourceType string) []*Definition {
	tp, ok := r.byType[resourceType]
	if !ok {
		return nil
	}
	return append([]*Definition(nil), tp.defs...)
}

// Unsupported lists the specification's parameters the registry leaves out, with why,
// sorted by URL. (A parameter of the server's own is never left out: Load refuses it.)
func (r *Registry) Unsupported() []Unsupported {
	return append([]Unsupported(nil), r.unsupported...)
}
