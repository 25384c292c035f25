package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/migrations"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/web"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// demoNow is the tests' today.
var demoNow = time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)

// world is cartreg with two sites of three patients each, their follow-up Tasks made, and a
// person of each role who signs in with a password.
type world struct {
	t                testing.TB
	h                *apptest.Harness
	sites            map[string]int // open visits by site id
	site             string         // the site with the most open visits: the coordinator's
	other, otherTask string         // another site, and a Task of it
}

const password = "correct horse battery"

func newWorld(t testing.TB, change ...func(*app.Config)) *world {
	t.Helper()
	h := apptest.New(t, apptest.WithConfig(func(c *app.Config) {
		c.FollowUp.LeadDays = 14 // as serve's default
		for _, ch := range change {
			ch(c)
		}
	}))
	h.SetNow(demoNow)
	w := &world{t: t, h: h, sites: map[string]int{}}
	w.site = w.enrolSite("Universitätsklinikum Nord", "N")
	w.other = w.enrolSite("Riverside Cancer Centre", "R")
	if _, err := h.App.FollowUp.Run(auth.WithPrincipal(context.Background(), auth.Operator("test")), h.Now()); err != nil {
		t.Fatal(err)
	}
	for _, it := range h.Expect(http.StatusOK, "GET", "/worklist", nil).JSON(t)["items"].([]any) {
		m := it.(map[string]any)
		site := m["site"].(map[string]any)["id"].(string)
		w.sites[site]++
		if site == w.other {
			w.otherTask = m["task_id"].(string)
		}
	}
	if w.sites[w.site] != 3 || w.sites[w.other] != 3 {
		t.Fatalf("open visits by site: %v, want 3 at each\n%s", w.sites, h.Expect(http.StatusOK, "GET", "/worklist?within=3650d&status=requested,cancelled,completed", nil).Body)
	}
	w.addUser("cora", auth.RoleCoordinator, w.site)
	w.addUser("rhea", auth.RoleResearcher)
	w.addUser("ada", auth.RoleAdmin)
	return w
}

// enrolSite makes a site and three patients infused there: 60 days ago (month 1 overdue), 30
// days ago (due) and 12 days ago (coming up); it returns the site's id.
func (w *world) enrolSite(name, mrnPrefix string) string {
	w.t.Helper()
	coding := func(system, code string) map[string]any {
		return map[string]any{"coding": []any{map[string]any{"system": system, "code": code}}}
	}
	ref := func(s string) map[string]any { return map[string]any{"reference": s} }
	entries := []any{map[string]any{"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000000",
		"resource": map[string]any{"resourceType": "Organization", "name": name},
		"request":  map[string]any{"method": "POST", "url": "Organization"}}}
	for i, daysAgo := range []int{60, 30, 12} {
		pat, cond := fmt.Sprintf("urn:uuid:00000000-0000-4000-8000-%012d", 10+i), fmt.Sprintf("urn:uuid:00000000-0000-4000-8000-%012d", 20+i)
		on := demoNow.AddDate(0, 0, -daysAgo).Format(time.DateOnly)
		entries = append(entries,
			map[string]any{"fullUrl": pat, "request": map[string]any{"method": "POST", "url": "Patient"}, "resource": map[string]any{
				"resourceType": "Patient", "gender": "female", "birthDate": "1960-01-0" + fmt.Sprint(i+1),
				"name":                 []any{map[string]any{"family": []string{"Öztürk", "Okafor", "Lindqvist"}[i] + " " + mrnPrefix, "given": []any{"Ana"}}},
				"identifier":           []any{map[string]any{"type": coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MR"), "value": fmt.Sprintf("%s-%d", mrnPrefix, 1000+i)}},
				"telecom":              []any{map[string]any{"system": "phone", "value": fmt.Sprintf("+44 20 7946 0%03d", i)}},
				"managingOrganization": ref("urn:uuid:00000000-0000-4000-8000-000000000000")}},
			map[string]any{"fullUrl": cond, "request": map[string]any{"method": "POST", "url": "Condition"}, "resource": map[string]any{
				"resourceType": "Condition", "subject": ref(pat), "code": coding(registry.SystemICD10CM, "C83.30")}},
			map[string]any{"request": map[string]any{"method": "POST", "url": "Procedure"}, "resource": map[string]any{
				"resourceType": "Procedure", "status": "completed", "code": coding(registry.SystemCartreg, "cart-infusion"),
				"subject": ref(pat), "performedDateTime": on, "usedCode": []any{coding(registry.SystemProduct, "axi-cel")},
				"reasonReference": []any{ref(cond)}, "performer": []any{map[string]any{"actor": ref("urn:uuid:00000000-0000-4000-8000-000000000000")}}}})
	}
	res := w.h.Expect(http.StatusOK, "POST", "/fhir", map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries}).JSON(w.t)
	loc := res["entry"].([]any)[0].(map[string]any)["response"].(map[string]any)["location"].(string)
	return strings.Split(strings.TrimPrefix(loc, "Organization/"), "/")[0]
}

func (w *world) addUser(name string, role auth.Role, sites ...string) {
	w.t.Helper()
	if _, _, err := w.h.App.Web.Users().AddUser(context.Background(), web.NewUser{Name: name, Role: role, Sites: sites, Password: password}); err != nil {
		w.t.Fatal(err)
	}
}

// browser is a cookie-keeping HTTP client that shows redirects rather than following them.
type browser struct {
	t      testing.TB
	base   string
	client *http.Client
	csrf   string // from the last page that had a form
}

func (w *world) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: w.t, base: w.h.URL, client: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type page struct {
	status   int
	location string
	header   http.Header
	body     string
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(method, path string, form url.Values) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	if m := csrfField.FindStringSubmatch(string(raw)); m != nil {
		b.csrf = m[1]
	}
	return page{status: res.StatusCode, location: res.Header.Get("Location"), header: res.Header, body: string(raw)}
}

func (b *browser) get(path string) page { b.t.Helper(); return b.do(http.MethodGet, path, nil) }

// post sends a form with the CSRF token of the last page.
func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	if _, ok := form["csrf"]; !ok {
		form.Set("csrf", b.csrf)
	}
	return b.do(http.MethodPost, path, form)
}

func (b *browser) signIn(name, pw string) page {
	b.t.Helper()
	b.get("/signin")
	return b.post("/signin", url.Values{"name": {name}, "password": {pw}, "next": {"/"}})
}

func TestSignInSessionsAndSignOut(t *testing.T) {
	w := newWorld(t)
	b := w.browser()
	if p := b.get("/"); p.status != http.StatusSeeOther || !strings.HasPrefix(p.location, "/signin") {
		t.Fatalf("signed out, GET /: %d %s", p.status, p.location)
	}
	if p := b.get("/work"); p.status != http.StatusSeeOther || p.location != "/signin?next=%2Fwork" {
		t.Fatalf("signed out, GET /work: %d %s", p.status, p.location)
	}
	if p := b.get("/signin"); p.status != http.StatusOK || !strings.Contains(p.body, `<label for="password">`) {
		t.Fatalf("sign-in page: %d\n%s", p.status, p.body)
	} else if csp := p.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("sign-in page CSP %q", csp)
	}
	// Without an OpenID Connect provider, passwords are all there is.
	if p := b.get("/signin"); strings.Contains(p.body, "Sign in with") {
		t.Error("the sign-in page offers a provider none configured")
	}
	if p := b.get("/signin/oidc"); p.status != http.StatusNotFound || !strings.Contains(p.body, "CARTREG_OIDC_ISSUER") {
		t.Errorf("GET /signin/oidc without a provider: %d\n%s", p.status, p.body)
	}
	if p := b.get("/signin/oidc/callback?code=x&state=y"); p.status != http.StatusNotFound {
		t.Errorf("GET /signin/oidc/callback without a provider: %d", p.status)
	}
	// The sign-in form's own token: without it, even the right password is refused.
	if p := b.do(http.MethodPost, "/signin", url.Values{"name": {"cora"}, "password": {password}}); p.status != http.StatusForbidden {
		t.Errorf("sign-in without its CSRF token: %d", p.status)
	}
	if p := b.signIn("cora", "wrong password here"); p.status != http.StatusUnauthorized {
		t.Errorf("wrong password: %d", p.status)
	}
	p := b.signIn("cora", password)
	if p.status != http.StatusSeeOther || p.location != "/" {
		t.Fatalf("sign-in: %d %s\n%s", p.status, p.location, p.body)
	}
	cookie := p.header.Get("Set-Cookie")
	for _, want := range []string{"cartreg_session=", "HttpOnly", "SameSite=Lax", "Path=/"} {
		if !strings.Contains(strings.Join(p.header.Values("Set-Cookie"), "\n"), want) {
			t.Errorf("session cookie %q lacks %s", cookie, want)
		}
	}
	if got := w.h.Count(`SELECT count(*) FROM web_session`); got != 1 {
		t.Errorf("%d sessions stored", got)
	}
	raw := regexp.MustCompile(`cartreg_session=([^;]+)`).FindStringSubmatch(strings.Join(p.header.Values("Set-Cookie"), "\n"))[1]
	if got := w.h.Count(`SELECT count(*) FROM web_session WHERE id_hash = $1::bytea`, []byte(raw)); got != 0 {
		t.Error("the session id is stored as it is, not hashed")
	}
	if p := b.get("/"); p.status != http.StatusSeeOther || p.location != "/work" {
		t.Errorf("a coordinator's home: %d %s", p.status, p.location)
	}
	if p := b.get("/work"); p.status != http.StatusOK || !strings.Contains(p.body, "My work list") {
		t.Fatalf("work list: %d\n%s", p.status, p.body)
	}
	// A coordinator's session is a coordinator's principal: the outcomes and status pages are
	// not theirs, and the session is no bearer token for the API.
	if p := b.get("/outcomes"); p.status != http.StatusForbidden {
		t.Errorf("coordinator, GET /outcomes: %d", p.status)
	}
	if p := b.get("/status"); p.status != http.StatusForbidden {
		t.Errorf("coordinator, GET /status: %d", p.status)
	}
	if p := b.get("/worklist"); p.status != http.StatusUnauthorized {
		t.Errorf("the session cookie on the API: %d, want 401", p.status)
	}
	// A form without the session's token is refused and changes nothing.
	if p := b.post("/signout", url.Values{"csrf": {"forged"}}); p.status != http.StatusForbidden {
		t.Errorf("sign-out with a forged token: %d", p.status)
	}
	if p := b.post("/signout", nil); p.status != http.StatusSeeOther {
		t.Fatalf("sign-out: %d\n%s", p.status, p.body)
	}
	if got := w.h.Count(`SELECT count(*) FROM web_session`); got != 0 {
		t.Errorf("%d sessions after sign-out", got)
	}
	if p := b.get("/work"); p.status != http.StatusSeeOther {
		t.Errorf("after sign-out, GET /work: %d", p.status)
	}
	if err := w.h.App.Audit.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for interaction, want := range map[string]int{"login": 3, "logout": 1} {
		if got := w.h.Count(`SELECT count(*) FROM audit_event WHERE interaction = $1`, interaction); got != want {
			t.Errorf("%d %s audit records, want %d", got, interaction, want)
		}
	}
}

func TestSessionsEndWhenIdle(t *testing.T) {
	w := newWorld(t)
	b := w.browser()
	b.signIn("cora", password)
	w.h.SetNow(demoNow.Add(web.DefaultSessionIdleTimeout - time.Minute))
	if p := b.get("/work"); p.status != http.StatusOK {
		t.Fatalf("within the idle timeout: %d", p.status)
	}
	w.h.SetNow(demoNow.Add(2*web.DefaultSessionIdleTimeout - time.Minute)) // idle measured from the last use
	if p := b.get("/work"); p.status != http.StatusOK {
		t.Fatalf("used again within the idle timeout: %d", p.status)
	}
	w.h.SetNow(demoNow.Add(3*web.DefaultSessionIdleTimeout + time.Minute))
	if p := b.get("/work"); p.status != http.StatusSeeOther {
		t.Errorf("idle past the timeout: %d, want a redirect to sign in", p.status)
	}
}

func TestFailedSignInsAreLimited(t *testing.T) {
	w := newWorld(t, func(c *app.Config) { c.Web.SignInAttempts = 3 })
	b := w.browser()
	for i := 0; i < 3; i++ {
		if p := b.signIn("cora", "not the password"); p.status != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i+1, p.status)
		}
	}
	p := b.signIn("cora", password)
	if p.status != http.StatusTooManyRequests || !strings.Contains(p.body, "CARTREG_SIGNIN_ATTEMPTS") {
		t.Fatalf("the right password after the allowance: %d\n%s", p.status, p.body)
	}
	w.h.SetNow(demoNow.Add(web.DefaultSignInWindow + time.Second))
	if p := b.signIn("cora", password); p.status != http.StatusSeeOther {
		t.Errorf("after the window: %d", p.status)
	}
}

// taskOf reads a Task through the FHIR API, as the administrator.
func (w *world) taskOf(id string) map[string]any {
	w.t.Helper()
	return w.h.Expect(http.StatusOK, "GET", "/fhir/Task/"+id, nil).JSON(w.t)
}

var taskRow = regexp.MustCompile(`<tr id="task-([^"]+)" class="(overdue|due|upcoming)">`)

func TestCoordinatorActsOnTheirWorkList(t *testing.T) {
	w := newWorld(t)
	b := w.browser()
	b.signIn("cora", password)
	p := b.get("/work")
	rows := taskRow.FindAllStringSubmatch(p.body, -1)
	if len(rows) != w.sites[w.site] {
		t.Fatalf("%d rows, want the %d open visits of %s", len(rows), w.sites[w.site], w.site)
	}
	// Another site's Task is not theirs to change: as if it did not exist.
	if p := b.post("/work/tasks/"+w.otherTask+"/note", url.Values{"note": {"not mine"}}); p.status != http.StatusNotFound {
		t.Errorf("a note on another site's Task: %d", p.status)
	}
	if p := b.get("/work?within=366&site=" + w.other); len(taskRow.FindAllString(p.body, -1)) != 0 {
		t.Errorf("asking for another site shows its visits")
	}

	task := rows[0][1]
	if p := b.post("/work/tasks/"+task+"/missed", url.Values{"reason": {""}}); p.status != http.StatusBadRequest {
		t.Errorf("missed without a reason: %d", p.status)
	}
	p = b.post("/work/tasks/"+task+"/missed", url.Values{"reason": {"Patient did not attend"}, "note": {"Rang twice, no answer"}, "back": {"/work"}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("mark missed: %d\n%s", p.status, p.body)
	}
	got := w.taskOf(task)
	if got["status"] != "failed" || got["statusReason"].(map[string]any)["text"] != "Patient did not attend" {
		t.Errorf("the Task after mark missed: %v", got)
	}
	notes, _ := json.Marshal(got["note"])
	if !strings.Contains(string(notes), "Rang twice, no answer") || !strings.Contains(string(notes), `"authorString":"cora"`) {
		t.Errorf("the Task's notes: %s", notes)
	}
	p = b.get("/work")
	if strings.Contains(p.body, `id="task-`+task+`"`) || len(taskRow.FindAllString(p.body, -1)) != len(rows)-1 {
		t.Errorf("the missed visit is still on the list")
	}

	// Lost to follow-up: every open visit of the patient leaves the list, for good.
	patient := regexp.MustCompile(`/work/patients/([^/]+)/lost`).FindStringSubmatch(p.body)[1]
	p = b.post("/work/patients/"+patient+"/lost", url.Values{"back": {"/work"}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("mark lost: %d\n%s", p.status, p.body)
	}
	p = b.get("/work")
	if strings.Contains(p.body, "/work/patients/"+patient+"/lost") {
		t.Errorf("the lost patient is still on the list")
	}
	if n := w.h.Count(`SELECT count(*) FROM followup_withdrawal WHERE patient_id = $1 AND lost`, patient); n != 1 {
		t.Errorf("%d lost-to-follow-up withdrawals recorded", n)
	}
	if err := w.h.App.Audit.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := w.h.Count(`SELECT count(*) FROM audit_event WHERE agent_who = 'local|cora' AND event->>'path' LIKE '/work/%'`); n < 2 {
		t.Errorf("%d audit records of cora's actions", n)
	}
}

func TestWorkListCSVIsForSpreadsheets(t *testing.T) {
	w := newWorld(t)
	b := w.browser()
	b.signIn("cora", password)
	p := b.get("/work.csv")
	if p.status != http.StatusOK || !strings.HasPrefix(p.body, "\uFEFFBucket,Days late") {
		t.Fatalf("CSV: %d\n%s", p.status, p.body)
	}
	lines := strings.Split(strings.TrimSpace(p.body), "\n")
	if len(lines) != w.sites[w.site]+1 {
		t.Errorf("%d lines, want a header and %d visits", len(lines), w.sites[w.site])
	}
	uuid := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-`)
	if uuid.MatchString(p.body) {
		t.Errorf("the CSV has ids without ids=1:\n%s", p.body)
	}
	if p := b.get("/work.csv?ids=1"); !strings.Contains(p.body, "Task id") || !uuid.MatchString(p.body) {
		t.Errorf("ids=1 has no ids:\n%s", p.body)
	}
}

// A search whose every word begins more patients' names or MRNs than
// CARTREG_WORKLIST_SEARCH_MAX lists nothing and says so, instead of reading them all; a word
// narrow enough finds its patients, checked against the other words.
func TestABroadSearchAsksForMoreOfTheName(t *testing.T) {
	w := newWorld(t, func(c *app.Config) { c.Web.WorkListSearchMax = 2 })
	b := w.browser()
	b.signIn("cora", password)
	p := b.get("/work?q=ana")
	if p.status != http.StatusOK || !strings.Contains(p.body, `id="search-too-broad"`) ||
		!strings.Contains(p.body, "More than 2 patients") || len(taskRow.FindAllString(p.body, -1)) != 0 {
		t.Errorf("a search of six patients' given name, at most 2: %d, %d rows\n%s", p.status, len(taskRow.FindAllString(p.body, -1)), p.body)
	}
	if !strings.Contains(p.body, `value="ana"`) {
		t.Errorf("the search box lost what was typed")
	}
	// "okafor" begins two patients' family names, one at each site: cora sees hers.
	p = b.get("/work?q=ana+okafor")
	if rows := taskRow.FindAllString(p.body, -1); len(rows) != 1 || !strings.Contains(p.body, "Okafor N") || strings.Contains(p.body, "search-too-broad") {
		t.Errorf("a narrow word with a broad one: %d rows\n%s", len(rows), p.body)
	}
	if p := b.get("/work?q=ana+okafor+lindqvist"); len(taskRow.FindAllString(p.body, -1)) != 0 {
		t.Errorf("every word must match: %s", p.body)
	}
	p = b.get("/work.csv?q=ana")
	if p.status != http.StatusUnprocessableEntity || !strings.Contains(p.body, "CARTREG_WORKLIST_SEARCH_MAX") {
		t.Errorf("the CSV of a broad search: %d\n%s", p.status, p.body)
	}
}

// With figures that may lag the data, the dashboard says by how much; with exact ones, it
// says nothing of the kind.
func TestTheDashboardSaysHowFarItsFiguresMayLag(t *testing.T) {
	for _, tc := range []struct {
		maxStale time.Duration
		want     string
	}{{90 * time.Second, "in the last 90 seconds"}, {time.Minute, "in the last 1 minute"}, {2 * time.Hour, "in the last 2 hours"}, {0, ""}} {
		w := newWorld(t, func(c *app.Config) { c.Registry.ReportMaxStale = tc.maxStale })
		b := w.browser()
		b.signIn("rhea", password)
		p := b.get("/outcomes")
		if p.status != http.StatusOK {
			t.Fatalf("max stale %s: %d\n%s", tc.maxStale, p.status, p.body)
		}
		if has := strings.Contains(p.body, `id="staleness"`); has != (tc.want != "") || !strings.Contains(p.body, tc.want) {
			t.Errorf("max stale %s: want %q on the page, staleness note shown: %v", tc.maxStale, tc.want, has)
		}
	}
}

func TestResearcherDashboard(t *testing.T) {
	w := newWorld(t)
	b := w.browser()
	b.signIn("rhea", password)
	if p := b.get("/"); p.location != "/outcomes" {
		t.Errorf("a researcher's home: %s", p.location)
	}
	p := b.get("/outcomes?group_by=disease&endpoint=pfs")
	if p.status != http.StatusOK || !strings.Contains(p.body, "What is hidden, and why") || !strings.Contains(p.body, "Progression-free survival") {
		t.Fatalf("dashboard: %d\n%s", p.status, p.body)
	}
	if p := b.get("/outcomes?infused_from=yesterday"); p.status != http.StatusBadRequest || !strings.Contains(p.body, "infused_from") {
		t.Errorf("a bad filter: %d\n%s", p.status, p.body)
	}
	if p := b.get("/outcomes/survival.svg?group_by=disease"); p.status != http.StatusOK || !strings.Contains(p.header.Get("Content-Type"), "svg") {
		t.Errorf("survival chart: %d %s", p.status, p.header.Get("Content-Type"))
	}
	if p := b.get("/outcomes/response.svg?group_by=disease"); p.status != http.StatusOK {
		t.Errorf("response chart (group_by dropped): %d", p.status)
	}
	if p := b.get("/outcomes/response.csv?group_by=disease"); p.status != http.StatusOK || !strings.Contains(p.header.Get("Content-Type"), "text/csv") ||
		!strings.Contains(p.header.Get("Content-Disposition"), "attachment") {
		t.Errorf("response CSV: %d %v", p.status, p.header)
	}
	if p := b.get("/work"); p.status != http.StatusForbidden {
		t.Errorf("researcher, GET /work: %d", p.status)
	}
	if p := b.get("/patients/" + "x"); p.status != http.StatusForbidden {
		t.Errorf("researcher, a patient's page: %d", p.status)
	}
	// Recording a visit writes patient data (an assessment): refused before any Task is read.
	versions := w.h.Count(`SELECT count(*) FROM resource_version`)
	if p := b.post("/work/tasks/x/visited", url.Values{"date": {"2026-01-01"}, "category": {"lugano-cmr"}}); p.status != http.StatusForbidden {
		t.Errorf("researcher, recording a visit: %d", p.status)
	}
	if n := w.h.Count(`SELECT count(*) FROM resource_version`); n != versions {
		t.Errorf("a researcher's refused visit wrote %d versions", n-versions)
	}
}

func TestAdminStatusPage(t *testing.T) {
	w := newWorld(t)
	b := w.browser()
	b.signIn("ada", password)
	p := b.get("/status")
	names, err := migrations.Names()
	if err != nil {
		t.Fatal(err)
	}
	latest := strings.TrimLeft(strings.SplitN(names[len(names)-1], "_", 2)[0], "0")
	if p.status != http.StatusOK || !strings.Contains(p.body, `<dd id="schema">`+latest+`</dd>`) {
		t.Fatalf("status: %d\n%s", p.status, p.body)
	}
}

// Every page route has an access rule: none is open by accident.
func TestEveryPageHasARule(t *testing.T) {
	w := newWorld(t)
	if un := w.h.App.Access.Unruled(w.h.Echo); len(un) != 0 {
		t.Errorf("routes without a rule: %v", un)
	}
}

// Booking a visit keeps to its window; recording one writes the Encounter and leaves the Task
// for the assessment to complete; a patient's page is the coordinator's own sites' only.
func TestCoordinatorBooksAndRecordsVisits(t *testing.T) {
	w := newWorld(t)
	b := w.browser()
	b.signIn("cora", password)
	p := b.get("/work?bucket=due")
	rows := taskRow.FindAllStringSubmatch(p.body, -1)
	if len(rows) != 1 {
		t.Fatalf("%d due rows, want 1", len(rows))
	}
	task := rows[0][1]
	start, end := window(w.taskOf(task))
	if p := b.post("/work/tasks/"+task+"/reschedule", url.Values{"date": {"2030-01-01"}}); p.status != http.StatusBadRequest || !strings.Contains(p.body, end) {
		t.Errorf("booking outside the window %s–%s: %d\n%s", start, end, p.status, p.body)
	}
	if p := b.post("/work/tasks/"+task+"/reschedule", url.Values{"date": {end}}); p.status != http.StatusSeeOther {
		t.Fatalf("booking on the window's last day: %d\n%s", p.status, p.body)
	}
	got := w.taskOf(task)
	notes, _ := json.Marshal(got["note"])
	if got["status"] != "accepted" || !strings.Contains(string(notes), "Visit booked for "+end) {
		t.Errorf("after booking: %v %s", got["status"], notes)
	}
	encounters := w.h.Count(`SELECT count(*) FROM resource WHERE resource_type = 'Encounter'`)
	if p := b.post("/work/tasks/"+task+"/visited", url.Values{"date": {"2099-01-01"}}); p.status != http.StatusBadRequest {
		t.Errorf("a visit in the future: %d", p.status)
	}
	if p := b.post("/work/tasks/"+task+"/visited", url.Values{"date": {demoNow.Format(time.DateOnly)}}); p.status != http.StatusSeeOther {
		t.Fatalf("recording the visit: %d\n%s", p.status, p.body)
	}
	if got := w.taskOf(task); got["status"] != "in-progress" {
		t.Errorf("after the visit: %v", got["status"])
	}
	if n := w.h.Count(`SELECT count(*) FROM resource WHERE resource_type = 'Encounter'`); n != encounters+1 {
		t.Errorf("%d Encounters after recording the visit, want %d", n, encounters+1)
	}
	patient := regexp.MustCompile(`href="/patients/([^"]+)"`).FindStringSubmatch(b.get("/work").body)[1]
	if p := b.get("/patients/" + patient); p.status != http.StatusOK || !strings.Contains(p.body, "Month 1") {
		t.Errorf("their patient's page: %d\n%s", p.status, p.body)
	}
	other := w.h.Expect(http.StatusOK, "GET", "/fhir/Task/"+w.otherTask, nil).JSON(t)["for"].(map[string]any)["reference"].(string)
	other = strings.TrimPrefix(other, "Patient/")
	if p := b.get("/patients/" + other); p.status != http.StatusNotFound {
		t.Errorf("another site's patient's page: %d", p.status)
	}
	if p := b.post("/work/patients/"+other+"/lost", nil); p.status != http.StatusNotFound {
		t.Errorf("marking another site's patient lost: %d", p.status)
	}
}

func window(task map[string]any) (start, end string) {
	period := task["restriction"].(map[string]any)["period"].(map[string]any)
	return period["start"].(string), period["end"].(string)
}
