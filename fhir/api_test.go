package fhir_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testServer is the whole HTTP stack, as serve wires it, on a database of the test's own.
// newTestServer's configure functions change the API's settings before it is built.
type testServer struct {
	t    testing.TB
	base string
	db   *pgxpool.Pool
	h    *apptest.Harness
	// published are the rows the server wrote at start-up (the registry's definitions), per
	// table and per resource type: the counts these tests compare leave them out.
	published, publishedTypes map[string]int
}

func newTestServer(t testing.TB, configure ...func(*fhir.APIConfig)) *testServer {
	t.Helper()
	return newAppTestServer(t, func(c *app.Config) {
		for _, f := range configure {
			f(&c.FHIR)
		}
	})
}

// newAppTestServer is newTestServer with the whole wiring's settings to change.
func newAppTestServer(t testing.TB, configure func(*app.Config)) *testServer {
	t.Helper()
	h := apptest.New(t, apptest.WithConfig(configure))
	s := &testServer{t: t, base: h.URL + "/fhir", db: h.DB, h: h, published: map[string]int{}}
	for _, table := range countedTables {
		s.published[table] = s.countRows(table)
	}
	s.publishedTypes = s.countsByType()
	return s
}

var countedTables = []string{"resource", "resource_version", "search_string", "search_token", "search_date",
	"search_reference", "search_number", "search_quantity", "search_uri"}

// with is the server seen from a subtest, so failures are reported where they happen.
func (s *testServer) with(t testing.TB) *testServer {
	c := *s
	c.t = t
	return &c
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) json(t testing.TB) map[string]any {
	t.Helper()
	return (&apptest.Reply{Body: r.body}).JSON(t)
}

// do sends a request; headers come as name, value pairs. Bodies are FHIR JSON unless a
// Content-Type header says otherwise.
func (s *testServer) do(method, path, body string, headers ...string) *response {
	s.t.Helper()
	r := s.h.DoURL(method, s.base+path, body, headers...)
	return &response{status: r.Status, header: r.Header, body: r.Body}
}

func (s *testServer) expect(r *response, status int) *response {
	s.t.Helper()
	if r.status != status {
		s.t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	return r
}

// countRows is how many rows a table has beyond those written at start-up: the proof that a
// refused write wrote nothing.
func (s *testServer) countRows(table string) int {
	s.t.Helper()
	var n int
	if err := s.db.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		s.t.Fatal(err)
	}
	return n - s.published[table]
}

// outcomeIssue returns the first issue of an OperationOutcome response.
func outcomeIssue(t testing.TB, r *response) (code, diagnostics string, expression []any) {
	t.Helper()
	m := r.json(t)
	if m["resourceType"] != "OperationOutcome" {
		t.Fatalf("not an OperationOutcome: %s", r.body)
	}
	issue := m["issue"].([]any)[0].(map[string]any)
	diagnostics, _ = issue["diagnostics"].(string)
	expression, _ = issue["expression"].([]any)
	return issue["code"].(string), diagnostics, expression
}

const patientJSON = `{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.36.146.595.217.0.1","value":"12345"}],
	"name":[{"family":"Chalmers","given":["Peter","James"]}],"gender":"male","birthDate":"1974-12-25"}`

func TestCreateReadUpdateDeleteAndHistory(t *testing.T) {
	s := newTestServer(t)

	created := s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated)
	body := created.json(t)
	id := body["id"].(string)
	if created.header.Get("ETag") != `W/"1"` || created.header.Get("Last-Modified") == "" ||
		!strings.HasSuffix(created.header.Get("Location"), "/fhir/Patient/"+id+"/_history/1") {
		t.Fatalf("create headers: %v", created.header)
	}
	meta := body["meta"].(map[string]any)
	if meta["versionId"] != "1" || meta["lastUpdated"] == nil {
		t.Fatalf("meta = %v", meta)
	}

	read := s.expect(s.do("GET", "/Patient/"+id, ""), http.StatusOK)
	if !bytes.Equal(read.body, created.body) || read.header.Get("ETag") != `W/"1"` {
		t.Fatalf("read differs from what create returned:\n%s\n%s", read.body, created.body)
	}
	if ct := read.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Fatalf("Content-Type = %q", ct)
	}

	updated := strings.Replace(patientJSON, `"gender":"male"`, `"id":"`+id+`","gender":"other"`, 1)
	up := s.expect(s.do("PUT", "/Patient/"+id, updated), http.StatusOK)
	if up.header.Get("ETag") != `W/"2"` || up.json(t)["gender"] != "other" {
		t.Fatalf("update: %v %s", up.header, up.body)
	}
	if v1 := s.expect(s.do("GET", "/Patient/"+id+"/_history/1", ""), http.StatusOK); v1.json(t)["gender"] != "male" {
		t.Fatalf("vread 1 = %s", v1.body)
	}

	s.expect(s.do("DELETE", "/Patient/"+id, ""), http.StatusNoContent)
	code, _, _ := outcomeIssue(t, s.expect(s.do("GET", "/Patient/"+id, ""), http.StatusGone))
	if code != "deleted" {
		t.Fatalf("read after delete: issue code %s", code)
	}
	s.expect(s.do("DELETE", "/Patient/"+id, ""), http.StatusNoContent)           // idempotent
	s.expect(s.do("DELETE", "/Patient/never-was", ""), http.StatusNoContent)     // idempotent
	s.expect(s.do("GET", "/Patient/"+id+"/_history/3", ""), http.StatusGone)     // the deletion
	s.expect(s.do("GET", "/Patient/"+id+"/_history/4", ""), http.StatusNotFound) // no such version

	history := s.expect(s.do("GET", "/Patient/"+id+"/_history", ""), http.StatusOK).json(t)
	entries := history["entry"].([]any)
	if history["type"] != "history" || len(entries) != 3 {
		t.Fatalf("history: %v", history)
	}
	methods := ""
	for _, e := range entries {
		methods += e.(map[string]any)["request"].(map[string]any)["method"].(string) + " "
	}
	if methods != "DELETE PUT POST " {
		t.Fatalf("history methods newest first = %q", methods)
	}

	// Updating a deleted resource brings it back as a new version.
	s.expect(s.do("PUT", "/Patient/"+id, updated), http.StatusCreated)
	if v := s.expect(s.do("GET", "/Patient/"+id, ""), http.StatusOK); v.header.Get("ETag") != `W/"4"` {
		t.Fatalf("resurrected version: %s", v.header.Get("ETag"))
	}
}

func TestUpdateAsCreateAndItsRules(t *testing.T) {
	s := newTestServer(t)
	withID := strings.Replace(patientJSON, `"gender"`, `"id":"pat-1","gender"`, 1)
	r := s.expect(s.do("PUT", "/Patient/pat-1", withID), http.StatusCreated)
	if r.header.Get("ETag") != `W/"1"` || !strings.HasSuffix(r.header.Get("Location"), "/Patient/pat-1/_history/1") {
		t.Fatalf("create on update: %v", r.header)
	}
	before := s.countRows("resource_version")
	cases := []struct {
		name, path, body string
		status           int
		where            string
	}{
		{"id differs from the URL", "/Patient/pat-2", withID, http.StatusBadRequest, "Patient.id"},
		{"no id", "/Patient/pat-1", patientJSON, http.StatusBadRequest, "Patient.id"},
		{"type differs from the URL", "/Observation/pat-1", withID, http.StatusBadRequest, "resourceType"},
		{"invalid id in the URL", "/Patient/not%20valid", withID, http.StatusBadRequest, ""},
		{"unknown type", "/Pateint/pat-1", withID, http.StatusNotFound, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := s.with(t)
			r := s.do("PUT", tc.path, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			_, _, expr := outcomeIssue(t, r)
			if tc.where != "" && (len(expr) == 0 || expr[0] != tc.where) {
				t.Fatalf("expression %v, want %s", expr, tc.where)
			}
		})
	}
	if after := s.countRows("resource_version"); after != before {
		t.Fatalf("refused writes wrote %d versions", after-before)
	}
}

func TestInvalidResourcesAreRefusedWithLocations(t *testing.T) {
	s := newTestServer(t)
	cases := []struct {
		name, body string
		where      []string
	}{
		{"bad date and code", `{"resourceType":"Patient","gender":"robot","birthDate":"1974-13-45"}`, []string{"Patient.birthDate", "Patient.gender"}},
		{"unknown element", `{"resourceType":"Patient","favouriteColour":"blue"}`, []string{"Patient.favouriteColour"}},
		{"missing required element", `{"resourceType":"Observation","code":{"text":"weight"}}`, []string{"Observation"}},
		{"reference to a type not allowed", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Medication/1"}}`, []string{"Observation.subject"}},
		{"malformed JSON", `{"resourceType":"Patient",`, nil},
		{"not an object", `[1,2,3]`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := s.with(t)
			r := s.expect(s.do("POST", "/"+resourceTypeOf(tc.body), tc.body), http.StatusBadRequest)
			m := r.json(t)
			var got []string
			for _, is := range m["issue"].([]any) {
				issue := is.(map[string]any)
				if issue["severity"] != "error" || issue["diagnostics"] == "" {
					t.Errorf("issue without severity error or diagnostics: %v", issue)
				}
				for _, e := range asSlice(issue["expression"]) {
					got = append(got, e.(string))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.where) {
				t.Fatalf("locations %v, want %v\n%s", got, tc.where, r.body)
			}
		})
	}
	if n := s.countRows("resource_version"); n != 0 {
		t.Fatalf("%d versions written by refused creates", n)
	}
}

func resourceTypeOf(body string) string {
	var m map[string]any
	if json.Unmarshal([]byte(body), &m) == nil {
		if t, ok := m["resourceType"].(string); ok {
			return t
		}
	}
	return "Patient"
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func TestContentNegotiation(t *testing.T) {
	s := newTestServer(t)
	id := s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated).json(t)["id"].(string)

	cases := []struct {
		name    string
		method  string
		path    string
		body    string
		headers []string
		status  int
		says    string
	}{
		{"XML body", "POST", "/Patient", "<Patient/>", []string{"Content-Type", "application/fhir+xml"}, http.StatusUnsupportedMediaType, "XML is not supported"},
		{"XML wanted", "GET", "/Patient/" + id, "", []string{"Accept", "application/fhir+xml"}, http.StatusNotAcceptable, "XML is not supported"},
		{"_format=xml", "GET", "/Patient/" + id + "?_format=xml", "", nil, http.StatusNotAcceptable, "XML is not supported"},
		{"plain JSON body with charset", "POST", "/Patient", patientJSON, []string{"Content-Type", "application/json; charset=utf-8"}, http.StatusCreated, ""},
		{"_format=json", "GET", "/Patient/" + id + "?_format=json", "", nil, http.StatusOK, ""},
		{"browser Accept", "GET", "/Patient/" + id, "", []string{"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, http.StatusOK, ""},
		{"JSON refused by q=0", "GET", "/Patient/" + id, "", []string{"Accept", "application/fhir+json;q=0, application/xml"}, http.StatusNotAcceptable, "XML is not supported"},
		{"JSON at a low quality", "GET", "/Patient/" + id, "", []string{"Accept", "application/xml, application/fhir+json;q=0.1"}, http.StatusOK, ""},
		{"R4 by fhirVersion", "GET", "/Patient/" + id, "", []string{"Accept", "application/fhir+json; fhirVersion=4.0; charset=utf-8"}, http.StatusOK, ""},
		{"another FHIR version", "GET", "/Patient/" + id, "", []string{"Accept", "application/fhir+json; fhirVersion=3.0"}, http.StatusNotAcceptable, "FHIR JSON only"},
		{"a wildcard type", "GET", "/Patient/" + id, "", []string{"Accept", "application/*"}, http.StatusOK, ""},
		{"_format overrides Accept", "GET", "/Patient/" + id + "?_format=application/fhir%2Bjson", "", []string{"Accept", "application/fhir+xml"}, http.StatusOK, ""},
		{"trailing slash", "GET", "/Patient/" + id + "/", "", nil, http.StatusOK, ""},
		{"PATCH that is not JSON Patch", "PATCH", "/Patient/" + id, `{"gender":"female"}`, []string{"Content-Type", "application/merge-patch+json"}, http.StatusUnsupportedMediaType, "JSON Patch"},
		{"a body without a Content-Type", "POST", "/Patient", patientJSON, []string{"Content-Type", ""}, http.StatusUnsupportedMediaType, "needs a Content-Type"},
		{"a transaction without a Content-Type", "POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient/` + id + `"}}]}`,
			[]string{"Content-Type", ""}, http.StatusUnsupportedMediaType, "needs a Content-Type"},
		{"the patient is still there", "GET", "/Patient/" + id, "", nil, http.StatusOK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := s.with(t)
			r := s.do(tc.method, tc.path, tc.body, tc.headers...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.says != "" {
				if _, diag, _ := outcomeIssue(t, r); !strings.Contains(diag, tc.says) {
					t.Fatalf("diagnostics %q do not say %q", diag, tc.says)
				}
			}
		})
	}

	pretty := s.expect(s.do("GET", "/Patient/"+id+"?_pretty=true", ""), http.StatusOK)
	if !bytes.Contains(pretty.body, []byte("\n  \"")) {
		t.Fatalf("_pretty not indented: %s", pretty.body)
	}
	// Errors read _pretty as the API does: they leave through the server's error handler.
	if r := s.expect(s.do("GET", "/Patient/missing?_pretty=true", ""), http.StatusNotFound); !bytes.Contains(r.body, []byte("\n  \"")) {
		t.Fatalf("an error with _pretty=true is not indented: %s", r.body)
	}
	if r := s.expect(s.do("GET", "/Patient/missing?_pretty=false", ""), http.StatusNotFound); bytes.Contains(r.body, []byte("\n")) {
		t.Fatalf("an error with _pretty=false is indented: %s", r.body)
	}
	minimal := s.expect(s.do("POST", "/Patient", patientJSON, "Prefer", "return=minimal"), http.StatusCreated)
	if len(minimal.body) != 0 || minimal.header.Get("Location") == "" {
		t.Fatalf("return=minimal: %q %v", minimal.body, minimal.header)
	}
	oo := s.expect(s.do("POST", "/Patient", patientJSON, "Prefer", "return=OperationOutcome"), http.StatusCreated)
	if code, _, _ := outcomeIssue(t, oo); code != "informational" {
		t.Fatalf("return=OperationOutcome: %s", oo.body)
	}
}

func TestConditionalCreate(t *testing.T) {
	s := newTestServer(t)
	cond := "identifier=urn:oid:1.2.36.146.595.217.0.1|12345"
	first := s.expect(s.do("POST", "/Patient", patientJSON, "If-None-Exist", cond), http.StatusCreated).json(t)["id"]
	again := s.expect(s.do("POST", "/Patient", patientJSON, "If-None-Exist", cond), http.StatusOK).json(t)["id"]
	if first != again {
		t.Fatalf("second conditional create returned %v, want the existing %v", again, first)
	}
	s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated) // a plain create makes a second
	code, _, _ := outcomeIssue(t, s.expect(s.do("POST", "/Patient", patientJSON, "If-None-Exist", cond), http.StatusPreconditionFailed))
	if code != "duplicate" {
		t.Fatalf("several matches: issue code %s", code)
	}
	s.expect(s.do("POST", "/Patient", patientJSON, "If-None-Exist", "nonsense-parameter=1"), http.StatusBadRequest)
}

func TestIdenticalConditionalCreatesAtOnceMakeOneResource(t *testing.T) {
	s := newTestServer(t)
	body := strings.Replace(patientJSON, "12345", "concurrent-1", 1)
	var wg sync.WaitGroup
	statuses := make([]int, 20)
	for i := range statuses {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			statuses[i] = s.do("POST", "/Patient", body, "If-None-Exist", "identifier=urn:oid:1.2.36.146.595.217.0.1|concurrent-1").status
		}(i)
	}
	wg.Wait()
	created := 0
	for _, st := range statuses {
		switch st {
		case http.StatusCreated:
			created++
		case http.StatusOK:
		default:
			t.Fatalf("statuses %v", statuses)
		}
	}
	if created != 1 || s.countRows("resource") != 1 {
		t.Fatalf("%d creates reported, %d resources stored; want 1 and 1", created, s.countRows("resource"))
	}
}

// A conditional create whose match exists must not queue behind another writer with the
// same criteria (every Bundle from a site conditionally creates the site), while one whose
// match does not exist yet must wait for that writer, and then find what it made.
func TestConditionalCreatesWaitOnlyWhenNothingMatches(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated)
	const existing = "identifier=urn:oid:1.2.36.146.595.217.0.1|12345"
	const missing = "identifier=urn:oid:1.2.36.146.595.217.0.1|not-yet"
	searcher := fhir.NewSearcher(fhir.NewStore(s.db, searchparam.Default(), time.Now), searchparam.Default(), "")

	holder, err := s.db.Begin(ctx) // another writer, mid-transaction, holding both criteria
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx)
	for _, criteria := range []string{existing, missing} {
		if _, err := searcher.MatchOne(ctx, holder, "Patient", criteria, "test"); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan *response, 1)
	go func() { done <- s.do("POST", "/Patient", patientJSON, "If-None-Exist", existing) }()
	select {
	case r := <-done:
		s.expect(r, http.StatusOK)
	case <-time.After(10 * time.Second):
		t.Fatal("a conditional create whose match exists waited for another writer's transaction")
	}

	body := strings.Replace(patientJSON, "12345", "not-yet", 1)
	go func() { done <- s.do("POST", "/Patient", body, "If-None-Exist", missing) }()
	select {
	case r := <-done:
		t.Fatalf("a conditional create matching nothing went ahead while another writer held its criteria: %d %s", r.status, r.body)
	case <-time.After(500 * time.Millisecond):
	}
	// The holder creates the resource and commits: the waiting create must find it.
	res, err := fhir.Parse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fhir.NewStore(s.db, searchparam.Default(), time.Now).Create(ctx, holder, res); err != nil {
		t.Fatal(err)
	}
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.expect(<-done, http.StatusOK)
	if n := s.countRows("resource"); n != 2 {
		t.Fatalf("%d resources, want 2: the waiting conditional create made a duplicate", n)
	}
}

func TestConcurrentIfMatchUpdatesLoseNothing(t *testing.T) {
	s := newTestServer(t)
	counter := `{"resourceType":"Patient","id":"counter","multipleBirthInteger":0}`
	s.expect(s.do("PUT", "/Patient/counter", counter), http.StatusCreated)

	const writers = 20
	var wg sync.WaitGroup
	errs := make(chan string, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 0; attempt < 200; attempt++ { // read, increment, write back if unchanged
				r := s.do("GET", "/Patient/counter", "")
				var p map[string]any
				_ = json.Unmarshal(r.body, &p)
				n := int(p["multipleBirthInteger"].(float64))
				next := fmt.Sprintf(`{"resourceType":"Patient","id":"counter","multipleBirthInteger":%d}`, n+1)
				w := s.do("PUT", "/Patient/counter", next, "If-Match", r.header.Get("ETag"))
				switch w.status {
				case http.StatusOK:
					return
				case http.StatusPreconditionFailed:
					continue
				default:
					errs <- fmt.Sprintf("status %d: %s", w.status, w.body)
					return
				}
			}
			errs <- "gave up"
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	final := s.expect(s.do("GET", "/Patient/counter", ""), http.StatusOK)
	if got := final.json(t)["multipleBirthInteger"]; fmt.Sprint(got) != fmt.Sprint(writers) {
		t.Fatalf("counter = %v after %d increments: an update was lost", got, writers)
	}
	if final.header.Get("ETag") != fmt.Sprintf(`W/"%d"`, writers+1) {
		t.Fatalf("version %s, want %d", final.header.Get("ETag"), writers+1)
	}
	s.expect(s.do("PUT", "/Patient/counter", counter, "If-Match", `W/"1"`), http.StatusPreconditionFailed)
}

func TestJSONPatch(t *testing.T) {
	s := newTestServer(t)
	id := s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated).json(t)["id"].(string)
	patch := `[{"op":"replace","path":"/gender","value":"female"},{"op":"add","path":"/active","value":true}]`
	r := s.expect(s.do("PATCH", "/Patient/"+id, patch, "Content-Type", "application/json-patch+json"), http.StatusOK)
	if m := r.json(t); m["gender"] != "female" || m["active"] != true || r.header.Get("ETag") != `W/"2"` {
		t.Fatalf("patched: %s", r.body)
	}
	before := s.countRows("resource_version")
	bad := `[{"op":"replace","path":"/gender","value":"robot"}]`
	_, _, expr := outcomeIssue(t, s.expect(s.do("PATCH", "/Patient/"+id, bad, "Content-Type", "application/json-patch+json"), http.StatusBadRequest))
	if len(expr) == 0 || expr[0] != "Patient.gender" {
		t.Fatalf("invalid patch result located at %v", expr)
	}
	s.expect(s.do("PATCH", "/Patient/"+id, `[{"op":"remove","path":"/nothing"}]`, "Content-Type", "application/json-patch+json"), http.StatusUnprocessableEntity)
	s.expect(s.do("PATCH", "/Patient/"+id, `[{"op":"replace","path":"/id","value":"other"}]`, "Content-Type", "application/json-patch+json"), http.StatusUnprocessableEntity)
	s.expect(s.do("PATCH", "/Patient/"+id, `{"not":"a patch"}`, "Content-Type", "application/json-patch+json"), http.StatusBadRequest)
	s.expect(s.do("PATCH", "/Patient/"+id, patch, "Content-Type", "application/json-patch+json", "If-Match", `W/"1"`), http.StatusPreconditionFailed)
	if after := s.countRows("resource_version"); after != before {
		t.Fatalf("refused patches wrote %d versions", after-before)
	}
}

func TestConditionalUpdateAndDelete(t *testing.T) {
	s := newTestServer(t)
	q := "?identifier=urn:oid:1.2.36.146.595.217.0.1|12345"
	created := s.expect(s.do("PUT", "/Patient"+q, patientJSON), http.StatusCreated).json(t)["id"]
	updated := s.expect(s.do("PUT", "/Patient"+q, strings.Replace(patientJSON, "male", "female", 1)), http.StatusOK).json(t)
	if updated["id"] != created || updated["gender"] != "female" {
		t.Fatalf("conditional update went to %v, want %v", updated["id"], created)
	}
	s.expect(s.do("DELETE", "/Patient"+q, ""), http.StatusNoContent)
	s.expect(s.do("GET", "/Patient/"+created.(string), ""), http.StatusGone)
	s.expect(s.do("DELETE", "/Patient", ""), http.StatusMethodNotAllowed)
}

func TestHistoryPagingSinceAndAt(t *testing.T) {
	s := newTestServer(t)
	for i := 0; i < 5; i++ {
		s.expect(s.do("PUT", "/Patient/h1", fmt.Sprintf(`{"resourceType":"Patient","id":"h1","multipleBirthInteger":%d}`, i)), map[bool]int{true: 201, false: 200}[i == 0])
	}
	mid := time.Now().UTC()
	time.Sleep(5 * time.Millisecond)
	s.expect(s.do("POST", "/Observation", `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`), http.StatusCreated)

	var versions []string
	next := "/Patient/h1/_history?_count=2"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		b := s.expect(s.do("GET", next, ""), http.StatusOK).json(t)
		next = ""
		for _, l := range b["link"].([]any) {
			if link := l.(map[string]any); link["relation"] == "next" {
				next = strings.TrimPrefix(link["url"].(string), s.base)
			}
		}
		for _, e := range asSlice(b["entry"]) {
			versions = append(versions, e.(map[string]any)["response"].(map[string]any)["etag"].(string))
		}
	}
	if fmt.Sprint(versions) != `[W/"5" W/"4" W/"3" W/"2" W/"1"]` {
		t.Fatalf("paged instance history = %v", versions)
	}
	system := s.expect(s.do("GET", "/_history?_since="+mid.Format(time.RFC3339Nano), ""), http.StatusOK).json(t)
	if n := len(asSlice(system["entry"])); n != 1 {
		t.Fatalf("_since: %d entries, want the Observation only", n)
	}
	typeLevel := s.expect(s.do("GET", "/Patient/_history", ""), http.StatusOK).json(t)
	if n := len(asSlice(typeLevel["entry"])); n != 5 {
		t.Fatalf("type history: %d entries, want 5", n)
	}
	at := s.expect(s.do("GET", "/Patient/h1/_history?_at="+mid.Add(time.Millisecond).Format(time.RFC3339Nano), ""), http.StatusOK).json(t)
	if entries := asSlice(at["entry"]); len(entries) != 1 || entries[0].(map[string]any)["response"].(map[string]any)["etag"] != `W/"5"` {
		t.Fatalf("_at: %v", entries)
	}
	s.expect(s.do("GET", "/_history?_since=yesterday", ""), http.StatusBadRequest)
}

func TestCapabilityStatement(t *testing.T) {
	s := newTestServer(t)
	r := s.expect(s.do("GET", "/metadata", ""), http.StatusOK)
	if _, err := fhir.Parse(r.body); err != nil {
		t.Fatalf("the CapabilityStatement is not valid R4: %v", err)
	}
	cs := r.json(t)
	// Without a configured base, the statement's is the one the request used.
	if impl := cs["implementation"].(map[string]any); impl["url"] != s.base {
		t.Errorf("implementation.url %v, want %s", impl["url"], s.base)
	}
	rest := cs["rest"].([]any)[0].(map[string]any)
	resources := rest["resource"].([]any)
	if len(resources) != len(fhir.ResourceTypes()) || len(resources) < 140 {
		t.Fatalf("%d resource types listed", len(resources))
	}
	var patient map[string]any
	for _, x := range resources {
		if x.(map[string]any)["type"] == "Patient" {
			patient = x.(map[string]any)
		}
	}
	params := map[string]string{}
	for _, p := range patient["searchParam"].([]any) {
		params[p.(map[string]any)["name"].(string)] = p.(map[string]any)["type"].(string)
	}
	for name, typ := range map[string]string{"_id": "token", "_lastUpdated": "date", "name": "string", "birthdate": "date",
		"identifier": "token", "general-practitioner": "reference", "gender": "token"} {
		if params[name] != typ {
			t.Errorf("Patient search parameter %s: %q, want %s", name, params[name], typ)
		}
	}
	var interactions []string
	for _, i := range patient["interaction"].([]any) {
		interactions = append(interactions, i.(map[string]any)["code"].(string))
	}
	if got := strings.Join(interactions, " "); got != "read vread update patch delete history-instance history-type create search-type" {
		t.Errorf("Patient interactions %q", got)
	}
	if !strings.Contains(fmt.Sprint(patient["operation"]), "Patient-everything") {
		t.Errorf("$everything is not declared: %v", patient["operation"])
	}
	if patient["conditionalDelete"] != "single" || patient["conditionalUpdate"] != true {
		t.Errorf("conditional support: %v %v", patient["conditionalDelete"], patient["conditionalUpdate"])
	}
	if !strings.Contains(rest["documentation"].(string), "composite") {
		t.Error("the CapabilityStatement does not say what is left out")
	}
}
