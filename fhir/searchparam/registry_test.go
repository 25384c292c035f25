package searchparam

import (
	"sort"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/fhir/fhirpath"
)

func TestLoad(t *testing.T) {
	r, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if first, second := Default(), Default(); first != second {
		t.Error("Default is not one registry")
	}

	d, ok := r.Lookup("Patient", "birthdate")
	if !ok {
		t.Fatal("Patient birthdate not found")
	}
	want := Definition{
		Code: "birthdate", Type: Date, Resource: "Patient",
		Expression:  "Patient.birthDate | Person.birthDate | RelatedPerson.birthDate",
		URL:         "http://hl7.org/fhir/SearchParameter/individual-birthdate",
		Description: "The patient's date of birth",
	}
	if d.Code != want.Code || d.Type != want.Type || d.Resource != want.Resource || d.Expression != want.Expression || d.URL != want.URL || d.Description != want.Description {
		t.Errorf("Patient birthdate = %+v\nwant %+v", *d, want)
	}
	if d, _ := r.Lookup("Observation", "subject"); d == nil || strings.Join(d.Targets, ",") != "Group,Device,Patient,Location" {
		t.Errorf("Observation subject targets = %v", d)
	}
	// The shared "code" parameter gets each type's own description.
	if d, _ := r.Lookup("Condition", "code"); d == nil || d.Description != "Code for the condition" {
		t.Errorf("Condition code description = %q", d.Description)
	}
	for _, missing := range [][2]string{{"Patient", "nope"}, {"Nope", "name"}, {"Observation", "code-value-quantity"}, {"Patient", "_text"}, {"Location", "near"}} {
		if _, ok := r.Lookup(missing[0], missing[1]); ok {
			t.Errorf("Lookup(%s, %s) found", missing[0], missing[1])
		}
	}

	// _id and the other Resource parameters apply to every type, Bundle included.
	for _, rt := range fhirpath.ResourceTypes() {
		defs := r.ForType(rt)
		if !sort.SliceIsSorted(defs, func(i, j int) bool { return defs[i].Code < defs[j].Code }) {
			t.Errorf("ForType(%s) not sorted by code", rt)
		}
		for _, code := range []string{"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"} {
			d, ok := r.Lookup(rt, code)
			if !ok || d.Resource != rt {
				t.Errorf("%s has no %s of its own", rt, code)
			}
		}
		for _, d := range defs {
			if d.Resource != rt || d.Type == Composite || d.Type == Special || d.Expression == "" {
				t.Errorf("ForType(%s) holds %+v", rt, *d)
			}
		}
	}
	// 23 of its own, and _id, _lastUpdated, _profile, _security, _source and _tag.
	if got := len(r.ForType("Patient")); got != 29 {
		t.Errorf("Patient has %d parameters, want 29", got)
	}
	total := 0
	for _, rt := range fhirpath.ResourceTypes() {
		total += len(r.ForType(rt))
	}
	if total != 2500+1 {
		t.Errorf("%d (resource type, parameter) pairs, want the specification's 2500 and Task window", total)
	}
	if r.ForType("Nope") != nil {
		t.Error("ForType of an unknown type is not nil")
	}
	// ForType's slice is the caller's.
	defs := r.ForType("Patient")
	defs[0] = nil
	if r.ForType("Patient")[0] == nil {
		t.Error("ForType shares its slice")
	}
}

// The server's own parameters come after the specification's, from their own file.
func TestCustomParameters(t *testing.T) {
	r := Default()
	d, ok := r.Lookup("Task", "window")
	if !ok {
		t.Fatal("Task window not found")
	}
	want := Definition{
		Code: "window", Type: Date, Resource: "Task", Expression: "Task.restriction.period",
		URL:         "http://cartreg.org/fhir/SearchParameter/task-window",
		Description: "The window in which the task is sought (Task.restriction.period): for a follow-up Task, the visit window",
	}
	if d.Code != want.Code || d.Type != want.Type || d.Resource != want.Resource || d.Expression != want.Expression || d.URL != want.URL || d.Description != want.Description {
		t.Errorf("Task window = %+v\nwant %+v", *d, want)
	}
	// The specification's period is left as it is: when the work was done.
	if d, ok := r.Lookup("Task", "period"); !ok || d.Expression != "Task.executionPeriod" {
		t.Errorf("Task period = %+v", d)
	}
	if _, ok := r.Lookup("ServiceRequest", "window"); ok {
		t.Error("window is on Task only")
	}

	// The window of a follow-up Task is indexed as the Period's days.
	v, err := r.Extract("Task", map[string]any{"resourceType": "Task", "status": "requested", "intent": "order",
		"restriction":     map[string]any{"period": map[string]any{"start": "2027-01-20", "end": "2027-02-11"}},
		"executionPeriod": map[string]any{"start": "2027-02-01T10:00:00Z"}})
	if err != nil {
		t.Fatal(err)
	}
	var windows []DateValue
	for _, dv := range v.Dates {
		if dv.Code == "window" {
			windows = append(windows, dv)
		}
	}
	if len(windows) != 1 || windows[0].Low != utc("2027-01-20T00:00:00Z") || windows[0].High != utc("2027-02-12T00:00:00Z") {
		t.Errorf("window values %+v, want [2027-01-20, 2027-02-12)", windows)
	}
}

// A definition of the server's own that clashes with the specification's, or that the server
// could not evaluate, stops Load: it would otherwise be dropped or shadowed without a word.
func TestCustomParametersLoadOrFail(t *testing.T) {
	spec := source{name: "r4-search-parameters.json", data: r4SearchParameters}
	custom := func(json string) source {
		return source{name: "custom.json", data: []byte("[" + json + "]"), custom: true}
	}
	for name, c := range map[string]struct{ json, err string }{
		"code of the specification's on the same type": {
			`{"url":"http://cartreg.org/fhir/SearchParameter/task-period","code":"period","base":["Task"],"type":"date","expression":"Task.restriction.period"}`,
			"defines Task:period, which http://hl7.org/fhir/SearchParameter/Task-period already defines"},
		"a Resource parameter's code on every type": {
			`{"url":"http://cartreg.org/fhir/SearchParameter/id","code":"_id","base":["Task"],"type":"token","expression":"Task.id"}`,
			"defines Task:_id, which http://hl7.org/fhir/SearchParameter/Resource-id already defines"},
		"twice in its own file": {
			`{"url":"http://cartreg.org/fhir/SearchParameter/a","code":"window","base":["Task"],"type":"date","expression":"Task.restriction.period"},
			{"url":"http://cartreg.org/fhir/SearchParameter/b","code":"window","base":["Task"],"type":"date","expression":"Task.authoredOn"}`,
			"defines Task:window, which http://cartreg.org/fhir/SearchParameter/a already defines"},
		"URL outside the registry's base": {
			`{"url":"http://example.org/SearchParameter/task-window","code":"window","base":["Task"],"type":"date","expression":"Task.restriction.period"}`,
			"a URL under " + CustomBase},
		"no such element": {
			`{"url":"http://cartreg.org/fhir/SearchParameter/task-window","code":"window","base":["Task"],"type":"date","expression":"Task.restriction.window"}`,
			ReasonModel},
		"composite": {
			`{"url":"http://cartreg.org/fhir/SearchParameter/task-x","code":"x","base":["Task"],"type":"composite","expression":"Task"}`,
			ReasonComposite},
		"not a resource type": {
			`{"url":"http://cartreg.org/fhir/SearchParameter/x","code":"x","base":["Tusk"],"type":"date","expression":"Tusk.period"}`,
			"not an R4 resource type"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := load(spec, custom(c.json))
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("load: %v, want an error with %q", err, c.err)
			}
		})
	}
	// The same code on another type, or a new code, is fine.
	r, err := load(spec, custom(`{"url":"http://cartreg.org/fhir/SearchParameter/sr-window","code":"window","base":["ServiceRequest"],"type":"date","expression":"ServiceRequest.occurrence"}`))
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := r.Lookup("ServiceRequest", "window"); !ok || d.URL != "http://cartreg.org/fhir/SearchParameter/sr-window" {
		t.Errorf("ServiceRequest window = %v", d)
	}
	if _, ok := r.Lookup("Task", "window"); ok {
		t.Error("a registry loaded without the embedded custom file has Task window")
	}
}

func TestUnsupported(t *testing.T) {
	byReason := map[string]int{}
	codes := map[string]bool{}
	for _, u := range Default().Unsupported() {
		reason := u.Reason
		if strings.HasPrefix(reason, ReasonCompile) {
			reason = ReasonCompile
		}
		byReason[reason]++
		codes[u.Code] = true
		if len(u.Resources) == 0 || u.URL == "" {
			t.Errorf("incomplete %+v", u)
		}
	}
	want := map[string]int{ReasonComposite: 46, ReasonSpecial: 1, ReasonNoExpression: 3}
	for reason, n := range want {
		if byReason[reason] != n {
			t.Errorf("%d left out because %q, want %d", byReason[reason], reason, n)
		}
	}
	if len(byReason) != len(want) {
		t.Errorf("unexpected reasons: %v", byReason)
	}
	for _, code := range []string{"_text", "_content", "_query", "near", "code-value-quantity"} {
		if !codes[code] {
			t.Errorf("%s is not listed as unsupported", code)
		}
	}
}

func TestDescriptionFor(t *testing.T) {
	shared := "Multiple Resources: \r\n\r\n* [AllergyIntolerance](allergyintolerance.html): Code that identifies the allergy\r\n* [Condition](condition.html): Code for the condition\r\n"
	for rt, want := range map[string]string{
		"AllergyIntolerance": "Code that identifies the allergy",
		"Condition":          "Code for the condition",
		"Observation":        shared, // not listed: keep it all
	} {
		if got := descriptionFor(shared, rt); got != want {
			t.Errorf("descriptionFor(%s) = %q, want %q", rt, got, want)
		}
	}
	if got := descriptionFor("Plain", "Patient"); got != "Plain" {
		t.Errorf("plain description changed to %q", got)
	}
}
