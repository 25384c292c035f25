package web_test

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app"
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
