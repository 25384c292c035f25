package followup

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/httpx"
	"github.com/cartreg/cartreg/registry"
)

// taskStatuses is the R4 task-status value set, which a status filter must come from.
var taskStatuses = []string{"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
	"in-progress", "on-hold", "failed", "completed", "entered-in-error"}

// WithinLeadTime, as Query.Within, looks ahead as far as the scheduler makes Tasks ahead of a
// window (Config.LeadDays): the work list's default, since no Task exists further ahead.
const WithinLeadTime = -1

// maxWithin bounds the look-ahead (ten years), so a typo cannot overflow a date.
const maxWithin = 3660

// Worklist answers the coordinators' question: which follow-up visits are overdue, due now and
// coming up. It reads the current version of every follow-up Task, so a change a coordinator
// made through the FHIR API (status, owner, window) is what the list shows; urgency is worked
// out from the Task's window as of today, not read from the businessStatus the nightly run
// last wrote.
type Worklist struct {
	db    fhir.DBTX
	now   func() time.Time
	s     *Tracker // its plan labels milestones and dates windows; its calendar counts days
	limit SiteLimit
	match Matcher
}

// Matcher finds the one resource of a type that search criteria select ("" for none, an
// Outcome when several do): how the work list finds a patient by MRN and a site by its
// identifier. fhir.Searcher is one.
type Matcher interface {
	MatchOne(ctx context.Context, db fhir.DBTX, resourceType, criteria, purpose string) (string, error)
}

// SiteLimit says which sites a request may see the work list of: limited is false for a
// principal who may see every site's.
type SiteLimit func(ctx context.Context) (sites []string, limited bool)

// noSite is a site filter that matches nothing: a coordinator asking only for other sites.
var noSite = []string{""}

// limitSites narrows q to the sites the request may see.
func limitSites(q *Query, allowed []string) {
	if len(q.Sites) == 0 {
		q.Sites = allowed
	} else {
		q.Sites = slices.DeleteFunc(q.Sites, func(s string) bool { return !slices.Contains(allowed, s) })
	}
	if len(q.Sites) == 0 {
		q.Sites = noSite
	}
}

// Worklist returns the scheduler's work list over db; now is the clock today is taken from.
func (s *Tracker) Worklist(db fhir.DBTX, now func() time.Time) *Worklist {
	return &Worklist{db: db, now: now, s: s}
}

// Query selects the Tasks of a work list. Empty filters select everything.
type Query struct {
	Owners   []string // Task.owner references, "Practitioner/7"
	Sites    []string // Organization ids of the infusions' sites
	Patients []string // Patient ids
	Statuses []string // Task statuses; OpenStatuses when empty
	// Within is how many days ahead an upcoming window may open; 0 lists only overdue and due,
	// WithinLeadTime as far as Tasks are made ahead.
	Within int
}

// Urgencies, most urgent first.
const (
	UrgencyOverdue  = Overdue
	UrgencyDue      = Due
	UrgencyUpcoming = Upcoming
)

// Item is one open follow-up Task as a coordinator needs it.
type Item struct {
	Task           string      `json:"task"` // "Task/<id>"
	TaskID         string      `json:"task_id"`
	Version        int         `json:"version"`
	LastUpdated    time.Time   `json:"last_updated"`
	Status         string      `json:"status"`
	StatusReason   string      `json:"status_reason,omitempty"`   // why a coordinator put it on hold, say
	BusinessStatus string      `json:"business_status,omitempty"` // as last stored; may lag urgency
	Urgency        string      `json:"urgency"`                   // overdue | due | upcoming, as of today
	DaysOverdue    int         `json:"days_overdue"`              // days since the window closed; 0 unless overdue
	DaysLeft       *int        `json:"days_left,omitempty"`       // due: days until the window closes (0 = last day)
	DaysUntilOpen  *int        `json:"days_until_open,omitempty"` // upcoming: days until the window opens
	Milestone      Milestone   `json:"milestone"`
	WindowStart    string      `json:"window_start"`
	WindowEnd      string      `json:"window_end,omitempty"`
	TargetDate     string      `json:"target_date,omitempty"` // infusion date + the plan's target day
	Patient        PatientInfo `json:"patient"`
	Site           Site        `json:"site"`
	Owner          string      `json:"owner,omitempty"`
	Product        string      `json:"product,omitempty"`
	Infusion       string      `json:"infusion,omitempty"`
	InfusedOn      string      `json:"infused_on,omitempty"`
	Description    string      `json:"description,omitempty"`
	Notes          []string    `json:"notes,omitempty"`        // the Task's notes, oldest first
	LastContact    string      `json:"last_contact,omitempty"` // the patient's last dated registry event

	start, end time.Time // end is zero when the window has no end
}

// Milestone names a follow-up timepoint.
type Milestone struct {
	Code  string `json:"code"`
	Label string `json:"label"`
}

// PatientInfo is what a coordinator needs to identify the patient.
type PatientInfo struct {
	Reference  string `json:"reference"`
	Name       string `json:"name,omitempty"`
	Identifier string `json:"identifier,omitempty"` // the MRN if typed so, else the first identifier
	BirthDate  string `json:"birth_date,omitempty"`
	Phone      string `json:"phone,omitempty"` // the first phone number that is not old
}

// Site is the infusion's treating organisation.
type Site struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// Report is a work list as of a day.
type Report struct {
	AsOf       string `json:"as_of"`
	WithinDays int    `json:"within_days"`
	// LeadDays is how long before a window opens its Task is made: a list looking further
	// ahead than this finds no more.
	LeadDays int            `json:"lead_days"`
	Total    int            `json:"total"`
	Counts   map[string]int `json:"counts"` // by urgency
	Items    []Item         `json:"items"`

	today          time.Time
	overdueHorizon int // days overdue beyond which the calendar shows a visit on today
}

// worklistSQL reads the current version of every follow-up Task in one of the statuses ($5),
// with its infusion, site and patient. A Task whose current version is the one the scheduler
// wrote has the status followup_task records, so closed Tasks nobody touched are skipped
// without parsing them. The window is the Task's restriction.period (its date part), else the
// plan's. No regular expressions: PostgreSQL's cost several times the JSON parsing per row.
// $1–$4: the plan (codes, target, first and last day); $6: the last day an upcoming window may
// open; $7: LIKE patterns for Task.owner ("Practitioner/7" and "%/Practitioner/7"); $8, $9:
// site and patient ids. An empty filter selects everything.
const worklistSQL = `WITH plan AS (
	SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[]) AS p(code, target_day, first_day, last_day)
), task AS (
	SELECT t.task_id, t.milestone, r.version_id, r.last_updated, j.status, coalesce(j.description, '') AS description,
		coalesce(CASE WHEN j."for"->>'reference' LIKE 'Patient/%' THEN substr(j."for"->>'reference', 9) END,
			t.patient_id) AS patient_id,
		coalesce(j.owner->>'reference', '') AS owner,
		coalesce(j."statusReason"->>'text', j."statusReason"#>>'{coding,0,display}', '') AS status_reason,
		j.code, coalesce(j."businessStatus"#>>'{coding,0,code}', '') AS business_status, j.note,
		j.restriction#>>'{period,start}' AS task_start, j.restriction#>>'{period,end}' AS task_end,
		t.infusion_type, t.infusion_id
	FROM followup_task t
	JOIN ` + fhir.CurrentRelation + ` r ON r.resource_type = 'Task' AND r.resource_id = t.task_id
	CROSS JOIN LATERAL jsonb_to_record(r.body::jsonb) AS j(status text, description text, "for" jsonb, owner jsonb,
		code jsonb, "businessStatus" jsonb, "statusReason" jsonb, restriction jsonb, note jsonb)
	WHERE (t.written_version <> r.version_id OR t.status = ANY($5::text[]))
		AND j.status = ANY($5::text[])
		-- The patient filter again, on the scheduler's own column (indexed), so that one
		-- patient's list reads only their Tasks, not every open one.
		AND (cardinality($9::text[]) = 0 OR t.patient_id = ANY($9::text[]))
), dated AS (
	SELECT task.*, i.infused_on, i.product_label, i.effective_site_id, p.target_day,
		coalesce(CASE WHEN length(task_start) >= 10 THEN left(task_start, 10)::date END,
			i.infused_on + p.first_day, i.infused_on) AS window_start,
		coalesce(CASE WHEN length(task_end) >= 10 THEN left(task_end, 10)::date END,
			i.infused_on + p.last_day) AS window_end
	FROM task
	LEFT JOIN registry_infusion i ON i.resource_type = task.infusion_type AND i.resource_id = task.infusion_id
	LEFT JOIN plan p ON p.code = task.milestone
)
SELECT d.task_id, d.version_id, d.last_updated, d.status, d.status_reason, d.business_status, d.description,
	d.patient_id, d.owner, coalesce(d.code, 'null'::jsonb), d.milestone, d.window_start, d.window_end,
	d.infused_on + d.target_day, d.infusion_type || '/' || d.infusion_id, coalesce(d.product_label, ''), d.infused_on,
	coalesce(d.effective_site_id, ''), coalesce(s.name, ''), pr.body, d.note,
	(SELECT rp.last_contact_on FROM registry_patient rp WHERE rp.patient_id = d.patient_id)
FROM dated d
LEFT JOIN registry_site s ON s.organization_id = d.effective_site_id
LEFT JOIN ` + fhir.CurrentRelation + ` pr ON pr.resource_type = 'Patient' AND pr.resource_id = d.patient_id
WHERE d.window_start <= $6::date
	AND (cardinality($7::text[]) = 0 OR d.owner LIKE ANY($7::text[]))
	AND (cardinality($8::text[]) = 0 OR d.effective_site_id = ANY($8::text[]))
	AND (cardinality($9::text[]) = 0 OR d.patient_id = ANY($9::text[]))`

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// today is the clock's calendar day, as the scheduler counts days.
func (w *Worklist) today() time.Time { return w.s.day(w.now()) }

// List returns the work list as of the clock's today, most urgent first: overdue (most days
// overdue first), then due (closing soonest first), then upcoming (opening soonest first);
// ties by patient name, then Task id.
func (w *Worklist) List(ctx context.Context, q Query) (*Report, error) {
	today := w.today()
	if q.Within < 0 {
		q.Within = w.s.cfg.LeadDays
	}
	statuses := q.Statuses
	if len(statuses) == 0 {
		statuses = OpenStatuses
	}
	var codes []string
	var targets, starts, ends []int32
	labels := map[string]string{}
	for _, m := range w.s.plan.Milestones {
		codes, targets = append(codes, m.Code), append(targets, int32(m.TargetDay))
		starts, ends = append(starts, int32(m.WindowStart)), append(ends, int32(m.WindowEnd))
		labels[m.Code] = m.Label
	}
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	// Owner references match exactly or as the end of an absolute URL.
	owners := []string{}
	for _, o := range q.Owners {
		o = likeEscaper.Replace(o)
		owners = append(owners, o, "%/"+o)
	}
	rows, err := w.db.Query(ctx, worklistSQL, codes, targets, starts, ends, statuses,
		today.AddDate(0, 0, q.Within), owners, nonNil(q.Sites), nonNil(q.Patients))
	if err != nil {
		return nil, fmt.Errorf("reading the work list: %w", err)
	}
	defer rows.Close()
	rep := &Report{AsOf: day(today), WithinDays: q.Within, LeadDays: w.s.cfg.LeadDays, Items: []Item{},
		today: today, overdueHorizon: w.s.cfg.overdueHorizon(),
		Counts: map[string]int{UrgencyOverdue: 0, UrgencyDue: 0, UrgencyUpcoming: 0}}
	for rows.Next() {
		var it Item
		var code []byte
		var milestone, patient, siteID string
		var start time.Time
		var end, target, infused *time.Time
		var patientBody *string
		var notes []byte
		var lastContact *time.Time
		if err := rows.Scan(&it.TaskID, &it.Version, &it.LastUpdated, &it.Status, &it.StatusReason, &it.BusinessStatus, &it.Description,
			&patient, &it.Owner, &code, &milestone, &start, &end, &target, &it.Infusion, &it.Product, &infused,
			&siteID, &it.Site.Name, &patientBody, &notes, &lastContact); err != nil {
			return nil, fmt.Errorf("reading the work list: %w", err)
		}
		it.Task = "Task/" + it.TaskID
		it.LastUpdated = it.LastUpdated.UTC()
		it.Milestone = milestoneOf(code, milestone, labels)
		it.start, it.WindowStart = start, day(start)
		if end != nil {
			it.end, it.WindowEnd = *end, day(*end)
		}
		if target != nil {
			it.TargetDate = day(*target)
		}
		if infused != nil {
			it.InfusedOn = day(*infused)
		}
		it.Site.ID = siteID
		it.Patient = patientOf(patient, patientBody)
		it.Notes = notesOf(notes)
		if lastContact != nil {
			it.LastContact = day(*lastContact)
		}
		it.urgency(today)
		rep.Counts[it.Urgency]++
		rep.Items = append(rep.Items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the work list: %w", err)
	}
	slices.SortStableFunc(rep.Items, compareItems)
	rep.Total = len(rep.Items)
	return rep, nil
}

// urgency places the item as of today.
func (it *Item) urgency(today time.Time) {
	days := func(from, to time.Time) int { return int(to.Sub(from).Hours() / 24) }
	switch {
	case today.Before(it.start):
		it.Urgency = UrgencyUpcoming
		n := days(today, it.start)
		it.DaysUntilOpen = &n
	case !it.end.IsZero() && today.After(it.end):
		it.Urgency = UrgencyOverdue
		it.DaysOverdue = days(it.end, today)
	default:
		it.Urgency = UrgencyDue
		if !it.end.IsZero() {
			n := days(today, it.end)
			it.DaysLeft = &n
		}
	}
}

var urgencyRank = map[string]int{UrgencyOverdue: 0, UrgencyDue: 1, UrgencyUpcoming: 2}

func compareItems(a, b Item) int {
	if c := urgencyRank[a.Urgency] - urgencyRank[b.Urgency]; c != 0 {
		return c
	}
	var c int
	switch a.Urgency {
	case UrgencyOverdue:
		c = b.DaysOverdue - a.DaysOverdue
	case UrgencyDue: // closing soonest first; a window without an end last
		switch {
		case a.end.IsZero() != b.end.IsZero():
			if a.end.IsZero() {
				return 1
			}
			return -1
		default:
			c = a.end.Compare(b.end)
		}
	case UrgencyUpcoming:
		c = a.start.Compare(b.start)
	}
	if c != 0 {
		return c
	}
	if c := strings.Compare(a.Patient.Name, b.Patient.Name); c != 0 {
		return c
	}
	return strings.Compare(a.TaskID, b.TaskID)
}

// milestoneOf reads the milestone from the Task's code, else the followup_task row; the label
// is the coding's display, else the plan's.
func milestoneOf(code []byte, linked string, labels map[string]string) Milestone {
	var cc struct {
		Coding []struct{ System, Code, Display string }
		Text   string
	}
	_ = json.Unmarshal(code, &cc) // a malformed code falls back to the linkage row
	m := Milestone{Code: linked}
	for _, c := range cc.Coding {
		if c.System == registry.SystemMilestone && c.Code != "" {
			m.Code, m.Label = c.Code, c.Display
			break
		}
	}
	if m.Label == "" {
		m.Label = labels[m.Code]
	}
	if m.Label == "" {
		m.Label = cmp.Or(cc.Text, m.Code)
	}
	return m
}

// notesOf reads the texts of a Task's notes (Annotation), each with its author and time when
// given.
func notesOf(raw []byte) []string {
	var notes []struct {
		Text         string
		AuthorString string
		Time         string
	}
	if len(raw) == 0 || json.Unmarshal(raw, &notes) != nil {
		return nil
	}
	var out []string
	for _, n := range notes {
		if n.Text == "" {
			continue
		}
		var by []string
		if n.AuthorString != "" {
			by = append(by, n.AuthorString)
		}
		if len(n.Time) >= 10 {
			by = append(by, n.Time[:10])
		}
		if len(by) > 0 {
			out = append(out, n.Text+" ("+strings.Join(by, ", ")+")")
		} else {
			out = append(out, n.Text)
		}
	}
	return out
}

// patientOf reads who the patient is from the current Patient resource: the official name
// (else the first) as "Given Family", the MRN (else the first identifier) and the birth date.
func patientOf(id string, body *string) PatientInfo {
	p := PatientInfo{Reference: "Patient/" + id}
	if body == nil {
		return p
	}
	var pat struct {
		Name []struct {
			Use, Text, Family string
			Given             []string
		}
		Identifier []struct {
			Value string
			Type  struct{ Coding []struct{ Code string } }
		}
		BirthDate string
		Telecom   []struct{ System, Value, Use string }
	}
	if err := json.Unmarshal([]byte(*body), &pat); err != nil {
		return p
	}
	p.BirthDate = pat.BirthDate
	for _, t := range pat.Telecom {
		if t.System == "phone" && t.Value != "" && t.Use != "old" {
			p.Phone = t.Value
			break
		}
	}
	if len(pat.Name) > 0 {
		n := pat.Name[0]
		for _, cand := range pat.Name {
			if cand.Use == "official" {
				n = cand
				break
			}
		}
		p.Name = strings.TrimSpace(strings.Join(append(slices.Clone(n.Given), n.Family), " "))
		if p.Name == "" {
			p.Name = n.Text
		}
	}
	for _, ident := range pat.Identifier {
		if ident.Value == "" {
			continue
		}
		if p.Identifier == "" {
			p.Identifier = ident.Value
		}
		if slices.ContainsFunc(ident.Type.Coding, func(c struct{ Code string }) bool { return c.Code == "MR" }) {
			p.Identifier = ident.Value
			break
		}
	}
	return p
}

// Formats a work list is written in.
const (
	formatJSON     = "json"
	formatCSV      = "csv"
	formatCalendar = "ics"
)

var (
	referencePattern = regexp.MustCompile(`(?:^|/)([A-Z][A-Za-z]+)/([^/]+)$`) // the id checked by fhir.ValidID
	withinPattern    = regexp.MustCompile(`^(\d{1,5})([dw])$`)
	ownerTypes       = []string{"Practitioner", "PractitionerRole", "Organization", "CareTeam", "HealthcareService",
		"Patient", "Device", "RelatedPerson"}
)

func badParam(param, format string, args ...any) error {
	return fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, fmt.Sprintf(format, args...), param)
}

// paramValues splits a repeatable, comma-separated parameter.
func paramValues(q url.Values, name string) []string {
	var out []string
	for _, v := range q[name] {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

// ParseQuery reads a work list's parameters: owner, site, patient and status (repeatable or
// comma-separated), within (30d, 2w; 0d for only overdue and due; by default the lead time)
// and _format (json, csv, ics). Any other parameter is refused: a mistyped filter must not
// widen a work list. Sites and patients are as the client wrote them (an id, a name, an
// identifier): Worklist.Resolve turns them into ids.
func ParseQuery(q url.Values) (Query, string, error) {
	query := Query{Within: WithinLeadTime}
	for name := range q {
		switch name {
		case "owner", "site", "patient", "status", "within", "_format", "_pretty":
		default:
			return query, "", badParam(name, "unknown parameter %q: a work list takes owner, site, patient, status, within and _format", name)
		}
	}
	for _, o := range paramValues(q, "owner") {
		m := referencePattern.FindStringSubmatch(o)
		if m == nil || !fhir.ValidID(m[2]) || !slices.Contains(ownerTypes, m[1]) || (!strings.Contains(o, "://") && m[0] != o) {
			return query, "", badParam("owner", "owner=%s: want a reference such as Practitioner/7 (%s)", o, strings.Join(ownerTypes, ", "))
		}
		query.Owners = append(query.Owners, m[1]+"/"+m[2])
	}
	for _, s := range paramValues(q, "site") {
		if id, ok := strings.CutPrefix(s, "Organization/"); ok && !fhir.ValidID(id) {
			return query, "", badParam("site", "site=%s: want Organization/id, an id, a site's name or its identifier", s)
		}
		query.Sites = append(query.Sites, s)
	}
	for _, p := range paramValues(q, "patient") {
		if id, ok := strings.CutPrefix(p, "Patient/"); ok && !fhir.ValidID(id) {
			return query, "", badParam("patient", "patient=%s: want Patient/id, an id, or an identifier (MRN) as system|value or value", p)
		}
		query.Patients = append(query.Patients, p)
	}
	for _, s := range paramValues(q, "status") {
		if !slices.Contains(taskStatuses, s) {
			return query, "", badParam("status", "status=%s: want Task statuses (%s)", s, strings.Join(taskStatuses, ", "))
		}
		query.Statuses = append(query.Statuses, s)
	}
	if vs, ok := q["within"]; ok {
		if len(vs) != 1 {
			return query, "", badParam("within", "within is given %d times: give it once", len(vs))
		}
		m := withinPattern.FindStringSubmatch(strings.TrimSpace(vs[0]))
		if m == nil {
			return query, "", badParam("within", "within=%s: want days or weeks, such as 30d or 2w (0d for only overdue and due)", vs[0])
		}
		n, _ := strconv.Atoi(m[1])
		if m[2] == "w" {
			n *= 7
		}
		if n > maxWithin {
			return query, "", badParam("within", "within=%s: at most %d days", vs[0], maxWithin)
		}
		query.Within = n
	}
	var format string
	if vs, ok := q["_format"]; ok {
		offer := httpx.Format(vs[0], map[string]string{"json": "application/json", "csv": "text/csv", "ics": "text/calendar"},
			offeredTypes...)
		if offer == "" {
			return query, "", badParam("_format", "_format=%s: want json, csv or ics", vs[0])
		}
		format = formatTypes[offer]
	}
	return query, format, nil
}
