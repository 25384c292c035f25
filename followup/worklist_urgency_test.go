package followup_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/followup"
)

// An administrator's work list (every site) is picked by urgency from the index on the
// window's days (migration 025), a page's worth of each urgency, and a Task whose window that
// index cannot place (none of its own, or one ending before it starts) from its own partial
// index: the list, its pages and its counts are those of the same Tasks listed through the
// site index, whatever the filter.
func TestWorklistByUrgencyIsTheSiteList(t *testing.T) {
	t.Parallel()
	c := newWorklistCohort(t)
	// Hopper's month 1 loses its window: the plan's applies (due, 15 days left, as before).
	c.coordinatorPuts(c.task("Hopper", "m1").id, func(b map[string]any) { delete(b, "restriction") })
	// Turing's month 1 ends before it starts: it opens in 2 days, so it is upcoming.
	c.coordinatorPuts(c.task("Turing", "m1").id, func(b map[string]any) {
		b["restriction"] = map[string]any{"period": map[string]any{"start": "2025-03-03", "end": "2025-02-20"}}
	})
	// Dijkstra's month 1 has a start and no end: the plan's end applies.
	c.coordinatorPuts(c.task("Dijkstra", "m1").id, func(b map[string]any) {
		b["restriction"] = map[string]any{"period": map[string]any{"start": "2025-02-20"}}
	})
	if n := c.count(`SELECT count(*) FROM followup_task WHERE window_start IS NULL OR window_end IS NULL OR window_end < window_start`); n != 3 {
		t.Fatalf("%d Tasks with an irregular window, want 3", n)
	}
	list := c.report
	render := func(rep *followup.Report) string {
		return fmt.Sprintf("%s\ncounts %v, total %d", strings.Join(describe(rep.Items), "\n"), rep.Counts, rep.Total)
	}
	bothSites := []string{idOf(c.siteA), idOf(c.siteB)}
	whole := list(followup.Query{Within: followup.WithinLeadTime})
	for _, name := range []string{"Grace Hopper m1", "Alan Turing m1", "Edsger Dijkstra m1"} {
		if !slices.ContainsFunc(describe(whole.Items), func(s string) bool { return strings.HasPrefix(s, name) }) {
			t.Errorf("%s, a Task with an irregular window, is missing:\n%s", name, render(whole))
		}
	}
	for _, q := range []followup.Query{
		{Within: followup.WithinLeadTime},
		{Within: 0},
		{Within: 5},
		{Urgency: followup.Overdue, Within: followup.WithinLeadTime},
		{Urgency: followup.Due, Within: followup.WithinLeadTime},
		{Urgency: followup.Upcoming, Within: followup.WithinLeadTime},
		{Urgency: followup.Upcoming, Within: followup.WithinLeadTime, Offset: 1, Limit: 1},
		{Milestones: []string{"m1"}, Within: followup.WithinLeadTime, Limit: 3},
		{Owners: []string{c.coordinator}, Within: followup.WithinLeadTime},
		{Statuses: []string{"failed", "on-hold"}, Within: followup.WithinLeadTime},
		{Within: followup.WithinLeadTime, Offset: 2, Limit: 2},
		{Within: followup.WithinLeadTime, Offset: 6, Limit: 2},
		{Within: followup.WithinLeadTime, Offset: 20, Limit: 2}, // past the end: counts alone
	} {
		all := list(q)
		q.Sites = bothSites
		bySite := list(q)
		if render(all) != render(bySite) {
			t.Errorf("%+v: every site's list\n%s\nwant the two sites' list\n%s", q, render(all), render(bySite))
		}
		// Count is the list's counts, through either statement, without its rows.
		for _, sites := range [][]string{nil, bothSites} {
			q.Sites = sites
			counted, err := c.planner.Worklist(c.db, func() time.Time { return c.now }).Count(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			if len(counted.Items) > 0 || !maps.Equal(counted.Counts, all.Counts) || counted.Total != all.Total {
				t.Errorf("%+v: counted\n%s\nwant the list's counts\n%s", q, render(counted), render(all))
			}
		}
	}
}
