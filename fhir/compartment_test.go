package fhir_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
)

// matchIDs lists the ids of a searchset's matches, sorted.
func matchIDs(b map[string]any) []string {
	var ids []string
	for _, e := range asSlice(b["entry"]) {
		m := e.(map[string]any)
		if s, _ := m["search"].(map[string]any); s["mode"] != "match" {
			continue
		}
		ids = append(ids, m["resource"].(map[string]any)["id"].(string))
	}
	sort.Strings(ids)
	return ids
}

// allPages follows a search's next links from path and returns every match's id, sorted.
func allPages(t *testing.T, s *testServer, path string) []string {
	t.Helper()
	var ids []string
	for pages := 0; path != ""; pages++ {
		if pages > 50 {
			t.Fatalf("paging from %s does not end", path)
		}
		b := s.expect(s.do("GET", path, ""), http.StatusOK).json(t)
		ids = append(ids, matchIDs(b)...)
		path = link(b, "next", s.base)
	}
	sort.Strings(ids)
	return ids
}

// Every parameter of the embedded CompartmentDefinition is a reference search parameter the
// server indexes, or a compartment search through it would find nothing.
func TestPatientCompartmentDefinition(t *testing.T) {
	comp := fhir.PatientCompartment()
	if comp.Code != "Patient" || comp.URL != fhir.PatientCompartmentURL {
		t.Fatalf("compartment %q %q", comp.Code, comp.URL)
	}
	params := searchparam.Default()
	n := 0
	for _, typ := range comp.Types() {
		ps, _ := comp.Params(typ)
		for _, p := range ps {
			d, ok := params.Lookup(typ, p)
			if !ok || d.Type != searchparam.Reference {
				t.Errorf("%s.%s is not an indexed reference parameter", typ, p)
			}
			n++
		}
	}
	// R4 4.0.1 puts 66 types in the compartment; Task and Device are not among them.
	if len(comp.Types()) != 66 || n < 100 {
		t.Errorf("%d types, %d parameters", len(comp.Types()), n)
	}
	for _, typ := range []string{"Task", "Device", "Organization"} {
		if _, ok := comp.Params(typ); ok {
			t.Errorf("%s is in the compartment", typ)
		}
	}
	if ps, _ := comp.Params("Observation"); !slices.Equal(ps, []string{"subject", "performer"}) {
		t.Errorf("Observation's parameters: %v", ps)
	}
}

func TestCompartmentSearch(t *testing.T) {
	s := newTestServer(t)
	create := func(body string) string {
		t.Helper()
		return s.expect(s.do("POST", "/"+strings.SplitN(strings.Split(body, `"resourceType":"`)[1], `"`, 2)[0], body), http.StatusCreated).json(t)["id"].(string)
	}
	ada := create(`{"resourceType":"Patient","name":[{"family":"Lovelace"}]}`)
	alan := create(`{"resourceType":"Patient","name":[{"family":"Turing"}]}`)
	obs := func(subject, code, extra string) string {
		return create(fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":%q}]},"subject":{"reference":"Patient/%s"}%s}`, code, subject, extra))
	}
	weight1 := obs(ada, "29463-7", "")
	weight2 := obs(ada, "29463-7", "")
	height := obs(ada, "8302-2", "")
	obs(alan, "29463-7", "")
	// Ada measured Alan: in Ada's compartment through performer.
	performed := obs(alan, "8302-2", fmt.Sprintf(`,"performer":[{"reference":"Patient/%s"}]`, ada))
	condition := create(fmt.Sprintf(`{"resourceType":"Condition","subject":{"reference":"Patient/%s"}}`, ada))
	create(fmt.Sprintf(`{"resourceType":"Task","status":"requested","intent":"plan","for":{"reference":"Patient/%s"}}`, ada))

	want := []string{weight1, weight2, height, performed}
	sort.Strings(want)
	if got := allPages(t, s, "/Patient/"+ada+"/Observation"); !slices.Equal(got, want) {
		t.Fatalf("Patient/%s/Observation: %v, want %v", ada, got, want)
	}
	// What the type search finds through each of the compartment's parameters, together.
	union := append(allPages(t, s, "/Observation?subject=Patient/"+ada), allPages(t, s, "/Observation?performer=Patient/"+ada)...)
	sort.Strings(union)
	if !slices.Equal(union, want) {
		t.Fatalf("the type search finds %v, the compartment %v", union, want)
	}

	// Parameters narrow it; paging links come back to the compartment.
	weights := []string{weight1, weight2}
	sort.Strings(weights)
	if got := allPages(t, s, "/Patient/"+ada+"/Observation?code=http://loinc.org|29463-7&_count=1"); !slices.Equal(got, weights) {
		t.Fatalf("by code, one to a page: %v, want %v", got, weights)
	}
	first := s.expect(s.do("GET", "/Patient/"+ada+"/Observation?_count=1", ""), http.StatusOK).json(t)
	if next := link(first, "next", s.base); !strings.HasPrefix(next, "/Patient/"+ada+"/Observation?") {
		t.Fatalf("next link %q", next)
	}
	posted := s.expect(s.do("POST", "/Patient/"+ada+"/Observation/_search", "code=8302-2",
		"Content-Type", "application/x-www-form-urlencoded"), http.StatusOK).json(t)
	heights := []string{height, performed}
	sort.Strings(heights)
	if got := matchIDs(posted); !slices.Equal(got, heights) {
		t.Fatalf("POST _search: %v, want %v", got, heights)
	}
	if got := allPages(t, s, "/Patient/"+ada+"/Observation/_search?code=8302-2"); !slices.Equal(got, heights) {
		t.Fatalf("GET _search: %v, want %v", got, heights)
	}
	if got := allPages(t, s, "/Patient/"+ada+"/Condition"); !slices.Equal(got, []string{condition}) {
		t.Fatalf("Conditions: %v", got)
	}
	if got := allPages(t, s, "/Patient/"+alan+"/Condition"); len(got) != 0 {
		t.Fatalf("Alan's Conditions: %v", got)
	}
	if got := allPages(t, s, "/Patient/"+ada+"/Patient"); !slices.Equal(got, []string{ada}) {
		t.Fatalf("Patient/%s/Patient: %v", ada, got)
	}
	count := s.expect(s.do("GET", "/Patient/"+ada+"/Observation?_summary=count&_count=1", ""), http.StatusOK).json(t)
	if fmt.Sprint(count["total"]) != "4" || link(count, "next", s.base) != "" || len(asSlice(count["entry"])) != 0 {
		t.Fatalf("_summary=count: %v", count)
	}

	for _, c := range []struct{ path, says string }{
		{"/Patient/" + ada + "/Task", "Task is not in the R4 Patient compartment"},
		{"/Patient/" + ada + "/Device", "Device is not in the R4 Patient compartment"},
		{"/Patient/" + ada + "/Nonsense", `"Nonsense" is not an R4 resource type`},
		{"/Patient/" + ada + "/*", "Patient/{id}/*"},
		{"/Encounter/e1/Observation", "the Encounter compartment is not supported"},
		{"/Nonsense/e1/Observation", `"Nonsense" is not an R4 resource type`},
	} {
		r := s.expect(s.do("GET", c.path, ""), http.StatusNotFound)
		if code, diag, _ := outcomeIssue(t, r); code != "not-supported" || !strings.Contains(diag, c.says) {
			t.Errorf("GET %s: %s %q, want it to say %q", c.path, code, diag, c.says)
		}
	}
	s.expect(s.do("GET", "/Patient/"+url.PathEscape("bad id!")+"/Observation", ""), http.StatusBadRequest)
	s.expect(s.do("POST", "/Patient/"+ada+"/Observation", `{}`), http.StatusMethodNotAllowed)
}

// Unsupported operations are 404s that name the operation, at every level, never "not an R4
// resource type" or "not a valid resource id".
func TestUnsupportedOperationsAreNamed(t *testing.T) {
	s := newTestServer(t)
	id := s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated).json(t)["id"].(string)
	for _, c := range []struct{ method, path, says string }{
		{"GET", "/$graphql?query=x", "operation $graphql is not supported on the whole server"},
		{"POST", "/$graphql", "operation $graphql is not supported on the whole server"},
		{"GET", "/Patient/$match", "operation $match is not supported on Patient"},
		{"POST", "/Patient/$match", "operation $match is not supported on Patient"},
		{"GET", "/Patient/" + id + "/$summary", "operation $summary is not supported on Patient instances"},
		{"POST", "/Observation/o1/$lastn", "operation $lastn is not supported on Observation instances"},
		{"GET", "/Observation/o1/$everything", "it is at /fhir/Patient/$everything"},
		{"GET", "/Observation/$everything", "it is at /fhir/Patient/$everything"},
	} {
		r := s.do(c.method, c.path, "")
		if r.status != http.StatusNotFound {
			t.Errorf("%s %s: %d, want 404: %s", c.method, c.path, r.status, r.body)
			continue
		}
		if code, diag, _ := outcomeIssue(t, r); code != "not-supported" || !strings.Contains(diag, c.says) {
			t.Errorf("%s %s: %s %q, want it to say %q", c.method, c.path, code, diag, c.says)
		}
	}
	// What is not an operation is answered as before.
	r := s.expect(s.do("GET", "/Nonsense", ""), http.StatusNotFound)
	if _, diag, _ := outcomeIssue(t, r); !strings.Contains(diag, "not an R4 resource type") {
		t.Errorf("GET /Nonsense: %q", diag)
	}
	s.expect(s.do("POST", "/Patient/"+id, patientJSON), http.StatusMethodNotAllowed)
	s.expect(s.do("GET", "/Patient/"+id+"/$everything", ""), http.StatusOK)
}

func TestSummaryCountHasNoNextLink(t *testing.T) {
	s := newTestServer(t)
	for range 3 {
		s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated)
	}
	b := s.expect(s.do("GET", "/Patient?_summary=count&_count=1", ""), http.StatusOK).json(t)
	if fmt.Sprint(b["total"]) != "3" || len(asSlice(b["entry"])) != 0 {
		t.Fatalf("_summary=count: %v", b)
	}
	if next := link(b, "next", s.base); next != "" {
		t.Fatalf("_summary=count has a next link: %s", next)
	}
	// Without it, the same search pages.
	if next := link(s.expect(s.do("GET", "/Patient?_count=1", ""), http.StatusOK).json(t), "next", s.base); next == "" {
		t.Fatal("no next link on a search of 3 with _count=1")
	}
}

func TestIfModifiedSince(t *testing.T) {
	s := newTestServer(t)
	created := s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated)
	id := created.json(t)["id"].(string)
	lastModified := created.header.Get("Last-Modified")
	at, err := http.ParseTime(lastModified)
	if err != nil {
		t.Fatalf("Last-Modified %q: %v", lastModified, err)
	}
	for _, path := range []string{"/Patient/" + id, "/Patient/" + id + "/_history/1"} {
		r := s.expect(s.do("GET", path, "", "If-Modified-Since", lastModified), http.StatusNotModified)
		if len(r.body) != 0 || r.header.Get("ETag") != `W/"1"` {
			t.Errorf("GET %s, not modified: ETag %q, body %q", path, r.header.Get("ETag"), r.body)
		}
		s.expect(s.do("GET", path, "", "If-Modified-Since", at.Add(time.Hour).Format(http.TimeFormat)), http.StatusNotModified)
		s.expect(s.do("GET", path, "", "If-Modified-Since", at.Add(-time.Second).Format(http.TimeFormat)), http.StatusOK)
		s.expect(s.do("GET", path, "", "If-Modified-Since", "yesterday"), http.StatusOK)
		// If-None-Match decides when both are sent.
		s.expect(s.do("GET", path, "", "If-Modified-Since", lastModified, "If-None-Match", `W/"9"`), http.StatusOK)
	}
	// A newer version is modified since.
	s.h.SetNow(at.Add(time.Minute))
	s.expect(s.do("PUT", "/Patient/"+id, strings.Replace(patientJSON, `{"resourceType":"Patient",`, `{"resourceType":"Patient","id":"`+id+`",`, 1)), http.StatusOK)
	s.expect(s.do("GET", "/Patient/"+id, "", "If-Modified-Since", lastModified), http.StatusOK)
	s.expect(s.do("GET", "/Patient/"+id+"/_history/1", "", "If-Modified-Since", lastModified), http.StatusNotModified)
}

func TestCapabilityStatementDescribesTheServer(t *testing.T) {
	s := newTestServer(t, func(c *fhir.APIConfig) {
		c.SoftwareVersion, c.BaseURL = "1.2.3", "https://registry.example/fhir"
	})
	r := s.expect(s.do("GET", "/metadata", ""), http.StatusOK)
	if _, err := fhir.Parse(r.body); err != nil {
		t.Fatalf("the CapabilityStatement is not valid R4: %v", err)
	}
	cs := r.json(t)
	if sw := cs["software"].(map[string]any); sw["name"] != "cartreg" || sw["version"] != "1.2.3" {
		t.Errorf("software: %v", sw)
	}
	if impl := cs["implementation"].(map[string]any); impl["url"] != "https://registry.example/fhir" || impl["description"] == "" {
		t.Errorf("implementation: %v, want the configured base as its url", impl)
	}
	rest := cs["rest"].([]any)[0].(map[string]any)
	if fmt.Sprint(rest["compartment"]) != "["+fhir.PatientCompartmentURL+"]" {
		t.Errorf("rest.compartment: %v", rest["compartment"])
	}
	// Identity is wired: clients learn where to get tokens.
	security, _ := rest["security"].(map[string]any)
	if !strings.Contains(fmt.Sprint(security), "SMART-on-FHIR") || !strings.Contains(fmt.Sprint(security), s.h.URL+"/auth/token") {
		t.Errorf("rest.security: %v", security)
	}
	byType := map[string]map[string]any{}
	for _, x := range rest["resource"].([]any) {
		byType[x.(map[string]any)["type"].(string)] = x.(map[string]any)
	}
	for typ, profile := range map[string]string{
		"Procedure":    "http://cartreg.org/fhir/StructureDefinition/cart-infusion",
		"Observation":  "http://cartreg.org/fhir/StructureDefinition/remission-assessment",
		"AdverseEvent": "http://cartreg.org/fhir/StructureDefinition/cart-toxicity",
	} {
		if !slices.Contains(asSlice(byType[typ]["supportedProfile"]), any(profile)) {
			t.Errorf("%s supportedProfile: %v, want %s", typ, byType[typ]["supportedProfile"], profile)
		}
	}
	if ops := fmt.Sprint(byType["Patient"]["operation"]); !strings.Contains(ops, "everything") {
		t.Errorf("Patient operations: %v", ops)
	}
	// Observation has $validate, as every type has, and no operation of its own.
	if ops := fmt.Sprint(byType["Observation"]["operation"]); strings.Count(ops, "name:") != 1 || !strings.Contains(ops, "name:validate") {
		t.Errorf("Observation operations: %v", ops)
	}
	// At system level only Bulk Data's export.
	if ops := fmt.Sprint(rest["operation"]); strings.Count(ops, "name:") != 1 || !strings.Contains(ops, "name:export") {
		t.Errorf("system operations: %v", rest["operation"])
	}
}

// $everything takes its members from the CompartmentDefinition: another patient whose link
// names this one is not in the record, nor is a Task, which R4 leaves out of the compartment;
// what a member refers to comes with it.
func TestEverythingFollowsTheCompartmentDefinition(t *testing.T) {
	s := newTestServer(t)
	create := func(body string) string {
		t.Helper()
		return s.expect(s.do("POST", "/"+strings.SplitN(strings.Split(body, `"resourceType":"`)[1], `"`, 2)[0], body), http.StatusCreated).json(t)["id"].(string)
	}
	ada := create(`{"resourceType":"Patient","name":[{"family":"Lovelace"}]}`)
	linked := create(fmt.Sprintf(`{"resourceType":"Patient","name":[{"family":"Byron"}],"link":[{"other":{"reference":"Patient/%s"},"type":"seealso"}]}`, ada))
	doctor := create(`{"resourceType":"Practitioner","name":[{"family":"Babbage"}]}`)
	observation := create(fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/%s"},"performer":[{"reference":"Practitioner/%s"}]}`, ada, doctor))
	task := create(fmt.Sprintf(`{"resourceType":"Task","status":"requested","intent":"plan","for":{"reference":"Patient/%s"}}`, ada))

	got := map[string]bool{}
	for _, e := range asSlice(s.expect(s.do("GET", "/Patient/"+ada+"/$everything", ""), http.StatusOK).json(t)["entry"]) {
		r := e.(map[string]any)["resource"].(map[string]any)
		got[r["resourceType"].(string)+"/"+r["id"].(string)] = true
	}
	for _, want := range []string{"Patient/" + ada, "Observation/" + observation, "Practitioner/" + doctor} {
		if !got[want] {
			t.Errorf("$everything lacks %s: %v", want, got)
		}
	}
	for _, not := range []string{"Patient/" + linked, "Task/" + task} {
		if got[not] {
			t.Errorf("$everything has %s", not)
		}
	}
}
