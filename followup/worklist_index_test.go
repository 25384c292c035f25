package followup_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/migrations"
	"github.com/cartreg/cartreg/registry"
)

// unmirrored counts the followup_task rows whose work-list columns disagree with the current
// Task (status, owner, window) or with the infusion's site: what the list would get wrong.
func (w *world) unmirrored() int {
	w.t.Helper()
	return w.count(`SELECT count(*) FROM followup_task t
		LEFT JOIN (SELECT r.resource_id, v.body::jsonb AS b FROM resource r
			JOIN resource_version v ON v.resource_type = r.resource_type AND v.resource_id = r.resource_id AND v.version_id = r.version_id
			WHERE r.resource_type = 'Task' AND NOT r.deleted) j ON j.resource_id = t.task_id
		LEFT JOIN registry_infusion i ON i.resource_type = t.infusion_type AND i.resource_id = t.infusion_id
		WHERE t.current_status IS DISTINCT FROM j.b->>'status'
			OR t.owner IS DISTINCT FROM coalesce(j.b#>>'{owner,reference}', '')
			OR t.window_start IS DISTINCT FROM left(j.b#>>'{restriction,period,start}', 10)::date
			OR t.window_end IS DISTINCT FROM left(j.b#>>'{restriction,period,end}', 10)::date
			OR t.site_id IS DISTINCT FROM coalesce(i.effective_site_id, '')`)
}

// families are the family names of items, in order.
func families(items []followup.Item) []string {
	var out []string
	for _, it := range items {
		out = append(out, strings.Fields(it.Patient.Name)[1])
	}
	return out
}

// The work list reads followup_task's columns, not the Tasks: every way a Task or its site
// changes must reach them, in the write's own transaction.
func TestWorklistFollowsEveryWrite(t *testing.T) {
	t.Parallel()
	c := newWorklistCohort(t)
	if n := c.unmirrored(); n != 0 {
		t.Fatalf("after the scheduler's run and three coordinators' changes, %d followup_task rows disagree with their Tasks", n)
	}

	// Rescheduled through the FHIR API: Hopper's month-1 window (due, 15 days left) now closed
	// on 20 February, so the visit is 9 days overdue.
	c.coordinatorPuts(c.task("Hopper", "m1").id, func(b map[string]any) {
		b["restriction"] = map[string]any{"period": map[string]any{"start": "2025-01-20", "end": "2025-02-20"}}
	})
	// Reassigned: Turing's month 1 is handed to the coordinator.
	c.coordinatorPuts(c.task("Turing", "m1").id, func(b map[string]any) {
		b["owner"] = ref(c.coordinator)
	})
	// Cancelled by hand: Dijkstra's month 1 is no longer sought.
	c.coordinatorPuts(c.task("Dijkstra", "m1").id, func(b map[string]any) {
		b["status"] = "cancelled"
		b["statusReason"] = map[string]any{"text": "moved to another registry"}
	})
	// Deleted: Lovelace's month 1.
	if r := c.do(http.MethodDelete, "/fhir/Task/"+c.task("Lovelace", "m1").id, ""); r.status != http.StatusOK && r.status != http.StatusNoContent {
		t.Fatalf("DELETE Task: %d %s", r.status, r.body)
	}
	// The infusion moves: Knuth was infused at site A, not B, so his visits are site A's.
	infusion := c.get("/fhir/" + c.infusions["Knuth"])
	var body map[string]any
	if err := json.Unmarshal(infusion.body, &body); err != nil {
		t.Fatal(err)
	}
	delete(body, "meta")
	body["performer"] = []any{map[string]any{"actor": ref(c.siteA)}}
	raw, _ := json.Marshal(body)
	if r := c.do(http.MethodPut, "/fhir/"+c.infusions["Knuth"], string(raw)); r.status != http.StatusOK {
		t.Fatalf("PUT %s: %d %s", c.infusions["Knuth"], r.status, r.body)
	}

	if n := c.unmirrored(); n != 0 {
		t.Errorf("after coordinators' writes, %d followup_task rows disagree with their Tasks", n)
	}
	got := c.list("")
	want := []string{
		"Donald Knuth m1 overdue requested 75",
		"Donald Knuth m3 overdue requested 16",
		"Grace Hopper m1 overdue requested 9", // rescheduled into the past
		"Katherine Johnson m3 due on-hold 4",
		"Alan Turing m1 due requested 5",
		"Barbara Liskov m1 upcoming requested 11",
	}
	if r := describe(got.Items); !slices.Equal(r, want) {
		t.Errorf("work list:\n%s\nwant:\n%s", strings.Join(r, "\n"), strings.Join(want, "\n"))
	}
	if got.Counts[followup.Overdue] != 3 || got.Counts[followup.Due] != 2 || got.Counts[followup.Upcoming] != 1 || got.Total != 6 {
		t.Errorf("counts %v, total %d", got.Counts, got.Total)
	}
	for query, want := range map[string][]string{
		"?site=" + idOf(c.siteA):             {"Knuth", "Knuth", "Hopper", "Johnson"},
		"?site=" + idOf(c.siteB):             {"Turing", "Liskov"},
		"?owner=" + c.coordinator:            {"Hopper", "Johnson", "Turing"},
		"?status=cancelled":                  {"Dijkstra"},
		"?patient=" + c.patients["Lovelace"]: nil,
	} {
		if got := families(c.list(query).Items); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", query, got, want)
		}
	}
	if it := c.list("?patient=" + c.patients["Hopper"]).Items; len(it) != 1 || it[0].WindowEnd != "2025-02-20" {
		t.Errorf("Hopper's rescheduled visit: %+v", it)
	}

	// Migration 023 fills the columns of a registry's existing rows the same way.
	if _, err := c.db.Exec(context.Background(), `UPDATE followup_task SET site_id = '', current_status = NULL, owner = '',
		window_start = NULL, window_end = NULL`); err != nil {
		t.Fatal(err)
	}
	raw, err := fs.ReadFile(migrations.Files, "024_followup_worklist.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range strings.Split(string(raw), "\n\n") { // one statement per paragraph
		if stmt = strings.TrimSpace(stmt); strings.HasPrefix(stmt, "UPDATE") {
			if _, err := c.db.Exec(context.Background(), stmt); err != nil {
				t.Fatalf("%v\n%s", err, stmt)
			}
		}
	}
	if n := c.unmirrored(); n != 0 {
		t.Errorf("after migration 024's backfill, %d followup_task rows disagree with their Tasks", n)
	}
}

// A page of the work list is a page of the whole: counts and total cover every page, and the
// filters the web page offers (milestone, urgency, search by name or MRN) narrow it in the
// database.
func TestWorklistPagesAndSearch(t *testing.T) {
	t.Parallel()
	c := newWorklistCohort(t)
	list := c.report
	all := families(list(followup.Query{Within: followup.WithinLeadTime}).Items)
	if want := []string{"Knuth", "Knuth", "Lovelace", "Johnson", "Turing", "Hopper", "Dijkstra", "Liskov"}; !slices.Equal(all, want) {
		t.Fatalf("the whole list: %v, want %v", all, want)
	}
	var paged []string
	for offset := 0; offset < 10; offset += 3 {
		rep := list(followup.Query{Within: followup.WithinLeadTime, Offset: offset, Limit: 3})
		if rep.Total != 8 || rep.Counts[followup.Overdue] != 3 {
			t.Errorf("offset %d: total %d, counts %v", offset, rep.Total, rep.Counts)
		}
		paged = append(paged, families(rep.Items)...)
	}
	if !slices.Equal(paged, all) {
		t.Errorf("pages of 3: %v, want %v", paged, all)
	}

	for _, tc := range []struct {
		name  string
		q     followup.Query
		want  []string
		total int
	}{
		{"due only, counts of all", followup.Query{Urgency: followup.Due}, []string{"Johnson", "Turing", "Hopper"}, 3},
		{"due, second page", followup.Query{Urgency: followup.Due, Offset: 1, Limit: 1}, []string{"Turing"}, 3},
		{"month 3", followup.Query{Milestones: []string{"m3"}}, []string{"Knuth", "Johnson"}, 2},
		{"a family name, any case", followup.Query{Search: "LOVEL"}, []string{"Lovelace"}, 1},
		{"given and family", followup.Query{Search: "donald knu"}, []string{"Knuth", "Knuth"}, 2},
		{"words must all match", followup.Query{Search: "donald hopper"}, nil, 0},
		{"an MRN in lower case", followup.Query{Search: "mrn-0003"}, []string{"Turing"}, 1},
		{"the start of an MRN", followup.Query{Search: "MRN-000"}, all, 8},
		{"accents are ignored", followup.Query{Search: "Lövelace"}, []string{"Lovelace"}, 1},
		// Each word begins a name or an identifier: the lookup is a range of the search index.
		{"not the middle of a name", followup.Query{Search: "velace"}, nil, 0},
		{"not the middle of an MRN", followup.Query{Search: "0003"}, nil, 0},
		{"a search within a patient filter", followup.Query{Search: "ada", Patients: []string{idOf(c.patients["Turing"])}}, nil, 0},
		{"a search and its patient", followup.Query{Search: "alan", Patients: []string{idOf(c.patients["Turing"])}}, []string{"Turing"}, 1},
		{"LIKE's wildcards are letters", followup.Query{Search: "%"}, nil, 0},
		{"a search with no word to look for", followup.Query{Search: " \u0301 "}, all, 8},
		// Bounded searches: the narrowest word is looked up, the others checked on what it found.
		{"a bounded search as narrow as its bound", followup.Query{Search: "MRN-000", SearchMax: 8}, all, 8},
		{"a broad word and a narrow one", followup.Query{Search: "mrn lovel", SearchMax: 2}, []string{"Lovelace"}, 1},
		{"a narrow word and a broad one that fails it", followup.Query{Search: "mrn-0003 ada", SearchMax: 2}, nil, 0},
		{"given and family, bounded", followup.Query{Search: "knu donald", SearchMax: 1}, []string{"Knuth", "Knuth"}, 2},
	} {
		tc.q.Within = followup.WithinLeadTime
		rep := list(tc.q)
		if got := families(rep.Items); !slices.Equal(got, tc.want) || rep.Total != tc.total {
			t.Errorf("%s: %v (total %d), want %v (%d)", tc.name, got, rep.Total, tc.want, tc.total)
		}
	}
	// A search each of whose words begins more patients' names or MRNs than its bound is
	// refused, not read whole.
	_, err := c.planner.Worklist(c.db, func() time.Time { return c.now }).List(context.Background(),
		followup.Query{Search: "MRN-000 m", SearchMax: 6})
	var broad *followup.SearchTooBroadError
	if !errors.As(err, &broad) || broad.Max != 6 || !strings.Contains(err.Error(), "more than 6 patients") {
		t.Errorf("a search broader than its bound: %v", err)
	}
	// Only the three longest words are looked up: a fourth, narrow one behind three broad
	// ones does not make a search of hundreds of words read the index hundreds of times.
	_, err = c.planner.Worklist(c.db, func() time.Time { return c.now }).List(context.Background(),
		followup.Query{Search: "mrn-000 mrn-00 mrn-0 lovel", SearchMax: 2})
	if !errors.As(err, &broad) {
		t.Errorf("a narrow word behind three broad ones: %v", err)
	}
	if rep := list(followup.Query{Urgency: followup.Due, Within: followup.WithinLeadTime}); rep.Counts[followup.Overdue] != 3 || rep.Counts[followup.Upcoming] != 2 {
		t.Errorf("counts under an urgency filter: %v", rep.Counts)
	}

	// An infusion with no site (none named, no managing organization): its visits are on the
	// whole list, and on no site's, not even the empty filter a coordinator of no site gets.
	ids := c.post(
		map[string]any{"resourceType": "Patient", "name": []any{map[string]any{"given": []any{"Nobody"}, "family": "Nowhere"}}},
		map[string]any{"resourceType": "Condition", "subject": ref(urn(0)), "code": cc(registry.SystemICD10CM, "C83.30")},
		map[string]any{"resourceType": "Procedure", "status": "completed", "code": cc(registry.SystemCartreg, "cart-infusion"),
			"subject": ref(urn(0)), "performedDateTime": "2025-01-25", "usedCode": []any{cc(registry.SystemProduct, "axi-cel")},
			"reasonReference": []any{ref(urn(1))}},
	)
	c.run(c.now)
	if got := list(followup.Query{Patients: []string{idOf(ids[0])}}); got.Total != 1 || got.Items[0].Site.ID != "" {
		t.Fatalf("the site-less infusion's visit: %+v", got)
	}
	if got := list(followup.Query{Sites: []string{""}, Within: followup.WithinLeadTime}); got.Total != 0 {
		t.Errorf("a list of no site has %d visits: %v", got.Total, families(got.Items))
	}
}
