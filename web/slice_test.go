package web_test

import (
	"net/http"
	"strings"
	"testing"

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
