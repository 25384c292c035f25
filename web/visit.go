package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/registry"
)

// visitForm is what a work list row's "record visit" form offers: the day, by default today
// kept within the window, and the response categories of the scheme of the disease the
// infusion treats, from which the assessment is made.
type visitForm struct {
	Default, Max string
	Scheme       string
	Categories   []*registry.Category
}

// visitForms makes the "record visit" form of each item, with one query for the courses of
// the items' patients.
func (p *Pages) visitForms(ctx context.Context, items []followup.Item, today string) (map[string]visitForm, error) {
	var patients []string
	for _, it := range items {
		patients = append(patients, trimType(it.Patient.Reference))
	}
	schemes, err := p.schemesOf(ctx, patients)
	if err != nil {
		return nil, err
	}
	forms := make(map[string]visitForm, len(items))
	for _, it := range items {
		f := visitForm{Default: defaultVisitDay(it.WindowStart, it.WindowEnd, today), Max: today, Scheme: schemes[it.Infusion]}
		f.Categories = p.d.Registry.Terminology().Schemes[f.Scheme]
		forms[it.TaskID] = f
	}
	return forms, nil
}

// defaultVisitDay is today, or the window's last day once it has closed; "" before it opens.
func defaultVisitDay(start, end, today string) string {
	switch {
	case today < start:
		return ""
	case end != "" && today > end:
		return end
	}
	return today
}

// trimType is a reference's id: "Patient/7" is 7.
func trimType(ref string) string {
	_, id, _ := cutRef(ref)
	return id
}

// schemesOf maps each infusion of the patients ("Procedure/7") to the response scheme of its
// disease (lugano, imwg, …), as the registry's projection classified it.
func (p *Pages) schemesOf(ctx context.Context, patients []string) (map[string]string, error) {
	courses, err := p.d.Registry.Courses(ctx, patients)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, c := range courses {
		if d := p.d.Registry.Terminology().Disease(c.Disease); d != nil {
			out[c.Infusion] = d.Scheme
		}
	}
	return out, nil
}

// visitFields is what the "record visit" form's fields show: the day (what was entered, else
// the default) and the response category (what was chosen, else "not yet known").
type visitFields struct {
	TaskID, Date, Max, Category string
	Categories                  []*registry.Category
}

func visitArgs(taskID string, f visitForm, date, category string) visitFields {
	if date == "" {
		date = f.Default
	}
	if date == "" {
		date = f.Max
	}
	return visitFields{TaskID: taskID, Date: date, Max: f.Max, Category: category, Categories: f.Categories}
}

// visitPage is the "record visit" form on a page of its own: shown again with what was
// entered and what was wrong with it.
type visitPage struct {
	TaskID, Version, Back string
	Description           string
	Date, Category        string
	Form                  visitForm
}

func refOf(body map[string]any, element string) string {
	m, _ := body[element].(map[string]any)
	s, _ := m["reference"].(string)
	return s
}

func milestoneOf(body map[string]any) string {
	code, _ := body["code"].(map[string]any)
	codings, _ := code["coding"].([]any)
	for _, c := range codings {
		if m, _ := c.(map[string]any); m["system"] == registry.SystemMilestone {
			s, _ := m["code"].(string)
			return s
		}
	}
	return ""
}

// recordVisit records a visit that happened. With a response category it creates the
// remission assessment the registry counts at the Task's milestone, and the same transaction
// completes the Task with the assessment as its output. When an assessment is already
// recorded at that milestone (one that came while the coordinator had failed the Task, say),
// the Task is completed with it instead. Without either it records a finished
// Encounter (the patient's last contact) and puts the Task in progress, for the assessment
// from the EHR to complete. A day outside the window or a category outside the disease's
// scheme gives the form back with the error, and nothing is written.
func (p *Pages) recordVisit(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("id")
	pr, _, body, version, err := p.formTask(c)
	if err != nil {
		return p.errorPage(c, err)
	}
	// The coordinator's today, in the registry's time zone: a visit this morning in Auckland
	// is still tomorrow in UTC's calendar.
	today := p.d.FollowUp.Today(p.d.Clock())
	category := c.FormValue("category")
	start, end := window(body)
	patient, infusion, milestone := refOf(body, "for"), refOf(body, "focus"), milestoneOf(body)
	courses, err := p.d.Registry.Courses(ctx, []string{trimType(patient)})
	if err != nil {
		return err
	}
	var course *registry.Course
	for i := range courses {
		if courses[i].Infusion == infusion {
			course = &courses[i]
		}
	}
	if course != nil {
		for _, a := range course.Assessments {
			if a.Milestone == milestone && milestone != "" {
				return p.linkAssessment(c, pr, body, version, a)
			}
		}
	}
	if category == "" {
		return p.recordEncounter(c, pr, body, version, today)
	}
	page := visitPage{TaskID: id, Version: strconv.Itoa(version), Back: safeNext(c.FormValue("back")),
		Date: c.FormValue("date"), Category: category}
	page.Description, _ = body["description"].(string)
	if course != nil {
		if d := p.d.Registry.Terminology().Disease(course.Disease); d != nil {
			page.Form.Scheme, page.Form.Categories = d.Scheme, p.d.Registry.Terminology().Schemes[d.Scheme]
		}
	}
	last := today
	if end != "" {
		last = min(today, end)
	}
	page.Form.Default, page.Form.Max = defaultVisitDay(start, end, today), last
	formBack := func(err error) error {
		var o *fhir.Outcome
		if !errors.As(err, &o) || o.Status >= 500 {
			return err
		}
		msg := ""
		for _, is := range o.Issues {
			msg += is.Diagnostics + " "
		}
		return p.page(c, o.Status, "visit", pageData{Title: "Record the visit", Nav: "work", Message: msg, Data: page})
	}
	if course == nil || page.Form.Scheme == "" {
		return formBack(fhir.NewOutcome(http.StatusUnprocessableEntity, fhir.BusinessRule,
			"the registry has not classified the disease this infusion treats, so it knows no response scheme for it: record the assessment in the EHR", "category"))
	}
	if today < start {
		return formBack(fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, fmt.Sprintf(
			"this visit's window opens on %s: its response can be recorded from then", start), "date"))
	}
	on, err := readDay(c, "date", start, last)
	if err != nil {
		return formBack(err)
	}
	var cat *registry.Category
	for _, x := range page.Form.Categories {
		if x.Code == category {
			cat = x
		}
	}
	if cat == nil {
		return formBack(fhir.NewOutcome(http.StatusBadRequest, fhir.IssueType("code-invalid"),
			fmt.Sprintf("%q is not a response category of the %s scheme, which this patient's disease is assessed by", category,
				p.d.Registry.Terminology().SchemeNames[page.Form.Scheme]), "category"))
	}
	obs, err := p.assessment(ctx, patient, infusion, on, cat, pr)
	if err != nil {
		return err
	}
	parsed, err := parseBody(obs)
	if err != nil {
		return formBack(err)
	}
	addNote(body, p.note(pr, fmt.Sprintf("Visit on %s: %s", on, cat.Display)))
	body["lastModified"] = p.d.Clock().UTC().Format(time.RFC3339)
	task, err := parseBody(body)
	if err != nil {
		return formBack(err)
	}
	err = p.d.Store.InTx(ctx, func(tx pgx.Tx) error {
		// The Task first, at the version the page showed: a change since is a 412, not lost.
		if _, err := p.d.Store.Update(ctx, tx, task, &version); err != nil {
			return err
		}
		made, err := p.d.Store.Create(ctx, tx, parsed)
		if err != nil {
			return err
		}
		// The registry's projection places the assessment on the plan and the follow-up hook
		// completes the Task it counts for, on top of the coordinator's version: run them now
		// to see that it counted here, rather than leave an assessment that closes nothing.
		if err := p.d.Store.Flush(ctx, tx); err != nil {
			return err
		}
		after, err := p.d.Store.Read(ctx, tx, "Task", id)
		if err != nil {
			return err
		}
		var now map[string]any
		if err := json.Unmarshal(after.JSON, &now); err != nil {
			return fmt.Errorf("reading Task/%s: %w", id, err)
		}
		if now["status"] != followup.StatusCompleted || outputOf(now) != "Observation/"+made.ID {
			return fhir.NewOutcome(http.StatusUnprocessableEntity, fhir.BusinessRule, fmt.Sprintf(
				"an assessment on %s would not count at this visit's milestone, so it would not complete it", on), "date")
		}
		return nil
	})
	if err != nil {
		return formBack(err)
	}
	return p.back(c, "Visit recorded with its assessment: "+cat.Display+".")
}

func outputOf(task map[string]any) string {
	outs, _ := task["output"].([]any)
	for _, o := range outs {
		m, _ := o.(map[string]any)
		if ref, _ := m["valueReference"].(map[string]any); ref != nil {
			s, _ := ref["reference"].(string)
			return s
		}
	}
	return ""
}

func parseBody(body map[string]any) (*fhir.Resource, error) {
	delete(body, "meta")
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return fhir.Parse(raw)
}

// assessment is the remission assessment Observation the registry recognises (see
// registry/definitions/README.md): mCODE's cancer disease status, final, of the patient, part
// of the infusion it follows, focused on the infusion's indication, on the day, valued with
// the registry's response category and the mCODE SNOMED CT status it maps to.
func (p *Pages) assessment(ctx context.Context, patient, infusion, on string, cat *registry.Category, pr *auth.Principal) (map[string]any, error) {
	value := []any{map[string]any{"system": registry.SystemResponse, "code": cat.Code, "display": cat.Display}}
	if cat.MCODEStatus != "" {
		value = append(value, map[string]any{"system": registry.SystemSNOMED, "code": cat.MCODEStatus})
	}
	obs := map[string]any{"resourceType": "Observation", "status": "final",
		"code": map[string]any{"coding": []any{map[string]any{"system": registry.SystemLOINC, "code": registry.CodeDiseaseStat,
			"display": "Cancer disease status"}}, "text": "Remission assessment after CAR-T"},
		"subject":              map[string]any{"reference": patient},
		"partOf":               []any{map[string]any{"reference": infusion}},
		"effectiveDateTime":    on,
		"valueCodeableConcept": map[string]any{"coding": value, "text": cat.Display},
		"note": []any{map[string]any{"authorString": pr.Name, "time": p.d.Clock().UTC().Format(time.RFC3339),
			"text": "Recorded from the follow-up work list"}},
	}
	typ, id, _ := cutRef(infusion)
	inf, err := p.d.Store.Read(ctx, p.d.Store.DB(), typ, id)
	if err != nil {
		return nil, err
	}
	var ib map[string]any
	if err := json.Unmarshal(inf.JSON, &ib); err != nil {
		return nil, fmt.Errorf("reading %s: %w", infusion, err)
	}
	if reasons, _ := ib["reasonReference"].([]any); len(reasons) > 0 {
		if m, _ := reasons[0].(map[string]any); m["reference"] != nil {
			obs["focus"] = []any{map[string]any{"reference": m["reference"]}}
		}
	}
	return obs, nil
}

// cutRef splits "Procedure/7" into its type and id; a bare id has no type.
func cutRef(ref string) (typ, id string, ok bool) {
	if typ, id, ok = strings.Cut(ref, "/"); !ok {
		return "", ref, false
	}
	return typ, id, true
}

// linkAssessment completes the Task with an assessment already recorded at its milestone.
func (p *Pages) linkAssessment(c echo.Context, pr *auth.Principal, body map[string]any, version int, a registry.Assessment) error {
	body["status"] = followup.StatusCompleted
	delete(body, "statusReason")
	delete(body, "businessStatus")
	body["output"] = []any{map[string]any{"type": map[string]any{"text": "remission assessment"},
		"valueReference": map[string]any{"reference": "Observation/" + a.Observation}}}
	body["lastModified"] = p.d.Clock().UTC().Format(time.RFC3339)
	addNote(body, p.note(pr, "Visit linked to the assessment already recorded at this milestone"))
	if err := p.write(c.Request().Context(), nil, body, version); err != nil {
		return p.errorPage(c, err)
	}
	return p.back(c, "Visit linked to the assessment already recorded at this milestone.")
}

// recordEncounter records the visit without its assessment: a finished Encounter that day
// (the patient's last contact), and the Task in progress until the assessment completes it.
func (p *Pages) recordEncounter(c echo.Context, pr *auth.Principal, body map[string]any, version int, today string) error {
	on, err := readDay(c, "date", "", today)
	if err != nil {
		return p.errorPage(c, err)
	}
	patient, _ := body["for"].(map[string]any)
	enc := map[string]any{"resourceType": "Encounter", "status": "finished",
		"class":   map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
		"subject": patient, "period": map[string]any{"start": on, "end": on},
		"reasonCode": []any{map[string]any{"text": "CAR-T follow-up visit"}}}
	body["status"] = "in-progress"
	delete(body, "statusReason")
	body["lastModified"] = p.d.Clock().UTC().Format(time.RFC3339)
	addNote(body, p.note(pr, "Visit on "+on+"; the remission assessment will complete this visit"))
	if err := p.write(c.Request().Context(), []map[string]any{enc}, body, version); err != nil {
		return p.errorPage(c, err)
	}
	return p.back(c, "Visit recorded.")
}
