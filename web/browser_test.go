package web_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/internal/browsertest"
)

type css = chromedp.CSS

// signInAs signs in through the form, as a person would, from the server's root.
func (w *world) signInAs(ctx context.Context, name string) {
	w.t.Helper()
	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.h.URL+"/"),
		chromedp.WaitVisible(css(`#password`)),
		chromedp.SendKeys(css(`#name`), name),
		chromedp.SendKeys(css(`#password`), password),
		chromedp.Click(css(`form.signin button[type=submit]`)),
		// The sign-in page has an h1 too: wait for it to go before waiting for the next.
		chromedp.WaitNotPresent(css(`#password`)),
		chromedp.WaitVisible(css(`h1`)),
	); err != nil {
		w.t.Fatalf("signing in as %s: %v", name, err)
	}
}

// text is the text of the first element sel selects.
func text(t testing.TB, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(css(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func location(t testing.TB, ctx context.Context) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func do(t testing.TB, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// A coordinator signs in, sees only their site, marks a visit missed with a note and a
// patient lost to follow-up, and sees the list change; the Task in FHIR carries the note.
func TestBrowserCoordinator(t *testing.T) {
	w := newWorld(t)
	ctx := browsertest.New(t)
	shots := t.TempDir()
	w.signInAs(ctx, "cora")
	browsertest.Screenshot(t, ctx, shots, "1-work-list")
	if loc, h1 := location(t, ctx), text(t, ctx, "h1"); !strings.HasSuffix(loc, "/work") || !strings.Contains(h1, "My work list") {
		t.Fatalf("after sign-in: %s, %q", loc, h1)
	}
	rows := text(t, ctx, "table.work tbody")
	if !strings.Contains(rows, "Universitätsklinikum Nord") || strings.Contains(rows, "Riverside") {
		t.Errorf("the coordinator's rows are not only their site's:\n%s", rows)
	}
	if got := text(t, ctx, "#count-overdue"); got != "1" {
		t.Errorf("overdue count %q, want 1", got)
	}

	// The overdue visit: mark it missed with a reason and a note, through the row's form.
	id, err := chromedp.Run(ctx, chromedp.AttributeValue(css(`tr.overdue`), "id"))
	if err != nil {
		t.Fatal(err)
	}
	do(t, ctx,
		chromedp.Click(css(`tr.overdue details summary`)),
		chromedp.SendKeys(css(`tr.overdue input[name=reason]`), "Patient did not attend"),
		chromedp.SendKeys(css(`tr.overdue form[action$="/missed"] input[name=note]`), "Rang twice, no answer; letter sent"))
	browsertest.Screenshot(t, ctx, shots, "2-mark-missed")
	do(t, ctx,
		chromedp.Click(css(`tr.overdue form[action$="/missed"] button`)),
		chromedp.WaitVisible(css(`p.notice`)))
	browsertest.Screenshot(t, ctx, shots, "3-after-missed")
	if got := text(t, ctx, "#count-overdue"); got != "0" {
		t.Errorf("overdue count after marking the visit missed: %q, want 0", got)
	}
	task := w.taskOf(strings.TrimPrefix(id.Value, "task-"))
	notes, _ := json.Marshal(task["note"])
	if task["status"] != "failed" || !strings.Contains(string(notes), "Rang twice, no answer; letter sent") {
		t.Errorf("the Task in FHIR: status %v, notes %s", task["status"], notes)
	}

	// The patient due now is lost to follow-up: their row leaves the list.
	do(t, ctx,
		chromedp.Click(css(`tr.due details summary`)),
		chromedp.Click(css(`tr.due form[action$="/lost"] button`)),
		chromedp.WaitVisible(css(`p.notice`)))
	browsertest.Screenshot(t, ctx, shots, "4-after-lost")
	if due, rows := text(t, ctx, "#count-due"), text(t, ctx, "table.work tbody"); due != "0" || strings.Contains(rows, "Okafor") {
		t.Errorf("after marking the due patient lost: due %q, rows:\n%s", due, rows)
	}

	// A tablet held upright: each visit is a card, nothing wider than the screen.
	do(t, ctx, chromedp.EmulateViewport(820, 1180), chromedp.Reload(), chromedp.WaitVisible(css(`h1`)))
	browsertest.Screenshot(t, ctx, shots, "5-tablet")
	width, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`))
	if err != nil {
		t.Fatal(err)
	}
	if width > 820 {
		t.Errorf("at tablet width the page is %d px wide, more than the 820 px screen", width)
	}
}

// A researcher signs in, changes a filter and downloads the table as CSV.
func TestBrowserResearcher(t *testing.T) {
	w := newWorld(t, func(c *app.Config) { c.Registry.MinCell = 1 })
	ctx := browsertest.New(t)
	shots := t.TempDir()
	w.signInAs(ctx, "rhea")
	if loc, h1 := location(t, ctx), text(t, ctx, "h1"); !strings.HasSuffix(loc, "/outcomes") || h1 != "Outcomes" {
		t.Fatalf("after sign-in: %s %q", loc, h1)
	}
	browsertest.Screenshot(t, ctx, shots, "1-outcomes")
	do(t, ctx,
		chromedp.SetValue(css(`#o-group`), "site"),
		chromedp.Click(css(`form.filters button[type=submit]`)),
		// The new page marks the grouping selected; SetValue alone does not.
		chromedp.WaitReady(css(`#o-group option[value="site"][selected]`)))
	browsertest.Screenshot(t, ctx, shots, "2-grouped-by-site")
	href, err := chromedp.Run(ctx, chromedp.AttributeValue(css(`#response-csv`), "href"))
	if err != nil {
		t.Fatal(err)
	}
	if loc := location(t, ctx); !strings.Contains(loc, "group_by=site") || !strings.Contains(href.Value, "group_by=site") {
		t.Fatalf("after choosing a grouping: %s, CSV link %s", loc, href.Value)
	}
	if groups := text(t, ctx, "#response-groups"); !strings.Contains(groups, "Riverside Cancer Centre") {
		t.Errorf("the response table is not grouped by site:\n%s", groups)
	}
	// The download, as the browser makes it: with the session's cookie.
	type download struct {
		Status      int    `json:"status"`
		Disposition string `json:"disposition"`
		Body        string `json:"body"`
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[download](`fetch(document.querySelector('#response-csv').href).then(async r =>
		({status: r.status, disposition: r.headers.get('content-disposition') || '', body: await r.text()}))`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != 200 || !strings.Contains(got.Disposition, "attachment") || !strings.Contains(got.Body, "Universitätsklinikum Nord") {
		t.Errorf("the CSV download: %d %q\n%s", got.Status, got.Disposition, got.Body)
	}
}

// A coordinator signs in with the hospital's provider, lands on their work list, and records
// the due visit with its response: the Task in FHIR is completed by the assessment.
func TestBrowserOIDCSignInAndRecordVisit(t *testing.T) {
	var idp *provider
	var w *world
	idp = newProvider(t, func() time.Time { return w.h.Now() })
	w = newWorld(t, idp.config)
	idp.signsIn(map[string]any{"sub": "u-17", "name": "Nadia Haddad", "groups": []string{"cart-coordinators"}, "sites": []string{w.site}}, nil)
	ctx := browsertest.New(t)
	shots := t.TempDir()
	do(t, ctx, chromedp.Navigate(w.h.URL+"/"), chromedp.WaitVisible(css(`a.button`)))
	browsertest.Screenshot(t, ctx, shots, "1-sign-in")
	do(t, ctx, chromedp.Click(css(`a.button`)), chromedp.WaitVisible(css(`table.work`)))
	browsertest.Screenshot(t, ctx, shots, "2-work-list")
	if loc, who := location(t, ctx), text(t, ctx, ".who"); !strings.HasSuffix(loc, "/work") || who != "Nadia Haddad (coordinator)" {
		t.Fatalf("after the provider's sign-in: %s, %q", loc, who)
	}
	if rows := text(t, ctx, "table.work tbody"); !strings.Contains(rows, "Universitätsklinikum Nord") || strings.Contains(rows, "Riverside") {
		t.Errorf("the coordinator's rows are not only their site's:\n%s", rows)
	}
	id, err := chromedp.Run(ctx, chromedp.AttributeValue(css(`tr.due`), "id"))
	if err != nil {
		t.Fatal(err)
	}
	do(t, ctx,
		chromedp.Click(css(`tr.due details summary`)),
		chromedp.SetValue(css(`tr.due select[name=category]`), "lugano-cmr"))
	browsertest.Screenshot(t, ctx, shots, "3-record-visit")
	do(t, ctx,
		chromedp.Click(css(`tr.due form[action$="/visited"] button`)),
		chromedp.WaitVisible(css(`p.notice`)))
	browsertest.Screenshot(t, ctx, shots, "4-after-visit")
	if got := text(t, ctx, "#count-due"); got != "0" {
		t.Errorf("due count after recording the visit: %q, want 0", got)
	}
	task := w.taskOf(strings.TrimPrefix(id.Value, "task-"))
	if outputs, _ := task["output"].([]any); task["status"] != "completed" || len(outputs) != 1 {
		t.Errorf("the Task in FHIR: %v %v", task["status"], task["output"])
	}
}
