package followup

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"time"

	ics "github.com/arran4/golang-ical"
)

// CSVHeader names the columns of Report.CSV.
var CSVHeader = []string{"task_id", "task", "version", "status", "status_reason", "business_status", "urgency", "days_overdue",
	"days_left", "days_until_open", "milestone", "milestone_label", "window_start", "window_end", "target_date",
	"patient", "patient_name", "patient_identifier", "patient_birth_date", "site_id", "site_name", "owner",
	"product", "infusion", "infused_on", "description", "last_updated"}

// CSV is the work list as rows under CSVHeader, in the same order as Items.
func (rep *Report) CSV() [][]string {
	optional := func(n *int) string {
		if n == nil {
			return ""
		}
		return strconv.Itoa(*n)
	}
	rows := [][]string{CSVHeader}
	for _, it := range rep.Items {
		rows = append(rows, []string{it.TaskID, it.Task, strconv.Itoa(it.Version), it.Status, csvText(it.StatusReason), it.BusinessStatus,
			it.Urgency, strconv.Itoa(it.DaysOverdue), optional(it.DaysLeft), optional(it.DaysUntilOpen),
			it.Milestone.Code, csvText(it.Milestone.Label), it.WindowStart, it.WindowEnd, it.TargetDate,
			it.Patient.Reference, csvText(it.Patient.Name), csvText(it.Patient.Identifier), it.Patient.BirthDate,
			it.Site.ID, csvText(it.Site.Name), it.Owner, csvText(it.Product), it.Infusion, it.InfusedOn,
			csvText(it.Description), it.LastUpdated.Format(time.RFC3339)})
	}
	return rows
}

// csvText defuses free text a spreadsheet would run as a formula (OWASP's CSV injection advice).
func csvText(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// CalendarUID is the iCalendar UID of a Task's event: stable for the Task's life, whatever
// its status or version, so a calendar app updates the event instead of adding another.
func CalendarUID(taskID string) string { return taskID + "@cartreg" }

func calendarName(q Query) string {
	name := "Follow-up work list"
	var scope []string
	scope = append(scope, q.Owners...)
	for _, s := range q.Sites {
		scope = append(scope, "Organization/"+s)
	}
	if len(scope) > 0 {
		name += " — " + strings.Join(scope, ", ")
	}
	return name
}

// Calendar is the work list as an iCalendar feed: one all-day event per Task spanning its
// window (DTEND is the day after the window closes, as RFC 5545 counts all-day events), with
// the Task's version as SEQUENCE and its last update as DTSTAMP and LAST-MODIFIED. An overdue
// Task's event is on the report's day instead, its summary saying how late it is.
func (rep *Report) Calendar(name string) *ics.Calendar {
	cal := ics.NewCalendarFor("cartreg")
	cal.SetProductId("-//cartreg//follow-up work list//EN")
	cal.SetCalscale("GREGORIAN")
	cal.SetXWRCalName(name)
	cal.SetXWRCalDesc("CAR-T follow-up visits: overdue, due and coming up, as of " + rep.AsOf)
	cal.SetRefreshInterval("PT1H") // the library adds VALUE=DURATION itself
	cal.SetXPublishedTTL("PT1H")
	for _, it := range rep.Items {
		ev := cal.AddEvent(CalendarUID(it.TaskID))
		ev.SetDtStampTime(it.LastUpdated)
		ev.SetModifiedAt(it.LastUpdated)
		who := cmp.Or(it.Patient.Name, it.Patient.Reference)
		if it.Urgency == UrgencyOverdue {
			// An overdue visit is today's work: filed in its window, years back for a visit long
			// missed, nobody would see it. It moves to each day's date until it is closed, and
			// its SEQUENCE rises with each day, so a calendar takes the move as a change.
			today, _ := time.Parse(time.DateOnly, rep.AsOf)
			ev.SetSequence(it.Version - 1 + it.DaysOverdue)
			ev.SetAllDayStartAt(today)
			ev.SetAllDayEndAt(today.AddDate(0, 0, 1))
			ev.SetSummary(fmt.Sprintf("OVERDUE %d days: %s follow-up: %s", it.DaysOverdue, it.Milestone.Label, who))
		} else {
			ev.SetSequence(it.Version - 1)
			ev.SetAllDayStartAt(it.start)
			end := it.end
			if end.IsZero() {
				end = it.start
			}
			ev.SetAllDayEndAt(end.AddDate(0, 0, 1))
			ev.SetSummary(fmt.Sprintf("%s follow-up: %s", it.Milestone.Label, who))
		}
		ev.SetDescription(it.eventDescription())
		ev.SetTimeTransparency(ics.TransparencyTransparent)
		ev.SetClass(ics.ClassificationPrivate)
		ev.AddCategory(it.Urgency)
	}
	return cal
}

func (it *Item) eventDescription() string {
	var b strings.Builder
	b.WriteString(strings.ReplaceAll(it.Description, "\r", ""))
	fmt.Fprintf(&b, "\n\nTask status: %s", it.Status)
	if it.StatusReason != "" {
		fmt.Fprintf(&b, " (%s)", it.StatusReason)
	}
	switch it.Urgency {
	case UrgencyOverdue:
		fmt.Fprintf(&b, " — overdue by %d days", it.DaysOverdue)
	case UrgencyDue:
		b.WriteString(" — due")
		if it.DaysLeft != nil {
			fmt.Fprintf(&b, ", %d days left", *it.DaysLeft)
		}
	case UrgencyUpcoming:
		b.WriteString(" — coming up")
	}
	fmt.Fprintf(&b, "\nPatient: %s", cmp.Or(it.Patient.Name, it.Patient.Reference))
	if it.Patient.Identifier != "" {
		fmt.Fprintf(&b, ", %s", it.Patient.Identifier)
	}
	if it.Patient.BirthDate != "" {
		fmt.Fprintf(&b, ", born %s", it.Patient.BirthDate)
	}
	if it.TargetDate != "" {
		fmt.Fprintf(&b, "\nTarget date: %s", it.TargetDate)
	}
	if it.Site.Name != "" {
		fmt.Fprintf(&b, "\nSite: %s", it.Site.Name)
	}
	if it.Owner != "" {
		fmt.Fprintf(&b, "\nOwner: %s", it.Owner)
	}
	fmt.Fprintf(&b, "\n%s", it.Task)
	return b.String()
}
