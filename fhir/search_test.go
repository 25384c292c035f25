package fhir_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"
)

// searchFixtures are written once per test server; queries below are checked against them.
var searchFixtures = []string{
	`{"resourceType":"Practitioner","id":"dr1","name":[{"family":"House","given":["Gregory"]}]}`,
	`{"resourceType":"Patient","id":"p1","active":true,"gender":"male","birthDate":"1974-12-25",
	  "identifier":[{"system":"urn:sys","value":"12345"}],
	  "name":[{"family":"Chalmers","given":["Peter","James"]}],
	  "telecom":[{"system":"email","value":"peter@example.org"},{"system":"phone","value":"555-0100"}],
	  "address":[{"city":"Zürich"}],
	  "generalPractitioner":[{"reference":"Practitioner/dr1"}]}`,
	`{"resourceType":"Patient","id":"p2","gender":"female","birthDate":"1980-06",
	  "identifier":[{"system":"urn:sys","value":"67890"}],
	  "name":[{"family":"Müller","given":["Érica"]}],"deceasedDateTime":"2020-01-01"}`,
	`{"resourceType":"Patient","id":"p3","gender":"male","birthDate":"2001-01-01",
	  "name":[{"family":"Smith","given":["Peterson"]}]}`,
	`{"resourceType":"Group","id":"g1","type":"person","actual":true}`,
	`{"resourceType":"Observation","id":"o1","status":"final",
	  "code":{"coding":[{"system":"http://loinc.org","code":"29463-7","display":"Body Weight"}],"text":"Body Weight"},
	  "subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-05-01T10:00:00Z",
	  "valueQuantity":{"value":185,"unit":"lbs","system":"http://unitsofmeasure.org","code":"[lb_av]"}}`,
	`{"resourceType":"Observation","id":"o2","status":"final",
	  "code":{"coding":[{"system":"http://loinc.org","code":"8302-2","display":"Body height"}]},
	  "subject":{"reference":"Patient/p2"},"effectiveDateTime":"2021-03-01",
	  "valueQuantity":{"value":165,"unit":"cm","system":"http://unitsofmeasure.org","code":"cm"}}`,
	`{"resourceType":"Observation","id":"o3","status":"amended",
	  "code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},
	  "subject":{"reference":"Patient/p2"},"effectivePeriod":{"start":"2019-01-01","end":"2019-12-31"},
	  "valueQuantity":{"value":70.5,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}}`,
	`{"resourceType":"Observation","id":"o4","status":"final","code":{"text":"group survey"},
	  "subject":{"reference":"Group/g1"},"valueCodeableConcept":{"coding":[{"system":"urn:answers","code":"yes"}]}}`,
	`{"resourceType":"RiskAssessment","id":"r1","status":"final","subject":{"reference":"Patient/p1"},
	  "prediction":[{"probabilityDecimal":0.02}]}`,
	`{"resourceType":"RiskAssessment","id":"r2","status":"final","subject":{"reference":"Patient/p2"},
	  "prediction":[{"probabilityDecimal":0.5}]}`,
	`{"resourceType":"ValueSet","id":"vs1","status":"active","url":"http://example.org/fhir/ValueSet/abc"}`,
	`{"resourceType":"Observation","id":"o5","status":"final","code":{"text":"remote"},
	  "meta":{"tag":[{"system":"urn:tags","code":"imported"}],"profile":["http://example.org/StructureDefinition/remote-obs"]},
	  "subject":{"reference":"http://elsewhere.example/fhir/Patient/p1"}}`,
}

func loadSearchFixtures(t *testing.T, s *testServer) {
	t.Helper()
	for _, f := range searchFixtures {
		typ := resourceTypeOf(f)
		var id string
		fmt.Sscanf(f[strings.Index(f, `"id":"`)+6:], "%s", &id)
		id = strings.SplitN(id, `"`, 2)[0]
		s.expect(s.do("PUT", "/"+typ+"/"+id, f), http.StatusCreated)
	}
}

// found lists the ids of a searchset's entries by mode, in order.
func found(t *testing.T, r *response, mode string) []string {
	t.Helper()
	var ids []string
	for _, e := range asSlice(r.json(t)["entry"]) {
		entry := e.(map[string]any)
		if entry["search"].(map[string]any)["mode"] != mode {
			continue
		}
		ids = append(ids, entry["resource"].(map[string]any)["id"].(string))
	}
	return ids
}

func TestSearchParameterTypesModifiersAndPrefixes(t *testing.T) {
	s := newTestServer(t)
	loadSearchFixtures(t, s)
	cases := []struct {
		query string
		want  string // ids, sorted, space-separated
	}{
		// string: starts-with, case- and accent-insensitive; :exact; :contains
		{"Patient?name=peter", "p1 p3"},
		{"Patient?name=PETER", "p1 p3"},
		{"Patient?name:exact=Peter", "p1"},
		{"Patient?name:exact=peter", ""},
		{"Patient?name:contains=ete", "p1 p3"},
		{"Patient?name=erica", "p2"},
		{"Patient?family=muller", "p2"},
		{"Patient?address-city=zurich", "p1"},
		// token: code, system|code, |code, system|, :not, :text, :missing, identifiers, booleans
		{"Patient?gender=male", "p1 p3"},
		{"Patient?gender:not=male", "p2"},
		{"Patient?identifier=urn:sys|12345", "p1"},
		{"Patient?identifier=12345", "p1"},
		{"Patient?identifier=|12345", ""},
		{"Patient?identifier=urn:sys|", "p1 p2"},
		{"Patient?identifier:missing=true", "p3"},
		{"Patient?active=true", "p1"},
		{"Patient?active:missing=true", "p2 p3"},
		{"Patient?email=peter@example.org", "p1"},
		{"Patient?phone=peter@example.org", ""},
		{"Patient?deceased=true", "p2"},
		{"Observation?code=http://loinc.org|29463-7", "o1 o3"},
		{"Observation?code=8302-2", "o2"},
		{"Observation?code:text=body", "o1 o2"},
		{"Observation?status=final,amended", "o1 o2 o3 o4 o5"},
		{"Observation?value-concept=urn:answers|yes", "o4"},
		// date: every prefix, partial dates as ranges, periods
		{"Patient?birthdate=1974-12-25", "p1"},
		{"Patient?birthdate=1974", "p1"},
		{"Patient?birthdate=1980", "p2"},
		{"Patient?birthdate=1980-06-15", ""},
		{"Patient?birthdate=ne1974-12-25", "p2 p3"},
		{"Patient?birthdate=lt1980", "p1"},
		{"Patient?birthdate=gt1980", "p3"},
		{"Patient?birthdate=ge1980-06", "p2 p3"},
		{"Patient?birthdate=le1980-06", "p1 p2"},
		{"Patient?birthdate=sa1975", "p2 p3"},
		{"Patient?birthdate=eb1975", "p1"},
		{"Patient?birthdate=ap1980-06-10", "p2"},
		{"Patient?birthdate=ge1970&birthdate=lt1990", "p1 p2"},
		{"Patient?death-date=2020", "p2"},
		{"Observation?date=2019", "o3"},
		{"Observation?date=ge2020-01-01", "o1 o2"},
		{"Observation?date=2020-05-01T12:00:00%2B02:00", "o1"}, // the same instant as 10:00Z
		{"Observation?date=2020-05-01T10:00:00%2B02:00", ""},
		{"Observation?date=2020-05-01T10:00:00Z", "o1"},
		{"Patient?_lastUpdated=gt2000-01-01", "p1 p2 p3"},
		{"Patient?_lastUpdated=lt2000-01-01", ""},
		// reference: Type/id, id alone, :Type, targets restricted by the parameter
		{"Observation?subject=Patient/p1", "o1"}, // not o5, whose Patient/p1 is on another server
		{"Observation?subject=http://elsewhere.example/fhir/Patient/p1", "o5"},
		{"Observation?_tag=urn:tags|imported", "o5"},
		{"Observation?_profile=http://example.org/StructureDefinition/remote-obs", "o5"},
		{"Observation?subject=p1", "o1"},
		{"Observation?subject:Patient=p2", "o2 o3"},
		{"Observation?patient=p2", "o2 o3"},
		{"Observation?subject=Group/g1", "o4"},
		{"Observation?patient=g1", ""},
		{"Observation?subject:missing=true", ""},
		{"Patient?general-practitioner=Practitioner/dr1", "p1"},
		// chains and reverse chains
		{"Observation?subject:Patient.name=chalmers", "o1"},
		{"Observation?patient.birthdate=1980", "o2 o3"},
		{"Observation?subject.name=erica", "o2 o3"},
		{"Observation?patient.general-practitioner.name=house", "o1"},
		{"Patient?_has:Observation:patient:code=http://loinc.org|8302-2", "p2"},
		{"Patient?_has:Observation:patient:code=29463-7", "p1 p2"},
		{"Practitioner?_has:Patient:general-practitioner:_has:Observation:patient:code=29463-7", "dr1"},
		// number
		{"RiskAssessment?probability=0.02", "r1"},
		{"RiskAssessment?probability=gt0.1", "r2"},
		{"RiskAssessment?probability=le0.02", "r1"},
		// quantity, with and without system and unit
		{"Observation?value-quantity=185", "o1"},
		{"Observation?value-quantity=185|http://unitsofmeasure.org|[lb_av]", "o1"},
		{"Observation?value-quantity=185||kg", ""},
		{"Observation?value-quantity=gt100", "o1 o2"},
		{"Observation?value-quantity=lt100|http://unitsofmeasure.org|kg", "o3"},
		{"Observation?value-quantity=70.5", "o3"},
		{"Observation?value-quantity=70", ""},
		{"Observation?value-quantity=ap70", "o3"},
		// uri
		{"ValueSet?url=http://example.org/fhir/ValueSet/abc", "vs1"},
		{"ValueSet?url=http://example.org/fhir", ""},
		{"ValueSet?url:below=http://example.org/fhir", "vs1"},
		{"ValueSet?url:above=http://example.org/fhir/ValueSet/abc/v2", "vs1"},
		// _id, OR and AND
		{"Patient?_id=p1,p3", "p1 p3"},
		{"Patient?gender=male,female&name=peter", "p1 p3"},
		{"Patient?name=peter&name=chalmers", "p1"},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			s := s.with(t)
			r := s.expect(s.do("GET", "/"+tc.query, ""), http.StatusOK)
			ids := found(t, r, "match")
			sort.Strings(ids)
			if got := strings.Join(ids, " "); got != tc.want {
				t.Fatalf("found %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAbsoluteReferencesToThisServerAreLocal(t *testing.T) {
	s := newTestServer(t)
	loadSearchFixtures(t, s)
	local := fmt.Sprintf(`{"resourceType":"Observation","id":"o6","status":"final","code":{"text":"x"},"subject":{"reference":"%s/Patient/p3"}}`, s.base)
	s.expect(s.do("PUT", "/Observation/o6", local), http.StatusCreated)
	for _, q := range []string{"Observation?subject=Patient/p3", "Observation?subject=" + s.base + "/Patient/p3", "Observation?patient=p3"} {
		if got := strings.Join(found(t, s.expect(s.do("GET", "/"+q, ""), http.StatusOK), "match"), " "); got != "o6" {
			t.Errorf("%s: %q, want o6", q, got)
		}
	}
}

func TestSearchSortsAndPagesStably(t *testing.T) {
	s := newTestServer(t)
	loadSearchFixtures(t, s)
	for _, tc := range []struct{ query, want string }{
		{"Patient?_sort=birthdate", "p1 p2 p3"},
		{"Patient?_sort=-birthdate", "p3 p2 p1"},
		{"Patient?_sort=family", "p1 p2 p3"},
		{"Patient?_sort=-gender,_id", "p1 p3 p2"},
		{"Observation?_sort=-date&_count=2", "o2 o1"},
	} {
		if got := strings.Join(found(t, s.expect(s.do("GET", "/"+tc.query, ""), http.StatusOK), "match"), " "); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.query, got, tc.want)
		}
	}

	for i := 0; i < 23; i++ {
		s.expect(s.do("PUT", fmt.Sprintf("/Patient/page%02d", i), fmt.Sprintf(`{"resourceType":"Patient","id":"page%02d","name":[{"family":"Paging"}],"birthDate":"19%02d-01-01"}`, i, 50+i%7)), http.StatusCreated)
	}
	for _, sortBy := range []string{"", "&_sort=-birthdate", "&_sort=birthdate,-_id"} {
		var all []string
		var pages []string
		next := "/Patient?family=paging&_count=5&_total=accurate" + sortBy
		for len(pages) < 10 && next != "" {
			b := s.expect(s.do("GET", next, ""), http.StatusOK)
			m := b.json(t)
			if fmt.Sprint(m["total"]) != "23" {
				t.Fatalf("total = %v, want 23", m["total"])
			}
			pages = append(pages, next)
			all = append(all, found(t, b, "match")...)
			next = link(m, "next", s.base)
		}
		seen := map[string]bool{}
		for _, id := range all {
			if seen[id] {
				t.Fatalf("sort %q: %s on two pages", sortBy, id)
			}
			seen[id] = true
		}
		if len(all) != 23 || len(pages) != 5 {
			t.Fatalf("sort %q: %d resources over %d pages, want 23 over 5", sortBy, len(all), len(pages))
		}
		// previous from the third page is the second page
		third := s.expect(s.do("GET", pages[2], ""), http.StatusOK).json(t)
		prev := s.expect(s.do("GET", link(third, "previous", s.base), ""), http.StatusOK)
		if got, want := strings.Join(found(t, prev, "match"), " "), strings.Join(all[5:10], " "); got != want {
			t.Fatalf("sort %q: previous page %q, want %q", sortBy, got, want)
		}
	}
}

func link(bundle map[string]any, relation, base string) string {
	for _, l := range asSlice(bundle["link"]) {
		if m := l.(map[string]any); m["relation"] == relation {
			return strings.TrimPrefix(m["url"].(string), base)
		}
	}
	return ""
}

func TestSearchIncludesAndShapesResults(t *testing.T) {
	s := newTestServer(t)
	loadSearchFixtures(t, s)
	join := func(r *response, mode string) string {
		ids := found(t, r, mode)
		sort.Strings(ids)
		return strings.Join(ids, " ")
	}
	r := s.expect(s.do("GET", "/Observation?_id=o1&_include=Observation:subject", ""), http.StatusOK)
	if join(r, "match") != "o1" || join(r, "include") != "p1" {
		t.Fatalf("_include: matches %q includes %q", join(r, "match"), join(r, "include"))
	}
	r = s.expect(s.do("GET", "/Observation?_id=o1&_include=Observation:subject&_include:iterate=Patient:general-practitioner", ""), http.StatusOK)
	if join(r, "include") != "dr1 p1" {
		t.Fatalf("_include:iterate: includes %q", join(r, "include"))
	}
	r = s.expect(s.do("GET", "/Patient?_id=p1&_revinclude=Observation:subject", ""), http.StatusOK)
	if join(r, "include") != "o1" {
		t.Fatalf("_revinclude followed a reference to another server: includes %q", join(r, "include"))
	}
	r = s.expect(s.do("GET", "/Patient?_id=p2&_revinclude=Observation:subject", ""), http.StatusOK)
	if join(r, "match") != "p2" || join(r, "include") != "o2 o3" {
		t.Fatalf("_revinclude: matches %q includes %q", join(r, "match"), join(r, "include"))
	}

	raw := s.expect(s.do("GET", "/Patient?_summary=count&_total=accurate", ""), http.StatusOK)
	if bytes.Contains(raw.body, []byte(`\u0026`)) || !bytes.Contains(raw.body, []byte("&_total")) {
		t.Fatalf("links are HTML-escaped: %s", raw.body)
	}
	count := s.expect(s.do("GET", "/Patient?_summary=count", ""), http.StatusOK).json(t)
	if fmt.Sprint(count["total"]) != "3" || count["entry"] != nil {
		t.Fatalf("_summary=count: %v", count)
	}
	elements := s.expect(s.do("GET", "/Patient?_id=p1&_elements=gender", ""), http.StatusOK).json(t)
	p1 := asSlice(elements["entry"])[0].(map[string]any)["resource"].(map[string]any)
	if p1["gender"] != "male" || p1["name"] != nil || p1["id"] != "p1" || !strings.Contains(fmt.Sprint(p1["meta"]), "SUBSETTED") {
		t.Fatalf("_elements=gender: %v", p1)
	}

	system := s.expect(s.do("GET", "?_type=Patient,Observation&_id=p1,o1", ""), http.StatusOK)
	if join(system, "match") != "o1 p1" {
		t.Fatalf("system search: %q", join(system, "match"))
	}
	form := url.Values{"gender": {"female"}}
	post := s.expect(s.do("POST", "/Patient/_search", form.Encode(), "Content-Type", "application/x-www-form-urlencoded"), http.StatusOK)
	if join(post, "match") != "p2" {
		t.Fatalf("POST _search: %q", join(post, "match"))
	}
}

func TestSearchReportsWhatItCannotDo(t *testing.T) {
	s := newTestServer(t)
	loadSearchFixtures(t, s)
	r := s.expect(s.do("GET", "/Patient?gender=male&shoe-size=42", ""), http.StatusOK)
	if got := found(t, r, "match"); len(got) != 2 {
		t.Fatalf("an unknown parameter changed the result: %v", got)
	}
	var outcome map[string]any
	for _, e := range asSlice(r.json(t)["entry"]) {
		if e.(map[string]any)["search"].(map[string]any)["mode"] == "outcome" {
			outcome = e.(map[string]any)["resource"].(map[string]any)
		}
	}
	if outcome == nil || !strings.Contains(fmt.Sprint(outcome), "shoe-size") {
		t.Fatalf("the ignored parameter was not reported: %s", r.body)
	}
	strict := s.expect(s.do("GET", "/Patient?gender=male&shoe-size=42", "", "Prefer", "handling=strict"), http.StatusBadRequest)
	if _, diag, _ := outcomeIssue(t, strict); !strings.Contains(diag, "shoe-size") {
		t.Fatalf("strict: %s", strict.body)
	}
	for _, bad := range []string{"Patient?birthdate=yesterday", "Patient?birthdate=xx1980", "RiskAssessment?probability=lots",
		"Patient?_count=many", "Patient?gender:fuzzy=male", "Patient?_sort=shoe-size", "Patient?_cursor=garbage",
		"Observation?value-quantity=1|2", "Patient?identifier=a|b|c"} {
		if r := s.do("GET", "/"+bad, ""); r.status != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400: %s", bad, r.status, r.body)
		}
	}
}

// _id and _lastUpdated are read from the resource row, so no search table holds them, and
// search, sorting and updates still see them.
func TestIDAndLastUpdatedComeFromTheResourceRow(t *testing.T) {
	s := newTestServer(t)
	s.expect(s.do("PUT", "/Patient/a", `{"resourceType":"Patient","id":"a","gender":"male"}`), http.StatusCreated)
	s.expect(s.do("PUT", "/Patient/b", `{"resourceType":"Patient","id":"b","gender":"male"}`), http.StatusCreated)
	time.Sleep(5 * time.Millisecond)
	between := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	time.Sleep(5 * time.Millisecond)
	s.expect(s.do("PUT", "/Patient/a", `{"resourceType":"Patient","id":"a","gender":"female"}`), http.StatusOK)

	var columnRows, otherRows int
	if err := s.db.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM search_token WHERE code = '_id') + (SELECT count(*) FROM search_date WHERE code = '_lastUpdated'),
		(SELECT count(*) FROM search_token WHERE code = 'gender')`).Scan(&columnRows, &otherRows); err != nil {
		t.Fatal(err)
	}
	if columnRows != 0 || otherRows != 2 {
		t.Fatalf("%d _id/_lastUpdated index rows (want 0), %d gender rows (want 2)", columnRows, otherRows)
	}
	for _, tc := range []struct{ query, want string }{
		{"Patient?_id=a", "a"},
		{"Patient?_id=a&gender=male", ""},
		{"Patient?_lastUpdated=ge" + between, "a"},
		{"Patient?_lastUpdated=lt" + between, "b"},
		{"Patient?_sort=-_lastUpdated", "a b"},
		{"Patient?_sort=_lastUpdated", "b a"},
	} {
		if got := strings.Join(found(t, s.expect(s.do("GET", "/"+tc.query, ""), http.StatusOK), "match"), " "); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.query, got, tc.want)
		}
	}
}
