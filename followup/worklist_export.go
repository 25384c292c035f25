package followup

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	ics "github.com/arran4/golang-ical"
)

// CSVColumns name the columns of Report.CSV, for people reading it in a spreadsheet;
// CSVIDColumns follow them when ids are asked for.
var (
	CSVColumns = []string{"Bucket", "Days late", "Days left", "Opens in (days)", "Patient", "MRN", "Birth date", "Phone",
		"Site", "Product", "Milestone", "Window opens", "Window closes", "Target date", "Last contact", "Status",
		"Status reason", "Notes"}
	CSVIDColumns = []string{"Patient id", "Task id"}
)

// CSV is the work list as a coordinator's spreadsheet: a header of CSVColumns (and
// CSVIDColumns when ids is true), then a row per item in the order of Items. The web page's
// download and the API's CSV are both this; csvx defuses any cell a spreadsheet would take
// for a formula when they are written. Ids are left out unless asked for: people work from
// names and MRNs, and a column of UUIDs is noise to them.
func (rep *Report) CSV(ids bool) [][]string {
	optional := func(n *int) string {
		if n == nil {
			return ""
		}
		return strconv.Itoa(*n)
	}
	header := slices.Clone(CSVColumns)
	if ids {
		header = append(header, CSVIDColumns...)
	}
	rows := [][]string{header}
	for _, it := range rep.Items {
		late := ""
		if it.Urgency == UrgencyOverdue {
			late = strconv.Itoa(it.DaysOverdue)
		}
		row := []string{it.Urgency, late, optional(it.DaysLeft), optional(it.DaysUntilOpen), it.Patient.Name,
			it.Patient.Identifier, it.Patient.BirthDate, it.Patient.Phone, it.Site.Name, it.Product,
			it.Milestone.Label, it.WindowStart, it.WindowEnd, it.TargetDate, it.LastContact, it.Status,
			it.StatusReason, strings.Join(it.Notes, "; ")}
		if ids {
			row = append(row, strings.TrimPrefix(it.Patient.Reference, "Patient/"), it.TaskID)
		}
		rows = append(rows, row)
	}
	return rows
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
// the Task's version as SEQUENCE and its last update as DTSTAMP and LAST-MODIFIED.
//
// A visit overdue by more than the horizon (Config.CalendarOverdueDays) is one all-day event
// on the report's day instead, its summary saying how late it is: its window is months back,
// where no one looks. It moves each day, so its SEQUENCE also counts the days past the
// horizon, and a calendar application takes each day's date as the newer.
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
		start, end := it.start, it.end
		if end.IsZero() {
			end = it.start
		}
		sequence := it.Version - 1
		who := cmp.Or(it.Patient.Name, it.Patient.Reference)
		summary := fmt.Sprintf("%s follow-up: %s", it.Milestone.Label, who)
		if beyond := it.DaysOverdue - rep.overdueHorizon; it.Urgency == UrgencyOverdue && beyond > 0 && !rep.today.IsZero() {
			start, end = rep.today, rep.today
			sequence += beyond
			summary = fmt.Sprintf("Overdue %d days: %s", it.DaysOverdue, summary)
		}
		ev.SetSequence(sequence)
		ev.SetAllDayStartAt(start)
		ev.SetAllDayEndAt(end.AddDate(0, 0, 1))
		ev.SetSummary(summary)
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
