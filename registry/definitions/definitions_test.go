// Package definitions_test checks the registry's published conformance resources: that the
// strict R4 parser accepts every file, that ids, canonical URLs and element ids agree, that
// what a profile points at (extension profiles, codes of the registry's own CodeSystems) exists,
// and that the SearchParameters are the ones the server searches with.
package definitions_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/fhirpath"
	"github.com/cartreg/cartreg/fhir/searchparam"
)

const (
	canonical = "http://cartreg.org/fhir"
	coreSD    = "http://hl7.org/fhir/StructureDefinition/"
)

type coding struct {
	System string `json:"system"`
	Code   string `json:"code"`
}

type codeableConcept struct {
	Coding []coding `json:"coding"`
}

type typeRef struct {
	Code          string   `json:"code"`
	Profile       []string `json:"profile"`
	TargetProfile []string `json:"targetProfile"`
}

type elementDefinition struct {
	ID        string    `json:"id"`
	Path      string    `json:"path"`
	SliceName string    `json:"sliceName"`
	Min       *int      `json:"min"`
	Max       string    `json:"max"`
	Type      []typeRef `json:"type"`
	Slicing   *struct {
		Discriminator []struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"discriminator"`
		Rules string `json:"rules"`
	} `json:"slicing"`
	Binding *struct {
		Strength string `json:"strength"`
		ValueSet string `json:"valueSet"`
	} `json:"binding"`
	FixedURI               string           `json:"fixedUri"`
	PatternCodeableConcept *codeableConcept `json:"patternCodeableConcept"`
	FixedCodeableConcept   *codeableConcept `json:"fixedCodeableConcept"`
	PatternCoding          *coding          `json:"patternCoding"`
	FixedCoding            *coding          `json:"fixedCoding"`
	Constraint             []struct {
		Key        string `json:"key"`
		Expression string `json:"expression"`
	} `json:"constraint"`
}

type structureDefinition struct {
	ID             string `json:"id"`
	URL            string `json:"url"`
	Version        string `json:"version"`
	Status         string `json:"status"`
	FhirVersion    string `json:"fhirVersion"`
	Publisher      string `json:"publisher"`
	Description    string `json:"description"`
	Kind           string `json:"kind"`
	Abstract       *bool  `json:"abstract"`
	Derivation     string `json:"derivation"`
	Type           string `json:"type"`
	BaseDefinition string `json:"baseDefinition"`
	Context        []struct {
		Type       string `json:"type"`
		Expression string `json:"expression"`
	} `json:"context"`
	Snapshot     json.RawMessage `json:"snapshot"`
	Differential struct {
		Element []elementDefinition `json:"element"`
	} `json:"differential"`
}

type concept struct {
	Code    string    `json:"code"`
	Concept []concept `json:"concept"`
}

type codeSystem struct {
	ID      string    `json:"id"`
	URL     string    `json:"url"`
	Count   *int      `json:"count"`
	Concept []concept `json:"concept"`
}

// definition is one file of the folder.
type definition struct {
	file, resourceType, id string
	raw                    []byte
}

// loadDefinitions reads every StructureDefinition and CodeSystem file of the folder (the
// test's working directory is the folder itself), and the server's own SearchParameters,
// which the registry publishes with them.
func loadDefinitions(t *testing.T) []definition {
	t.Helper()
	var defs []definition
	params, err := searchparam.CustomDefinitions()
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range params {
		var sp struct{ ID string }
		if err := json.Unmarshal(raw, &sp); err != nil {
			t.Fatal(err)
		}
		defs = append(defs, definition{file: "searchparam:" + sp.ID, resourceType: "SearchParameter", id: sp.ID, raw: raw})
	}
	for _, rt := range []string{"StructureDefinition", "CodeSystem", "ValueSet"} {
		files, err := filepath.Glob(rt + "-*.json")
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			t.Fatalf("no %s-*.json files", rt)
		}
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			id := strings.TrimSuffix(strings.TrimPrefix(f, rt+"-"), ".json")
			defs = append(defs, definition{file: f, resourceType: rt, id: id, raw: raw})
		}
	}
	return defs
}

func decode(t *testing.T, d definition, v any) {
	t.Helper()
	if err := json.Unmarshal(d.raw, v); err != nil {
		t.Fatalf("%s: %v", d.file, err)
	}
}

func structureDefinitions(t *testing.T) map[string]*structureDefinition {
	t.Helper()
	out := map[string]*structureDefinition{}
	for _, d := range loadDefinitions(t) {
		if d.resourceType == "StructureDefinition" {
			sd := &structureDefinition{}
			decode(t, d, sd)
			out[d.file] = sd
		}
	}
	return out
}

// codeSystems indexes the folder's CodeSystems by canonical URL.
func codeSystems(t *testing.T) map[string]*codeSystem {
	t.Helper()
	out := map[string]*codeSystem{}
	for _, d := range loadDefinitions(t) {
		if d.resourceType == "CodeSystem" {
			cs := &codeSystem{}
			decode(t, d, cs)
			out[cs.URL] = cs
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// The server publishes these files with fhir.Parse at start-up; one it rejects stops the
// server, so every issue is reported here with its location.
func TestDefinitionsParseAsR4(t *testing.T) {
	for _, d := range loadDefinitions(t) {
		t.Run(d.file, func(t *testing.T) {
			res, err := fhir.Parse(d.raw)
			var out *fhir.Outcome
			if errors.As(err, &out) {
				for _, is := range out.Issues {
					t.Errorf("%s %s: %s", is.Severity, strings.Join(is.Expression, ", "), is.Diagnostics)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Type != d.resourceType {
				t.Errorf("resourceType %q in a file named %s", res.Type, d.file)
			}
			if res.ID != d.id {
				t.Errorf("id %q, want %q from the file name", res.ID, d.id)
			}
			want := canonical + "/" + d.resourceType + "/" + d.id
			if url, _ := res.Body["url"].(string); url != want {
				t.Errorf("url %q, want %q", url, want)
			}
		})
	}
}

func TestStructureDefinitionMetadata(t *testing.T) {
	sds := structureDefinitions(t)
	for _, file := range sortedKeys(sds) {
		sd := sds[file]
		t.Run(sd.ID, func(t *testing.T) {
			for _, f := range []struct{ name, got, want string }{
				{"version", sd.Version, "1.0.0"},
				{"status", sd.Status, "active"},
				{"fhirVersion", sd.FhirVersion, "4.0.1"},
				{"publisher", sd.Publisher, "cartreg"},
				{"derivation", sd.Derivation, "constraint"},
			} {
				if f.got != f.want {
					t.Errorf("%s %q, want %q", f.name, f.got, f.want)
				}
			}
			if strings.TrimSpace(sd.Description) == "" {
				t.Error("no description")
			}
			if sd.Abstract == nil || *sd.Abstract {
				t.Error("abstract must be false")
			}
			if len(sd.Snapshot) > 0 {
				t.Error("a snapshot: the registry publishes differentials only")
			}
			if sd.BaseDefinition != coreSD+sd.Type {
				t.Errorf("baseDefinition %q for type %q", sd.BaseDefinition, sd.Type)
			}
			if len(sd.Differential.Element) == 0 {
				t.Fatal("empty differential")
			}
			if sd.Type == "Extension" {
				checkExtension(t, sd)
				return
			}
			if sd.Kind != "resource" || !fhir.IsResourceType(sd.Type) {
				t.Errorf("kind %q, type %q: a profile must constrain a resource", sd.Kind, sd.Type)
			}
			if len(sd.Context) > 0 {
				t.Error("a profile has no context")
			}
		})
	}
}

func checkExtension(t *testing.T, sd *structureDefinition) {
	t.Helper()
	if sd.Kind != "complex-type" {
		t.Errorf("kind %q, want complex-type", sd.Kind)
	}
	if len(sd.Context) == 0 {
		t.Error("an extension needs a context")
	}
	for _, c := range sd.Context {
		if c.Type != "element" || !fhir.IsResourceType(c.Expression) {
			t.Errorf("context %s %q: want an element context naming a resource", c.Type, c.Expression)
		}
	}
	var url, value *elementDefinition
	for i, e := range sd.Differential.Element {
		switch e.ID {
		case "Extension.url":
			url = &sd.Differential.Element[i]
		case "Extension.value[x]":
			value = &sd.Differential.Element[i]
		}
	}
	if url == nil || url.FixedURI != sd.URL {
		t.Errorf("Extension.url must be fixed to %s", sd.URL)
	}
	if value == nil || value.Min == nil || *value.Min != 1 || len(value.Type) != 1 {
		t.Error("Extension.value[x] must be 1..1 with one type")
	}
}

var sliceOfID = regexp.MustCompile(`:[^.]+`)

// Element ids are the path with the slice names of the elements on the way; every path names
// an element R4 has; each slice is introduced by its slicing, and extension slices are on url.
func TestElementIDsAndPaths(t *testing.T) {
	sds := structureDefinitions(t)
	for _, file := range sortedKeys(sds) {
		sd := sds[file]
		t.Run(sd.ID, func(t *testing.T) {
			seen := map[string]bool{}
			sliced := map[string]bool{} // ids of elements with a slicing
			for i, e := range sd.Differential.Element {
				if e.ID == "" || e.Path == "" {
					t.Errorf("element %d has no id or path", i)
					continue
				}
				if seen[e.ID] {
					t.Errorf("%s: duplicate id", e.ID)
				}
				seen[e.ID] = true
				if got := sliceOfID.ReplaceAllString(e.ID, ""); got != e.Path {
					t.Errorf("%s: id without slice names is %q, path is %q", e.ID, got, e.Path)
				}
				if e.Path != sd.Type && !strings.HasPrefix(e.Path, sd.Type+".") {
					t.Errorf("%s: path outside %s", e.ID, sd.Type)
				}
				last := e.ID[strings.LastIndex(e.ID, ".")+1:]
				if _, name, ok := strings.Cut(last, ":"); ok != (e.SliceName != "") || name != e.SliceName {
					t.Errorf("%s: sliceName %q does not match the id", e.ID, e.SliceName)
				}
				if e.SliceName != "" {
					parent := strings.TrimSuffix(e.ID, ":"+e.SliceName)
					if !sliced[parent] {
						t.Errorf("%s: a slice of %s, which has no slicing before it", e.ID, parent)
					}
				}
				if e.Slicing != nil {
					sliced[e.ID] = true
					if strings.HasSuffix(e.Path, ".extension") {
						d := e.Slicing.Discriminator
						if len(d) != 1 || d[0].Type != "value" || d[0].Path != "url" || e.Slicing.Rules != "open" {
							t.Errorf("%s: extensions are sliced by value of url, open", e.ID)
						}
					}
				}
				if e.SliceName != "" && strings.HasSuffix(e.Path, ".extension") {
					if len(e.Type) != 1 || e.Type[0].Code != "Extension" || len(e.Type[0].Profile) != 1 {
						t.Errorf("%s: an extension slice has type Extension with one profile", e.ID)
					}
				}
				if e.Max != "" && e.Max != "*" {
					n, err := strconv.Atoi(e.Max)
					if err != nil || n < 0 || e.Min != nil && *e.Min > n {
						t.Errorf("%s: max %q (min %s)", e.ID, e.Max, minString(e.Min))
					}
				}
				checkPathExists(t, sd.Type, e)
			}
		})
	}
}

func minString(m *int) string {
	if m == nil {
		return "not set"
	}
	return strconv.Itoa(*m)
}

// checkPathExists asks the R4 type system (through the FHIRPath checker) whether the element
// exists; a choice element [x] is named without its suffix.
func checkPathExists(t *testing.T, resourceType string, e elementDefinition) {
	t.Helper()
	if !fhir.IsResourceType(resourceType) || e.Path == resourceType {
		return // Extension's own elements are not resource paths
	}
	path := strings.ReplaceAll(e.Path, "[x]", "")
	if err := check(resourceType, path); err != nil {
		t.Errorf("%s: no such R4 element: %v", e.ID, err)
		return
	}
	// A type the element cannot have is a constraint nothing can meet.
	for _, ty := range e.Type {
		if err := check(resourceType, path+".ofType("+ty.Code+")"); err != nil {
			t.Errorf("%s: type %q: %v", e.ID, ty.Code, err)
		}
	}
}

func check(resourceType, src string) error {
	expr, err := fhirpath.Compile(src)
	if err != nil {
		return err
	}
	return expr.Check(resourceType)
}

// Every profile of the registry's own that a profile uses is one of these files.
func TestReferencedProfilesExist(t *testing.T) {
	sds := structureDefinitions(t)
	known := map[string]*structureDefinition{}
	for _, sd := range sds {
		known[sd.URL] = sd
	}
	for _, file := range sortedKeys(sds) {
		for _, e := range sds[file].Differential.Element {
			// A binding to one of the registry's canonicals must name a ValueSet of this
			// folder (not a CodeSystem's URL, say, which google/fhir accepts).
			if e.Binding != nil && strings.HasPrefix(e.Binding.ValueSet, canonical+"/") &&
				!fileExists("ValueSet-"+strings.TrimPrefix(e.Binding.ValueSet, canonical+"/ValueSet/")+".json") {
				t.Errorf("%s %s: binding to %s, which is not a published ValueSet", file, e.ID, e.Binding.ValueSet)
			}
			for _, ty := range e.Type {
				if len(ty.TargetProfile) > 0 && ty.Code != "Reference" && ty.Code != "canonical" {
					t.Errorf("%s %s: targetProfile on type %s (only Reference and canonical have targets)", file, e.ID, ty.Code)
				}
				for _, p := range append(append([]string{}, ty.Profile...), ty.TargetProfile...) {
					if strings.HasPrefix(p, coreSD) {
						if !fhir.IsResourceType(strings.TrimPrefix(p, coreSD)) && ty.Code != "Extension" {
							t.Errorf("%s %s: %s is not an R4 resource", file, e.ID, p)
						}
						continue
					}
					if !strings.HasPrefix(p, canonical+"/StructureDefinition/") {
						continue
					}
					target, ok := known[p]
					if !ok {
						t.Errorf("%s %s: %s is not a StructureDefinition of this folder", file, e.ID, p)
						continue
					}
					if ty.Code != target.Type {
						t.Errorf("%s %s: type %s with profile %s of type %s", file, e.ID, ty.Code, p, target.Type)
					}
				}
			}
		}
	}
}

func countConcepts(cs []concept) int {
	n := 0
	for _, c := range cs {
		n += 1 + countConcepts(c.Concept)
	}
	return n
}

func collectCodes(cs []concept, into map[string]bool) {
	for _, c := range cs {
		into[c.Code] = true
		collectCodes(c.Concept, into)
	}
}

func TestCodeSystemCounts(t *testing.T) {
	css := codeSystems(t)
	for _, url := range sortedKeys(css) {
		cs := css[url]
		n := countConcepts(cs.Concept)
		if cs.Count == nil {
			t.Errorf("CodeSystem %s: no count (%d concepts)", cs.ID, n)
		} else if *cs.Count != n {
			t.Errorf("CodeSystem %s: count %d, but %d concepts (nested included)", cs.ID, *cs.Count, n)
		}
		codes := map[string]bool{}
		collectCodes(cs.Concept, codes)
		if len(codes) != n {
			t.Errorf("CodeSystem %s: %d concepts but %d distinct codes", cs.ID, n, len(codes))
		}
	}
}

// A fixed or pattern coding in one of the registry's own systems names a code that system has
// (a coding with a system and no code, which only requires the system, is fine).
func TestPatternCodesExist(t *testing.T) {
	css := codeSystems(t)
	codes := map[string]map[string]bool{}
	for url, cs := range css {
		codes[url] = map[string]bool{}
		collectCodes(cs.Concept, codes[url])
	}
	sds := structureDefinitions(t)
	checked := 0
	for _, file := range sortedKeys(sds) {
		for _, e := range sds[file].Differential.Element {
			var cs []coding
			for _, cc := range []*codeableConcept{e.PatternCodeableConcept, e.FixedCodeableConcept} {
				if cc != nil {
					cs = append(cs, cc.Coding...)
				}
			}
			for _, c := range []*coding{e.PatternCoding, e.FixedCoding} {
				if c != nil {
					cs = append(cs, *c)
				}
			}
			for _, c := range cs {
				if !strings.HasPrefix(c.System, canonical+"/") {
					continue
				}
				known, ok := codes[c.System]
				if !ok {
					t.Errorf("%s %s: %s is not a CodeSystem of this folder", file, e.ID, c.System)
					continue
				}
				if c.Code != "" && !known[c.Code] {
					t.Errorf("%s %s: code %q is not in %s", file, e.ID, c.Code, c.System)
				}
				checked++
			}
		}
	}
	if checked == 0 {
		t.Error("no pattern coding of the registry's systems found; is the test reading the right fields?")
	}
}

// constraintExpr turns an element's invariant into an expression over the resource: the
// element's nodes that satisfy it. The invariant holds when they are all of the element's nodes.
func constraintExpr(e elementDefinition, expression string) (all, passing string) {
	path := strings.ReplaceAll(e.Path, "[x]", "")
	return path, path + ".where(" + expression + ")"
}

// The invariants stand in for the ValueSets the registry does not publish. They must be in the
// FHIRPath subset the server evaluates, name only R4 elements, and accept and reject what
// README.md says.
func TestInvariants(t *testing.T) {
	type invariant struct{ all, passing *fhirpath.Expression }
	invariants := map[string]invariant{}
	sds := structureDefinitions(t)
	for _, file := range sortedKeys(sds) {
		sd := sds[file]
		for _, e := range sd.Differential.Element {
			for _, c := range e.Constraint {
				all, passing := constraintExpr(e, c.Expression)
				pe, err := fhirpath.Compile(passing)
				if err != nil {
					t.Errorf("%s %s %s: %v", file, e.ID, c.Key, err)
					continue
				}
				if err := pe.Check(sd.Type); err != nil {
					t.Errorf("%s %s %s: %v", file, e.ID, c.Key, err)
				}
				if _, dup := invariants[c.Key]; dup {
					t.Errorf("%s: invariant key %s used twice", file, c.Key)
				}
				invariants[c.Key] = invariant{fhirpath.MustCompile(all), pe}
			}
		}
	}
	cases := []struct {
		key, resource string
		holds         bool
	}{
		{"cartreg-ra-1", `{"resourceType":"Observation","status":"final"}`, true},
		{"cartreg-ra-1", `{"resourceType":"Observation","status":"corrected"}`, true},
		{"cartreg-ra-1", `{"resourceType":"Observation","status":"preliminary"}`, false},
		{"cartreg-ra-2", `{"resourceType":"Observation","component":[{"code":{"coding":[{"system":"http://cartreg.org/fhir/CodeSystem/cartreg","code":"mrd"}]},
			"valueCodeableConcept":{"coding":[{"system":"http://cartreg.org/fhir/CodeSystem/cartreg","code":"mrd-negative"}]}}]}`, true},
		{"cartreg-ra-2", `{"resourceType":"Observation","component":[{"code":{"coding":[{"system":"http://cartreg.org/fhir/CodeSystem/cartreg","code":"mrd"}]},
			"valueCodeableConcept":{"text":"negative"}}]}`, false},
		{"cartreg-tox-1", `{"resourceType":"AdverseEvent","event":{"coding":[{"system":"http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl","code":"C143394"}]}}`, true},
		{"cartreg-tox-1", `{"resourceType":"AdverseEvent","event":{"coding":[{"system":"http://cartreg.org/fhir/CodeSystem/cartreg","code":"icans"}]}}`, true},
		{"cartreg-tox-1", `{"resourceType":"AdverseEvent","event":{"coding":[{"system":"http://cartreg.org/fhir/CodeSystem/cartreg","code":"crs"}]}}`, true},
		{"cartreg-tox-1", `{"resourceType":"AdverseEvent","event":{"coding":[{"system":"http://snomed.info/sct","code":"C143394"}]}}`, false},
		{"cartreg-tox-1", `{"resourceType":"AdverseEvent","event":{"coding":[{"system":"http://cartreg.org/fhir/CodeSystem/cartreg","code":"mrd"}]}}`, false},
	}
	tested := map[string]bool{}
	for _, c := range cases {
		inv, ok := invariants[c.key]
		if !ok {
			t.Errorf("no invariant %s in the StructureDefinitions", c.key)
			continue
		}
		tested[c.key] = true
		var res map[string]any
		if err := json.Unmarshal([]byte(c.resource), &res); err != nil {
			t.Fatal(err)
		}
		all, err := inv.all.Evaluate(res)
		if err != nil {
			t.Fatal(err)
		}
		passing, err := inv.passing.Evaluate(res)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) == 0 {
			t.Errorf("%s: the case has nothing for the invariant to apply to: %s", c.key, c.resource)
		}
		if holds := len(passing) == len(all); holds != c.holds {
			t.Errorf("%s on %s: holds %v, want %v", c.key, c.resource, holds, c.holds)
		}
	}
	for key := range invariants {
		if !tested[key] {
			t.Errorf("invariant %s has no test case", key)
		}
	}
}

// google/fhir accepts a few things FHIR forbids (empty arrays, null, an element with both a
// fixed and a pattern value); these are checked on every definition as written.
func TestNoEmptyValues(t *testing.T) {
	for _, d := range loadDefinitions(t) {
		var v any
		decode(t, d, &v)
		walkJSON(v, d.resourceType, func(path string, v any) {
			switch v := v.(type) {
			case nil:
				t.Errorf("%s %s: null", d.file, path)
			case string:
				if strings.TrimSpace(v) == "" {
					t.Errorf("%s %s: empty string", d.file, path)
				}
			case []any:
				if len(v) == 0 {
					t.Errorf("%s %s: empty array", d.file, path)
				}
			case map[string]any:
				if len(v) == 0 {
					t.Errorf("%s %s: empty object", d.file, path)
				}
				var fixed, pattern []string
				for k := range v {
					if strings.HasPrefix(k, "fixed") {
						fixed = append(fixed, k)
					}
					if strings.HasPrefix(k, "pattern") {
						pattern = append(pattern, k)
					}
				}
				if len(fixed) > 0 && len(pattern) > 0 {
					t.Errorf("%s %s: both %v and %v (an element has a fixed value or a pattern, not both)", d.file, path, fixed, pattern)
				}
			}
		})
	}
}

func walkJSON(v any, path string, visit func(path string, v any)) {
	visit(path, v)
	switch v := v.(type) {
	case []any:
		for i, item := range v {
			walkJSON(item, path+"["+strconv.Itoa(i)+"]", visit)
		}
	case map[string]any:
		for _, k := range sortedKeys(v) {
			walkJSON(v[k], path+"."+k, visit)
		}
	}
}

type searchParameter struct {
	ID          string   `json:"id"`
	URL         string   `json:"url"`
	Version     string   `json:"version"`
	Name        string   `json:"name"`
	Status      string   `json:"status"`
	Publisher   string   `json:"publisher"`
	Description string   `json:"description"`
	Code        string   `json:"code"`
	Base        []string `json:"base"`
	Type        string   `json:"type"`
	Expression  string   `json:"expression"`
	Target      []string `json:"target"`
}

// The server's own SearchParameters, published as they are compiled, are complete resources
// under the registry's canonical base, and each is one the server searches with.
func TestSearchParametersAreTheServers(t *testing.T) {
	if searchparam.CustomBase != canonical+"/SearchParameter/" {
		t.Errorf("searchparam.CustomBase %q is not under the registry's canonical base %s", searchparam.CustomBase, canonical)
	}
	params := searchparam.Default()
	published := map[string]bool{} // "Type:code"
	for _, d := range loadDefinitions(t) {
		if d.resourceType != "SearchParameter" {
			continue
		}
		sp := &searchParameter{}
		decode(t, d, sp)
		t.Run(sp.ID, func(t *testing.T) {
			for _, f := range []struct{ name, got, want string }{
				{"version", sp.Version, "1.0.0"},
				{"status", sp.Status, "active"},
				{"publisher", sp.Publisher, "cartreg"},
			} {
				if f.got != f.want {
					t.Errorf("%s %q, want %q", f.name, f.got, f.want)
				}
			}
			if sp.Name == "" || len(sp.Base) == 0 {
				t.Error("no name or base")
			}
			for _, base := range sp.Base {
				published[base+":"+sp.Code] = true
				def, ok := params.Lookup(base, sp.Code)
				if !ok {
					t.Errorf("the server has no %s parameter %s", base, sp.Code)
					continue
				}
				if def.URL != sp.URL {
					t.Errorf("the server's %s %s is %s, not %s", base, sp.Code, def.URL, sp.URL)
				}
			}
		})
	}
	if len(published) == 0 {
		t.Error("no SearchParameter published")
	}
}

func fileExists(name string) bool {
	_, err := os.Stat(name)
	return err == nil && !strings.Contains(name, "/")
}
