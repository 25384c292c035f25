package followup_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/registry"
)

const windowDefinition = "http://cartreg.org/fhir/SearchParameter/task-window"

// searchWorld is the world behind a real HTTP server, searched as a coordinator's client
// would; label names each follow-up Task "patient/milestone" ("A1/y1") for the assertions.
type searchWorld struct {
	*world
	url   string
	label map[string]string // Task id -> label
}

func newSearchWorld(t *testing.T) *searchWorld {
	w := newWorld(t)
	return &searchWorld{world: w, url: w.h.URL, label: map[string]string{}}
}

// getJSON GETs a path of the server and decodes the 200 answer.
func (w *searchWorld) getJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	r := w.h.Do(http.MethodGet, path, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
	}
	body := r.Body
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return out
}

// search runs GET /fhir/Task?query and returns the labels of the matches, sorted. Any entry
// that is not a match (an OperationOutcome about an unknown parameter, which the server would
// otherwise ignore, widening the result) fails the test.
func (w *searchWorld) search(t *testing.T, query string) []string {
	t.Helper()
	bundle := w.getJSON(t, "/fhir/Task?"+query+"&_count=100")
	if _, next := linkOf(bundle, "next"); next {
		t.Fatalf("Task?%s: more than one page", query)
	}
	got := []string{}
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		entry := e.(map[string]any)
		res := entry["resource"].(map[string]any)
		if mode, _ := entry["search"].(map[string]any)["mode"].(string); mode != "match" || res["resourceType"] != "Task" {
			t.Fatalf("Task?%s: a %s entry in mode %q: %v", query, res["resourceType"], mode, res)
		}
		id := res["id"].(string)
		l, ok := w.label[id]
		if !ok {
			l = "Task/" + id
		}
		got = append(got, l)
	}
	sort.Strings(got)
	return got
}

func linkOf(bundle map[string]any, relation string) (string, bool) {
	links, _ := bundle["link"].([]any)
	for _, l := range links {
		if l := l.(map[string]any); l["relation"] == relation {
			s, _ := l["url"].(string)
			return s, true
		}
	}
	return "", false
}

// Coordinators find the scheduler's Tasks with ordinary FHIR searches: by owner, status,
// patient, milestone, business status, infusion, and by visit window with the server's own
// window parameter (R4's period is executionPeriod, which a follow-up Task does not have).
func TestSearchFollowUpTasks(t *testing.T) {
	t.Parallel()
	w := newSearchWorld(t)
	ctx := t.Context()
	riverside := w.post(map[string]any{"resourceType": "Organization", "name": "Riverside Cancer Centre"})[0]
	harbour := w.post(map[string]any{"resourceType": "Organization", "name": "Harbour Hospital"})[0]
	coordinator := w.post(map[string]any{"resourceType": "Practitioner",
		"name": []any{map[string]any{"family": "Okafor", "given": []any{"Ada"}}}})[0]
	w.owners[harbour[len("Organization/"):]] = coordinator
	planner := w.h.App.FollowUp

	// Windows on 2027-01-20 (m1 days 23–45, m3 76–104, y1 335–395 after the infusion):
	//   A1, B1 (2026-01-10): m1 02-02..02-24 and m3 03-27..04-24 overdue, y1 2026-12-11..2027-02-09 due
	//   A2 (2026-03-01):     m1 03-24..04-15 and m3 05-16..06-13 overdue, y1 2027-01-30..03-31 upcoming
	//   B2 (2026-12-20):     m1 2027-01-12..02-03 due
	// A1 and A2 are treated at Riverside, which owns their Tasks; B1 and B2 at Harbour, whose
	// coordinator owns theirs.
	type enrolled struct{ patient, infusion string }
	people := map[string]enrolled{}
	for _, p := range []struct{ name, site, on string }{
		{"A1", riverside, "2026-01-10"}, {"B1", harbour, "2026-01-10"}, {"A2", riverside, "2026-03-01"}, {"B2", harbour, "2026-12-20"},
	} {
		w.now = date(p.on)
		patient, _, infusion := w.enrol(p.site, p.on)
		people[p.name] = enrolled{patient, infusion}
	}
	w.now = date("2027-01-20")
	if _, err := planner.Run(ctx, w.now); err != nil {
		t.Fatal(err)
	}
	for name, p := range people {
		for m, task := range w.tasks(p.infusion) {
			w.label[task.id] = name + "/" + m
		}
	}
	if len(w.label) != 10 {
		t.Fatalf("%d Tasks, want 10: %v", len(w.label), w.label)
	}

	milestone := func(code string) string { return url.QueryEscape(registry.SystemMilestone + "|" + code) }
	business := func(code string) string { return url.QueryEscape(registry.SystemCartreg + "|" + code) }
	all := []string{"A1/m1", "A1/m3", "A1/y1", "A2/m1", "A2/m3", "A2/y1", "B1/m1", "B1/m3", "B1/y1", "B2/m1"}
	cases := []struct {
		name, query string
		want        []string
	}{
		{"the coordinator's open Tasks", "owner=" + coordinator + "&status=requested", []string{"B1/m1", "B1/m3", "B1/y1", "B2/m1"}},
		{"a site's own", "owner=" + riverside, []string{"A1/m1", "A1/m3", "A1/y1", "A2/m1", "A2/m3", "A2/y1"}},
		{"either owner", "owner=" + riverside + "," + coordinator, all},
		{"a patient's", "patient=" + people["A1"].patient, []string{"A1/m1", "A1/m3", "A1/y1"}},
		{"a milestone", "code=" + milestone("y1"), []string{"A1/y1", "A2/y1", "B1/y1"}},
		{"a milestone by code alone", "code=m1", []string{"A1/m1", "A2/m1", "B1/m1", "B2/m1"}},
		{"overdue", "business-status=" + business(followup.Overdue), []string{"A1/m1", "A1/m3", "A2/m1", "A2/m3", "B1/m1", "B1/m3"}},
		{"due", "business-status=" + business(followup.Due), []string{"A1/y1", "B1/y1", "B2/m1"}},
		{"upcoming", "business-status=" + business(followup.Upcoming), []string{"A2/y1"}},
		{"an infusion's", "focus=" + people["B1"].infusion, []string{"B1/m1", "B1/m3", "B1/y1"}},
		{"the coordinator's overdue", "owner=" + coordinator + "&business-status=" + business(followup.Overdue), []string{"B1/m1", "B1/m3"}},
		{"a site's due", "owner=" + riverside + "&status=requested&business-status=" + business(followup.Due), []string{"A1/y1"}},
		{"an infusion's milestone", "focus=" + people["B1"].infusion + "&code=" + milestone("y1"), []string{"B1/y1"}},

		// window: the visit window [first day, last day] searched by R4's rules for ranges.
		// ge: the window reaches past the day (or lies within it); le: it begins before it.
		{"windows reaching into the first quarter", "window=ge2027-01-01&window=le2027-03-31", []string{"A1/y1", "A2/y1", "B1/y1", "B2/m1"}},
		{"windows still open after 15 February", "window=ge2027-02-15&window=le2027-03-31", []string{"A2/y1"}},
		// eq: the window lies wholly within the value; a day holds no window of several days.
		{"windows within 2026", "window=2026", []string{"A1/m1", "A1/m3", "A2/m1", "A2/m3", "B1/m1", "B1/m3"}},
		{"eq a day inside windows", "window=2027-02-05", []string{}},
		// A window that includes 5 February: begins before the 6th and ends after the 4th.
		{"windows including a day", "window=lt2027-02-06&window=gt2027-02-04", []string{"A1/y1", "A2/y1", "B1/y1"}},
		{"windows opening in 2027", "window=sa2026-12-31", []string{"A2/y1", "B2/m1"}},
		{"windows closed before 2026-05", "window=eb2026-05-01", []string{"A1/m1", "A1/m3", "A2/m1", "B1/m1", "B1/m3"}},
		{"every Task has a window", "window:missing=false", all},
		{"a window and a milestone", "code=" + milestone("y1") + "&status=requested&window=ge2027-02-15", []string{"A2/y1"}},
		{"a patient's windows within 2026", "patient=" + people["A2"].patient + "&window=2026", []string{"A2/m1", "A2/m3"}},
		// R4's period is when the work was done: no open follow-up Task has one.
		{"period is executionPeriod", "period=ge2020-01-01", []string{}},
	}
	check := func(t *testing.T, name, query string, want []string) {
		t.Helper()
		if got := w.search(t, query); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: Task?%s\n got %v\nwant %v", name, query, got, want)
		}
	}
	for _, c := range cases {
		check(t, c.name, c.query, c.want)
	}

	t.Run("a completed Task leaves the open ones", func(t *testing.T) {
		w.now = date("2027-01-21")
		obs := w.assess(people["B2"].patient, people["B2"].infusion, "2027-01-21", "lugano-cmr")
		if got := w.tasks(people["B2"].infusion)["m1"]; got.status != followup.StatusCompleted || got.output != obs {
			t.Fatalf("B2's month 1 after the assessment: %+v", got)
		}
		check(t, "the coordinator's open Tasks", "owner="+coordinator+"&status=requested", []string{"B1/m1", "B1/m3", "B1/y1"})
		check(t, "the coordinator's done", "owner="+coordinator+"&status=completed", []string{"B2/m1"})
		check(t, "done", "status=completed", []string{"B2/m1"})
		check(t, "due", "business-status="+business(followup.Due), []string{"A1/y1", "B1/y1"})
		// Its window is still its window.
		check(t, "done in a window opening in 2027", "status=completed&window=sa2026-12-31", []string{"B2/m1"})
		check(t, "open in a window opening in 2027", "status=requested&window=sa2026-12-31", []string{"A2/y1"})
	})

	t.Run("the CapabilityStatement lists window for Task", func(t *testing.T) {
		cs := w.getJSON(t, "/fhir/metadata")
		rest := cs["rest"].([]any)[0].(map[string]any)
		found := map[string]map[string]any{}
		for _, r := range rest["resource"].([]any) {
			r := r.(map[string]any)
			if r["type"] != "Task" {
				continue
			}
			for _, p := range r["searchParam"].([]any) {
				p := p.(map[string]any)
				found[p["name"].(string)] = p
			}
		}
		if p := found["window"]; p == nil || p["definition"] != windowDefinition || p["type"] != "date" ||
			!strings.Contains(p["documentation"].(string), "Task.restriction.period") {
			t.Errorf("Task window in the CapabilityStatement: %v", p)
		}
		if p := found["period"]; p == nil || p["definition"] != "http://hl7.org/fhir/SearchParameter/Task-period" {
			t.Errorf("Task period in the CapabilityStatement: %v", p)
		}
	})

	t.Run("the definition is published", func(t *testing.T) {
		bundle := w.getJSON(t, "/fhir/SearchParameter?url="+url.QueryEscape(windowDefinition))
		entries, _ := bundle["entry"].([]any)
		if len(entries) != 1 {
			t.Fatalf("SearchParameter?url=%s: %d entries", windowDefinition, len(entries))
		}
		sp := entries[0].(map[string]any)["resource"].(map[string]any)
		if sp["id"] != "task-window" || sp["code"] != "window" || sp["type"] != "date" ||
			sp["expression"] != "Task.restriction.period" || sp["status"] != "active" {
			t.Errorf("the published SearchParameter: %v", sp)
		}
	})
}
