package registry

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/cartreg/cartreg/fhir/terminology"
)

// Definitions holds the registry's published conformance resources: its CodeSystems,
// ValueSets and StructureDefinitions, as JSON files. The CodeSystems are also the registry's terminology:
// which categories belong to which response scheme, how a product maps to its targets, which
// ICD-10-CM codes make a disease group. Changing a file changes both what is published and
// how data is read, so the two cannot drift apart.
//
//go:embed definitions/*.json
var Definitions embed.FS

// Canonical is the base of every canonical URL the registry defines.
const Canonical = "http://cartreg.org/fhir"

// URLs of the registry's code systems and extensions, and the standard codes it reads.
const (
	SystemProduct   = Canonical + "/CodeSystem/cart-product"
	SystemTarget    = Canonical + "/CodeSystem/target-antigen"
	SystemResponse  = Canonical + "/CodeSystem/response-category"
	SystemDisease   = Canonical + "/CodeSystem/disease-group"
	SystemCartreg   = Canonical + "/CodeSystem/cartreg"
	SystemMilestone = Canonical + "/CodeSystem/follow-up-milestone"

	// ValueSetResponse is every response category; a scheme's own are ValueSetResponseOf's.
	ValueSetResponse = Canonical + "/ValueSet/response-category"

	ExtTargetAntigen = Canonical + "/StructureDefinition/target-antigen"
	ExtPriorLines    = Canonical + "/StructureDefinition/prior-lines-of-therapy"
	ExtTreatingSite  = Canonical + "/StructureDefinition/treating-site"
	ExtASTCTGrade    = Canonical + "/StructureDefinition/astct-grade"

	ProfileInfusion       = Canonical + "/StructureDefinition/cart-infusion"
	ProfileInfusionMedAdm = Canonical + "/StructureDefinition/cart-infusion-medication-administration"
	ProfileAssessment     = Canonical + "/StructureDefinition/remission-assessment"
	ProfileToxicity       = Canonical + "/StructureDefinition/cart-toxicity"

	SystemLOINC     = "http://loinc.org"
	CodeDiseaseStat = "97509-4" // LOINC: cancer disease status (mCODE CancerDiseaseStatus)
	// CodeDiseaseStatSTU1 is the code mCODE STU1 used (88040-1), still sent by older EHR builds.
	CodeDiseaseStatSTU1 = "88040-1"
	SystemSNOMED        = "http://snomed.info/sct"
	SystemICD10CM       = "http://hl7.org/fhir/sid/icd-10-cm"
	SystemICD10PCS      = "http://www.cms.gov/Medicare/Coding/ICD10"
	SystemRxNorm        = "http://www.nlm.nih.gov/research/umls/rxnorm"
	CodeCRSNCIt         = "C143394"
)

// Category is a response category of one scheme (Lugano, IMWG, ALL, SLE).
type Category struct {
	Code, Display, Scheme string
	Rank                  int    // 1 is the scheme's best
	MCODEStatus           string // the mCODE CancerDiseaseStatus SNOMED CT value it maps to
	Complete, Response    bool   // counts toward the complete-response / overall response rate
	Progression           bool   // an event for progression-free survival
}

// Product is a CAR-T product of the registry's code system.
type Product struct {
	Code, Display string
	Targets       []string
	RxNorm, PCS   string
}

// Disease is a disease group outcomes are reported by.
type Disease struct {
	Code, Display, Scheme string
	ICD10Prefixes         []string
	SNOMED                []string
}

// Terminology is what the registry's code systems say, indexed for reading resources.
type Terminology struct {
	Categories   map[string]*Category
	Schemes      map[string][]*Category // best first
	SchemeNames  map[string]string
	Products     map[string]*Product
	productByAlt map[string]string // "system|code" of RxNorm and ICD-10-PCS codes -> product code
	Targets      []string          // the code system's order: multi-target labels follow it
	Diseases     []*Disease
	Milestones   map[string]string // code -> display
	// Codes is the server's terminology: these code systems and the registry's value sets,
	// over R4's. Every binding the registry checks asks it (InValueSet), as
	// ValueSet/$validate-code does.
	Codes *terminology.Server
}

// ValueSetResponseOf is the value set of a response scheme's categories (lugano, imwg, …).
func ValueSetResponseOf(scheme string) string { return Canonical + "/ValueSet/response-" + scheme }

// InValueSet tells whether system|code is in the value set with url, through the same code
// path as ValueSet/$validate-code. LoadTerminology has expanded every value set the
// registry binds to, so a false is the code's fault, never a broken definition's.
func (t *Terminology) InValueSet(url, system, code string) bool {
	ok, err := t.Codes.InValueSet(url, system, code)
	return ok && err == nil
}

type codeSystem struct {
	URL     string    `json:"url"`
	Concept []concept `json:"concept"`
}

type concept struct {
	Code     string     `json:"code"`
	Display  string     `json:"display"`
	Property []property `json:"property"`
	Concept  []concept  `json:"concept"`
}

type property struct {
	Code         string `json:"code"`
	ValueCode    string `json:"valueCode"`
	ValueString  string `json:"valueString"`
	ValueInteger *int   `json:"valueInteger"`
	ValueBoolean *bool  `json:"valueBoolean"`
}

func (c concept) values(code string) []string {
	var out []string
	for _, p := range c.Property {
		if p.Code == code {
			out = append(out, p.ValueCode+p.ValueString)
		}
	}
	return out
}

func (c concept) value(code string) string {
	if v := c.values(code); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c concept) boolean(code string) bool {
	for _, p := range c.Property {
		if p.Code == code && p.ValueBoolean != nil {
			return *p.ValueBoolean
		}
	}
	return false
}

func (c concept) integer(code string) int {
	for _, p := range c.Property {
		if p.Code == code && p.ValueInteger != nil {
			return *p.ValueInteger
		}
	}
	return 0
}

// LoadTerminology reads the embedded code systems.
func LoadTerminology() (*Terminology, error) {
	systems := map[string]codeSystem{}
	r4, err := terminology.R4()
	if err != nil {
		return nil, err
	}
	codes := terminology.New(r4)
	files, err := fs.Glob(Definitions, "definitions/*.json")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		raw, err := Definitions.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := codes.AddJSON(raw, "cartreg registry definitions"); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if !strings.HasPrefix(f, "definitions/CodeSystem-") {
			continue
		}
		var cs codeSystem
		if err := json.Unmarshal(raw, &cs); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		systems[cs.URL] = cs
	}
	t := &Terminology{
		Categories: map[string]*Category{}, Schemes: map[string][]*Category{}, SchemeNames: map[string]string{},
		Products: map[string]*Product{}, productByAlt: map[string]string{}, Milestones: map[string]string{},
		Codes: codes,
	}
	for _, scheme := range systems[SystemResponse].Concept {
		t.SchemeNames[scheme.Code] = scheme.Display
		for _, c := range scheme.Concept {
			cat := &Category{
				Code: c.Code, Display: c.Display, Scheme: c.value("scheme"), Rank: c.integer("rank"),
				MCODEStatus: c.value("mcode-status"), Complete: c.boolean("complete-response"),
				Response: c.boolean("response"), Progression: c.boolean("progression"),
			}
			t.Categories[cat.Code] = cat
			t.Schemes[cat.Scheme] = append(t.Schemes[cat.Scheme], cat)
		}
	}
	for _, cats := range t.Schemes {
		sort.SliceStable(cats, func(i, j int) bool { return cats[i].Rank < cats[j].Rank })
	}
	for _, c := range systems[SystemProduct].Concept {
		p := &Product{Code: c.Code, Display: c.Display, Targets: c.values("target"), RxNorm: c.value("rxnorm"), PCS: c.value("icd-10-pcs")}
		t.Products[p.Code] = p
		if p.RxNorm != "" {
			t.productByAlt[SystemRxNorm+"|"+p.RxNorm] = p.Code
		}
		if p.PCS != "" {
			t.productByAlt[SystemICD10PCS+"|"+p.PCS] = p.Code
		}
	}
	for _, c := range systems[SystemTarget].Concept {
		t.Targets = append(t.Targets, c.Code)
	}
	for _, c := range systems[SystemDisease].Concept {
		t.Diseases = append(t.Diseases, &Disease{Code: c.Code, Display: c.Display, Scheme: c.value("scheme"),
			ICD10Prefixes: c.values("icd-10-cm-prefix"), SNOMED: c.values("snomed")})
	}
	for _, c := range systems[SystemMilestone].Concept {
		t.Milestones[c.Code] = c.Display
	}
	// The bindings the registry checks must expand now, so that a broken definition stops
	// the server at start-up instead of refusing good data later.
	bound := []string{ValueSetResponse}
	for scheme := range t.SchemeNames {
		bound = append(bound, ValueSetResponseOf(scheme))
	}
	for _, url := range bound {
		vs := codes.ValueSet(url)
		if vs == nil {
			return nil, fmt.Errorf("registry value set %s is missing from definitions/", url)
		}
		if _, err := codes.Expansion(vs); err != nil {
			return nil, err
		}
	}
	all, _ := codes.Expansion(codes.ValueSet(ValueSetResponse))
	for _, c := range all {
		if t.Categories[c.Code] == nil {
			return nil, fmt.Errorf("%s holds %s, which is no response category", ValueSetResponse, c.Code)
		}
	}
	if len(all) != len(t.Categories) {
		return nil, fmt.Errorf("%s holds %d codes, but there are %d response categories", ValueSetResponse, len(all), len(t.Categories))
	}
	if len(t.Categories) == 0 || len(t.Products) == 0 || len(t.Diseases) == 0 {
		return nil, fmt.Errorf("registry code systems incomplete: %d categories, %d products, %d diseases",
			len(t.Categories), len(t.Products), len(t.Diseases))
	}
	return t, nil
}

// DiseaseOf maps a condition code to its disease group: the longest matching ICD-10-CM
// prefix (so "C83.1" mantle cell wins over "C83" other lymphoma), or an exact SNOMED CT code.
func (t *Terminology) DiseaseOf(system, code string) *Disease {
	switch system {
	case SystemICD10CM, "http://hl7.org/fhir/sid/icd-10":
		var best *Disease
		bestLen := 0
		normalized := strings.ToUpper(code)
		for _, d := range t.Diseases {
			for _, p := range d.ICD10Prefixes {
				if strings.HasPrefix(normalized, p) && len(p) > bestLen {
					best, bestLen = d, len(p)
				}
			}
		}
		return best
	case SystemSNOMED:
		for _, d := range t.Diseases {
			for _, s := range d.SNOMED {
				if s == code {
					return d
				}
			}
		}
	}
	return nil
}

// Disease returns the disease group with that code.
func (t *Terminology) Disease(code string) *Disease {
	for _, d := range t.Diseases {
		if d.Code == code {
			return d
		}
	}
	return nil
}

// ProductFor maps a coding to a registry product code: the registry's own, or an RxNorm or
// ICD-10-PCS code the product code system lists.
func (t *Terminology) ProductFor(system, code string) (string, bool) {
	if system == SystemProduct {
		_, ok := t.Products[code]
		return code, ok
	}
	p, ok := t.productByAlt[system+"|"+code]
	return p, ok
}

// OrderTargets sorts antigens as the code system lists them (CD19 before BCMA), then others
// alphabetically, so a dual-target product always gets the same label.
func (t *Terminology) OrderTargets(targets []string) []string {
	rank := map[string]int{}
	for i, c := range t.Targets {
		rank[c] = i
	}
	out := append([]string(nil), targets...)
	sort.SliceStable(out, func(i, j int) bool {
		ri, iKnown := rank[out[i]]
		rj, jKnown := rank[out[j]]
		switch {
		case iKnown && jKnown:
			return ri < rj
		case iKnown != jKnown:
			return iKnown
		}
		return out[i] < out[j]
	})
	return dedupe(out)
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
