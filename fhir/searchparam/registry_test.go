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
	if Default() != Default() {
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
	if total != 2500 {
		t.Errorf("%d (resource type, parameter) pairs, want 2500", total)
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
