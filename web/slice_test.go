package web_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/web"
)

// The work list shows a page of visits at a time (CARTREG_WORKLIST_PAGE_SIZE), with links to
// the others: a network's every open visit on one page is megabytes of HTML.
func TestWorkListIsPaged(t *testing.T) {
	w := newWorld(t, func(c *app.Config) { c.Web.WorkListPageSize = 2 })
	b := w.browser()
	b.signIn("ada", password) // an administrator sees both sites' six visits
	p := b.get("/work")
	if p.status != http.StatusOK {
		t.Fatalf("GET /work: %d", p.status)
	}
	first := taskRow.FindAllStringSubmatch(p.body, -1)
	if len(first) != 2 || !strings.Contains(p.body, "Visits 1 to 2 of 6") || !strings.Contains(p.body, `href="/work?page=2"`) {
		t.Fatalf("first page: %d rows\n%s", len(first), p.body)
	}
	seen := map[string]bool{}
	for page := 1; page <= 3; page++ {
		p := b.get("/work?page=" + string(rune('0'+page)))
		for _, m := range taskRow.FindAllStringSubmatch(p.body, -1) {
			if seen[m[1]] {
				t.Errorf("Task %s on two pages", m[1])
			}
			seen[m[1]] = true
		}
		if page == 3 && (strings.Contains(p.body, `rel="next"`) || !strings.Contains(p.body, `href="/work?page=2"`)) {
			t.Errorf("last page's links:\n%s", p.body)
		}
	}
	if len(seen) != 6 {
		t.Errorf("%d visits over three pages, want 6", len(seen))
	}
	if p := b.get("/work?page=0"); p.status != http.StatusBadRequest {
		t.Errorf("page=0: %d", p.status)
	}
}

var feedURLField = regexp.MustCompile(`id="feed-url" readonly aria-label="Calendar link" value="([^"]+)"`)

// getFeed fetches a calendar feed link as a calendar application does: no cookie, no token.
func getFeed(t *testing.T, link string) (int, string) {
	t.Helper()
	res, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// A coordinator makes a calendar link on the work list page; a calendar application fetches
// it without a bearer token and gets their sites' visits only; the read is audited as theirs
// without the token; a new link revokes the old, and revoking or disabling ends it.
func TestCalendarFeedLink(t *testing.T) {
	w := newWorld(t)
	b := w.browser()
	b.signIn("cora", password)
	p := b.get("/work")
	if !strings.Contains(p.body, `id="new-feed"`) || strings.Contains(p.body, `id="revoke-feed"`) {
		t.Fatalf("work list without a feed:\n%s", p.body)
	}
	made := b.post("/work/feed", nil)
	m := feedURLField.FindStringSubmatch(made.body)
	if made.status != http.StatusOK || m == nil {
		t.Fatalf("making a feed link: %d\n%s", made.status, made.body)
	}
	link := html.UnescapeString(m[1])
	if !strings.HasPrefix(link, w.h.URL+"/worklist.ics?feed=") {
		t.Fatalf("feed link %q", link)
	}
	status, cal := getFeed(t, link)
	if status != http.StatusOK || !strings.Contains(cal, "BEGIN:VCALENDAR") {
		t.Fatalf("the feed: %d\n%s", status, cal)
	}
	if got := strings.Count(cal, "BEGIN:VEVENT"); got != w.sites[w.site] || strings.Contains(cal, "Okafor R") {
		t.Errorf("the feed has %d visits (want %d, of cora's site only):\n%s", got, w.sites[w.site], cal)
	}
	// Only the feed: the token opens no other route.
	token := strings.TrimPrefix(link, w.h.URL+"/worklist.ics?feed=")
	if status, _ := getFeed(t, w.h.URL+"/worklist?feed="+token); status != http.StatusUnauthorized {
		t.Errorf("the feed token on /worklist: %d", status)
	}
	if status, _ := getFeed(t, w.h.URL+"/worklist.ics?feed=not-a-token"); status != http.StatusUnauthorized {
		t.Errorf("a made-up feed token: %d", status)
	}
	if err := w.h.App.Audit.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := w.h.Count(`SELECT count(*) FROM audit_event WHERE agent_who = 'local|cora' AND event->>'path' = '/worklist.ics' AND outcome = 200`); got != 1 {
		t.Errorf("%d audited feed reads by cora, want 1", got)
	}
	if got := w.h.Count(`SELECT count(*) FROM audit_event WHERE event::text LIKE '%' || $1 || '%'`, token); got != 0 {
		t.Errorf("the feed token is in %d audit records", got)
	}
	if got := w.h.Count(`SELECT count(*) FROM web_feed_token WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, token); got != 1 {
		t.Errorf("the token is not stored as its SHA-256 (%d rows)", got)
	}
	// A new link: the old one stops working.
	p = b.get("/work")
	if !strings.Contains(p.body, `id="revoke-feed"`) {
		t.Errorf("work list with a feed offers no revoke")
	}
	again := feedURLField.FindStringSubmatch(b.post("/work/feed", nil).body)
	if again == nil || again[1] == m[1] {
		t.Fatalf("a new link: %v", again)
	}
	if status, _ := getFeed(t, link); status != http.StatusUnauthorized {
		t.Errorf("the replaced link: %d, want 401", status)
	}
	link = html.UnescapeString(again[1])
	if status, _ := getFeed(t, link); status != http.StatusOK {
		t.Errorf("the new link: %d", status)
	}
	b.get("/work")
	if p := b.post("/work/feed/revoke", url.Values{"back": {"/work"}}); p.status != http.StatusSeeOther {
		t.Fatalf("revoking: %d\n%s", p.status, p.body)
	}
	if status, _ := getFeed(t, link); status != http.StatusUnauthorized {
		t.Errorf("the revoked link: %d, want 401", status)
	}
	// Disabling the user ends their link.
	b.get("/work")
	link = html.UnescapeString(feedURLField.FindStringSubmatch(b.post("/work/feed", nil).body)[1])
	if err := w.h.App.Web.Users().DisableUser(context.Background(), "cora"); err != nil {
		t.Fatal(err)
	}
	if status, _ := getFeed(t, link); status != http.StatusUnauthorized {
		t.Errorf("a disabled user's link: %d, want 401", status)
	}
}

// "Today", for recording a visit and booking one, is the day in the registry's time zone: at
// 01:00 in Auckland it is already tomorrow there and still today in UTC.
func TestTodayIsTheRegistrysDay(t *testing.T) {
	auckland, err := time.LoadLocation("Pacific/Auckland")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	w := newWorld(t, func(c *app.Config) { c.FollowUp.Location = auckland })
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC) // 2026-12-02 01:00 in Auckland
	w.h.SetNow(now)
	utcToday, localToday := now.Format(time.DateOnly), now.In(auckland).Format(time.DateOnly)
	b := w.browser()
	b.signIn("cora", password)
	p := b.get("/work?bucket=due")
	rows := taskRow.FindAllStringSubmatch(p.body, -1)
	if len(rows) != 1 {
		t.Fatalf("%d due rows, want 1\n%s", len(rows), p.body)
	}
	task := rows[0][1]
	if start, _ := window(w.taskOf(task)); start > utcToday {
		t.Fatalf("the window opens %s, after %s", start, utcToday)
	}
	// Booking is for a day still to come: yesterday, in Auckland, is past.
	if p := b.post("/work/tasks/"+task+"/reschedule", url.Values{"date": {utcToday}}); p.status != http.StatusBadRequest {
		t.Errorf("booking %s when it is %s in the registry's zone: %d", utcToday, localToday, p.status)
	}
	if p := b.post("/work/tasks/"+task+"/reschedule", url.Values{"date": {localToday}}); p.status != http.StatusSeeOther {
		t.Fatalf("booking for today, %s: %d\n%s", localToday, p.status, p.body)
	}
	b.get("/work")
	if p := b.post("/work/tasks/"+task+"/visited", url.Values{"date": {localToday}}); p.status != http.StatusSeeOther {
		t.Fatalf("recording a visit today, %s (UTC's tomorrow): %d\n%s", localToday, p.status, p.body)
	}
	if n := w.h.Count(`SELECT count(*) FROM resource_version WHERE resource_type = 'Encounter' AND body::jsonb#>>'{period,start}' = $1`, localToday); n != 1 {
		t.Errorf("%d Encounters on %s", n, localToday)
	}
}

// Reassign hands a visit to another site the person acts for: the Task's owner, by an
// ordinary, audited FHIR update; a coordinator cannot hand one to a site not theirs, and the
// scheduler's later runs keep the new owner.
func TestReassignAVisit(t *testing.T) {
	w := newWorld(t)
	w.addUser("cole", auth.RoleCoordinator, w.site, w.other)
	b := w.browser()
	b.signIn("cora", password)
	p := b.get("/work?bucket=due")
	task := taskRow.FindStringSubmatch(p.body)[1]
	if !strings.Contains(p.body, `action="/work/tasks/`+task+`/reassign"`) {
		t.Fatalf("no reassign form:\n%s", p.body)
	}
	before, _ := json.Marshal(w.taskOf(task)["owner"])
	if p := b.post("/work/tasks/"+task+"/reassign", url.Values{"site": {w.other}}); p.status != http.StatusBadRequest {
		t.Errorf("cora handing a visit to a site not hers: %d", p.status)
	}
	if after, _ := json.Marshal(w.taskOf(task)["owner"]); string(after) != string(before) {
		t.Errorf("owner after a refused reassign: %s, was %s", after, before)
	}
	c := w.browser()
	c.signIn("cole", password)
	c.get("/work")
	if p := c.post("/work/tasks/"+task+"/reassign", url.Values{"site": {w.other}, "back": {"/work"}}); p.status != http.StatusSeeOther {
		t.Fatalf("cole reassigning: %d\n%s", p.status, p.body)
	}
	got := w.taskOf(task)
	owner, _ := got["owner"].(map[string]any)
	notes, _ := json.Marshal(got["note"])
	if owner["reference"] != "Organization/"+w.other || !strings.Contains(string(notes), "Reassigned to Riverside Cancer Centre") {
		t.Errorf("after reassigning: owner %v, notes %s", owner, notes)
	}
	if err := w.h.App.Audit.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The write is recorded in its own transaction, naming the Task and who changed it.
	if n := w.h.Count(`SELECT count(*) FROM audit_event WHERE agent_who = 'local|cole' AND 'Task/' || $1 = ANY(entities)
		AND event->>'path' = '/work/tasks/' || $1 || '/reassign'`, task); n != 1 {
		t.Errorf("%d audit records of cole reassigning Task/%s, want 1", n, task)
	}
	// An administrator may hand it to any site; the scheduler, running later, keeps the owner.
	a := w.browser()
	a.signIn("ada", password)
	a.get("/work")
	if p := a.post("/work/tasks/"+task+"/reassign", url.Values{"site": {w.site}}); p.status != http.StatusSeeOther {
		t.Fatalf("ada reassigning: %d\n%s", p.status, p.body)
	}
	w.h.SetNow(demoNow.AddDate(0, 0, 40))
	if _, err := w.h.App.FollowUp.Run(auth.WithPrincipal(context.Background(), auth.Operator("test")), w.h.Now()); err != nil {
		t.Fatal(err)
	}
	if owner, _ := w.taskOf(task)["owner"].(map[string]any); owner["reference"] != "Organization/"+w.site {
		t.Errorf("owner after the scheduler's next run: %v", owner)
	}
}

// Two replicas on one database share the sign-in allowance: failures at one count at the
// other, so an attacker does not get it once per replica.
func TestSignInLimitIsSharedByReplicas(t *testing.T) {
	w := newWorld(t, func(c *app.Config) { c.Web.SignInAttempts = 3 })
	a := w.h.App
	// A second replica: its own pages over the same database, behind its own server.
	second, err := web.New(web.Config{SignInAttempts: 3}, web.Deps{DB: a.DB, Store: a.Store, FollowUp: a.FollowUp,
		Registry: a.Registry, Audit: a.Audit, InSites: a.Registry.InSites, Clock: w.h.Now, Logger: apptest.Logger(t), RootURL: w.h.URL})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	e.Use(second.Sessions())
	second.Register(e)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	other := w.browser()
	other.base = srv.URL

	here := w.browser()
	for i, b := range []*browser{here, here, other} {
		if p := b.signIn("cora", "not the password"); p.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d\n%s", i+1, p.status, p.body)
		}
	}
	for name, b := range map[string]*browser{"this replica": here, "the other replica": other} {
		if p := b.signIn("cora", password); p.status != http.StatusTooManyRequests {
			t.Errorf("the right password at %s after 3 failures over two replicas: %d", name, p.status)
		}
	}
	if n := w.h.Count(`SELECT count(*) FROM web_signin_failure WHERE key_hash = sha256(convert_to('name:cora', 'UTF8'))`); n != 3 {
		t.Errorf("%d failures stored for cora, want 3", n)
	}
	w.h.SetNow(demoNow.Add(web.DefaultSignInWindow + time.Second))
	if p := other.signIn("cora", password); p.status != http.StatusSeeOther {
		t.Errorf("after the window, at the other replica: %d", p.status)
	}
}
