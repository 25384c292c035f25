package registry

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// Where a course stands at a milestone turns on each window bound, a day either side: the
// response report and the analysis file both read it from standing.
func TestStandingAtEachBoundOfTheWindow(t *testing.T) {
	m := Milestone{Code: "m3", WindowStart: 76, WindowEnd: 104}
	day := func(n int32) pgtype.Int4 { return pgtype.Int4{Int32: n, Valid: true} }
	for _, c := range []struct {
		name string
		d    standingDays
		want string
	}{
		{"the day before the window opens", standingDays{toNow: 75}, "not_yet_due"},
		{"the day it opens", standingDays{toNow: 76}, "pending"},
		{"its last day", standingDays{toNow: 104}, "pending"},
		{"the day after it closed", standingDays{toNow: 105}, "missing"},
		{"dead on its last day", standingDays{toNow: 400, toDeath: day(104)}, "dead_before"},
		{"dead the day after", standingDays{toNow: 400, toDeath: day(105)}, "missing"},
		{"dead before it opened, asked before it opens", standingDays{toNow: 50, toDeath: day(40)}, "dead_before"},
		{"dead on day 0", standingDays{toNow: 400, toDeath: day(0)}, "dead_before"},
		{"progressed the day before it opened", standingDays{toNow: 400, toProgression: day(75)}, "progressed_before"},
		{"progressed the day it opened", standingDays{toNow: 400, toProgression: day(76)}, "missing"},
		{"progressed, not yet due", standingDays{toNow: 70, toProgression: day(60)}, "not_yet_due"},
		{"lost on its last day", standingDays{toNow: 400, toEnd: day(104), ended: standingLost}, "lost"},
		{"withdrew before it opened", standingDays{toNow: 400, toEnd: day(10), ended: standingWithdrawn}, "withdrawn"},
		{"lost the day after it closed", standingDays{toNow: 400, toEnd: day(105), ended: standingLost}, "missing"},
		{"lost while it is open, asked the same day", standingDays{toNow: 90, toEnd: day(90), ended: standingLost}, "lost"},
		{"dead and lost: death first", standingDays{toNow: 400, toDeath: day(100), toEnd: day(90), ended: standingLost}, "dead_before"},
		{"progressed and lost: progression first", standingDays{toNow: 400, toProgression: day(30), toEnd: day(90), ended: standingLost}, "progressed_before"},
	} {
		if got := c.d.standing(m).String(); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
