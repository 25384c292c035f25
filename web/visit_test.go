package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app"
)

// Recording a visit with its response creates the remission assessment the registry counts
// at the visit's milestone, and completes the Task with it, in one transaction; a day outside
// the window or a category of another scheme gives the form back and writes nothing.
func TestRecordVisitCreatesTheAssessment(t *testing.T) {
	w := newWorld(t, func(c *app.Config) { c.Registry.MinCell, c.Registry.RoundTo = 1, 1 })
	b := w.browser()
	b.signIn("cora", password)
	p := b.get("/work?bucket=due")
	rows := taskRow.FindAllStringSubmatch(p.body, -1)
	if len(rows) != 1 {
		t.Fatalf("%d due rows, want 1", len(rows))
	}
	task := rows[0][1]
	// The patient's lymphoma is assessed by Lugano: the form offers its categories, and
	// today (in the window) as the day.
	today := demoNow.Format(time.DateOnly)
	for _, want := range []string{`name="category"`, `value="lugano-cmr"`, `id="visit-` + task + `" name="date" type="date" max="` + today + `" value="` + today + `"`} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the record-visit form lacks %s", want)
		}
	}
	if strings.Contains(p.body, `value="imwg-vgpr"`) {
		t.Error("the form offers IMWG categories for a lymphoma")
	}
	before := w.taskOf(task)
	start, _ := window(before)
	observations := func() int { return w.h.Count(`SELECT count(*) FROM resource WHERE resource_type = 'Observation'`) }
	obsBefore := observations()
	dayBefore, _ := time.Parse(time.DateOnly, start)

	for name, form := range map[string]url.Values{
		"a day before the window":   {"date": {dayBefore.AddDate(0, 0, -1).Format(time.DateOnly)}, "category": {"lugano-cmr"}},
		"a day still to come":       {"date": {demoNow.AddDate(0, 0, 1).Format(time.DateOnly)}, "category": {"lugano-cmr"}},
		"another scheme's category": {"date": {today}, "category": {"imwg-vgpr"}},
		"an unknown category":       {"date": {today}, "category": {"much better"}},
	} {
		form.Set("version", before["meta"].(map[string]any)["versionId"].(string))
		form.Set("back", "/work?bucket=due")
		p := b.post("/work/tasks/"+task+"/visited", form)
		if p.status != http.StatusBadRequest || !strings.Contains(p.body, "Record the visit") || !strings.Contains(p.body, `role="alert"`) ||
			!strings.Contains(p.body, `action="/work/tasks/`+task+`/visited"`) || !strings.Contains(p.body, `value="`+form.Get("date")+`"`) {
			t.Errorf("%s: %d, want the form back with its error\n%s", name, p.status, p.body)
		}
		if n := observations(); n != obsBefore {
			t.Errorf("%s: %d Observations written", name, n-obsBefore)
		}
		if got := w.taskOf(task); got["meta"].(map[string]any)["versionId"] != before["meta"].(map[string]any)["versionId"] {
			t.Errorf("%s: the Task was written", name)
		}
	}

	p = b.post("/work/tasks/"+task+"/visited", url.Values{"date": {today}, "category": {"lugano-cmr"},
		"version": {before["meta"].(map[string]any)["versionId"].(string)}, "back": {"/work?bucket=due"}})
	if p.status != http.StatusSeeOther || !strings.Contains(p.location, "notice=") {
		t.Fatalf("recording the visit with its response: %d %s\n%s", p.status, p.location, p.body)
	}
	if n := observations(); n != obsBefore+1 {
		t.Fatalf("%d Observations written, want 1", n-obsBefore)
	}
	got := w.taskOf(task)
	outputs, _ := got["output"].([]any)
	if got["status"] != "completed" || len(outputs) != 1 {
		t.Fatalf("the Task after the visit: %v %v", got["status"], got["output"])
	}
	ref := outputs[0].(map[string]any)["valueReference"].(map[string]any)["reference"].(string)
	obs := w.h.Expect(http.StatusOK, "GET", "/fhir/"+ref, nil).JSON(t)
	value := obs["valueCodeableConcept"].(map[string]any)["coding"].([]any)[0].(map[string]any)
	if obs["status"] != "final" || obs["effectiveDateTime"] != today || value["code"] != "lugano-cmr" ||
		obs["subject"].(map[string]any)["reference"] != got["for"].(map[string]any)["reference"] ||
		obs["partOf"].([]any)[0].(map[string]any)["reference"] != got["focus"].(map[string]any)["reference"] ||
		!strings.HasPrefix(obs["focus"].([]any)[0].(map[string]any)["reference"].(string), "Condition/") {
		t.Errorf("the assessment: %v", obs)
	}
	// The registry counts the response at the milestone.
	res := w.h.Expect(http.StatusOK, "GET", "/registry/outcomes/response", nil).JSON(t)
	counted := ""
	for _, tp := range res["groups"].([]any)[0].(map[string]any)["timepoints"].([]any) {
		tp := tp.(map[string]any)
		if tp["milestone"] != "m1" {
			continue
		}
		for _, c := range tp["categories"].([]any) {
			if c := c.(map[string]any); c["code"] == "lugano-cmr" && c["count"] != nil {
				counted = fmt.Sprint(c["count"])
			}
		}
	}
	if counted != "1" {
		t.Errorf("month 1 complete metabolic responses in the outcomes: %v, want 1\n%v", counted, res)
	}
	// The visit has left the work list, and the audit trail has the write.
	if p := b.get("/work?bucket=due"); len(taskRow.FindAllStringSubmatch(p.body, -1)) != 0 {
		t.Error("the visit is still due")
	}
	if err := w.h.App.Audit.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := w.h.Count(`SELECT count(*) FROM audit_event WHERE $1 = ANY(entities) AND agent_who = 'local|cora'`, ref); n != 1 {
		t.Errorf("%d audit records of the assessment by the coordinator, want 1", n)
	}
}

// A visit whose assessment is already in the registry (it came from the EHR after the
// coordinator had given the visit up as missed) is linked to it, not recorded twice.
func TestRecordVisitLinksAnExistingAssessment(t *testing.T) {
	w := newWorld(t)
	b := w.browser()
	b.signIn("cora", password)
	rows := taskRow.FindAllStringSubmatch(b.get("/work?bucket=due").body, -1)
	if len(rows) != 1 {
		t.Fatalf("%d due rows, want 1", len(rows))
	}
	task := rows[0][1]
	if p := b.post("/work/tasks/"+task+"/missed", url.Values{"reason": {"no answer"}}); p.status != http.StatusSeeOther {
		t.Fatalf("marking it missed: %d\n%s", p.status, p.body)
	}
	tk := w.taskOf(task)
	obs := w.h.Expect(http.StatusCreated, "POST", "/fhir/Observation", map[string]any{"resourceType": "Observation", "status": "final",
		"code":    map[string]any{"coding": []any{map[string]any{"system": "http://loinc.org", "code": "97509-4"}}},
		"subject": tk["for"], "partOf": []any{tk["focus"]}, "effectiveDateTime": demoNow.Format(time.DateOnly),
		"valueCodeableConcept": map[string]any{"coding": []any{map[string]any{"system": "http://cartreg.org/fhir/CodeSystem/response-category", "code": "lugano-pmr"}}},
	}).JSON(t)
	if got := w.taskOf(task); got["status"] != "failed" {
		t.Fatalf("the coordinator's failed Task: %v", got["status"])
	}
	observations := w.h.Count(`SELECT count(*) FROM resource WHERE resource_type = 'Observation'`)
	if p := b.post("/work/tasks/"+task+"/visited", url.Values{"date": {demoNow.Format(time.DateOnly)}}); p.status != http.StatusSeeOther {
		t.Fatalf("recording the visit: %d\n%s", p.status, p.body)
	}
	got := w.taskOf(task)
	outputs, _ := got["output"].([]any)
	if got["status"] != "completed" || len(outputs) != 1 ||
		outputs[0].(map[string]any)["valueReference"].(map[string]any)["reference"] != "Observation/"+obs["id"].(string) {
		t.Errorf("the Task after the visit: %v %v", got["status"], got["output"])
	}
	if n := w.h.Count(`SELECT count(*) FROM resource WHERE resource_type = 'Observation'`); n != observations {
		t.Errorf("%d Observations written, want none", n-observations)
	}
}
