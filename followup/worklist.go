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

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
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
	Within     int
	Milestones []string // milestone codes of the follow-up plan
	// Search is words each of which must begin one of the patient's names, whatever the
	// case and accents, or one of the patient's identifiers (the MRN), as written or in
	// upper or lower case.
	Search string
	// SearchMax bounds a search: when each of its words begins the names or identifiers of
	// more than SearchMax patients, List returns a *SearchTooBroadError instead of reading
	// them all (0: no bound).
	SearchMax int
	// Urgency narrows the list to one urgency (UrgencyOverdue, ...); Report.Counts still
	// counts every urgency.
	Urgency string
	// Offset and Limit page the list: Items are the Tasks from Offset on, at most Limit of
	// them (every one when Limit is 0).
	Offset, Limit int
	// IDs adds the patient's and the Task's ids to a CSV (Report.CSV), which has none by
	// default; it selects nothing.
	IDs bool

	countOnly bool // Count: the counts, no Items
}

// Urgencies, most urgent first.
const (
	UrgencyOverdue  = Overdue
	UrgencyDue      = Due
	UrgencyUpcoming = Upcoming
)

// urgencyRanks are the urgencies by their rank in the work list's statements.
var urgencyRanks = []string{UrgencyOverdue, UrgencyDue, UrgencyUpcoming}

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

// worklistFilters are the filters of a work list other than status and urgency, on the
// followup_task row t. $8: LIKE patterns for Task.owner ("Practitioner/7" and
// "%/Practitioner/7"); $9, $10, $11: site ids, patient ids, milestone codes. An empty filter
// selects everything. An empty site id is no site: a coordinator's list narrowed to no site (noSite) shows
// nothing, not the visits of infusions without one.
const worklistFilters = `(cardinality($8::text[]) = 0 OR t.owner LIKE ANY($8::text[]))
		AND (cardinality($9::text[]) = 0 OR (t.site_id = ANY($9::text[]) AND t.site_id <> ''))
		AND (cardinality($10::text[]) = 0 OR t.patient_id = ANY($10::text[]))
		AND (cardinality($11::text[]) = 0 OR t.milestone = ANY($11::text[]))`

// worklistPlan is the follow-up plan as a relation: $1–$4, its milestones' codes, target,
// first and last days.
const worklistPlan = `WITH plan AS (
	SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[]) AS p(code, target_day, first_day, last_day)
)`

// worklistWindowed is the windowed Tasks of the followup_task rows t that where selects: a
// Task without a window of its own has the plan's, from its infusion (looked up only then),
// and rank is its urgency as of today ($6): 0 overdue, 1 due, 2 upcoming. Only windows that
// open by $7, the last day an upcoming one may, are listed.
func worklistWindowed(where string) string {
	return `SELECT w.*, CASE WHEN w.window_start > $6::date THEN 2 WHEN w.window_end < $6::date THEN 0 ELSE 1 END AS rank
	FROM (SELECT t.task_id, t.milestone, t.patient_id, t.site_id, t.infusion_type, t.infusion_id,
		coalesce(t.window_start, (SELECT coalesce(i.infused_on + p.first_day, i.infused_on) FROM registry_infusion i
			LEFT JOIN plan p ON p.code = t.milestone
			WHERE i.resource_type = t.infusion_type AND i.resource_id = t.infusion_id)) AS window_start,
		coalesce(t.window_end, (SELECT i.infused_on + p.last_day FROM registry_infusion i
			LEFT JOIN plan p ON p.code = t.milestone
			WHERE i.resource_type = t.infusion_type AND i.resource_id = t.infusion_id)) AS window_end
	FROM followup_task t
	WHERE ` + where + `) w
	WHERE w.window_start <= $7::date`
}

// worklistFrom selects the listed Tasks from followup_task alone, whose columns mirror each
// Task's current version (status, owner, window) and its infusion's site, so that a site's
// open Tasks are one scan of the index on (current_status, site_id) and no Task is parsed to
// decide whether it is listed. $5: the statuses; the filters as worklistFilters.
var worklistFrom = worklistPlan + `, listed AS (
	` + worklistWindowed(`t.current_status = ANY($5::text[]) AND `+worklistFilters) + `
)`

// worklistCountsSQL counts the listed Tasks by urgency: for a page with no rows, which
// cannot carry them.
var worklistCountsSQL = worklistFrom + `
SELECT count(*) FILTER (WHERE rank = 0), count(*) FILTER (WHERE rank = 1), count(*) FILTER (WHERE rank = 2) FROM listed`

// worklistOrder is the work list's order: most urgent first; overdue by the day the window
// closed (most days late first), due by the day it closes (soonest first, no end last),
// upcoming by the day it opens; ties by patient, then Task. (The page's rows are read back in
// the same order.)
const worklistOrder = `rank, CASE rank WHEN 2 THEN window_start ELSE window_end END NULLS LAST, patient_id, task_id`

// worklistRowsSQL reads the page's Tasks, infusions, sites and patients, given the relations
// page (the page's followup_task rows, windowed and ranked) and counted (the counts by
// urgency, one row). A Task's patient is its Task.for, else followup_task's. Every row carries
// the counts.
const worklistRowsSQL = `
SELECT d.task_id, r.version_id, r.last_updated, j.status,
	coalesce(j."statusReason"->>'text', j."statusReason"#>>'{coding,0,display}', ''),
	coalesce(j."businessStatus"#>>'{coding,0,code}', ''), coalesce(j.description, ''),
	coalesce(CASE WHEN j."for"->>'reference' LIKE 'Patient/%' THEN substr(j."for"->>'reference', 9) END, d.patient_id),
	coalesce(j.owner->>'reference', ''), coalesce(j.code, 'null'::jsonb), d.milestone, d.window_start, d.window_end,
	i.infused_on + p.target_day, d.infusion_type || '/' || d.infusion_id, coalesce(i.product_label, ''), i.infused_on,
	d.site_id, coalesce(s.name, ''), pr.body, j.note,
	(SELECT rp.last_contact_on FROM registry_patient rp WHERE rp.patient_id = d.patient_id),
	c.overdue, c.due, c.upcoming
FROM page d
CROSS JOIN counted c
JOIN ` + fhir.CurrentRelation + ` r ON r.resource_type = 'Task' AND r.resource_id = d.task_id
CROSS JOIN LATERAL jsonb_to_record(r.body::jsonb) AS j(status text, description text, "for" jsonb, owner jsonb,
	code jsonb, "businessStatus" jsonb, "statusReason" jsonb, note jsonb)
LEFT JOIN registry_infusion i ON i.resource_type = d.infusion_type AND i.resource_id = d.infusion_id
LEFT JOIN plan p ON p.code = d.milestone
LEFT JOIN registry_site s ON s.organization_id = d.site_id
LEFT JOIN ` + fhir.CurrentRelation + ` pr ON pr.resource_type = 'Patient'
	AND pr.resource_id = coalesce(CASE WHEN j."for"->>'reference' LIKE 'Patient/%' THEN substr(j."for"->>'reference', 9) END, d.patient_id)
ORDER BY d.rank, CASE d.rank WHEN 2 THEN d.window_start ELSE d.window_end END NULLS LAST, d.patient_id, d.task_id`

// worklistPageSQL reads one page of the listed Tasks ($12: the urgency rank, -1 for all; $13
// and $14: LIMIT, NULL for all, and OFFSET), and only then the page's Tasks and what goes
// with them. The counts come from the same single pass over the listed Tasks, which
// PostgreSQL keeps (materialises) for both. For a list narrowed by site or patient, which an
// index on either finds.
var worklistPageSQL = worklistFrom + `, counted AS (
	SELECT count(*) FILTER (WHERE rank = 0) AS overdue, count(*) FILTER (WHERE rank = 1) AS due,
		count(*) FILTER (WHERE rank = 2) AS upcoming
	FROM listed
), page AS MATERIALIZED (
	SELECT * FROM listed WHERE $12::int < 0 OR rank = $12::int
	ORDER BY ` + worklistOrder + ` LIMIT $13 OFFSET $14
)` + worklistRowsSQL

// regularWindow is a followup_task row whose window the index on (current_status, window_end,
// window_start) places (migration 025): both days its own, the end not before the start. The
// rest, irregularWindow, are few and found by a partial index of their own.
const (
	regularWindow   = `t.window_start IS NOT NULL AND t.window_end IS NOT NULL AND t.window_end >= t.window_start`
	irregularWindow = `(t.window_start IS NULL OR t.window_end IS NULL OR t.window_end < t.window_start)`
)

// worklistByUrgencyArm is the first $15 Tasks of one urgency (rank) whose window is regular,
// in the list's order, for each status on its own: a range of the urgency index read in
// order, stopped by the LIMIT. Skipped whole when the page asks for another urgency ($12).
func worklistByUrgencyArm(rank, where, order string) string {
	return `SELECT x.* FROM unnest($5::text[]) AS st(status) CROSS JOIN LATERAL (
		SELECT t.task_id, t.milestone, t.patient_id, t.site_id, t.infusion_type, t.infusion_id, t.window_start,
			t.window_end, ` + rank + ` AS rank
		FROM followup_task t
		WHERE t.current_status = st.status AND ` + where + ` AND ` + regularWindow + ` AND ` + worklistFilters + `
		ORDER BY ` + order + `, t.patient_id, t.task_id LIMIT $15) x
	WHERE $12::int IN (-1, ` + rank + `)`
}

// worklistByUrgencySQL is worklistPageSQL for a list of every site and patient (an
// administrator's), which no site or patient index narrows: the page is picked from the first
// LIMIT+OFFSET ($15, NULL for all) of each urgency's regular windows and every irregular one,
// instead of from every open Task, and the counts are read from the urgency index.
var worklistByUrgencySQL = worklistByUrgencyCounted + `, page AS MATERIALIZED (
	SELECT * FROM (
		` + worklistByUrgencyArm("0", `t.window_end < $6::date`, `t.window_end`) + `
		UNION ALL
		` + worklistByUrgencyArm("1", `t.window_end >= $6::date AND t.window_start <= $6::date`, `t.window_end`) + `
		UNION ALL
		` + worklistByUrgencyArm("2", `t.window_end > $6::date AND t.window_start > $6::date AND t.window_start <= $7::date`, `t.window_start`) + `
		UNION ALL
		SELECT * FROM irregular WHERE $12::int < 0 OR rank = $12::int
	) u
	ORDER BY ` + worklistOrder + ` LIMIT $13 OFFSET $14
)` + worklistRowsSQL

// worklistByUrgencyCountsSQL is worklistByUrgencySQL's counts alone, for a page with no rows.
var worklistByUrgencyCountsSQL = worklistByUrgencyCounted + `
SELECT overdue, due, upcoming FROM counted`

// worklistByUrgencyCounted counts by urgency the regular windows from the urgency index alone
// and the irregular ones as worklistFrom does.
var worklistByUrgencyCounted = worklistPlan + `, irregular AS MATERIALIZED (
	` + worklistWindowed(`t.current_status = ANY($5::text[]) AND `+irregularWindow+` AND `+worklistFilters) + `
), counted AS (
	SELECT sum(overdue)::bigint AS overdue, sum(due)::bigint AS due, sum(upcoming)::bigint AS upcoming FROM (
		SELECT count(*) FILTER (WHERE t.window_end < $6::date) AS overdue,
			count(*) FILTER (WHERE t.window_start <= $6::date AND t.window_end >= $6::date) AS due,
			count(*) FILTER (WHERE t.window_start > $6::date) AS upcoming
		FROM followup_task t
		WHERE t.current_status = ANY($5::text[]) AND t.window_start <= $7::date AND ` + regularWindow + ` AND ` + worklistFilters + `
		UNION ALL
		SELECT count(*) FILTER (WHERE rank = 0), count(*) FILTER (WHERE rank = 1), count(*) FILTER (WHERE rank = 2)
		FROM irregular
	) n
)`

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// today is the clock's calendar day, as the scheduler counts days.
func (w *Worklist) today() time.Time { return w.s.day(w.now()) }

// List returns the work list as of the clock's today, most urgent first: overdue (most days
// overdue first), then due (closing soonest first), then upcoming (opening soonest first);
// ties by patient id, then Task id. Counts are by urgency before q.Urgency narrows the list;
// Total is how many q selects, of which Items holds those from q.Offset, at most q.Limit.
func (w *Worklist) List(ctx context.Context, q Query) (*Report, error) {
	begin, ok := w.db.(interface {
		Begin(context.Context) (pgx.Tx, error)
	})
	if !ok {
		return w.list(ctx, w.db, q)
	}
	// In a transaction of its own, for SET LOCAL: the queries' cost estimates count the plan's
	// window lookups for every row (they run only for a Task without a window of its own) and
	// pass the threshold at which PostgreSQL compiles a query first, which then takes longer
	// than running it (170 ms of 190 at 20,000 patients). Over a caller's transaction this is
	// a savepoint, and JIT stays off until that transaction ends: only the scheduler's dry
	// run lists in a transaction of its own, which it rolls back.
	var rep *Report
	err := pgx.BeginFunc(ctx, begin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL jit = off`); err != nil {
			return fmt.Errorf("reading the work list: %w", err)
		}
		var err error
		rep, err = w.list(ctx, tx, q)
		return err
	})
	return rep, err
}

// Count is List's Counts and Total for q without its Items, which it does not read: what a
// summary needs, at the cost of counting alone. (Listing every open Task of a 100,000-patient
// registry to count them read and decoded each Task, its patient and its infusion.)
func (w *Worklist) Count(ctx context.Context, q Query) (*Report, error) {
	q.countOnly = true
	return w.List(ctx, q)
}

func (w *Worklist) list(ctx context.Context, db fhir.DBTX, q Query) (*Report, error) {
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
	patients := nonNil(q.Patients)
	if found, searched, err := searchPatients(ctx, db, q.Search, q.SearchMax); err != nil {
		return nil, err
	} else if searched {
		if len(q.Patients) > 0 {
			found = slices.DeleteFunc(found, func(id string) bool { return !slices.Contains(q.Patients, id) })
		}
		if patients = found; len(patients) == 0 {
			patients = noPatient
		}
	}
	args := []any{codes, targets, starts, ends, statuses, today, today.AddDate(0, 0, q.Within), owners,
		nonNil(q.Sites), patients, nonNil(q.Milestones)}
	rep := &Report{AsOf: day(today), WithinDays: q.Within, LeadDays: w.s.cfg.LeadDays, Items: []Item{},
		today: today, overdueHorizon: w.s.cfg.overdueHorizon(),
		Counts: map[string]int{UrgencyOverdue: 0, UrgencyDue: 0, UrgencyUpcoming: 0}}
	rank := slices.Index(urgencyRanks, q.Urgency) // -1 for every urgency
	var limit *int
	if q.Limit > 0 {
		limit = &q.Limit
	}
	// A list narrowed to sites or patients is read through their indexes, whole; one of every
	// site and patient by urgency, a page's worth of each.
	pageSQL, countsSQL := worklistPageSQL, worklistCountsSQL
	pageArgs := append(slices.Clone(args), rank, limit, max(q.Offset, 0))
	if len(q.Sites) == 0 && len(patients) == 0 {
		pageSQL, countsSQL = worklistByUrgencySQL, worklistByUrgencyCountsSQL
		var need *int // each urgency's first rows that the page can hold
		if limit != nil {
			n := *limit + max(q.Offset, 0)
			need = &n
		}
		pageArgs = append(pageArgs, need)
	}
	var counts [3]int
	if q.countOnly {
		if err := db.QueryRow(ctx, countsSQL, args...).Scan(&counts[0], &counts[1], &counts[2]); err != nil {
			return nil, fmt.Errorf("counting the work list: %w", err)
		}
		rep.count(counts, rank)
		return rep, nil
	}
	rows, err := db.Query(ctx, pageSQL, pageArgs...)
	if err != nil {
		return nil, fmt.Errorf("reading the work list: %w", err)
	}
	defer rows.Close()
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
			&siteID, &it.Site.Name, &patientBody, &notes, &lastContact, &counts[0], &counts[1], &counts[2]); err != nil {
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
		rep.Items = append(rep.Items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the work list: %w", err)
	}
	if len(rep.Items) == 0 { // no row to carry the counts: a list or a filter with nothing, a page past the end
		if err := db.QueryRow(ctx, countsSQL, args...).Scan(&counts[0], &counts[1], &counts[2]); err != nil {
			return nil, fmt.Errorf("counting the work list: %w", err)
		}
	}
	rep.count(counts, rank)
	return rep, nil
}

// count sets the report's Counts from the counts by urgency, most urgent first, and its Total
// from those of the urgency ranked rank (every urgency when rank < 0).
func (rep *Report) count(counts [3]int, rank int) {
	for i, u := range urgencyRanks {
		rep.Counts[u] = counts[i]
	}
	if rank < 0 {
		rep.Total = counts[0] + counts[1] + counts[2]
	} else {
		rep.Total = counts[rank]
	}
}

// noPatient is a patient filter that matches nothing: a search that found no one.
var noPatient = []string{""}

// searchWordSQL finds the patients one word of a search names, from the FHIR search index
// alone: the word ($1, as the index keeps names: lower case, accents removed) must begin one
// of the patient's names (a given or family name, as the name parameter indexes them),
// through the name index's range of that prefix ($2: the word's LIKE pattern), or begin one of
// the patient's identifiers ($3: the prefixes, as written and in upper and lower case, as LIKE
// patterns, and $4, $5: the range of each in the token index). Each row says which range it
// came from (0: names; 1, 2, ...: the identifier prefixes). At most $6 rows of each range are
// read (NULL: all), so a word that begins half the registry's names costs no more than one
// that begins $6 of them. Both partitions of each index table are read, the oversized ones by
// scanning their few rows.
const searchWordSQL = `(SELECT 0 AS range, n.resource_id FROM ` + fhir.StringIndexRelation + ` n
	WHERE n.resource_type = 'Patient' AND n.code = 'name'
		AND n.normalized ~>=~ $1 AND n.normalized ~<~ ($1 || chr(1114111)) AND n.normalized LIKE $2
	LIMIT $6)
UNION ALL
SELECT d.n, k.resource_id FROM unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS d(pattern, low, high, n) CROSS JOIN LATERAL (
	-- OFFSET 0 keeps each prefix a scan of its own range: joined flat, the planner reads
	-- the whole Patient identifier range instead.
	SELECT k.resource_id FROM ` + fhir.TokenIndexRelation + ` k WHERE k.resource_type = 'Patient' AND k.code = 'identifier'
		AND k.value >= d.low AND k.value < d.high AND k.value LIKE d.pattern
	LIMIT $6 OFFSET 0) k`

// searchTermsSQL reads the names ($2, as the index keeps them) and identifiers of the
// patients $1, which a search's first word found, for its other words: through the index on
// each patient's rows, the one index these conditions can use, whatever the words.
const searchTermsSQL = `SELECT n.resource_id, n.normalized, true FROM ` + fhir.StringIndexRelation + ` n
	WHERE n.resource_type = 'Patient' AND n.resource_id = ANY($1::text[]) AND n.code = 'name'
UNION ALL
SELECT k.resource_id, k.value, false FROM ` + fhir.TokenIndexRelation + ` k
	WHERE k.resource_type = 'Patient' AND k.resource_id = ANY($1::text[]) AND k.code = 'identifier'`

// searchLookups is how many of a bounded search's words are looked up in the index, longest
// first, to find one narrow enough; the others are only checked against what it found.
const searchLookups = 3

// SearchTooBroadError is a work-list search each of whose words begins the names or
// identifiers of more patients than Query.SearchMax: the person is asked to type more of it.
type SearchTooBroadError struct {
	Search string
	Max    int
}

func (e *SearchTooBroadError) Error() string {
	return fmt.Sprintf("more than %d patients have a name or MRN beginning with %q: type more of it", e.Max, e.Search)
}

// searchWord is one word of a search, as its name prefix and its identifier prefixes.
type searchWord struct {
	name string   // as the index keeps names
	ids  []string // as written, in upper and in lower case, each once
}

func (w searchWord) matchesName(normalized string) bool { return strings.HasPrefix(normalized, w.name) }

func (w searchWord) matchesIdentifier(value string) bool {
	for _, p := range w.ids {
		if strings.HasPrefix(value, p) {
			return true
		}
	}
	return false
}

// searchPatients returns the ids of the patients whose names or identifiers a search by name
// or MRN matches: each word must begin a name or an identifier ("ada love" finds Ada
// Lovelace, "mrn-00" MRN-0001). Names are compared as the search index keeps them (lower
// case, accents removed), so "muller" finds Müller; identifiers as written, in upper or in
// lower case (an identifier of mixed case is found by the word as written). Prefixes, not
// parts anywhere in a name or identifier, so that the lookup is a range of an index whatever
// the registry's size. searched is false for a search with no word to look for, which
// selects everyone.
//
// The words are tried in turn, longest first, until one finds at most max patients (every
// word, with max 0; at most searchLookups of them otherwise); the patients it found are then
// checked against the other words one by one. When none of those tried finds max or fewer,
// the search is too broad: a *SearchTooBroadError.
func searchPatients(ctx context.Context, db fhir.DBTX, search string, max int) (ids []string, searched bool, err error) {
	var words []searchWord
	for _, raw := range strings.Fields(search) {
		w := searchWord{name: searchparam.NormalizeString(raw)}
		if w.name == "" {
			continue
		}
		for _, v := range []string{raw, strings.ToUpper(raw), strings.ToLower(raw)} {
			if !slices.Contains(w.ids, v) {
				w.ids = append(w.ids, v)
			}
		}
		words = append(words, w)
	}
	if len(words) == 0 {
		return nil, false, nil
	}
	// The longest word first: it is the likeliest to be the narrowest.
	slices.SortStableFunc(words, func(a, b searchWord) int { return len(b.name) - len(a.name) })
	first := -1
	for i, w := range words {
		if max > 0 && i == searchLookups {
			break // a search of many broad words costs no more than searchLookups reads
		}
		found, broad, err := patientsOfWord(ctx, db, w, max)
		if err != nil {
			return nil, true, err
		}
		if !broad {
			first, ids = i, found
			break
		}
	}
	if first < 0 {
		return nil, true, &SearchTooBroadError{Search: search, Max: max}
	}
	if len(words) == 1 || len(ids) == 0 {
		return ids, true, nil
	}
	// Each found patient's names and identifiers, against the other words.
	rows, err := db.Query(ctx, searchTermsSQL, ids)
	if err != nil {
		return nil, true, fmt.Errorf("searching the work list's patients: %w", err)
	}
	defer rows.Close()
	matched := map[string][]bool{} // patient -> which of the other words it matched
	var id, term string
	var isName bool
	for rows.Next() {
		if err := rows.Scan(&id, &term, &isName); err != nil {
			return nil, true, fmt.Errorf("searching the work list's patients: %w", err)
		}
		for i, w := range words {
			if i == first || !(isName && w.matchesName(term) || !isName && w.matchesIdentifier(term)) {
				continue
			}
			if matched[id] == nil {
				matched[id] = make([]bool, len(words))
			}
			matched[id][i] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, true, fmt.Errorf("searching the work list's patients: %w", err)
	}
	return slices.DeleteFunc(ids, func(id string) bool {
		for i := range words {
			if i != first && (matched[id] == nil || !matched[id][i]) {
				return true
			}
		}
		return false
	}), true, nil
}

// patientsOfWord is the patients one word of a search finds (searchWordSQL), unless one of
// its ranges of the index holds more than max rows (max > 0): then broad, and no patients.
func patientsOfWord(ctx context.Context, db fhir.DBTX, w searchWord, max int) (ids []string, broad bool, err error) {
	var patterns, lows, highs []string
	for _, v := range w.ids {
		patterns, lows, highs = append(patterns, likeEscaper.Replace(v)+"%"), append(lows, v), append(highs, v+"\U0010FFFF")
	}
	var limit *int
	if max > 0 {
		n := max + 1
		limit = &n
	}
	rows, err := db.Query(ctx, searchWordSQL, w.name, likeEscaper.Replace(w.name)+"%", patterns, lows, highs, limit)
	if err != nil {
		return nil, false, fmt.Errorf("searching the work list's patients: %w", err)
	}
	defer rows.Close()
	perRange := map[int64]int{}
	seen := map[string]bool{}
	var rangeOf int64
	var id string
	for rows.Next() {
		if err := rows.Scan(&rangeOf, &id); err != nil {
			return nil, false, fmt.Errorf("searching the work list's patients: %w", err)
		}
		if perRange[rangeOf]++; max > 0 && perRange[rangeOf] > max {
			return nil, true, nil
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("searching the work list's patients: %w", err)
	}
	return ids, max > 0 && len(ids) > max, nil
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
// comma-separated), within (30d, 2w; 0d for only overdue and due; by default the lead time),
// ids (1: a CSV with the patient's and the Task's ids) and _format (json, csv, ics). Any other parameter is refused: a mistyped filter must not
// widen a work list. Sites and patients are as the client wrote them (an id, a name, an
// identifier): Worklist.Resolve turns them into ids.
func ParseQuery(q url.Values) (Query, string, error) {
	query := Query{Within: WithinLeadTime}
	for name := range q {
		switch name {
		case "owner", "site", "patient", "status", "within", "ids", "_format", "_pretty":
		default:
			return query, "", badParam(name, "unknown parameter %q: a work list takes owner, site, patient, status, within, ids and _format", name)
		}
	}
	if vs, ok := q["ids"]; ok {
		switch strings.Join(vs, ",") {
		case "1", "true":
			query.IDs = true
		case "0", "false":
		default:
			return query, "", badParam("ids", "ids=%s: want ids=1 for the patient's and the Task's ids in a CSV (ids=0, the default, for none)", strings.Join(vs, ","))
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
