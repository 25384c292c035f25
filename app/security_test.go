package app_test

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/examples"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/web"
)

// network is a registry of two sites, each with a patient, an Observation and a Task.
type network struct {
	h                          *apptest.Harness
	siteA, siteB               string
	patientA, patientB         string
	observationA, observationB string
	taskA, taskB               string
}

func newNetwork(t *testing.T) *network { return newNetworkWith(t) }

func newNetworkWith(t *testing.T, opts ...apptest.Option) *network {
	h := apptest.New(t, opts...)
	n := &network{h: h}
	create := func(body string) string {
		t.Helper()
		return h.Expect(http.StatusCreated, "POST", "/fhir/"+strings.SplitN(strings.Split(body, `"resourceType":"`)[1], `"`, 2)[0], body).JSON(t)["id"].(string)
	}
	n.siteA = create(`{"resourceType":"Organization","name":"Riverside Cancer Centre"}`)
	n.siteB = create(`{"resourceType":"Organization","name":"Harbour Hospital"}`)
	n.patientA = create(fmt.Sprintf(`{"resourceType":"Patient","name":[{"family":"Lovelace"}],"managingOrganization":{"reference":"Organization/%s"}}`, n.siteA))
	n.patientB = create(fmt.Sprintf(`{"resourceType":"Patient","name":[{"family":"Turing"}],"managingOrganization":{"reference":"Organization/%s"}}`, n.siteB))
	obs := `{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/%s"},"valueQuantity":{"value":70}}`
	n.observationA = create(fmt.Sprintf(obs, n.patientA))
	n.observationB = create(fmt.Sprintf(obs, n.patientB))
	task := `{"resourceType":"Task","status":"requested","intent":"plan","for":{"reference":"Patient/%s"}}`
	n.taskA = create(fmt.Sprintf(task, n.patientA))
	n.taskB = create(fmt.Sprintf(task, n.patientB))
	return n
}

// Every route but the public ones refuses a request without a valid token with 401, a
// Bearer challenge and an OperationOutcome; and every route has a rule in the access policy.
func TestEveryRouteNeedsAToken(t *testing.T) {
	h := apptest.New(t)
	if missing := h.App.Access.Unruled(h.Echo); len(missing) > 0 {
		t.Errorf("routes without an access rule: %v", missing)
	}
	public := map[string]bool{"/healthz": true, "/readyz": true, "/fhir/metadata": true,
		"/.well-known/smart-configuration": true, "/fhir/.well-known/smart-configuration": true,
		"/auth/token": true, "/auth/jwks.json": true}
	replacer := strings.NewReplacer(":type", "Patient", ":id", "p1", ":vid", "1")
	seen := 0
	// The web pages are signed into with a session, not a token: without one a page sends the
	// browser to sign in, and a form posted is refused.
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	isPage := func(path string) bool {
		c := h.Echo.NewContext(httptest.NewRequest(http.MethodGet, "/", nil), httptest.NewRecorder())
		c.SetPath(path)
		return h.App.Web.IsPage(c)
	}
	for _, r := range h.Echo.Routes() {
		if public[r.Path] || r.Path == "" || strings.Contains(r.Path, "*") || r.Path == "/signin" ||
			r.Path == web.PathOIDCSignIn || r.Path == web.PathOIDCCallback {
			continue
		}
		path := replacer.Replace(r.Path)
		if isPage(r.Path) {
			req, _ := http.NewRequest(r.Method, h.URL+path, nil)
			req.Header.Set("Authorization", "Bearer not-a-token")
			res, err := noRedirects.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			switch {
			case r.Method == http.MethodGet && (res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/signin?")):
				t.Errorf("page %s %s without a session: %d to %q, want 303 to /signin", r.Method, path, res.StatusCode, res.Header.Get("Location"))
			case r.Method == http.MethodPost && res.StatusCode != http.StatusUnauthorized:
				t.Errorf("page %s %s without a session: %d, want 401", r.Method, path, res.StatusCode)
			}
			seen++
			continue
		}
		for _, authz := range []string{"", "Bearer not-a-token", "Basic dXNlcjpwYXNz"} {
			res := h.Do(r.Method, path, nil, "Authorization", authz)
			if res.Status != http.StatusUnauthorized {
				t.Errorf("%s %s with %q: %d, want 401", r.Method, path, authz, res.Status)
				continue
			}
			if !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s: WWW-Authenticate %q", r.Method, path, res.Header.Get("WWW-Authenticate"))
			}
			if r.Method != http.MethodHead && !strings.Contains(string(res.Body), `"OperationOutcome"`) {
				t.Errorf("%s %s: body %s", r.Method, path, res.Body)
			}
		}
		seen++
	}
	if seen < 25 {
		t.Errorf("only %d routes tried", seen)
	}
	for path := range public {
		if path == "/auth/token" {
			continue
		}
		if res := h.Do("GET", path, nil, "Authorization", ""); res.Status != http.StatusOK {
			t.Errorf("public %s: %d", path, res.Status)
		}
	}
}

func TestResearchersSeeOutcomesNeverPatients(t *testing.T) {
	n := newNetwork(t)
	tok := n.h.Token(auth.RoleResearcher)
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/registry/outcomes/response", 200},
		{"GET", "/registry/outcomes/survival", 200},
		{"GET", "/fhir/StructureDefinition", 200},
		{"GET", "/fhir/CodeSystem", 200},
		{"GET", "/fhir/Patient", 403},
		{"GET", "/fhir/Patient/" + n.patientA, 403},
		{"GET", "/fhir/Observation?subject=Patient/" + n.patientA, 403},
		{"GET", "/fhir/Patient/" + n.patientA + "/$everything", 403},
		{"GET", "/fhir", 403},
		{"GET", "/fhir/_history", 403},
		{"GET", "/worklist", 403},
		{"GET", "/follow-up/Patient/" + n.patientA, 403},
		{"GET", "/fhir/AuditEvent", 403},
		{"POST", "/fhir/Patient", 403},
	} {
		body := ""
		if c.method == "POST" {
			body = `{"resourceType":"Patient"}`
		}
		if res := n.h.As(tok, c.method, c.path, body); res.Status != c.want {
			t.Errorf("researcher %s %s: %d, want %d: %s", c.method, c.path, res.Status, c.want, res.Body)
		}
	}
}

// A coordinator of site A sees A's patients and their resources and Tasks, and nothing of
// site B's: those answer 404, as if they did not exist.
func TestCoordinatorsSeeOnlyTheirSites(t *testing.T) {
	n := newNetwork(t)
	tok := n.h.Token(auth.RoleCoordinator, n.siteA)
	taskBody := func(id, patient string) string {
		return fmt.Sprintf(`{"resourceType":"Task","id":"%s","status":"on-hold","intent":"plan","for":{"reference":"Patient/%s"},"note":[{"text":"called twice"}]}`, id, patient)
	}
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/fhir/Patient/" + n.patientA, "", 200},
		{"GET", "/fhir/Patient/" + n.patientB, "", 404},
		{"GET", "/fhir/Observation/" + n.observationA, "", 200},
		{"GET", "/fhir/Observation/" + n.observationB, "", 404},
		{"GET", "/fhir/Observation/" + n.observationB + "/_history", "", 404},
		{"GET", "/fhir/Observation/" + n.observationB + "/_history/1", "", 404},
		{"GET", "/fhir/Task/" + n.taskA, "", 200},
		{"GET", "/fhir/Task/" + n.taskB, "", 404},
		{"PUT", "/fhir/Task/" + n.taskA, taskBody(n.taskA, n.patientA), 200},
		{"PUT", "/fhir/Task/" + n.taskB, taskBody(n.taskB, n.patientB), 404},
		{"PATCH", "/fhir/Task/" + n.taskB, `[{"op":"replace","path":"/status","value":"failed"}]`, 404},
		{"GET", "/fhir/Patient/" + n.patientA + "/$everything", "", 200},
		{"GET", "/fhir/Patient/" + n.patientB + "/$everything", "", 404},
		{"GET", "/follow-up/Patient/" + n.patientB, "", 404},
		{"GET", "/fhir/Organization/" + n.siteB, "", 200}, // the network is no secret
		{"GET", "/fhir/Patient", "", 403},
		{"GET", "/fhir/Task?status=requested", "", 403},
		{"GET", "/fhir/Patient/$everything", "", 403},
		{"GET", "/fhir/_history", "", 403},
		{"DELETE", "/fhir/Patient/" + n.patientA, "", 403},
		{"PUT", "/fhir/Patient/" + n.patientA, `{"resourceType":"Patient","id":"` + n.patientA + `"}`, 403},
		{"POST", "/fhir", `{"resourceType":"Bundle","type":"batch"}`, 403},
		{"GET", "/registry/outcomes/response", "", 403},
		{"GET", "/fhir/AuditEvent", "", 403},
	} {
		headers := []string{}
		if c.method == "PATCH" {
			headers = []string{"Content-Type", "application/json-patch+json"}
		}
		if res := n.h.As(tok, c.method, c.path, c.body, headers...); res.Status != c.want {
			t.Errorf("coordinator of A: %s %s: %d, want %d: %s", c.method, c.path, res.Status, c.want, res.Body)
		}
	}
	// The Task of B is untouched.
	if got := n.h.Expect(200, "GET", "/fhir/Task/"+n.taskB, nil).JSON(t)["status"]; got != "requested" {
		t.Errorf("site B's Task is %v", got)
	}
}

// An EHR client's scopes decide, per resource type and kind of access, what it may do; in a
// transaction, every entry is checked before anything is written.
func TestEHRScopesAreHonoured(t *testing.T) {
	n := newNetwork(t)
	client, _, err := n.h.App.Auth.AddClient(context.Background(), auth.NewClient{Name: "lab system", Role: auth.RoleEHR,
		Scopes: "system/Observation.write system/Patient.rs"})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := n.h.App.Auth.IssueToken(context.Background(), client.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	obs := fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/%s"}}`, n.patientB)
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/fhir/Observation", obs, 201},
		{"GET", "/fhir/Observation/" + n.observationA, "", 403}, // write-only
		{"GET", "/fhir/Patient/" + n.patientB, "", 200},
		{"GET", "/fhir/Patient?name=Turing", "", 200},
		{"POST", "/fhir/Patient", `{"resourceType":"Patient"}`, 403},
		{"DELETE", "/fhir/Patient/" + n.patientB, "", 403},
		{"GET", "/fhir/Patient/" + n.patientB + "/$everything", "", 403},
		{"POST", "/fhir", `{"resourceType":"Bundle","type":"transaction","entry":[
			{"fullUrl":"urn:uuid:0b0d6f3c-1a43-4d6e-9a57-0c6a3e1f0b01","resource":` + obs + `,"request":{"method":"POST","url":"Observation"}},
			{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`, 403},
	} {
		if res := n.h.As(tok, c.method, c.path, c.body); res.Status != c.want {
			t.Errorf("ehr %s %s: %d, want %d: %s", c.method, c.path, res.Status, c.want, res.Body)
		}
	}
	if got := n.h.Count(`SELECT count(*) FROM resource WHERE resource_type = 'Observation'`); got != 3 {
		t.Errorf("%d Observations, want 3: the refused transaction wrote", got)
	}
}

// A coordinator's work list, whatever they ask for, holds their sites' Tasks only.
func TestCoordinatorsWorklistIsTheirSites(t *testing.T) {
	h := apptest.New(t)
	files, _ := fs.Glob(examples.Bundles, "*.json")
	for _, name := range files {
		raw, _ := fs.ReadFile(examples.Bundles, name)
		h.Expect(http.StatusOK, "POST", "/fhir", raw)
	}
	h.SetNow(time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC))
	if _, err := h.App.FollowUp.Run(auth.WithPrincipal(context.Background(), auth.Operator("test")), h.Now()); err != nil {
		t.Fatal(err)
	}
	sitesOf := func(r *apptest.Reply) map[string]int {
		out := map[string]int{}
		for _, it := range r.JSON(t)["items"].([]any) {
			out[it.(map[string]any)["site"].(map[string]any)["id"].(string)]++
		}
		return out
	}
	all := sitesOf(h.Expect(http.StatusOK, "GET", "/worklist?within=3650d&status=requested,completed,cancelled,failed,on-hold", nil))
	if len(all) < 2 {
		t.Fatalf("the examples' work list has Tasks of %d sites; the test needs two", len(all))
	}
	for site, n := range all {
		tok := h.Token(auth.RoleCoordinator, site)
		if got := sitesOf(h.As(tok, "GET", "/worklist?within=3650d&status=requested,completed,cancelled,failed,on-hold", nil)); len(got) != 1 || got[site] != n {
			t.Errorf("coordinator of %s sees %v, want %d of theirs", site, got, n)
		}
		for other := range all {
			if other == site {
				continue
			}
			if got := sitesOf(h.As(tok, "GET", "/worklist?within=3650d&status=requested,completed,cancelled,failed,on-hold&site="+other, nil)); len(got) != 0 {
				t.Errorf("coordinator of %s asking for %s sees %v", site, other, got)
			}
			ics := h.As(tok, "GET", "/worklist.ics?within=3650d", nil)
			if ics.Status != http.StatusOK {
				t.Fatalf("calendar: %d", ics.Status)
			}
		}
	}
}

// Every request that touches patient data, refused ones included, leaves exactly one audit
// record naming who asked, for what, and how it ended; a write's record is in its own
// transaction, so a refused write leaves only the refusal.
func TestEveryAccessLeavesOneAuditRecord(t *testing.T) {
	n := newNetwork(t)
	coordinator := n.h.Token(auth.RoleCoordinator, n.siteA)
	researcher := n.h.Token(auth.RoleResearcher)
	obs := fmt.Sprintf(`{"resourceType":"Observation","status":"final","code":{"text":"weight"},"subject":{"reference":"Patient/%s"}}`, n.patientA)
	// An infusion without its date: valid FHIR, stored, then refused by the registry's
	// projection, a write hook, before the transaction commits.
	undated := fmt.Sprintf(`{"resourceType":"Procedure","status":"completed","meta":{"profile":[%q]},
		"code":{"coding":[{"system":%q,"code":"cart-infusion"}]},"subject":{"reference":"Patient/%s"},
		"usedCode":[{"coding":[{"system":%q,"code":"axi-cel"}]}]}`, registry.ProfileInfusion, registry.SystemCartreg, n.patientA, registry.SystemProduct)
	for _, c := range []struct {
		name, token, method, path, body string
		status                          int
		interaction, entity, patient    string
	}{
		{"coordinator reads their patient", coordinator, "GET", "/fhir/Patient/" + n.patientA, "", 200, "read", "Patient/" + n.patientA, n.patientA},
		{"coordinator tries another site", coordinator, "GET", "/fhir/Patient/" + n.patientB, "", 404, "read", "Patient/" + n.patientB, n.patientB},
		{"a search", "", "GET", "/fhir/Observation?subject=Patient/" + n.patientB, "", 200, "search-type", "", n.patientB},
		{"a create", "", "POST", "/fhir/Observation", obs, 201, "create", "Observation/", n.patientA},
		{"a refused create", "", "POST", "/fhir/Observation", `{"resourceType":"Observation"}`, 400, "create", "", ""},
		{"a transaction", "", "POST", "/fhir", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + obs + `,"request":{"method":"POST","url":"Observation"}}]}`, 200, "transaction", "Observation/", n.patientA},
		{"a create a write hook refuses", "", "POST", "/fhir/Procedure", undated, 422, "create", "", ""},
		// A POST to the base is named by its Bundle's type, whether the record is a write's or
		// the request's own.
		{"a batch", "", "POST", "/fhir", `{"resourceType":"Bundle","type":"batch","entry":[{"resource":` + obs + `,"request":{"method":"POST","url":"Observation"}}]}`, 200, "batch", "Observation/", n.patientA},
		{"a batch whose one entry a write hook refuses", "", "POST", "/fhir", `{"resourceType":"Bundle","type":"batch","entry":[{"resource":` + undated + `,"request":{"method":"POST","url":"Procedure"}}]}`, 200, "batch", "", ""},
		{"a Bundle that is neither", "", "POST", "/fhir", `{"resourceType":"Bundle","type":"collection"}`, 400, "transaction", "", ""},
		{"the work list", coordinator, "GET", "/worklist", "", 200, "operation", "", ""},
		{"outcomes", researcher, "GET", "/registry/outcomes/response", "", 200, "operation", "", ""},
		{"a bad token", "forged", "GET", "/fhir/Patient/" + n.patientA, "", 401, "read", "Patient/" + n.patientA, n.patientA},
		{"a researcher at patient data", researcher, "GET", "/fhir/Patient/" + n.patientA, "", 403, "read", "Patient/" + n.patientA, n.patientA},
	} {
		var res *apptest.Reply
		if c.token == "" {
			res = n.h.Do(c.method, c.path, c.body)
		} else {
			res = n.h.As(c.token, c.method, c.path, c.body)
		}
		if res.Status != c.status {
			t.Fatalf("%s: %d, want %d: %s", c.name, res.Status, c.status, res.Body)
		}
		if err := n.h.App.Audit.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		rows, err := n.h.DB.Query(context.Background(), `SELECT interaction, outcome, agent_kind, agent_role, entities, patients
			FROM audit_event WHERE request_id = $1`, res.Header.Get("X-Request-Id"))
		if err != nil {
			t.Fatal(err)
		}
		var got int
		for rows.Next() {
			got++
			var interaction, kind, role string
			var outcome int
			var entities, patients []string
			if err := rows.Scan(&interaction, &outcome, &kind, &role, &entities, &patients); err != nil {
				t.Fatal(err)
			}
			if interaction != c.interaction || outcome != c.status {
				t.Errorf("%s: recorded %s %d, want %s %d", c.name, interaction, outcome, c.interaction, c.status)
			}
			if c.status == 401 && kind != "anonymous" || c.status != 401 && role == "" {
				t.Errorf("%s: recorded agent %s %q", c.name, kind, role)
			}
			if c.entity != "" && !slices.ContainsFunc(entities, func(e string) bool { return strings.HasPrefix(e, c.entity) }) {
				t.Errorf("%s: entities %v, want %s…", c.name, entities, c.entity)
			}
			if c.patient != "" && !slices.Contains(patients, c.patient) {
				t.Errorf("%s: patients %v, want %s", c.name, patients, c.patient)
			}
		}
		rows.Close()
		if got != 1 {
			t.Errorf("%s: %d audit records, want 1", c.name, got)
		}
	}
	// The privacy officer finds them as AuditEvents.
	found := n.h.Expect(200, "GET", "/fhir/AuditEvent?patient="+n.patientB, nil).JSON(t)
	if entries, _ := found["entry"].([]any); len(entries) < 2 {
		t.Errorf("AuditEvent?patient=%s found %d", n.patientB, len(entries))
	}
}
