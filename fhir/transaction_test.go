package fhir_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

// tableCounts fingerprints the database: rows per table and the last write's sequence.
func (s *testServer) tableCounts() string {
	s.t.Helper()
	var parts []string
	for _, table := range countedTables {
		parts = append(parts, fmt.Sprintf("%s=%d", table, s.countRows(table)))
	}
	var seq int64
	_ = s.db.QueryRow(context.Background(), "SELECT coalesce(max(seq), 0) FROM resource_version").Scan(&seq)
	return strings.Join(parts, " ") + fmt.Sprintf(" seq=%d", seq)
}

func entryStatuses(t *testing.T, r *response) []string {
	t.Helper()
	var out []string
	for _, e := range asSlice(r.json(t)["entry"]) {
		out = append(out, e.(map[string]any)["response"].(map[string]any)["status"].(string))
	}
	return out
}

const patientTransaction = `{"resourceType":"Bundle","type":"transaction","entry":[
 {"fullUrl":"urn:uuid:11111111-1111-1111-1111-111111111111",
  "resource":{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"T-1"}],"name":[{"family":"Okafor"}],
    "generalPractitioner":[{"reference":"urn:uuid:33333333-3333-3333-3333-333333333333"}]},
  "request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:mrn|T-1"}},
 {"fullUrl":"urn:uuid:22222222-2222-2222-2222-222222222222",
  "resource":{"resourceType":"Observation","status":"final","code":{"text":"weight"},
    "subject":{"reference":"urn:uuid:11111111-1111-1111-1111-111111111111"},
    "extension":[{"url":"http://example.org/also-about","valueReference":{"reference":"urn:uuid:11111111-1111-1111-1111-111111111111"}}],
    "contained":[{"resourceType":"Provenance","id":"prov","recorded":"2024-01-01T00:00:00Z",
       "target":[{"reference":"urn:uuid:11111111-1111-1111-1111-111111111111"},{"reference":"#"}],"agent":[{"who":{"display":"EHR"}}]}]},
  "request":{"method":"POST","url":"Observation"}},
 {"fullUrl":"urn:uuid:33333333-3333-3333-3333-333333333333",
  "resource":{"resourceType":"Practitioner","identifier":[{"system":"urn:npi","value":"N-9"}],"name":[{"family":"Adeyemi"}]},
  "request":{"method":"POST","url":"Practitioner","ifNoneExist":"identifier=urn:npi|N-9"}}
]}`

func TestTransactionRewritesPlaceholdersEverywhere(t *testing.T) {
	s := newTestServer(t)
	// Real clients post to the base with a trailing slash and plain JSON.
	r := s.expect(s.do("POST", "/", patientTransaction, "Content-Type", "application/json"), http.StatusOK)
	b := r.json(t)
	if b["type"] != "transaction-response" || fmt.Sprint(entryStatuses(t, r)) != "[201 Created 201 Created 201 Created]" {
		t.Fatalf("response: %s", r.body)
	}
	loc := func(i int) string {
		return asSlice(b["entry"])[i].(map[string]any)["response"].(map[string]any)["location"].(string)
	}
	patient := strings.SplitN(loc(0), "/_history", 2)[0]
	obs := s.expect(s.do("GET", "/"+strings.SplitN(loc(1), "/_history", 2)[0], ""), http.StatusOK)
	body := string(obs.body)
	if strings.Contains(body, "urn:uuid") || strings.Count(body, `"reference":"`+patient+`"`) != 3 {
		t.Fatalf("placeholders not replaced in subject, extension and contained resource:\n%s", body)
	}
	gp := s.expect(s.do("GET", "/"+patient, ""), http.StatusOK)
	if !strings.Contains(string(gp.body), strings.SplitN(loc(2), "/_history", 2)[0]) {
		t.Fatalf("a reference to a later entry was not replaced: %s", gp.body)
	}

	// Again: the conditional creates find their matches, the plain POST creates anew.
	again := s.expect(s.do("POST", "", patientTransaction), http.StatusOK)
	if fmt.Sprint(entryStatuses(t, again)) != "[200 OK 201 Created 200 OK]" {
		t.Fatalf("second run statuses %v", entryStatuses(t, again))
	}
	if n := s.countRows("resource"); n != 4 {
		t.Fatalf("%d resources after two runs, want 4 (one patient, one practitioner, two observations)", n)
	}
}

func TestATransactionWithABadLastEntryWritesNothing(t *testing.T) {
	s := newTestServer(t)
	s.expect(s.do("POST", "/Patient", patientJSON), http.StatusCreated)
	before := s.tableCounts()
	bad := strings.Replace(patientTransaction, `"name":[{"family":"Adeyemi"}]`, `"name":[{"family":"Adeyemi"}],"birthDate":"1970-02-31"`, 1)
	r := s.expect(s.do("POST", "", bad), http.StatusBadRequest)
	code, diag, expr := outcomeIssue(t, r)
	if code != "value" || !strings.Contains(diag, "Bundle.entry[2] (urn:uuid:33333333-3333-3333-3333-333333333333)") ||
		len(expr) == 0 || expr[0] != "Bundle.entry[2].resource.birthDate" {
		t.Fatalf("the failure does not name the entry: %s", r.body)
	}
	if after := s.tableCounts(); after != before {
		t.Fatalf("a failed transaction changed the database:\nbefore %s\nafter  %s", before, after)
	}
}

func TestTransactionFailuresNameTheEntry(t *testing.T) {
	s := newTestServer(t)
	s.expect(s.do("PUT", "/Patient/known", `{"resourceType":"Patient","id":"known","identifier":[{"system":"urn:mrn","value":"dup"}]}`), http.StatusCreated)
	s.expect(s.do("PUT", "/Patient/known2", `{"resourceType":"Patient","id":"known2","identifier":[{"system":"urn:mrn","value":"dup"}]}`), http.StatusCreated)
	s.expect(s.do("PUT", "/Patient/gone", `{"resourceType":"Patient","id":"gone"}`), http.StatusCreated)
	obs := func(subject string) string {
		return `{"resourceType":"Bundle","type":"transaction","entry":[{"fullUrl":"urn:uuid:aaaaaaaa-0000-0000-0000-000000000001",
		  "resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"` + subject + `"}},
		  "request":{"method":"POST","url":"Observation"}}]}`
	}
	cases := []struct {
		name, bundle string
		status       int
		says         string
	}{
		{"conditional reference with no match", obs("Patient?identifier=urn:mrn|nobody"), http.StatusBadRequest, "matches nothing"},
		{"conditional reference with two matches", obs("Patient?identifier=urn:mrn|dup"), http.StatusPreconditionFailed, "more than one"},
		{"reference to nothing", obs("Patient/ghost"), http.StatusBadRequest, "neither on the server nor in the Bundle"},
		{"placeholder to no entry", obs("urn:uuid:bbbbbbbb-0000-0000-0000-000000000009"), http.StatusBadRequest, "to no entry of the Bundle"},
		// What the Bundle writes is known to exist without a look-up, but not what it deletes.
		{"reference to what the Bundle deletes", strings.Replace(obs("Patient/gone"), `"entry":[`,
			`"entry":[{"request":{"method":"DELETE","url":"Patient/gone"}},`, 1), http.StatusBadRequest, "neither on the server nor in the Bundle"},
		{"stale ifMatch", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","id":"known"},
		  "request":{"method":"PUT","url":"Patient/known","ifMatch":"W/\"7\""}}]}`, http.StatusPreconditionFailed, "If-Match"},
		{"not a transaction", `{"resourceType":"Bundle","type":"collection"}`, http.StatusBadRequest, "transaction or batch"},
		{"not a Bundle", `{"resourceType":"Patient"}`, http.StatusBadRequest, "takes a Bundle"},
		{"entry without request", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient"}}]}`, http.StatusBadRequest, "needs a request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := s.with(t)
			before := s.tableCounts()
			r := s.do("POST", "", tc.bundle)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if _, diag, _ := outcomeIssue(t, r); !strings.Contains(diag, tc.says) {
				t.Fatalf("diagnostics %q do not say %q", diag, tc.says)
			}
			if s.tableCounts() != before {
				t.Fatal("a failed transaction wrote something")
			}
		})
	}
	// The known patient resolves, and the conditional reference becomes a plain one.
	r := s.expect(s.do("POST", "", obs("Patient?_id=known")), http.StatusOK)
	loc := asSlice(r.json(t)["entry"])[0].(map[string]any)["response"].(map[string]any)["location"].(string)
	if o := s.expect(s.do("GET", "/"+strings.SplitN(loc, "/_history", 2)[0], ""), http.StatusOK); !strings.Contains(string(o.body), `"reference":"Patient/known"`) {
		t.Fatalf("conditional reference not resolved: %s", o.body)
	}
}

func TestTransactionOrderPatchDeleteAndRead(t *testing.T) {
	s := newTestServer(t)
	s.expect(s.do("PUT", "/Patient/old", `{"resourceType":"Patient","id":"old"}`), http.StatusCreated)
	s.expect(s.do("PUT", "/Patient/pat", `{"resourceType":"Patient","id":"pat","gender":"male"}`), http.StatusCreated)
	patch := base64.StdEncoding.EncodeToString([]byte(`[{"op":"replace","path":"/gender","value":"female"}]`))
	bundle := `{"resourceType":"Bundle","type":"transaction","entry":[
	  {"request":{"method":"GET","url":"Patient/pat"}},
	  {"resource":{"resourceType":"Binary","contentType":"application/json-patch+json","data":"` + patch + `"},"request":{"method":"PATCH","url":"Patient/pat"}},
	  {"resource":{"resourceType":"Patient","id":"new","active":true},"request":{"method":"PUT","url":"Patient/new"}},
	  {"request":{"method":"DELETE","url":"Patient/old"}},
	  {"request":{"method":"GET","url":"Patient?active=true"}}]}`
	r := s.expect(s.do("POST", "", bundle), http.StatusOK)
	if got := fmt.Sprint(entryStatuses(t, r)); got != "[200 OK 200 OK 201 Created 204 No Content 200 OK]" {
		t.Fatalf("statuses %s: %s", got, r.body)
	}
	entries := asSlice(r.json(t)["entry"])
	// GETs run last: the read sees the patch, the search sees the new patient.
	if g := entries[0].(map[string]any)["resource"].(map[string]any); g["gender"] != "female" {
		t.Fatalf("GET ran before the PATCH: %v", g)
	}
	if set := entries[4].(map[string]any)["resource"].(map[string]any); len(asSlice(set["entry"])) != 1 {
		t.Fatalf("search entry: %v", set)
	}
	s.expect(s.do("GET", "/Patient/old", ""), http.StatusGone)
}

func TestBatchEntriesStandAlone(t *testing.T) {
	s := newTestServer(t)
	bundle := `{"resourceType":"Bundle","type":"batch","entry":[
	  {"resource":{"resourceType":"Patient","name":[{"family":"Ok"}]},"request":{"method":"POST","url":"Patient"}},
	  {"resource":{"resourceType":"Patient","birthDate":"not a date"},"request":{"method":"POST","url":"Patient"}},
	  {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/ghost"}},"request":{"method":"POST","url":"Observation"}},
	  {"request":{"method":"GET","url":"Patient/ghost"}},
	  {"resource":{"resourceType":"Patient","identifier":[{"system":"urn:b","value":"1"}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:b|1"}},
	  {"resource":{"resourceType":"Patient","identifier":[{"system":"urn:b","value":"1"}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:b|1"}},
	  {"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient","ifNoneExist":"nonsense-parameter=1"}}]}`
	r := s.expect(s.do("POST", "", bundle), http.StatusOK)
	statuses := entryStatuses(t, r)
	// Batch entries run concurrently, so either of the two identical conditional creates
	// may be the one that creates; the other must find it.
	if len(statuses) == 7 && statuses[4] == "200 OK" {
		statuses[4], statuses[5] = statuses[5], statuses[4]
	}
	if got := fmt.Sprint(statuses); got != "[201 Created 400 Bad Request 400 Bad Request 404 Not Found 201 Created 200 OK 400 Bad Request]" {
		t.Fatalf("statuses %s: %s", got, r.body)
	}
	entries := asSlice(r.json(t)["entry"])
	location := func(i int) any { return entries[i].(map[string]any)["response"].(map[string]any)["location"] }
	if location(4) != location(5) {
		t.Fatalf("the two conditional creates name different resources: %v, %v", location(4), location(5))
	}
	unresolved := entries[2].(map[string]any)["response"].(map[string]any)["outcome"].(map[string]any)
	if strings.Count(fmt.Sprint(unresolved), "Bundle.entry[2]: ") != 1 {
		t.Fatalf("the unresolved reference's outcome is not located once at its entry: %v", unresolved)
	}
	failed := entries[1].(map[string]any)["response"].(map[string]any)["outcome"].(map[string]any)
	if !strings.Contains(fmt.Sprint(failed), "Bundle.entry[1].resource.birthDate") {
		t.Fatalf("the failed entry's outcome does not locate the problem: %v", failed)
	}
	badCriteria := entries[6].(map[string]any)["response"].(map[string]any)["outcome"].(map[string]any)
	if strings.Count(fmt.Sprint(badCriteria), "Bundle.entry[6]: ") != 1 {
		t.Fatalf("the bad ifNoneExist's outcome is not located once at its entry: %v", badCriteria)
	}
	if s.countRows("resource") != 2 {
		t.Fatalf("%d resources, want the good entry's and one conditional create's", s.countRows("resource"))
	}
}

func TestBundleLimitsAndIdenticalBundlesAtOnce(t *testing.T) {
	s := newTestServer(t)
	var entries []string
	for i := 0; i < 5001; i++ {
		entries = append(entries, `{"request":{"method":"GET","url":"Patient/x"}}`)
	}
	r := s.expect(s.do("POST", "", `{"resourceType":"Bundle","type":"batch","entry":[`+strings.Join(entries, ",")+`]}`), http.StatusRequestEntityTooLarge)
	if code, _, _ := outcomeIssue(t, r); code != "too-costly" {
		t.Fatalf("too many entries: %s", r.body)
	}

	onlyConditional := strings.Replace(patientTransaction, `{"fullUrl":"urn:uuid:22222222`, `{"fullUrl":"urn:uuid:22222222`, 1)
	parts := strings.SplitN(onlyConditional, `{"fullUrl":"urn:uuid:22222222`, 2)
	tail := parts[1][strings.Index(parts[1], `{"fullUrl":"urn:uuid:33333333`):]
	bundle := parts[0] + tail // the patient and practitioner, both conditional
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := s.do("POST", "", bundle); r.status != http.StatusOK {
				t.Errorf("status %d: %s", r.status, r.body)
			}
		}()
	}
	wg.Wait()
	if n := s.countRows("resource"); n != 2 {
		t.Fatalf("%d resources after 8 identical conditional Bundles at once, want 2", n)
	}
}

// A transaction's creates are validated together (in parallel), and every invalid one is
// reported, located at its entry, in entry order, however the work was scheduled.
func TestTransactionReportsEveryInvalidCreate(t *testing.T) {
	s := newTestServer(t)
	bundle := func(bad map[int]bool, n int) string {
		var entries []string
		for i := 0; i < n; i++ {
			birthDate := fmt.Sprintf("19%02d-01-01", 50+i%50)
			if bad[i] {
				birthDate = "not a date"
			}
			entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","birthDate":%q},"request":{"method":"POST","url":"Patient"}}`, birthDate))
		}
		return `{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`
	}
	issuesOf := func(r *response) []map[string]any {
		var out []map[string]any
		for _, is := range asSlice(r.json(t)["issue"]) {
			out = append(out, is.(map[string]any))
		}
		return out
	}

	before := s.tableCounts()
	r := s.expect(s.do("POST", "", bundle(map[int]bool{3: true, 17: true, 40: true}, 64)), http.StatusBadRequest)
	var where []string
	for _, is := range issuesOf(r) {
		where = append(where, fmt.Sprint(is["expression"]))
	}
	if got := strings.Join(where, " "); got != "[Bundle.entry[3].resource.birthDate] [Bundle.entry[17].resource.birthDate] [Bundle.entry[40].resource.birthDate]" {
		t.Fatalf("issues at %s: %s", got, r.body)
	}
	if s.tableCounts() != before {
		t.Fatal("an invalid transaction wrote something")
	}

	// Past maxFailedEntries (50), the rest are counted, not listed.
	all := map[int]bool{}
	for i := 0; i < 60; i++ {
		all[i] = true
	}
	issues := issuesOf(s.expect(s.do("POST", "", bundle(all, 60)), http.StatusBadRequest))
	if len(issues) != 51 || !strings.Contains(fmt.Sprint(issues[50]["diagnostics"]), "10 more entries are invalid") ||
		fmt.Sprint(issues[49]["expression"]) != "[Bundle.entry[49].resource.birthDate]" {
		t.Fatalf("%d issues; the last two: %v", len(issues), issues[len(issues)-2:])
	}

	s.expect(s.do("POST", "", bundle(nil, 64)), http.StatusOK)
	if n := s.countRows("resource"); n != 64 {
		t.Fatalf("%d resources after a valid 64-entry transaction", n)
	}
}

// refuseObservationCreates is a Guard that lets everything through but the creation of
// Observations, and records what it was asked, creates' fresh ids as "new".
type refuseObservationCreates struct {
	mu    sync.Mutex
	asked []string
}

func (g *refuseObservationCreates) guard(_ context.Context, a fhir.Access) error {
	id := a.ID
	if a.Interaction == "create" && id != "" {
		id = "new"
	}
	g.mu.Lock()
	g.asked = append(g.asked, a.Interaction+" "+a.Type+"/"+id)
	g.mu.Unlock()
	if a.Interaction == "create" && a.Type == "Observation" {
		return fhir.NewOutcome(http.StatusForbidden, fhir.Security, "this client may not create Observations")
	}
	return nil
}

func (g *refuseObservationCreates) sortedAsks() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := append([]string(nil), g.asked...)
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func TestGuardRefusesEntriesBeforeAnythingIsWritten(t *testing.T) {
	g := &refuseObservationCreates{}
	s := newTestServer(t, func(cfg *fhir.APIConfig) { cfg.Bundles.Guard = g.guard })
	s.expect(s.do("PUT", "/Patient/pre", `{"resourceType":"Patient","id":"pre","name":[{"family":"Before"}]}`), http.StatusCreated)
	before := s.tableCounts()

	t.Run("transaction", func(t *testing.T) {
		s := s.with(t)
		g.asked = nil
		r := s.expect(s.do("POST", "", `{"resourceType":"Bundle","type":"transaction","entry":[
		  {"fullUrl":"urn:uuid:aaaaaaaa-0000-0000-0000-000000000001","resource":{"resourceType":"Patient","name":[{"family":"Ok"}]},"request":{"method":"POST","url":"Patient"}},
		  {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:aaaaaaaa-0000-0000-0000-000000000001"}},"request":{"method":"POST","url":"Observation"}},
		  {"request":{"method":"GET","url":"Patient?family=Ok"}}]}`), http.StatusForbidden)
		code, diagnostics, expression := outcomeIssue(t, r)
		if code != "security" || !strings.HasPrefix(diagnostics, "Bundle.entry[1]: this client may not") || fmt.Sprint(expression) != "[Bundle.entry[1]]" {
			t.Fatalf("the refusal is not located at its entry: %s", r.body)
		}
		// Asked in the Bundle's order, up to the refusal.
		if got := strings.Join(g.asked, ", "); got != "create Patient/new, create Observation/new" {
			t.Fatalf("the guard was asked: %s", got)
		}
		if after := s.tableCounts(); after != before {
			t.Fatalf("a refused transaction wrote:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("batch", func(t *testing.T) {
		s := s.with(t)
		g.asked = nil
		r := s.expect(s.do("POST", "", `{"resourceType":"Bundle","type":"batch","entry":[
		  {"resource":{"resourceType":"Patient","name":[{"family":"Ok"}]},"request":{"method":"POST","url":"Patient"}},
		  {"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/pre"}},"request":{"method":"POST","url":"Observation"}},
		  {"request":{"method":"GET","url":"Patient/pre"}},
		  {"request":{"method":"GET","url":"Patient/pre/_history/1"}},
		  {"request":{"method":"GET","url":"Patient?family=Before"}},
		  {"resource":{"resourceType":"Patient","id":"pre","name":[{"family":"After"}]},"request":{"method":"PUT","url":"Patient/pre"}},
		  {"request":{"method":"DELETE","url":"Patient?family=Nobody"}}]}`), http.StatusOK)
		if got := fmt.Sprint(entryStatuses(t, r)); got != "[201 Created 403 Forbidden 200 OK 200 OK 200 OK 200 OK 204 No Content]" {
			t.Fatalf("statuses %s: %s", got, r.body)
		}
		refused := asSlice(r.json(t)["entry"])[1].(map[string]any)["response"].(map[string]any)["outcome"]
		if !strings.Contains(fmt.Sprint(refused), "Bundle.entry[1]: this client may not create Observations") {
			t.Fatalf("the refused entry's outcome: %v", refused)
		}
		want := "create Observation/new, create Patient/new, delete Patient/, read Patient/pre, search Patient/, update Patient/pre, vread Patient/pre"
		if got := g.sortedAsks(); got != want {
			t.Fatalf("the guard was asked:\n %s\nwant\n %s", got, want)
		}
		if n := s.countRows("resource"); n != 2 {
			t.Fatalf("%d resources, want the two patients and no Observation", n)
		}
		var observations int
		if err := s.db.QueryRow(context.Background(), `SELECT count(*) FROM resource_version WHERE resource_type = 'Observation'`).Scan(&observations); err != nil {
			t.Fatal(err)
		}
		if observations != 0 {
			t.Fatalf("%d versions of Observations written past the guard", observations)
		}
	})
}

// The processor stands without HTTP: an import is refused as POST /fhir is, with the guard's
// own status, and its progress callback never runs.
func TestGuardRefusesAnImport(t *testing.T) {
	db := pgtest.NewDatabase(t)
	params := searchparam.Default()
	store := fhir.NewStore(db, params, time.Now)
	refuse := func(_ context.Context, a fhir.Access) error {
		return fhir.NewOutcome(http.StatusUnauthorized, fhir.Security, "no one may "+a.Interaction+" a "+a.Type)
	}
	bundles := fhir.NewBundleProcessor(store, fhir.NewSearcher(store, params, ""), fhir.BundleConfig{Guard: refuse}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	called := false
	n, err := bundles.Import(context.Background(), []byte(patientTransaction), func(pgx.Tx) error { called = true; return nil })
	var o *fhir.Outcome
	if !errors.As(err, &o) || o.Status != http.StatusUnauthorized || !strings.Contains(o.Error(), "no one may create a Patient") {
		t.Fatalf("import: %d, %v", n, err)
	}
	if called || n != 0 {
		t.Fatalf("a refused import reported progress (called %v, %d written)", called, n)
	}
	var rows int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM resource").Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d resources after a refused import (%v)", rows, err)
	}
}
