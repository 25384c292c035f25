package synth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/cartreg/cartreg/registry"
)

// IdentifierBase is the system of every generated identifier, followed by the resource type
// in lower case (the Organization's is …/site). Loading a Bundle again finds each resource by
// it (conditional create) instead of creating it twice.
const IdentifierBase = "http://cartreg.org/fhir/synth/"

// hospitalTargets is the code system of antigens the registry's list does not have: the
// target of a hospital-developed product comes from the hospital's own codes.
const hospitalTargets = IdentifierBase + "CodeSystem/hospital-car-target"

// namespace is the UUID namespace of generated fullUrls: a resource's fullUrl is the
// name-based UUID of its identifier, so the same resource always has the same fullUrl, and a
// site shared by many patients has one.
var namespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte(IdentifierBase))

// FHIR JSON, as the registry's conventions use it. Structs, not maps, so that elements come
// out in a fixed, conventional order.
type (
	coding struct {
		System  string `json:"system,omitempty"`
		Code    string `json:"code,omitempty"`
		Display string `json:"display,omitempty"`
	}
	concept struct {
		Coding []coding `json:"coding,omitempty"`
		Text   string   `json:"text,omitempty"`
	}
	reference struct {
		Reference string `json:"reference,omitempty"`
		Display   string `json:"display,omitempty"`
	}
	identifier struct {
		System string `json:"system"`
		Value  string `json:"value"`
	}
	extension struct {
		URL                  string     `json:"url"`
		ValueCodeableConcept *concept   `json:"valueCodeableConcept,omitempty"`
		ValueInteger         *int       `json:"valueInteger,omitempty"`
		ValueReference       *reference `json:"valueReference,omitempty"`
	}
	meta struct {
		Profile []string `json:"profile,omitempty"`
		Tag     []coding `json:"tag,omitempty"`
	}
	address struct {
		City    string `json:"city,omitempty"`
		Country string `json:"country,omitempty"`
	}
	humanName struct {
		Use    string   `json:"use"`
		Family string   `json:"family"`
		Given  []string `json:"given"`
	}
	period struct {
		Start string `json:"start"`
		End   string `json:"end,omitempty"`
	}
)

type organization struct {
	ResourceType string       `json:"resourceType"`
	Identifier   []identifier `json:"identifier"`
	Active       bool         `json:"active"`
	Type         []concept    `json:"type"`
	Name         string       `json:"name"`
	Address      []address    `json:"address"`
}

type patient struct {
	ResourceType         string       `json:"resourceType"`
	Identifier           []identifier `json:"identifier"`
	Active               bool         `json:"active"`
	Name                 []humanName  `json:"name"`
	Gender               string       `json:"gender"`
	BirthDate            string       `json:"birthDate"`
	DeceasedDateTime     string       `json:"deceasedDateTime,omitempty"`
	Address              []address    `json:"address"`
	ManagingOrganization reference    `json:"managingOrganization"`
}

type condition struct {
	ResourceType       string       `json:"resourceType"`
	Identifier         []identifier `json:"identifier"`
	ClinicalStatus     concept      `json:"clinicalStatus"`
	VerificationStatus concept      `json:"verificationStatus"`
	Category           []concept    `json:"category"`
	Code               concept      `json:"code"`
	Subject            reference    `json:"subject"`
	OnsetDateTime      string       `json:"onsetDateTime"`
	RecordedDate       string       `json:"recordedDate"`
}

type performer struct {
	Actor      reference  `json:"actor"`
	OnBehalfOf *reference `json:"onBehalfOf,omitempty"`
}

type procedure struct {
	ResourceType      string       `json:"resourceType"`
	Meta              meta         `json:"meta"`
	Extension         []extension  `json:"extension"`
	Identifier        []identifier `json:"identifier"`
	Status            string       `json:"status"`
	Code              concept      `json:"code"`
	Subject           reference    `json:"subject"`
	PerformedDateTime string       `json:"performedDateTime"`
	Performer         []performer  `json:"performer"`
	ReasonReference   []reference  `json:"reasonReference"`
	UsedCode          []concept    `json:"usedCode"`
}

type medicationAdministration struct {
	ResourceType              string       `json:"resourceType"`
	Meta                      meta         `json:"meta"`
	Extension                 []extension  `json:"extension"`
	Identifier                []identifier `json:"identifier"`
	Status                    string       `json:"status"`
	MedicationCodeableConcept concept      `json:"medicationCodeableConcept"`
	Subject                   reference    `json:"subject"`
	EffectiveDateTime         string       `json:"effectiveDateTime"`
	ReasonReference           []reference  `json:"reasonReference"`
}

type component struct {
	Code                 concept `json:"code"`
	ValueCodeableConcept concept `json:"valueCodeableConcept"`
}

type observation struct {
	ResourceType         string       `json:"resourceType"`
	Meta                 meta         `json:"meta"`
	Extension            []extension  `json:"extension,omitempty"`
	Identifier           []identifier `json:"identifier"`
	PartOf               []reference  `json:"partOf"`
	Status               string       `json:"status"`
	Code                 concept      `json:"code"`
	Subject              reference    `json:"subject"`
	Focus                []reference  `json:"focus"`
	EffectiveDateTime    string       `json:"effectiveDateTime"`
	ValueCodeableConcept concept      `json:"valueCodeableConcept"`
	Component            []component  `json:"component,omitempty"`
}

type suspectEntity struct {
	Instance reference `json:"instance"`
}

type adverseEvent struct {
	ResourceType  string          `json:"resourceType"`
	Meta          meta            `json:"meta"`
	Extension     []extension     `json:"extension"`
	Identifier    identifier      `json:"identifier"` // 0..1 in R4
	Actuality     string          `json:"actuality"`
	Event         concept         `json:"event"`
	Subject       reference       `json:"subject"`
	Date          string          `json:"date"`
	Severity      concept         `json:"severity"`
	SuspectEntity []suspectEntity `json:"suspectEntity"`
}

type encounter struct {
	ResourceType    string       `json:"resourceType"`
	Identifier      []identifier `json:"identifier"`
	Status          string       `json:"status"`
	Class           coding       `json:"class"`
	Type            []concept    `json:"type"`
	Subject         reference    `json:"subject"`
	Period          period       `json:"period"`
	ServiceProvider reference    `json:"serviceProvider"`
}

type bundleRequest struct {
	Method      string `json:"method"`
	URL         string `json:"url"`
	IfNoneExist string `json:"ifNoneExist"`
}

type bundleEntry struct {
	FullURL  string        `json:"fullUrl"`
	Resource any           `json:"resource"`
	Request  bundleRequest `json:"request"`
}

type bundle struct {
	ResourceType string        `json:"resourceType"`
	Identifier   identifier    `json:"identifier"`
	Type         string        `json:"type"`
	Entry        []bundleEntry `json:"entry"`
}

// URLs the registry's conventions use that its own code does not name.
const (
	profileMCODEStatus = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-disease-status"
	extEvidenceType    = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-disease-status-evidence-type"
	systemNCIt         = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
	terminologyHL7     = "http://terminology.hl7.org/CodeSystem/"
)

// mcodeDisplay names the mCODE CancerDiseaseStatus values (HL7 mCODE STU1; see
// registry/definitions/README.md, "Response schemes").
var mcodeDisplay = map[string]string{
	"268910001":       "Patient's condition improved (finding)",
	"359746009":       "Patient's condition stable (finding)",
	"271299001":       "Patient's condition worsened (finding)",
	"709137006":       "Patient condition undetermined (finding)",
	"550991000124107": "Malignant neoplasm in full remission (disorder)",
	"551001000124108": "Malignant neoplasm in partial remission (disorder)",
}

// evidence is how each cancer's response is assessed (mCODE evidence type).
var evidence = map[string]coding{
	"lugano": {registry.SystemSNOMED, "363679005", "Imaging (procedure)"},
	"imwg":   {registry.SystemSNOMED, "386344002", "Laboratory data interpretation (procedure)"},
	"all":    {registry.SystemSNOMED, "252416005", "Histopathology test (procedure)"},
}

// targetDisplays are the target-antigen CodeSystem's displays, read from the registry's
// definitions like the rest of its terminology.
var targetDisplays = sync.OnceValues(func() (map[string]string, error) {
	raw, err := registry.Definitions.ReadFile("definitions/CodeSystem-target-antigen.json")
	if err != nil {
		return nil, err
	}
	var cs struct {
		Concept []struct{ Code, Display string }
	}
	if err := json.Unmarshal(raw, &cs); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, c := range cs.Concept {
		out[c.Code] = c.Display
	}
	return out, nil
})

func date(t time.Time) string { return t.Format(time.DateOnly) }

// Bundle returns patient i as a FHIR R4 transaction Bundle (JSON): the site, the patient, the
// indication, the infusion, toxicities, assessments and, when the last contact is later than
// anything else, a follow-up Encounter on that day. Every entry is a conditional create on its
// identifier, so loading it again creates nothing and a site shared by many patients is created
// once; AdverseEvent, which has no identifier search parameter in R4, carries its identifier as
// a meta.tag and is found by _tag, as in examples/.
func (c *Cohort) Bundle(i int) ([]byte, error) {
	if i < 0 || i >= len(c.Patients) {
		return nil, fmt.Errorf("synth: no patient %d in a cohort of %d", i, len(c.Patients))
	}
	terms, err := terminology()
	if err != nil {
		return nil, err
	}
	targets, err := targetDisplays()
	if err != nil {
		return nil, err
	}
	p := &c.Patients[i]
	if p.Site < 0 || p.Site >= len(c.Sites) {
		return nil, fmt.Errorf("synth: patient %s: no site %d", p.Identifier, p.Site)
	}
	site := c.Sites[p.Site]
	b := bundle{ResourceType: "Bundle", Identifier: identifier{IdentifierBase + "bundle", p.Identifier}, Type: "transaction"}
	add := func(typ, system, value string, resource any) reference {
		url := "urn:uuid:" + uuid.NewSHA1(namespace, []byte(system+"|"+value)).String()
		criteria := "identifier=" + system + "|" + value
		if typ == "AdverseEvent" {
			criteria = "_tag=" + system + "|" + value
		}
		b.Entry = append(b.Entry, bundleEntry{FullURL: url, Resource: resource,
			Request: bundleRequest{Method: "POST", URL: typ, IfNoneExist: criteria}})
		return reference{Reference: url}
	}
	id := func(typ, value string) []identifier {
		return []identifier{{IdentifierBase + typ, value}}
	}

	siteRef := add("Organization", IdentifierBase+"site", site.Identifier, organization{
		ResourceType: "Organization", Identifier: id("site", site.Identifier), Active: true,
		Type: []concept{{Coding: []coding{{terminologyHL7 + "organization-type", "prov", "Healthcare Provider"}}}},
		Name: site.Name, Address: []address{{City: site.City, Country: site.Country}},
	})
	siteRef.Display = site.Name

	fullName := p.Given + " " + p.Family
	pat := patient{
		ResourceType: "Patient", Identifier: id("patient", p.Identifier), Active: true,
		Name:   []humanName{{Use: "official", Family: p.Family, Given: []string{p.Given}}},
		Gender: p.Gender, BirthDate: date(p.BirthDate),
		Address: []address{{Country: site.Country}}, ManagingOrganization: siteRef,
	}
	if p.Death != nil {
		pat.DeceasedDateTime = date(*p.Death)
	}
	subject := add("Patient", IdentifierBase+"patient", p.Identifier, pat)
	subject.Display = fullName

	conditionID := p.Identifier + "-condition"
	condRef := add("Condition", IdentifierBase+"condition", conditionID, condition{
		ResourceType:       "Condition",
		Identifier:         id("condition", conditionID),
		ClinicalStatus:     concept{Coding: []coding{{System: terminologyHL7 + "condition-clinical", Code: "active"}}},
		VerificationStatus: concept{Coding: []coding{{System: terminologyHL7 + "condition-ver-status", Code: "confirmed"}}},
		Category: []concept{{Coding: []coding{{terminologyHL7 + "condition-category",
			"encounter-diagnosis", "Encounter Diagnosis"}}}},
		Code:          concept{Coding: []coding{{p.ConditionSystem, p.ConditionCode, p.ConditionDisplay}}, Text: p.ConditionDisplay},
		Subject:       subject,
		OnsetDateTime: date(p.DiagnosisDate), RecordedDate: date(p.DiagnosisDate),
	})
	condRef.Display = p.ConditionDisplay

	// The infusion: the product, its targets, prior lines, the indication and the site.
	inf := p.Infusion
	product := concept{Coding: []coding{{registry.SystemProduct, inf.Product, inf.ProductDisplay}}, Text: inf.ProductDisplay}
	us := site.Country == "US"
	if prod := terms.Products[inf.Product]; prod != nil && prod.RxNorm != "" && us {
		product.Coding = append(product.Coding, coding{System: registry.SystemRxNorm, Code: prod.RxNorm})
	}
	var exts []extension
	for _, t := range inf.Targets {
		cc := &concept{Coding: []coding{{registry.SystemTarget, t, targets[t]}}}
		if _, known := targets[t]; !known {
			cc = &concept{Coding: []coding{{hospitalTargets, t, t + " (hospital-developed CAR target antigen)"}}, Text: t}
		}
		exts = append(exts, extension{URL: registry.ExtTargetAntigen, ValueCodeableConcept: cc})
	}
	lines := inf.PriorLines
	exts = append(exts, extension{URL: registry.ExtPriorLines, ValueInteger: &lines})
	infusionID := p.Identifier + "-infusion"
	var infRef reference
	switch inf.Resource {
	case MedicationAdministration:
		exts = append(exts, extension{URL: registry.ExtTreatingSite, ValueReference: &siteRef})
		infRef = add(MedicationAdministration, IdentifierBase+"medicationadministration", infusionID, medicationAdministration{
			ResourceType: MedicationAdministration, Meta: meta{Profile: []string{registry.ProfileInfusionMedAdm}}, Extension: exts,
			Identifier: id("medicationadministration", infusionID), Status: "completed",
			MedicationCodeableConcept: product, Subject: subject, EffectiveDateTime: date(inf.Date),
			ReasonReference: []reference{condRef},
		})
	default:
		code := concept{Coding: []coding{
			{registry.SystemCartreg, "cart-infusion", "CAR-T cell infusion (day 0)"},
			{registry.SystemSNOMED, "76334006", "Immunotherapy (procedure)"},
		}, Text: "CAR-T cell infusion"}
		if prod := terms.Products[inf.Product]; prod != nil && prod.PCS != "" && us {
			code.Coding = append(code.Coding, coding{System: registry.SystemICD10PCS, Code: prod.PCS})
		}
		infRef = add(Procedure, IdentifierBase+"procedure", infusionID, procedure{
			ResourceType: Procedure, Meta: meta{Profile: []string{registry.ProfileInfusion}}, Extension: exts,
			Identifier: id("procedure", infusionID), Status: "completed", Code: code, Subject: subject,
			PerformedDateTime: date(inf.Date),
			Performer:         []performer{{Actor: reference{Display: "Cellular therapy team"}, OnBehalfOf: &siteRef}},
			ReasonReference:   []reference{condRef}, UsedCode: []concept{product},
		})
	}
	infRef.Display = "CAR-T infusion " + date(inf.Date)

	for k, t := range p.Toxicities {
		value := fmt.Sprintf("%s-%s-%d", p.Identifier, t.Kind, k+1)
		event := concept{Coding: []coding{
			{systemNCIt, registry.CodeCRSNCIt, "Cytokine Release Syndrome"},
			{registry.SystemCartreg, "crs", "Cytokine release syndrome (CRS)"},
		}, Text: "Cytokine release syndrome"}
		if t.Kind == "icans" {
			event = concept{Coding: []coding{{registry.SystemCartreg, "icans",
				"Immune effector cell-associated neurotoxicity syndrome (ICANS)"}}, Text: "ICANS"}
		}
		severity := coding{terminologyHL7 + "adverse-event-severity", "severe", "Severe"}
		switch t.Grade {
		case 1:
			severity.Code, severity.Display = "mild", "Mild"
		case 2:
			severity.Code, severity.Display = "moderate", "Moderate"
		}
		grade := t.Grade
		add("AdverseEvent", IdentifierBase+"adverseevent", value, adverseEvent{
			ResourceType: "AdverseEvent",
			Meta:         meta{Profile: []string{registry.ProfileToxicity}, Tag: []coding{{System: IdentifierBase + "adverseevent", Code: value}}},
			Extension:    []extension{{URL: registry.ExtASTCTGrade, ValueInteger: &grade}},
			Identifier:   identifier{IdentifierBase + "adverseevent", value},
			Actuality:    "actual", Event: event, Subject: subject, Date: date(t.Date),
			Severity:      concept{Coding: []coding{severity}},
			SuspectEntity: []suspectEntity{{Instance: infRef}},
		})
	}

	disease := terms.Disease(p.Disease)
	if disease == nil {
		return nil, fmt.Errorf("synth: patient %s: unknown disease group %q", p.Identifier, p.Disease)
	}
	cancer := disease.Scheme != "sle"
	for k, a := range p.Assessments {
		cat := terms.Categories[a.Category]
		if cat == nil {
			return nil, fmt.Errorf("synth: patient %s: unknown response category %q", p.Identifier, a.Category)
		}
		value := fmt.Sprintf("%s-assessment-%02d", p.Identifier, k+1)
		obs := observation{
			ResourceType: "Observation", Meta: meta{Profile: []string{registry.ProfileAssessment}},
			Identifier: id("observation", value), PartOf: []reference{infRef}, Status: "final",
			Code: concept{Coding: []coding{{registry.SystemLOINC, registry.CodeDiseaseStat, "Cancer disease progression"}},
				Text: "Remission assessment after CAR-T"},
			Subject: subject, Focus: []reference{condRef}, EffectiveDateTime: date(a.Date),
			ValueCodeableConcept: concept{Coding: []coding{
				{registry.SystemResponse, cat.Code, cat.Display},
				{registry.SystemSNOMED, cat.MCODEStatus, mcodeDisplay[cat.MCODEStatus]},
			}, Text: cat.Display},
		}
		if cancer {
			obs.Meta.Profile = append(obs.Meta.Profile, profileMCODEStatus)
			ev := evidence[disease.Scheme]
			obs.Extension = []extension{{URL: extEvidenceType, ValueCodeableConcept: &concept{Coding: []coding{ev}}}}
		}
		if a.MRDNegative != nil {
			status := coding{registry.SystemCartreg, "mrd-positive", "MRD positive"}
			if *a.MRDNegative {
				status = coding{registry.SystemCartreg, "mrd-negative", "MRD negative"}
			}
			obs.Component = []component{{
				Code:                 concept{Coding: []coding{{registry.SystemCartreg, "mrd", "Minimal residual disease status"}}},
				ValueCodeableConcept: concept{Coding: []coding{status}},
			}}
		}
		add("Observation", IdentifierBase+"observation", value, obs)
	}

	if p.plainContact() {
		value := p.Identifier + "-contact"
		add("Encounter", IdentifierBase+"encounter", value, encounter{
			ResourceType: "Encounter", Identifier: id("encounter", value), Status: "finished",
			Class:   coding{terminologyHL7 + "v3-ActCode", "AMB", "ambulatory"},
			Type:    []concept{{Text: "CAR-T long-term follow-up contact"}},
			Subject: subject, Period: period{Start: date(p.LastContact), End: date(p.LastContact)},
			ServiceProvider: siteRef,
		})
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// latestEvent is the date of the patient's latest recorded event.
func (p *Patient) latestEvent() time.Time {
	last := p.Infusion.Date
	for _, a := range p.Assessments {
		if a.Date.After(last) {
			last = a.Date
		}
	}
	for _, t := range p.Toxicities {
		if t.Date.After(last) {
			last = t.Date
		}
	}
	if p.Death != nil && p.Death.After(last) {
		last = *p.Death
	}
	return last
}

// plainContact says whether the last contact was a plain follow-up contact, later than any
// other event: the Bundle then records it as an Encounter.
func (p *Patient) plainContact() bool { return p.LastContact.After(p.latestEvent()) }

// Resources counts the resources the cohort's Bundles create on an empty server: each site
// once, and each patient's own.
func (c *Cohort) Resources() int {
	sites := map[int]bool{}
	n := 0
	for i := range c.Patients {
		p := &c.Patients[i]
		sites[p.Site] = true
		n += 3 + len(p.Assessments) + len(p.Toxicities) // Patient, Condition, infusion
		if p.plainContact() {
			n++
		}
	}
	return n + len(sites)
}

// WriteDir writes one Bundle file per patient into dir (created if missing):
// patient-000001.json, patient-000002.json … Each file is written whole (to a temporary name,
// then renamed), so an importer never reads half of one. Other files in dir are left alone.
func (c *Cohort) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	jobs := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := c.writeFile(dir, i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	var err error
	for i := range c.Patients {
		select {
		case err = <-errs:
		case jobs <- i:
			continue
		}
		break
	}
	close(jobs)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// fileName is the name of patient i's Bundle file.
func fileName(i int) string { return fmt.Sprintf("patient-%06d.json", i+1) }

func (c *Cohort) writeFile(dir string, i int) error {
	raw, err := c.Bundle(i)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, fileName(i))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
