// Package terminology owns the server's code systems and value sets, and the one answer to
// "is code C of system S in value set V": the FHIR operations CodeSystem/$lookup,
// ValueSet/$expand and ValueSet/$validate-code answer from it, and so do the registry's own
// bindings (a response category must be of the assessed disease's scheme), so what a client
// is told and what a write is held to cannot differ.
//
// It knows the CodeSystems and ValueSets given to it as FHIR JSON (the registry's published
// definitions) and, with AddR4, the code systems and value sets of R4's coded elements as
// google/fhir carries them in its generated protocol buffers (codes.proto and
// valuesets.proto, generated from the R4 specification, which HL7 publishes under CC0):
// codes without displays, for that is all the protos keep.
package terminology

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Concept is one code of a code system.
type Concept struct {
	Code, Display string
	// Properties are the concept's property values by property code, as strings.
	Properties map[string][]string
	Children   []*Concept
	parent     *Concept
}

// CodeSystem is a code system the server can answer for.
type CodeSystem struct {
	ID, URL, Version, Name, Title string
	// Concepts are the top-level concepts, in the code system's order.
	Concepts []*Concept
	// Source says where the definition came from, for $lookup's answer.
	Source string
	byCode map[string]*Concept
}

// Concept returns the concept with code, or nil.
func (cs *CodeSystem) Concept(code string) *Concept { return cs.byCode[code] }

// Coding is a code in a system, as an expansion lists it.
type Coding struct {
	System, Version, Code, Display string
	Abstract                       bool
}

// ValueSet is a value set the server can expand.
type ValueSet struct {
	ID, URL, Version, Name, Title string
	compose                       compose
	once                          sync.Once
	expansion                     []Coding
	members                       map[string]int // system|code → index in expansion
	err                           error
}

// Server is the set of code systems and value sets the server publishes. Add everything
// before it answers: it is then read by many requests at once.
type Server struct {
	systems, systemIDs     map[string]*CodeSystem
	valueSets, valueSetIDs map[string]*ValueSet
	// base answers for what this server does not define itself (R4's definitions, shared
	// by every Server of a process).
	base *Server
}

// New returns a Server that knows nothing of its own yet, and what base knows (nil: nothing).
func New(base *Server) *Server {
	return &Server{systems: map[string]*CodeSystem{}, systemIDs: map[string]*CodeSystem{},
		valueSets: map[string]*ValueSet{}, valueSetIDs: map[string]*ValueSet{}, base: base}
}

// R4 is a Server of R4's own code systems and value sets (see AddR4), built once per process.
var R4 = sync.OnceValues(func() (*Server, error) {
	s := New(nil)
	return s, s.AddR4()
})

// JSON shapes of the parts of CodeSystem and ValueSet the server reads.
type (
	codeSystemJSON struct {
		ResourceType string        `json:"resourceType"`
		ID           string        `json:"id"`
		URL          string        `json:"url"`
		Version      string        `json:"version"`
		Name         string        `json:"name"`
		Title        string        `json:"title"`
		Concept      []conceptJSON `json:"concept"`
		Compose      *compose      `json:"compose"`
	}
	conceptJSON struct {
		Code     string `json:"code"`
		Display  string `json:"display"`
		Property []struct {
			Code         string   `json:"code"`
			ValueCode    *string  `json:"valueCode"`
			ValueString  *string  `json:"valueString"`
			ValueInteger *int     `json:"valueInteger"`
			ValueBoolean *bool    `json:"valueBoolean"`
			ValueDecimal *float64 `json:"valueDecimal"`
		} `json:"property"`
		Concept []conceptJSON `json:"concept"`
	}
	compose struct {
		Include []composeRule `json:"include"`
		Exclude []composeRule `json:"exclude"`
	}
	composeRule struct {
		System   string   `json:"system"`
		Version  string   `json:"version"`
		ValueSet []string `json:"valueSet"`
		Concept  []struct {
			Code    string `json:"code"`
			Display string `json:"display"`
		} `json:"concept"`
		Filter []struct {
			Property string `json:"property"`
			Op       string `json:"op"`
			Value    string `json:"value"`
		} `json:"filter"`
	}
)

// AddJSON adds a CodeSystem or ValueSet resource in FHIR JSON; source names where it came from.
// Other resources are ignored, so a folder of definitions can be given whole.
func (s *Server) AddJSON(raw []byte, source string) error {
	var r codeSystemJSON
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("terminology: %w", err)
	}
	switch r.ResourceType {
	case "CodeSystem":
		cs := &CodeSystem{ID: r.ID, URL: r.URL, Version: r.Version, Name: r.Name, Title: r.Title, Source: source}
		cs.Concepts = concepts(r.Concept, nil)
		return s.AddCodeSystem(cs)
	case "ValueSet":
		vs := &ValueSet{ID: r.ID, URL: r.URL, Version: r.Version, Name: r.Name, Title: r.Title}
		if r.Compose != nil {
			vs.compose = *r.Compose
		}
		return s.addValueSet(vs)
	}
	return nil
}

func concepts(in []conceptJSON, parent *Concept) []*Concept {
	out := make([]*Concept, 0, len(in))
	for _, c := range in {
		con := &Concept{Code: c.Code, Display: c.Display, Properties: map[string][]string{}, parent: parent}
		for _, p := range c.Property {
			var v string
			switch {
			case p.ValueCode != nil:
				v = *p.ValueCode
			case p.ValueString != nil:
				v = *p.ValueString
			case p.ValueInteger != nil:
				v = fmt.Sprint(*p.ValueInteger)
			case p.ValueBoolean != nil:
				v = fmt.Sprint(*p.ValueBoolean)
			case p.ValueDecimal != nil:
				v = fmt.Sprint(*p.ValueDecimal)
			}
			con.Properties[p.Code] = append(con.Properties[p.Code], v)
		}
		con.Children = concepts(c.Concept, con)
		out = append(out, con)
	}
	return out
}

// AddCodeSystem adds cs; a second code system with the same URL is an error, one with the
// same id is reachable by URL only.
func (s *Server) AddCodeSystem(cs *CodeSystem) error {
	if cs.URL == "" {
		return fmt.Errorf("terminology: code system %q has no url", cs.ID)
	}
	if _, dup := s.systems[cs.URL]; dup {
		return fmt.Errorf("terminology: code system %s twice", cs.URL)
	}
	cs.byCode = map[string]*Concept{}
	var index func([]*Concept)
	index = func(list []*Concept) {
		for _, c := range list {
			if _, dup := cs.byCode[c.Code]; !dup {
				cs.byCode[c.Code] = c
			}
			index(c.Children)
		}
	}
	index(cs.Concepts)
	s.systems[cs.URL] = cs
	if _, taken := s.systemIDs[cs.ID]; cs.ID != "" && !taken {
		s.systemIDs[cs.ID] = cs
	}
	return nil
}

func (s *Server) addValueSet(vs *ValueSet) error {
	if vs.URL == "" {
		return fmt.Errorf("terminology: value set %q has no url", vs.ID)
	}
	if _, dup := s.valueSets[vs.URL]; dup {
		return fmt.Errorf("terminology: value set %s twice", vs.URL)
	}
	s.valueSets[vs.URL] = vs
	if _, taken := s.valueSetIDs[vs.ID]; vs.ID != "" && !taken {
		s.valueSetIDs[vs.ID] = vs
	}
	return nil
}

// CodeSystem returns the code system with url (a version after "|" is ignored), or nil.
func (s *Server) CodeSystem(url string) *CodeSystem {
	url, _, _ = strings.Cut(url, "|")
	for ; s != nil; s = s.base {
		if cs := s.systems[url]; cs != nil {
			return cs
		}
	}
	return nil
}

// CodeSystemByID returns the code system the server publishes under id, or nil.
func (s *Server) CodeSystemByID(id string) *CodeSystem {
	for ; s != nil; s = s.base {
		if cs := s.systemIDs[id]; cs != nil {
			return cs
		}
	}
	return nil
}

// ValueSet returns the value set with url (a version after "|" is ignored), or nil.
func (s *Server) ValueSet(url string) *ValueSet {
	url, _, _ = strings.Cut(url, "|")
	for ; s != nil; s = s.base {
		if vs := s.valueSets[url]; vs != nil {
			return vs
		}
	}
	return nil
}

// ValueSetByID returns the value set the server publishes under id, or nil.
func (s *Server) ValueSetByID(id string) *ValueSet {
	for ; s != nil; s = s.base {
		if vs := s.valueSetIDs[id]; vs != nil {
			return vs
		}
	}
	return nil
}

// Expansion is every code of vs, in the order its definition gives them.
func (s *Server) Expansion(vs *ValueSet) ([]Coding, error) {
	if err := s.expand(vs, nil); err != nil {
		return nil, err
	}
	return vs.expansion, nil
}

// maxImportDepth bounds value sets importing value sets: published definitions are
// trusted, but a cycle among them must not hang a request.
const maxImportDepth = 8

func (s *Server) expand(vs *ValueSet, path []string) error {
	if len(path) > maxImportDepth || slices.Contains(path, vs.URL) {
		// Checked before the Once: entering it again from within would never return.
		return fmt.Errorf("value set %s imports itself (through %s)", vs.URL, strings.Join(path, ", "))
	}
	vs.once.Do(func() { vs.err = s.build(vs, append(slices.Clip(path), vs.URL)) })
	return vs.err
}

func (s *Server) build(vs *ValueSet, path []string) error {
	vs.members = map[string]int{}
	excluded := map[string]bool{}
	for _, rule := range vs.compose.Exclude {
		codings, err := s.rule(rule, path)
		if err != nil {
			return err
		}
		for _, c := range codings {
			excluded[c.System+"|"+c.Code] = true
		}
	}
	for _, rule := range vs.compose.Include {
		codings, err := s.rule(rule, path)
		if err != nil {
			return err
		}
		for _, c := range codings {
			key := c.System + "|" + c.Code
			if _, seen := vs.members[key]; seen || excluded[key] {
				continue
			}
			vs.members[key] = len(vs.expansion)
			vs.expansion = append(vs.expansion, c)
		}
	}
	return nil
}

// rule is the codes one include or exclude of a compose selects.
func (s *Server) rule(r composeRule, path []string) ([]Coding, error) {
	var fromSystem []Coding
	if r.System != "" {
		cs := s.CodeSystem(r.System)
		if cs == nil {
			return nil, fmt.Errorf("value set %s includes code system %s, which this server does not know", path[len(path)-1], r.System)
		}
		selected, err := selectConcepts(cs, r)
		if err != nil {
			return nil, fmt.Errorf("value set %s: %w", path[len(path)-1], err)
		}
		fromSystem = selected
	}
	if len(r.ValueSet) == 0 {
		return fromSystem, nil
	}
	// Imported value sets intersect each other and the system's selection.
	var out []Coding
	for i, url := range r.ValueSet {
		vs := s.ValueSet(url)
		if vs == nil {
			return nil, fmt.Errorf("value set %s imports %s, which this server does not know", path[len(path)-1], url)
		}
		if err := s.expand(vs, path); err != nil {
			return nil, err
		}
		if i == 0 && r.System == "" {
			out = append(out, vs.expansion...)
			continue
		}
		base := out
		if i == 0 {
			base = fromSystem
		}
		out = nil
		for _, c := range base {
			if _, ok := vs.members[c.System+"|"+c.Code]; ok {
				out = append(out, c)
			}
		}
	}
	return out, nil
}

func selectConcepts(cs *CodeSystem, r composeRule) ([]Coding, error) {
	coding := func(c *Concept) Coding {
		return Coding{System: cs.URL, Version: cs.Version, Code: c.Code, Display: c.Display, Abstract: c.abstract()}
	}
	if len(r.Concept) > 0 {
		out := make([]Coding, 0, len(r.Concept))
		for _, want := range r.Concept {
			c := cs.byCode[want.Code]
			if c == nil {
				return nil, fmt.Errorf("code %q is not in code system %s", want.Code, cs.URL)
			}
			cd := coding(c)
			if want.Display != "" {
				cd.Display = want.Display
			}
			out = append(out, cd)
		}
		return out, nil
	}
	var out []Coding
	var walk func([]*Concept) error
	walk = func(list []*Concept) error {
		for _, c := range list {
			ok := true
			for _, f := range r.Filter {
				match, err := c.matches(f.Property, f.Op, f.Value)
				if err != nil {
					return fmt.Errorf("code system %s: %w", cs.URL, err)
				}
				ok = ok && match
			}
			if ok {
				out = append(out, coding(c))
			}
			if err := walk(c.Children); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(cs.Concepts)
}

// matches applies one ValueSet.compose filter: "=" on a property (or "concept" for the
// code itself), "is-a" and "descendent-of" on the hierarchy; others are refused, so that a
// definition using them is noticed rather than expanded wrongly.
func (c *Concept) matches(property, op, value string) (bool, error) {
	switch op {
	case "=":
		if property == "concept" || property == "code" {
			return c.Code == value, nil
		}
		return slices.Contains(c.Properties[property], value), nil
	case "is-a", "descendent-of":
		if op == "is-a" && c.Code == value {
			return true, nil
		}
		for p := c.parent; p != nil; p = p.parent {
			if p.Code == value {
				return true, nil
			}
		}
		return false, nil
	}
	return false, fmt.Errorf("filter op %q is not supported (=, is-a, descendent-of are)", op)
}

func (c *Concept) abstract() bool { return slices.Contains(c.Properties["abstract"], "true") }

// Validation is the answer to "is this code in the value set?".
type Validation struct {
	Result bool
	// Message says why not, or what is amiss with a code that is in it (a display that is
	// not the code's).
	Message string
	// Display is the code's display, when known.
	Display string
}

// ValidateCode tells whether system|code is in vs, and whether display (if given) is the
// code's. It is the one test of membership: the registry's bindings call it too (InValueSet).
func (s *Server) ValidateCode(vs *ValueSet, system, code, display string) (Validation, error) {
	if err := s.expand(vs, nil); err != nil {
		return Validation{}, err
	}
	if system == "" {
		// A bare code (validate-code's "code" without "system") is found if exactly one
		// system of the value set has it.
		var found []Coding
		for _, c := range vs.expansion {
			if c.Code == code {
				found = append(found, c)
			}
		}
		if len(found) != 1 {
			msg := fmt.Sprintf("code %q is not in value set %s", code, vs.URL)
			if len(found) > 1 {
				msg = fmt.Sprintf("code %q is in several code systems of value set %s: give its system", code, vs.URL)
			}
			return Validation{Message: msg}, nil
		}
		system = found[0].System
	}
	i, ok := vs.members[system+"|"+code]
	if !ok {
		msg := fmt.Sprintf("%s|%s is not in value set %s", system, code, vs.URL)
		if cs := s.CodeSystem(system); cs == nil {
			msg += fmt.Sprintf(" (code system %s is not known to this server)", system)
		} else if cs.byCode[code] == nil {
			msg += fmt.Sprintf(" (code system %s has no code %q)", system, code)
		}
		return Validation{Message: msg}, nil
	}
	c := vs.expansion[i]
	v := Validation{Result: true, Display: c.Display}
	if display != "" && c.Display != "" && !strings.EqualFold(display, c.Display) {
		v.Result = false
		v.Message = fmt.Sprintf("the display of %s|%s is %q, not %q", system, code, c.Display, display)
	}
	return v, nil
}

// InValueSet tells whether system|code is in the value set with url. An unknown value set is
// an error: a binding to it is a mistake in the server's own definitions.
func (s *Server) InValueSet(url, system, code string) (bool, error) {
	vs := s.ValueSet(url)
	if vs == nil {
		return false, fmt.Errorf("terminology: value set %s is not known", url)
	}
	v, err := s.ValidateCode(vs, system, code, "")
	return v.Result, err
}

// Counts is how many code systems and value sets the server defines itself (not its base's).
func (s *Server) Counts() (codeSystems, valueSets int) { return len(s.systems), len(s.valueSets) }
