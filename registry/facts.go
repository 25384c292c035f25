package registry

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cartreg/cartreg/fhir"
)

// The facts the registry reads from each kind of resource. A resource that is not a registry
// resource (a Procedure that is not a CAR-T infusion, say) yields no fact, and a previous
// fact from it is removed.

type patientFact struct {
	ID string
	// DeceasedOn … DeceasedUntil is the range of days the death may have been on: one day for
	// a full date, a month or a year for a partial one (DeceasedUntil nil when one day).
	DeceasedOn, DeceasedUntil *time.Time
	ManagingOrg               string
	// BirthOn is the date of birth, a partial one at the middle of its range: what age
	// bands at infusion are counted from.
	BirthOn *time.Time
}

type conditionFact struct{ ID, Patient, Disease string }

type infusionFact struct {
	Type, ID, Patient     string
	On                    time.Time
	Product, ProductLabel string
	Targets               []string
	Conditions            []string
	Site                  string
	PriorLines            *int
}

type assessmentFact struct {
	ID, Patient, Category string
	On                    time.Time
	Condition             string
	InfusionRef           string // Type/id
	MRDNegative           *bool
}

type toxicityFact struct {
	ID, Patient, Kind string
	Grade             *int
	On                time.Time
	Until             *time.Time // the last day the onset may have been on, when the date is partial
	InfusionRef       string
}

type contactFact struct {
	ID, Patient string
	On          time.Time
}

// reader reads facts out of resource bodies; problems become located issues.
type reader struct {
	terms  *Terminology
	base   string // this server's FHIR base URL with a trailing slash: absolute references on it are local
	issues []fhir.Issue
}

func (r *reader) fail(resource, expression, format string, args ...any) {
	r.issues = append(r.issues, fhir.Issue{Severity: fhir.Error, Code: fhir.BusinessRule,
		Diagnostics: fmt.Sprintf(format, args...), Expression: []string{expression}, Resource: resource})
}

// localRef returns the type and id a reference points to on this server: relative
// ("Patient/1", with any /_history/n dropped) or absolute on this server's base. Remote and
// contained references are not local.
func (r *reader) localRef(v any) (string, string, bool) {
	m, _ := v.(map[string]any)
	ref, _ := m["reference"].(string)
	if r.base != "" && strings.HasPrefix(ref, r.base) {
		ref = strings.TrimPrefix(ref, r.base)
	}
	if ref == "" || strings.HasPrefix(ref, "#") || strings.Contains(ref, ":") {
		return "", "", false
	}
	parts := strings.Split(ref, "/")
	if len(parts) != 2 && !(len(parts) == 4 && parts[2] == "_history") {
		return "", "", false
	}
	return parts[0], parts[1], true
}

func (r *reader) refTo(v any, types ...string) string {
	t, id, ok := r.localRef(v)
	if !ok {
		return ""
	}
	for _, want := range types {
		if t == want {
			return id
		}
	}
	return ""
}

func list(v any) []any {
	switch x := v.(type) {
	case []any:
		return x
	case nil:
		return nil
	default:
		return []any{x}
	}
}

// integer reads a JSON integer as parsed resources hold it (json.Number).
func integer(v any) (int, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		return int(n), n == float64(int(n))
	}
	return 0, false
}

func object(v any) map[string]any { m, _ := v.(map[string]any); return m }

func str(m map[string]any, key string) string { s, _ := m[key].(string); return s }

type coding struct{ System, Code, Display string }

// codings of a CodeableConcept, and its text as a last coding without system or code.
func codings(cc any) []coding {
	m := object(cc)
	var out []coding
	for _, c := range list(m["coding"]) {
		cm := object(c)
		out = append(out, coding{str(cm, "system"), str(cm, "code"), str(cm, "display")})
	}
	return out
}

func hasCoding(cc any, system, code string) bool {
	for _, c := range codings(cc) {
		if c.System == system && c.Code == code {
			return true
		}
	}
	return false
}

func hasProfile(body map[string]any, profile string) bool {
	for _, p := range list(object(body["meta"])["profile"]) {
		if s, _ := p.(string); s == profile || strings.HasPrefix(s, profile+"|") {
			return true
		}
	}
	return false
}

func extensions(body map[string]any, url string) []map[string]any {
	var out []map[string]any
	for _, e := range list(body["extension"]) {
		if em := object(e); str(em, "url") == url {
			out = append(out, em)
		}
	}
	return out
}

// day parses a FHIR date or dateTime to the calendar date it names, as recorded (the local
// date of a dateTime with an offset). Partial dates (year, year-month) are not precise enough
// for day counts; full reports whether the value had a day, and t is then the first day of the
// month or year.
func day(v any) (t time.Time, full bool, ok bool) {
	t, until, ok := dayRange(v)
	return t, ok && t.Equal(until), ok
}

// dayRange parses a FHIR date or dateTime to the range of calendar days it may name, as recorded:
// one day for a full date (the local date of a dateTime with an offset), every day of the month
// or year for a partial one.
func dayRange(v any) (from, until time.Time, ok bool) {
	s, _ := v.(string)
	switch {
	case len(s) >= 10:
		t, err := time.Parse("2006-01-02", s[:10])
		return t, t, err == nil
	case len(s) == 7:
		t, err := time.Parse("2006-01", s)
		return t, t.AddDate(0, 1, -1), err == nil
	case len(s) == 4:
		t, err := time.Parse("2006", s)
		return t, t.AddDate(1, 0, -1), err == nil
	}
	return time.Time{}, time.Time{}, false
}

// impute picks the day counted for a date known as the range from … until (one day when the
// date is full): the mid-point of the days it can have been on, which start no earlier than
// floor (the patient was alive then, or the infusion it follows was given). Where floor is past
// the whole range the records disagree, and the range's last day is as late as they allow. An
// even number of days takes the earlier of the two middle ones.
func impute(from, until time.Time, floor *time.Time) time.Time {
	if floor != nil && floor.After(from) {
		if floor.After(until) {
			return until
		}
		from = *floor
	}
	return from.AddDate(0, 0, int(until.Sub(from).Hours()/24)/2)
}

func (r *reader) patient(id string, body map[string]any) patientFact {
	f := patientFact{ID: id, ManagingOrg: r.refTo(body["managingOrganization"], "Organization")}
	if from, until, ok := dayRange(body["birthDate"]); ok {
		mid := from.AddDate(0, 0, int(until.Sub(from).Hours()/24)/2)
		f.BirthOn = &mid
	}
	if v, ok := body["deceasedDateTime"]; ok {
		// A death known to the month or year is kept as its range: the day counted is imputed
		// when the patient's other dates are known (refresh).
		if from, until, ok := dayRange(v); ok {
			f.DeceasedOn = &from
			if until.After(from) {
				f.DeceasedUntil = &until
			}
		}
	}
	return f
}

func (r *reader) condition(id string, body map[string]any) *conditionFact {
	patient := r.refTo(body["subject"], "Patient")
	const verification = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
	if patient == "" || hasCoding(body["verificationStatus"], verification, "entered-in-error") ||
		hasCoding(body["verificationStatus"], verification, "refuted") {
		return nil
	}
	for _, c := range codings(body["code"]) {
		if d := r.terms.DiseaseOf(c.System, c.Code); d != nil {
			return &conditionFact{ID: id, Patient: patient, Disease: d.Code}
		}
	}
	return nil
}

// isInfusion says whether a Procedure or MedicationAdministration records a CAR-T infusion.
// Only a completed one is: preparation, in-progress, on-hold, stopped, not-done, unknown and
// entered-in-error all leave it open whether (or when) the cells went in, and day 0 must be the
// day they did.
func (r *reader) isInfusion(resourceType string, body map[string]any) bool {
	if str(body, "status") != "completed" {
		return false
	}
	if resourceType == "Procedure" {
		if hasProfile(body, ProfileInfusion) || hasCoding(body["code"], SystemCartreg, "cart-infusion") {
			return true
		}
		for _, c := range codings(body["code"]) {
			if _, ok := r.terms.ProductFor(c.System, c.Code); ok {
				return true
			}
		}
		return false
	}
	if hasProfile(body, ProfileInfusionMedAdm) {
		return true
	}
	for _, c := range codings(body["medicationCodeableConcept"]) {
		if _, ok := r.terms.ProductFor(c.System, c.Code); ok {
			return true
		}
	}
	return false
}

func (r *reader) infusion(resourceType, id string, body map[string]any) *infusionFact {
	if !r.isInfusion(resourceType, body) {
		return nil
	}
	where := resourceType + "/" + id
	f := &infusionFact{Type: resourceType, ID: id, Patient: r.refTo(body["subject"], "Patient")}
	if f.Patient == "" {
		r.fail(where, resourceType+".subject", "a CAR-T infusion must name its patient (a Patient on this server)")
	}
	var when any
	var products []coding
	var productText string
	if resourceType == "Procedure" {
		when = body["performedDateTime"]
		if when == nil {
			when = object(body["performedPeriod"])["start"]
		}
		for _, used := range list(body["usedCode"]) {
			products = append(products, codings(used)...)
			if productText == "" {
				productText = str(object(used), "text")
			}
		}
		// Codes that name the product's infusion (ICD-10-PCS XW033H7 …) identify it too.
		products = append(products, codings(body["code"])...)
		for _, p := range list(body["performer"]) {
			pm := object(p)
			if id := r.refTo(pm["onBehalfOf"], "Organization"); id != "" && f.Site == "" {
				f.Site = id
			}
			if id := r.refTo(pm["actor"], "Organization"); id != "" && f.Site == "" {
				f.Site = id
			}
		}
	} else {
		when = body["effectiveDateTime"]
		if when == nil {
			when = object(body["effectivePeriod"])["start"]
		}
		products = codings(body["medicationCodeableConcept"])
		productText = str(object(body["medicationCodeableConcept"]), "text")
	}
	if f.Site == "" {
		for _, e := range extensions(body, ExtTreatingSite) {
			f.Site = r.refTo(e["valueReference"], "Organization")
		}
	}
	t, full, ok := day(when)
	switch {
	case !ok:
		r.fail(where, resourceType+".performed", "a CAR-T infusion needs its date (day 0 of follow-up)")
	case !full:
		r.fail(where, resourceType+".performed", "a CAR-T infusion needs a full date, not just a year or month: follow-up is counted in days")
	}
	f.On = t

	for _, c := range products {
		if code, ok := r.terms.ProductFor(c.System, c.Code); ok && code != "investigational" {
			f.Product, f.ProductLabel = code, r.terms.Products[code].Display
			break
		}
	}
	if f.Product == "" {
		// Trial and hospital products have no code of their own: they are told apart by name.
		for _, c := range products {
			if c.Display != "" && f.ProductLabel == "" {
				f.ProductLabel = c.Display
			}
		}
		if f.ProductLabel == "" {
			f.ProductLabel = productText
		}
		switch {
		case f.ProductLabel != "":
			f.Product = "other:" + strings.ToLower(f.ProductLabel)
		default:
			f.Product, f.ProductLabel = "unspecified", "Unspecified product"
		}
	}

	for _, e := range extensions(body, ExtTargetAntigen) {
		cc := e["valueCodeableConcept"]
		target := str(object(cc), "text")
		for _, c := range codings(cc) {
			if c.Code != "" {
				target = c.Code
				break
			}
		}
		if target != "" {
			f.Targets = append(f.Targets, target)
		}
	}
	if len(f.Targets) == 0 {
		if p := r.terms.Products[f.Product]; p != nil {
			f.Targets = p.Targets
		}
	}
	f.Targets = r.terms.OrderTargets(f.Targets)
	for _, e := range extensions(body, ExtPriorLines) {
		if n, ok := integer(e["valueInteger"]); ok {
			f.PriorLines = &n
		}
	}
	for _, reason := range list(body["reasonReference"]) {
		if id := r.refTo(reason, "Condition"); id != "" {
			f.Conditions = append(f.Conditions, id)
		}
	}
	return f
}

// isAssessment says whether an Observation is a remission assessment (IsAssessment).
func (r *reader) isAssessment(body map[string]any) bool { return IsAssessment(body) }

// IsAssessment says whether an Observation is a remission assessment, as the registry's
// projection reads one: the mCODE disease status code with a registry response category, or
// the registry's profile. Only such an Observation can be in the registry's assessments.
func IsAssessment(body map[string]any) bool {
	if hasProfile(body, ProfileAssessment) {
		return true
	}
	if !hasCoding(body["code"], SystemLOINC, CodeDiseaseStat) && !hasCoding(body["code"], SystemLOINC, CodeDiseaseStatSTU1) {
		return false
	}
	for _, c := range codings(body["valueCodeableConcept"]) {
		if c.System == SystemResponse {
			return true
		}
	}
	return false
}

// reportable statuses of an Observation: a result that is final, or final and since changed.
// A preliminary or registered result may yet be withdrawn or revised, so it is no assessment.
var reportable = map[string]bool{"final": true, "amended": true, "corrected": true}

func (r *reader) assessment(id string, body map[string]any) *assessmentFact {
	if !r.isAssessment(body) || !reportable[str(body, "status")] {
		return nil
	}
	where := "Observation/" + id
	f := &assessmentFact{ID: id, Patient: r.refTo(body["subject"], "Patient")}
	if f.Patient == "" {
		r.fail(where, "Observation.subject", "a remission assessment must name its patient (a Patient on this server)")
	}
	t, full, ok := day(body["effectiveDateTime"])
	if !ok {
		t, full, ok = day(object(body["effectivePeriod"])["start"])
	}
	switch {
	case !ok:
		r.fail(where, "Observation.effective", "a remission assessment needs its date (effectiveDateTime)")
	case !full:
		r.fail(where, "Observation.effective", "a remission assessment needs a full date, not just a year or month")
	}
	f.On = t
	for _, c := range codings(body["valueCodeableConcept"]) {
		if c.System != SystemResponse {
			continue
		}
		if r.terms.InValueSet(ValueSetResponse, SystemResponse, c.Code) {
			f.Category = c.Code
		} else {
			r.fail(where, "Observation.value", "%q is not a response category of %s", c.Code, SystemResponse)
		}
	}
	if f.Category == "" && len(r.issues) == 0 {
		r.fail(where, "Observation.value", "a remission assessment's value must be a response category from %s", SystemResponse)
	}
	for _, focus := range list(body["focus"]) {
		if id := r.refTo(focus, "Condition"); id != "" {
			f.Condition = id
			break
		}
	}
	for _, p := range list(body["partOf"]) {
		if t, id, ok := r.localRef(p); ok && (t == "Procedure" || t == "MedicationAdministration") {
			f.InfusionRef = t + "/" + id
			break
		}
	}
	for _, comp := range list(body["component"]) {
		cm := object(comp)
		if !hasCoding(cm["code"], SystemCartreg, "mrd") {
			continue
		}
		switch {
		case hasCoding(cm["valueCodeableConcept"], SystemCartreg, "mrd-negative"):
			neg := true
			f.MRDNegative = &neg
		case hasCoding(cm["valueCodeableConcept"], SystemCartreg, "mrd-positive"):
			neg := false
			f.MRDNegative = &neg
		}
	}
	return f
}

func (r *reader) toxicity(id string, body map[string]any) *toxicityFact {
	if str(body, "actuality") == "potential" {
		return nil
	}
	kind, codeGrade := eventKind(codings(body["event"]))
	if kind == "" {
		if hasProfile(body, ProfileToxicity) {
			r.fail("AdverseEvent/"+id, "AdverseEvent.event", "a CAR-T toxicity must be CRS (NCIt %s, ICD-10-CM D89.83x or %s#crs), "+
				"ICANS (ICD-10-CM G92.0x or %s#icans), or a safety event (%s#subsequent-malignancy, t-cell-malignancy, infection, prolonged-cytopenia)",
				CodeCRSNCIt, SystemCartreg, SystemCartreg, SystemCartreg)
		}
		return nil
	}
	where := "AdverseEvent/" + id
	if kind != "crs" && kind != "icans" && !hasProfile(body, ProfileToxicity) {
		// A safety event an EHR sends in its own shape counts when it is complete enough to
		// place in time; an incomplete one is not refused, as it was never a CAR-T record.
		if _, _, dated := dayRange(body["date"]); !dated || r.refTo(body["subject"], "Patient") == "" {
			return nil
		}
	}
	f := &toxicityFact{ID: id, Kind: kind, Patient: r.refTo(body["subject"], "Patient")}
	if f.Patient == "" {
		r.fail(where, "AdverseEvent.subject", "a CAR-T toxicity must name its patient (a Patient on this server)")
	}
	from, until, ok := dayRange(body["date"])
	if !ok {
		r.fail(where, "AdverseEvent.date", "a CAR-T toxicity needs its onset date")
	}
	f.On = from
	if until.After(from) {
		f.Until = &until
	}
	f.Grade = codeGrade
	for _, e := range extensions(body, ExtASTCTGrade) {
		if g, ok := integer(e["valueInteger"]); ok {
			switch {
			case kind != "crs" && kind != "icans":
				r.fail(where, "AdverseEvent.extension", "an ASTCT grade is for CRS and ICANS only, not %s", kind)
			case g < 1 || g > 5:
				r.fail(where, "AdverseEvent.extension", "ASTCT grade must be 1 to 5 (5: death from the toxicity), not %d", g)
			case codeGrade != nil && *codeGrade != g:
				r.fail(where, "AdverseEvent.extension", "ASTCT grade %d contradicts the event code's grade %d", g, *codeGrade)
			}
			f.Grade = &g
		}
	}
	for _, s := range list(body["suspectEntity"]) {
		if t, id, ok := r.localRef(object(s)["instance"]); ok && (t == "Procedure" || t == "MedicationAdministration") {
			f.InfusionRef = t + "/" + id
		}
	}
	return f
}

// Safety events followed for 15 years besides CRS and ICANS.
const (
	KindSubsequentMalignancy = "subsequent-malignancy"
	KindTCellMalignancy      = "t-cell-malignancy"
	KindInfection            = "infection"
	KindProlongedCytopenia   = "prolonged-cytopenia"
)

// eventKind reads what an AdverseEvent's event codes say happened: crs, icans or a safety
// event kind, "" for anything else. ICD-10-CM codes CRS (D89.83x) and ICANS (G92.0x) with the
// grade as the last digit (1–5; 9 or 0 unspecified), which is returned too. A T-cell
// malignancy is also a subsequent malignancy but is counted as the narrower kind. Other
// malignancies are read from the registry's own code only: an ICD-10-CM cancer code on an
// AdverseEvent after CAR-T may as well be the treated disease coming back.
func eventKind(cs []coding) (kind string, grade *int) {
	for _, c := range cs {
		switch {
		case c.Code == CodeCRSNCIt && strings.Contains(strings.ToLower(c.System), "nci"),
			c.System == SystemCartreg && c.Code == "crs":
			return "crs", nil
		case c.System == SystemCartreg && c.Code == "icans":
			return "icans", nil
		case c.System == SystemCartreg && (c.Code == KindSubsequentMalignancy || c.Code == KindTCellMalignancy ||
			c.Code == KindInfection || c.Code == KindProlongedCytopenia):
			return c.Code, nil
		case c.System == SystemICD10CM:
			if kind, grade := icd10Event(strings.ToUpper(c.Code)); kind != "" {
				return kind, grade
			}
		}
	}
	return "", nil
}

func icd10Event(code string) (kind string, grade *int) {
	lastDigit := func(prefix string) *int {
		if len(code) != len(prefix)+1 {
			return nil
		}
		if g := int(code[len(prefix)] - '0'); g >= 1 && g <= 5 {
			return &g
		}
		return nil
	}
	hasPrefix := func(prefixes ...string) bool {
		for _, p := range prefixes {
			if strings.HasPrefix(code, p) {
				return true
			}
		}
		return false
	}
	switch {
	case hasPrefix("D89.83"):
		return "crs", lastDigit("D89.83")
	case hasPrefix("G92.0"):
		return "icans", lastDigit("G92.0")
	case hasPrefix("C84", "C86", "C91.5", "C91.6"):
		return KindTCellMalignancy, nil
	case len(code) >= 1 && (code[0] == 'A' || code[0] == 'B'):
		return KindInfection, nil
	}
	return "", nil
}

// The registry's codes of a follow-up EpisodeOfCare (registry/definitions/README.md,
// "Follow-up ended"): its type, and the second type of one that ended with the patient lost.
const (
	CodeFollowUpEpisode = "car-t-follow-up"
	CodeLostToFollowUp  = "lost-to-follow-up"
)

// followUpEndFact is the end of a patient's follow-up before its plan ran out.
type followUpEndFact struct {
	ID, Patient, Reason string // reason: lost or withdrawn
	On                  time.Time
}

// followUpEnd reads a follow-up EpisodeOfCare that is over (finished or cancelled): the
// patient lost, with cartreg#lost-to-follow-up among its types, else withdrawn; its day is
// period.end. Without a patient or an end day it is not counted: the follow-up package still
// stops the Tasks, but an outcome needs the day.
func (r *reader) followUpEnd(id string, body map[string]any) *followUpEndFact {
	status := str(body, "status")
	typed := func(code string) bool {
		for _, t := range list(body["type"]) {
			if hasCoding(t, SystemCartreg, code) {
				return true
			}
		}
		return false
	}
	if !typed(CodeFollowUpEpisode) || (status != "finished" && status != "cancelled") {
		return nil
	}
	f := &followUpEndFact{ID: id, Patient: r.refTo(body["patient"], "Patient"), Reason: "withdrawn"}
	if typed(CodeLostToFollowUp) {
		f.Reason = "lost"
	}
	period, _ := body["period"].(map[string]any)
	from, _, ok := dayRange(period["end"])
	if f.Patient == "" || !ok {
		return nil
	}
	f.On = from
	return f
}

// contact reads an Encounter as a dated contact with the patient: the day it ended, else the day
// it began. Only a finished encounter is a contact: a planned one may not happen, one in
// progress or on leave has not seen the patient through and its period may yet change, and
// cancelled, erroneous and unknown ones say nothing. Nor is one with no day (a month is too
// coarse to censor survival at).
func (r *reader) contact(id string, body map[string]any) *contactFact {
	if str(body, "status") != "finished" {
		return nil
	}
	patient := r.refTo(body["subject"], "Patient")
	if patient == "" {
		return nil
	}
	period := object(body["period"])
	on, full, ok := day(period["end"])
	if !ok || !full {
		if on, full, ok = day(period["start"]); !ok || !full {
			return nil
		}
	}
	return &contactFact{ID: id, Patient: patient, On: on}
}
