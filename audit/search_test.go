package audit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir"
)

// serve mounts the recorder on a real HTTP server, with an error handler that renders
// OperationOutcomes the way the server's does, behind a guard that wants a header.
func serve(t *testing.T, r *Recorder) *httptest.Server {
	t.Helper()
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		var o *fhir.Outcome
		var he *echo.HTTPError
		switch {
		case errors.As(err, &o):
		case errors.As(err, &he):
			o = fhir.NewOutcome(he.Code, fhir.Security, fmt.Sprint(he.Message))
		default:
			t.Errorf("a server fault: %v", err)
			o = fhir.NewOutcome(http.StatusInternalServerError, fhir.Exception, "internal error")
		}
		body, _ := fhir.MarshalOutcome(o.Issues, false)
		_ = c.Blob(o.Status, fhir.ContentType, body)
	}
	guard := func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if c.Request().Header.Get("X-Test-Role") != "privacy-officer" {
				return echo.NewHTTPError(http.StatusForbidden, "privacy officers only")
			}
			return next(c)
		}
	}
	r.Register(e, guard)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, rawURL string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Test-Role", "privacy-officer")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, body}
}

type searchset struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Total        *int   `json:"total"`
	Link         []struct {
		Relation, URL string
	} `json:"link"`
	Entry []struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

// fixture records a small trail: two agents, three patients, successes and failures, over
// three days.
func fixture(t *testing.T, r *Recorder) []Event {
	t.Helper()
	ctx := context.Background()
	day := func(d, h int) time.Time { return time.Date(2025, 5, d, h, 0, 0, 0, time.UTC) }
	events := []Event{
		{Time: day(1, 9), Interaction: "read", Outcome: 200, Agent: Agent{Kind: KindClient, Who: "ehr-a", Role: "site-writer"},
			Entities: []string{"Patient/p1"}, Patients: []string{"p1"}, Method: "GET", Path: "/fhir/Patient/p1"},
		{Time: day(1, 10), Interaction: "create", Outcome: 201, Agent: Agent{Kind: KindClient, Who: "ehr-a", Role: "site-writer"},
			Entities: []string{"Observation/o1"}, Patients: []string{"p1"}, Method: "POST", Path: "/fhir/Observation"},
		{Time: day(2, 9), Interaction: "search-type", Outcome: 200, Agent: Agent{Kind: KindUser, Who: "alice", Issuer: "https://idp.example", Name: "Alice Researcher", Role: "researcher"},
			Entities: []string{"Observation/o1", "Observation/o2"}, Patients: []string{"p1", "p2"}, Method: "GET", Path: "/fhir/Observation", Query: "code=97509-4&_count=10"},
		{Time: day(2, 11), Interaction: "read", Outcome: 404, OutcomeText: "no such resource", Agent: Agent{Kind: KindUser, Who: "alice", Issuer: "https://idp.example", Role: "researcher"},
			Entities: []string{"Patient/p9"}, Method: "GET", Path: "/fhir/Patient/p9"},
		{Time: day(3, 8), Interaction: "update", Outcome: 500, Agent: Agent{Kind: KindOperator, Who: "ops", Role: "admin"},
			Entities: []string{"Patient/p3"}, Patients: []string{"p3"}, Method: "PUT", Path: "/fhir/Patient/p3"},
		{Time: day(3, 9), Interaction: "login", Outcome: 401, OutcomeText: "bad client secret", Agent: Agent{Kind: KindAnonymous},
			Method: "POST", Path: "/auth/token"},
		{Time: day(3, 10), Interaction: "transaction", Outcome: 200, Agent: Agent{Kind: KindClient, Who: "ehr-b", Role: "site-writer", Sites: []string{"org-b"}},
			Entities: []string{"Patient/p3", "Procedure/x1"}, Patients: []string{"p3"}, Method: "POST", Path: "/fhir"},
	}
	for i := range events {
		events[i].Source = "192.0.2.10"
		events[i].RequestID = fmt.Sprintf("req-%d", i)
		if err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error { return r.Record(ctx, tx, events[i]) }); err != nil {
			t.Fatal(err)
		}
	}
	return events
}

// requestIDs lists the request ids of a searchset's AuditEvents, in order.
func requestIDs(t *testing.T, b searchset) []string {
	t.Helper()
	var ids []string
	for _, e := range b.Entry {
		var ae struct {
			Extension []struct{ URL, ValueString string }
		}
		if err := json.Unmarshal(e.Resource, &ae); err != nil {
			t.Fatal(err)
		}
		for _, x := range ae.Extension {
			if x.URL == ExtensionRequestID {
				ids = append(ids, x.ValueString)
			}
		}
	}
	return ids
}

func search(t *testing.T, srv *httptest.Server, query string) searchset {
	t.Helper()
	res := get(t, srv.URL+"/fhir/AuditEvent?"+query)
	if res.status != http.StatusOK {
		t.Fatalf("?%s: %d %s", query, res.status, res.body)
	}
	var b searchset
	if err := json.Unmarshal(res.body, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSearchFilters(t *testing.T) {
	t.Parallel()
	r, _ := newRecorder(t, Config{})
	fixture(t, r)
	srv := serve(t, r)
	for query, want := range map[string][]string{
		"":                            {"req-6", "req-5", "req-4", "req-3", "req-2", "req-1", "req-0"},
		"_sort=date":                  {"req-0", "req-1", "req-2", "req-3", "req-4", "req-5", "req-6"},
		"date=2025-05-02":             {"req-3", "req-2"},
		"date=ge2025-05-02T10:00:00Z": {"req-6", "req-5", "req-4", "req-3"},
		"date=lt2025-05-02":           {"req-1", "req-0"},
		"date=gt2025-05-02&date=le2025-05-03T09:00:00Z": {"req-5", "req-4"},
		"date=2025-05-01,2025-05-03T10:00:00Z":          {"req-6", "req-1", "req-0"},
		"date=2025-05":                                  {"req-6", "req-5", "req-4", "req-3", "req-2", "req-1", "req-0"},
		"agent=alice":                                   {"req-3", "req-2"},
		"who=ehr-a,ehr-b":                               {"req-6", "req-1", "req-0"},
		"agent=urn:cartreg:client|ehr-b":                {"req-6"},
		"patient=p1":                                    {"req-2", "req-1", "req-0"},
		"patient=Patient/p3":                            {"req-6", "req-4"},
		"patient=p2,p3":                                 {"req-6", "req-4", "req-2"},
		"entity=Observation/o1":                         {"req-2", "req-1"},
		"entity=Patient/p9":                             {"req-3"},
		"outcome=0":                                     {"req-6", "req-2", "req-1", "req-0"},
		"outcome=4":                                     {"req-5", "req-3"},
		"outcome=8":                                     {"req-4"},
		"outcome=4,8":                                   {"req-5", "req-4", "req-3"},
		"action=C,U":                                    {"req-4", "req-1"},
		"action=E":                                      {"req-6", "req-5"},
		"subtype=read":                                  {"req-3", "req-0"},
		"subtype=http://hl7.org/fhir/restful-interaction|create": {"req-1"},
		"subtype=login":              {"req-5"},
		"agent=alice&outcome=0":      {"req-2"},
		"patient=p1&date=2025-05-01": {"req-1", "req-0"},
	} {
		t.Run(query, func(t *testing.T) {
			got := requestIDs(t, search(t, srv, query))
			if !slices.Equal(got, want) {
				t.Errorf("?%s gave %v, want %v", query, got, want)
			}
		})
	}
}

func TestSearchPagesByKeyset(t *testing.T) {
	t.Parallel()
	r, _ := newRecorder(t, Config{})
	fixture(t, r)
	// A second event at exactly the same instant as req-3: paging must not lose or repeat it.
	same := Event{Time: time.Date(2025, 5, 2, 11, 0, 0, 0, time.UTC), Interaction: "read", Outcome: 200,
		Agent: Agent{Kind: KindClient, Who: "ehr-c"}, RequestID: "req-3b"}
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, r.db, func(tx pgx.Tx) error { return r.Record(ctx, tx, same) }); err != nil {
		t.Fatal(err)
	}
	srv := serve(t, r)
	for _, sort := range []string{"-date", "date"} {
		var got []string
		pages := 0
		b := search(t, srv, "_count=3&_total=accurate&_sort="+sort)
		if b.Total == nil || *b.Total != 8 {
			t.Fatalf("total = %v, want 8", b.Total)
		}
		for {
			pages++
			got = append(got, requestIDs(t, b)...)
			next := ""
			for _, l := range b.Link {
				if l.Relation == "next" {
					next = l.URL
				}
			}
			if next == "" {
				break
			}
			u, err := url.Parse(next)
			if err != nil || u.Query().Get("_sort") != sort || u.Query().Get("_count") != "3" {
				t.Fatalf("next link %q lost the search", next)
			}
			b = search(t, srv, u.RawQuery)
		}
		want := []string{"req-0", "req-1", "req-2", "req-3", "req-3b", "req-4", "req-5", "req-6"}
		slices.Sort(got)
		if pages != 3 || !slices.Equal(got, want) {
			t.Errorf("_sort=%s: %d pages with %v, want 3 pages with each event once", sort, pages, got)
		}
	}
	if b := search(t, srv, "_count=5000"); len(b.Entry) != 8 {
		t.Errorf("_count above the maximum gave %d entries", len(b.Entry))
	}
}

func TestSearchRefusesWhatItDoesNotUnderstand(t *testing.T) {
	t.Parallel()
	r, _ := newRecorder(t, Config{})
	srv := serve(t, r)
	for query, status := range map[string]int{
		"name=smith":            http.StatusBadRequest,
		"patient:missing=true":  http.StatusBadRequest,
		"date=yesterday":        http.StatusBadRequest,
		"date=sa2025-01-01":     http.StatusBadRequest,
		"action=X":              http.StatusBadRequest,
		"outcome=2":             http.StatusBadRequest,
		"_count=many":           http.StatusBadRequest,
		"_sort=agent":           http.StatusBadRequest,
		"_cursor=bm90LWEtY3Vyc": http.StatusBadRequest,
		"_format=xml":           http.StatusNotAcceptable,
	} {
		res := get(t, srv.URL+"/fhir/AuditEvent?"+query)
		if res.status != status || !strings.Contains(string(res.body), `"resourceType":"OperationOutcome"`) {
			t.Errorf("?%s: %d %s, want %d and an OperationOutcome", query, res.status, res.body, status)
		}
	}
	res := get(t, srv.URL+"/fhir/AuditEvent?name=smith")
	if !strings.Contains(string(res.body), "name is not a search parameter") {
		t.Errorf("the outcome does not name the parameter: %s", res.body)
	}
}

func TestReadAndGuard(t *testing.T) {
	t.Parallel()
	r, db := newRecorder(t, Config{})
	fixture(t, r)
	srv := serve(t, r)
	var id string
	if err := db.QueryRow(context.Background(), `SELECT event_id::text FROM audit_event WHERE request_id = 'req-2'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	res := get(t, srv.URL+"/fhir/AuditEvent/"+id)
	if res.status != http.StatusOK || res.header.Get("Cache-Control") != "no-store" ||
		!strings.HasPrefix(res.header.Get("Content-Type"), "application/fhir+json") {
		t.Fatalf("read: %d %v %s", res.status, res.header, res.body)
	}
	var ae map[string]any
	if err := json.Unmarshal(res.body, &ae); err != nil {
		t.Fatal(err)
	}
	if ae["id"] != id || ae["action"] != "R" || ae["outcome"] != "0" {
		t.Errorf("read gave %s", res.body)
	}
	// The query entity carries the query string, base64.
	entities := ae["entity"].([]any)
	q := entities[len(entities)-1].(map[string]any)
	raw, _ := base64.StdEncoding.DecodeString(q["query"].(string))
	if string(raw) != "code=97509-4&_count=10" {
		t.Errorf("query entity holds %q", raw)
	}
	for _, missing := range []string{"0f8fad5b-d9cb-469f-a165-70867728950e", "not-a-uuid"} {
		if res := get(t, srv.URL+"/fhir/AuditEvent/"+missing); res.status != http.StatusNotFound {
			t.Errorf("read %s: %d, want 404", missing, res.status)
		}
	}
	res2, err := http.Get(srv.URL + "/fhir/AuditEvent?patient=p1")
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if res2.StatusCode != http.StatusForbidden {
		t.Errorf("without the guard's consent: %d, want 403", res2.StatusCode)
	}
	defer func() {
		if recover() == nil {
			t.Error("Register without a guard did not panic")
		}
	}()
	r.Register(echo.New(), nil)
}

// TestRenderedAuditEventsValidate parses every rendered AuditEvent, and the Bundle that
// carries them, with google/fhir's R4 parser and validator.
func TestRenderedAuditEventsValidate(t *testing.T) {
	t.Parallel()
	r, _ := newRecorder(t, Config{})
	events := fixture(t, r)
	srv := serve(t, r)
	res := get(t, srv.URL+"/fhir/AuditEvent?_total=accurate")
	if _, err := fhir.Parse(res.body); err != nil {
		t.Fatalf("the searchset Bundle does not validate: %v\n%s", err, res.body)
	}
	b := search(t, srv, "")
	if len(b.Entry) != len(events) {
		t.Fatalf("%d entries, want %d", len(b.Entry), len(events))
	}
	for _, e := range b.Entry {
		parsed, err := fhir.Parse(e.Resource)
		if err != nil {
			t.Errorf("%s does not validate: %v\n%s", e.FullURL, err, e.Resource)
			continue
		}
		if parsed.Type != "AuditEvent" || !strings.HasSuffix(e.FullURL, "/AuditEvent/"+parsed.ID) {
			t.Errorf("%s parsed as %s/%s", e.FullURL, parsed.Type, parsed.ID)
		}
	}
	// Spot checks of the mapping.
	byRequest := map[string]map[string]any{}
	for _, e := range b.Entry {
		var ae map[string]any
		_ = json.Unmarshal(e.Resource, &ae)
		for _, x := range ae["extension"].([]any) {
			if x.(map[string]any)["url"] == ExtensionRequestID {
				byRequest[x.(map[string]any)["valueString"].(string)] = ae
			}
		}
	}
	check := func(req, path, want string) {
		t.Helper()
		got := fmt.Sprint(dig(byRequest[req], strings.Split(path, ".")...))
		if got != want {
			t.Errorf("%s %s = %s, want %s", req, path, got, want)
		}
	}
	check("req-3", "outcome", "4")
	check("req-3", "outcomeDesc", "no such resource")
	check("req-4", "outcome", "8")
	check("req-4", "agent.0.who.identifier.system", SystemOperator)
	check("req-2", "agent.0.who.identifier.system", "https://idp.example")
	check("req-2", "agent.0.who.identifier.value", "alice")
	check("req-2", "agent.0.role.0.coding.0.code", "researcher")
	check("req-2", "agent.0.network.address", "192.0.2.10")
	check("req-0", "agent.0.who.identifier.system", SystemClient)
	check("req-0", "subtype.0.code", "read")
	check("req-0", "entity.0.what.reference", "Patient/p1")
	check("req-5", "type.code", "110114")
	check("req-5", "agent.0.requestor", "true")
	check("req-6", "source.type.0.code", "4")
	check("req-6", "source.observer.reference", ObserverReference)
}

// dig follows keys and list indexes through decoded JSON.
func dig(v any, path ...string) any {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			var i int
			fmt.Sscan(p, &i)
			if i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}
