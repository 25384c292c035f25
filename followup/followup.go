package followup

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/registry"
)

// Task statuses and business statuses the scheduler writes.
const (
	StatusRequested = "requested"
	StatusCompleted = "completed"
	StatusCancelled = "cancelled"

	Upcoming = "upcoming" // lead time begun, window not yet open
	Due      = "due"      // window open
	Overdue  = "overdue"  // window closed, no assessment
)

// IdentifierSystem names a follow-up Task by its infusion and milestone.
const IdentifierSystem = registry.Canonical + "/follow-up-task"

// Config says what Tasks to keep.
type Config struct {
	// LeadDays is how long before a window opens its Task is created.
	LeadDays int
	// Location is the time zone whose calendar days windows are counted in; UTC if nil.
	Location *time.Location
	// Owners maps a site (Organization id) to the reference of its coordinator
	// ("Practitioner/7"); a site without one owns its Tasks itself.
	Owners map[string]string
	// CalendarOverdueDays is how many days overdue a visit may be and still show in the
	// calendar feed across its window; one longer overdue shows once, on today, where a
	// coordinator looking at this week will see it (DefaultCalendarOverdueDays if 0).
	CalendarOverdueDays int
}

// DefaultCalendarOverdueDays is CalendarOverdueDays unless set: about six months, after which
// a visit's window is too far back for anyone to scroll to.
const DefaultCalendarOverdueDays = 180

func (c Config) overdueHorizon() int {
	if c.CalendarOverdueDays <= 0 {
		return DefaultCalendarOverdueDays
	}
	return c.CalendarOverdueDays
}

func (c Config) location() *time.Location {
	if c.Location == nil {
		return time.UTC
	}
	return c.Location
}

// Tracker derives the follow-up Tasks.
type Tracker struct {
	cfg   Config
	store *fhir.Store
	plan  registry.Plan
	chunk int // infusions a transaction of a run handles: defaultChunk, less in tests
}

// New returns a scheduler for the registry's plan.
func New(cfg Config, store *fhir.Store, plan registry.Plan) *Tracker {
	return &Tracker{cfg: cfg, store: store, plan: plan, chunk: defaultChunk}
}

// Summary counts what a run did.
type Summary struct {
	Created, Updated, Completed, Cancelled, LeftToCoordinator int
}

func (s Summary) String() string {
	return fmt.Sprintf("%d created, %d updated (%d completed, %d cancelled), %d left to coordinators",
		s.Created, s.Updated, s.Completed, s.Cancelled, s.LeftToCoordinator)
}

// defaultChunk is how many infusions one transaction of a run handles: small enough to keep
// memory flat over any registry, large enough that round trips do not dominate.
const defaultChunk = 2000

// Run brings every follow-up Task up to date as of at. It works through the infusions in
// chunks, each in a transaction of its own: a run cut short leaves consistent Tasks, and the
// next run finishes the work. Callers run it under the scheduler's job lock (one replica at a
// time); the unique (infusion, milestone) key would refuse a duplicate Task even without it.
//
// One chunk at a time: two at once, on two connections, are slower on a two-core machine
// with other work (PostgreSQL's two backends and the renderer contend for the cores), and
// hold twice the memory.
func (s *Tracker) Run(ctx context.Context, at time.Time) (Summary, error) {
	ctx = context.WithValue(ctx, recordedKey{}, true)
	var sum Summary
	after := [2]string{"", ""}
	for {
		var last [2]string
		var n int
		var part Summary
		err := s.store.InTx(ctx, func(tx pgx.Tx) error {
			part = Summary{} // a retried transaction counts from scratch
			var err error
			last, n, err = s.lastOfChunk(ctx, tx, after)
			if err != nil || n == 0 {
				return err
			}
			if err := planChunk(ctx, tx); err != nil {
				return err
			}
			visits, err := s.visits(ctx, tx, s.day(at), true, byChunk, after[0], after[1], s.chunk)
			if err != nil {
				return err
			}
			return s.apply(ctx, tx, at, visits, true, &part)
		})
		sum.add(part)
		if err != nil {
			return sum, err
		}
		if n < s.chunk {
			return sum, nil
		}
		after = last
	}
}

// planChunk sets how tx's statements are planned for a chunk of a run.
//
// Each is planned for its own parameters (force_custom_plan): a chunk is a range of keys, and
// the generic plan a prepared statement settles on after five runs cannot see how narrow it
// is. Planned for any range, the selection of a chunk's infusions was a parallel scan and
// sort of every infusion, once per chunk, and a run's reads grew with the square of the
// registry. Planning costs a millisecond or two a statement.
//
// Without JIT: a chunk's queries are a few milliseconds of index lookups, but their cost
// estimates are high enough for PostgreSQL to compile them first, which takes longer than
// running them (a tenth of a second each).
func planChunk(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT set_config('plan_cache_mode', 'force_custom_plan', true), set_config('jit', 'off', true)`); err != nil {
		return fmt.Errorf("follow-up chunk: %w", err)
	}
	return nil
}

func (sum *Summary) add(o Summary) {
	sum.Created += o.Created
	sum.Updated += o.Updated
	sum.Completed += o.Completed
	sum.Cancelled += o.Cancelled
	sum.LeftToCoordinator += o.LeftToCoordinator
}

// lastOfChunk finds the last infusion of the chunk after the given one, and the chunk's size:
// an infusion with no visit due yet still counts.
func (s *Tracker) lastOfChunk(ctx context.Context, tx pgx.Tx, after [2]string) (last [2]string, n int, err error) {
	err = tx.QueryRow(ctx, `SELECT resource_type, resource_id, count(*) OVER () FROM (
		SELECT resource_type, resource_id FROM registry_infusion WHERE (resource_type, resource_id) > ($1, $2)
		ORDER BY 1, 2 LIMIT $3) c ORDER BY 1 DESC, 2 DESC LIMIT 1`, after[0], after[1], s.chunk).Scan(&last[0], &last[1], &n)
	if err == pgx.ErrNoRows {
		return last, 0, nil
	}
	if err != nil {
		return last, 0, fmt.Errorf("follow-up chunk: %w", err)
	}
	return last, n, nil
}

// RunPatients brings the existing Tasks of some patients up to date as of at, in tx: how an
// assessment completes its Task, and a death or withdrawal cancels open ones, in the write
// that records it. It makes no new Tasks: those wait for the scheduled run, so a bulk load
// stays a load.
func (s *Tracker) RunPatients(ctx context.Context, tx pgx.Tx, at time.Time, patients []string) (Summary, error) {
	var sum Summary
	visits, err := s.visits(ctx, tx, s.day(at), false, byPatients, patients)
	if err != nil {
		return sum, err
	}
	return sum, s.apply(ctx, tx, at, visits, false, &sum)
}

// visit is one (infusion, milestone) and what the scheduler last made of it.
type visit struct {
	infusionType, infusionID, patient, product, site string
	infused, opens, closes                           time.Time
	milestone                                        registry.Milestone
	assessment                                       string // the counted Observation, if any
	dead, withdrawn, lost                            bool   // lost: withdrawn as lost to follow-up
	superseded                                       bool   // a later infusion started a new sequence
	task                                             *recorded
	status, business                                 string // what the Task should say
}

type recorded struct {
	id, status, businessStatus, output string
	site                               string // followup_task.site_id: the site the work list files it under
	written, current                   int
	// currentStatus is the status of the current version ("" once deleted).
	currentStatus string
}

// want is the state a visit's Task should be in; ok is false when it should have none.
func (v *visit) want(today time.Time) (status, business string, ok bool) {
	switch {
	case v.assessment != "":
		return StatusCompleted, "", true
	case v.dead, v.withdrawn, v.superseded:
		return StatusCancelled, "", v.task != nil // no new Task, and the open one is cancelled
	case today.Before(v.opens):
		return StatusRequested, Upcoming, true
	case !today.After(v.closes):
		return StatusRequested, Due, true
	default:
		return StatusRequested, Overdue, true
	}
}

// The infusions a derivation looks at: a chunk in key order ($1, $2 the last key of the
// previous chunk, $3 the chunk size), or those of some patients ($1), where only visits that
// have a Task already are wanted.
const (
	byChunk = `SELECT * FROM registry_infusion WHERE (resource_type, resource_id) > ($1, $2)
		ORDER BY resource_type, resource_id LIMIT $3`
	byPatients = `SELECT * FROM registry_infusion WHERE patient_id = ANY($1)`
)

// visitsSQL lists the infusions a selection picks, one row each, with what the registry
// knows of them: the patient's facts, the counted assessments by milestone and the Tasks by
// milestone, as arrays. The visits, (infusion, milestone) pairs, are made from them in Go
// (visits), so that PostgreSQL neither multiplies each infusion by the plan nor joins and
// sorts the products, and sends each infusion's columns once.
//
// Everything but the infusions is looked up by key, in lateral subqueries that stay lookups
// whatever the statistics and whichever the plan (an aggregate or OFFSET 0 keeps each a scan
// of its own): once per infusion, the patient, its withdrawals, its counted assessments and
// its Tasks. As EXISTS tests, the patient's facts were read, under a generic plan, by hashing
// every dead patient of the registry for each chunk. A Task's current version and its status
// are followup_task's mirror of them (current_version, current_status, kept by whoever
// writes the Task), not a lookup in the store's versions for every Task.
const visitsSQL = `SELECT i.resource_type, i.resource_id, i.patient_id, i.product_label, coalesce(i.effective_site_id, ''),
	i.infused_on, i.next_infused_on IS NOT NULL, coalesce(rp.dead, false), w.withdrawn, w.lost,
	a.milestones, a.observations,
	t.milestones, t.ids, t.statuses, t.business, t.outputs, t.written, t.current, t.sites, t.current_statuses
FROM (%s) i
LEFT JOIN LATERAL (SELECT rp.deceased_on IS NOT NULL AS dead FROM registry_patient rp
	WHERE rp.patient_id = i.patient_id OFFSET 0) rp ON true
CROSS JOIN LATERAL (SELECT count(*) > 0 AS withdrawn, coalesce(bool_or(w.lost), false) AS lost
	FROM followup_withdrawal w WHERE w.patient_id = i.patient_id) w
CROSS JOIN LATERAL (SELECT array_agg(coalesce(a.milestone, '')) AS milestones, array_agg(a.observation_id) AS observations
	FROM registry_assessment a WHERE a.counted AND a.infusion_type = i.resource_type AND a.infusion_id = i.resource_id) a
CROSS JOIN LATERAL (SELECT array_agg(t.milestone) AS milestones, array_agg(t.task_id) AS ids, array_agg(t.status) AS statuses,
		array_agg(t.business_status) AS business, array_agg(t.output_id) AS outputs, array_agg(t.written_version) AS written,
		array_agg(t.current_version) AS current, array_agg(t.site_id) AS sites, array_agg(t.current_status) AS current_statuses
	FROM followup_task t WHERE t.infusion_type = i.resource_type AND t.infusion_id = i.resource_id) t
ORDER BY i.resource_type, i.resource_id`

// visits loads the visits of the infusions selection picks (byChunk or byPatients, with its
// arguments), in the order of the infusions and the plan: every visit that has a Task, and
// when creating those without one whose lead time has begun by today.
func (s *Tracker) visits(ctx context.Context, tx pgx.Tx, today time.Time, creating bool, selection string, selArgs ...any) ([]*visit, error) {
	rows, err := tx.Query(ctx, fmt.Sprintf(visitsSQL, selection), selArgs...)
	if err != nil {
		return nil, fmt.Errorf("follow-up visits: %w", err)
	}
	defer rows.Close()
	var visits []*visit
	var in visit // the infusion's columns, shared by its visits
	var assessed, observations []string
	var tasked, ids, statuses, business, outputs, sites []string
	var written, current []int32
	var currentStatuses []*string
	for rows.Next() {
		assessed, observations, tasked = nil, nil, nil
		if err := rows.Scan(&in.infusionType, &in.infusionID, &in.patient, &in.product, &in.site, &in.infused,
			&in.superseded, &in.dead, &in.withdrawn, &in.lost, &assessed, &observations,
			&tasked, &ids, &statuses, &business, &outputs, &written, &current, &sites, &currentStatuses); err != nil {
			return nil, fmt.Errorf("follow-up visits: %w", err)
		}
		for _, m := range s.plan.Milestones {
			v := in
			v.milestone = m
			if i := slices.Index(tasked, m.Code); i >= 0 {
				v.task = &recorded{id: ids[i], status: statuses[i], businessStatus: business[i], output: outputs[i],
					written: int(written[i]), current: int(current[i]), site: sites[i]}
				if currentStatuses[i] != nil {
					v.task.currentStatus = *currentStatuses[i]
				}
			} else if !creating || in.infused.AddDate(0, 0, m.WindowStart-s.cfg.LeadDays).After(today) {
				continue // no Task, and none to make yet
			}
			if i := slices.Index(assessed, m.Code); i >= 0 {
				v.assessment = observations[i]
			}
			v.opens = v.infused.AddDate(0, 0, m.WindowStart)
			v.closes = v.infused.AddDate(0, 0, m.WindowEnd)
			visits = append(visits, &v)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("follow-up visits: %w", err)
	}
	return visits, nil
}

// day is the calendar day at falls on in the registry's time zone: windows are whole days.
func (s *Tracker) day(at time.Time) time.Time {
	at = at.In(s.cfg.location())
	return time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC)
}

// Today is the calendar day (YYYY-MM-DD) at falls on in the registry's time zone: the day a
// coordinator's "today" means, which near midnight is not UTC's.
func (s *Tracker) Today(at time.Time) string { return s.day(at).Format(time.DateOnly) }

// ReasonLost is the statusReason of the Tasks cancelled because their patient was lost to
// follow-up (an EpisodeOfCare typed CodeLostToFollowUp).
const ReasonLost = "the patient is lost to follow-up"

// OpenStatuses are the Task statuses of a visit still sought: work someone still has to do.
// Work lists show them by default and digests tell of them; completed, cancelled, failed,
// rejected and entered-in-error Tasks are done with.
var OpenStatuses = []string{"requested", "received", "accepted", "ready", "in-progress", "on-hold"}

// stillSought says whether the end of a visit (an assessment, a death) should still close a
// Task in this status: an open one, or a draft a coordinator has not sent yet.
func stillSought(status string) bool {
	return status == "draft" || slices.Contains(OpenStatuses, status)
}

// write is one Task the scheduler is about to write for a visit.
type write struct {
	v    *visit
	res  *fhir.Resource
	from int // the version it replaces; 0 for a new Task
}

// apply writes the Tasks that differ from what they should be; creating says whether visits
// without a Task get one.
func (s *Tracker) apply(ctx context.Context, tx pgx.Tx, at time.Time, visits []*visit, creating bool, sum *Summary) error {
	if err := syncSites(ctx, tx, visits); err != nil {
		return err
	}
	creates, updates, takeovers := s.decide(s.day(at), visits, creating, sum)
	for i := range updates {
		updates[i].res = s.task(updates[i].v, updates[i].v.task.id, at)
	}
	if len(takeovers) > 0 {
		var err error
		if takeovers, err = s.closeCoordinatorTasks(ctx, tx, at, takeovers); err != nil {
			return err
		}
	}
	updates = append(updates, takeovers...)
	if len(updates) > 0 {
		var err error
		if updates, err = s.stillOurs(ctx, tx, updates, sum); err != nil {
			return err
		}
	}

	// Written a slice at a time: a slice's rendered Tasks, index rows and encoded statements
	// are what a run holds in memory, whatever the size of the registry.
	if err := s.create(ctx, tx, at, creates, sum); err != nil {
		return err
	}
	for len(updates) > 0 {
		n := min(len(updates), writeSlice)
		versions, err := s.store.PutBatch(ctx, tx, resources(updates[:n]))
		if err != nil {
			return fmt.Errorf("updating follow-up Tasks: %w", err)
		}
		var rec records
		for i, w := range updates[:n] {
			rec.add(w.v, w.res, versions[i].VersionID)
			if w.v.business == Overdue && w.v.task.businessStatus != Overdue {
				rec.notice(w, "overdue")
			}
			sum.Updated++
			sum.count(w.v.status)
		}
		if err := rec.write(ctx, tx, true, at); err != nil {
			return err
		}
		updates = updates[n:]
	}
	return nil
}

// decide sorts visits by what their Tasks need as of today: creates (visits without a Task,
// when creating), updates of the scheduler's own Tasks, and takeovers of coordinators' Tasks
// that an assessment, a death or a withdrawal closes; none of them rendered yet. Coordinators'
// Tasks left alone are counted in sum.
func (s *Tracker) decide(today time.Time, visits []*visit, creating bool, sum *Summary) (creates, updates, takeovers []write) {
	for _, v := range visits {
		status, business, ok := v.want(today)
		if !ok {
			continue
		}
		v.status, v.business = status, business
		switch {
		case v.task == nil:
			if creating {
				creates = append(creates, write{v: v}) // rendered by create, a slice at a time
			}
		case v.task.current != v.task.written:
			// A coordinator's version. It is theirs, except that the visit's end still
			// reaches it: an assessment completes an open Task and a death or withdrawal
			// cancels one, keeping what the coordinator wrote.
			if (status == StatusCompleted || status == StatusCancelled) && stillSought(v.task.currentStatus) {
				takeovers = append(takeovers, write{v: v, from: v.task.current})
				continue
			}
			sum.LeftToCoordinator++
		case v.task.status != status || v.task.businessStatus != business || v.task.output != v.assessment:
			updates = append(updates, write{v: v, from: v.task.written})
		}
	}
	return creates, updates, takeovers
}

// create writes new Tasks for visits, a slice at a time. A goroutine renders and indexes each
// slice while the one before is written: the Go work of one slice and PostgreSQL's of the
// previous one overlap on two cores, rather than taking turns. It is at most two slices ahead,
// and never touches the transaction; a failure on either side stops the other.
func (s *Tracker) create(ctx context.Context, tx pgx.Tx, at time.Time, creates []write, sum *Summary) error {
	type slice struct {
		ws    []write
		batch *fhir.PreparedBatch
	}
	prepared := make(chan slice, 1)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(prepared)
		for len(creates) > 0 {
			n := min(len(creates), writeSlice)
			ws := creates[:n:n]
			creates = creates[n:]
			for i := range ws {
				ws[i].res = s.task(ws[i].v, fhir.NewSequentialID(), at)
			}
			b, err := s.store.PrepareCreates(resources(ws))
			if err != nil {
				return fmt.Errorf("creating follow-up Tasks: %w", err)
			}
			select {
			case prepared <- slice{ws: ws, batch: b}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	g.Go(func() error {
		for p := range prepared {
			versions, err := s.store.CopyBatch(ctx, tx, p.batch)
			if err != nil {
				return fmt.Errorf("creating follow-up Tasks: %w", err)
			}
			var rec records
			for i, w := range p.ws {
				rec.add(w.v, w.res, versions[i].VersionID)
				reason := "new"
				if w.v.business == Overdue { // made late (a history loaded today): it is overdue news
					reason = "overdue"
				}
				rec.notice(w, reason)
				sum.Created++
				sum.count(w.v.status)
			}
			if err := rec.write(ctx, tx, false, at); err != nil {
				return err
			}
		}
		return nil
	})
	return g.Wait()
}

// writeSlice is how many Tasks go to the store in one call.
const writeSlice = 500

func resources(ws []write) []*fhir.Resource {
	out := make([]*fhir.Resource, len(ws))
	for i, w := range ws {
		out[i] = w.res
	}
	return out
}

// stillOurs locks the Tasks about to be updated and drops those whose current version is no
// longer the one the decision was made on: a coordinator wrote in between.
func (s *Tracker) stillOurs(ctx context.Context, tx pgx.Tx, ws []write, sum *Summary) ([]write, error) {
	types, ids := make([]string, len(ws)), make([]string, len(ws))
	for i, w := range ws {
		types[i], ids[i] = "Task", w.v.task.id
	}
	// Joined with the Tasks' keys, type included, so that each is found by resource's key
	// whatever the statistics say about how many Tasks there are.
	rows, err := tx.Query(ctx, `SELECT r.resource_id, r.version_id FROM resource r
		JOIN unnest($1::text[], $2::text[]) AS u(resource_type, resource_id)
			ON r.resource_type = u.resource_type AND r.resource_id = u.resource_id
		ORDER BY r.resource_id FOR UPDATE OF r`, types, ids)
	if err != nil {
		return nil, fmt.Errorf("locking follow-up Tasks: %w", err)
	}
	current := map[string]int{}
	for rows.Next() {
		var id string
		var version int
		if err := rows.Scan(&id, &version); err != nil {
			rows.Close()
			return nil, err
		}
		current[id] = version
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("locking follow-up Tasks: %w", err)
	}
	kept := ws[:0]
	for _, w := range ws {
		if current[w.v.task.id] != w.from {
			sum.LeftToCoordinator++
			continue
		}
		kept = append(kept, w)
	}
	return kept, nil
}

// closeCoordinatorTasks completes or cancels Tasks a coordinator has changed, on top of their
// version: status, output and reason change; their owner, notes and the rest stay.
func (s *Tracker) closeCoordinatorTasks(ctx context.Context, tx pgx.Tx, at time.Time, ws []write) ([]write, error) {
	out := ws[:0]
	for _, w := range ws {
		current, err := s.store.Read(ctx, tx, "Task", w.v.task.id)
		if err != nil {
			return nil, fmt.Errorf("reading a coordinator's follow-up Task: %w", err)
		}
		var body map[string]any
		if err := json.Unmarshal(current.JSON, &body); err != nil {
			return nil, fmt.Errorf("reading a coordinator's follow-up Task: %w", err)
		}
		delete(body, "meta")
		delete(body, "businessStatus")
		ours := s.task(w.v, w.v.task.id, at).Body
		for _, k := range []string{"status", "statusReason", "output", "lastModified"} {
			if val, ok := ours[k]; ok {
				body[k] = val
			} else {
				delete(body, k)
			}
		}
		w.res = &fhir.Resource{Type: "Task", ID: w.v.task.id, Body: body}
		w.from = current.VersionID
		out = append(out, w)
	}
	return out, nil
}

// records are the followup_task rows and notices of a slice of written Tasks, as columns:
// a slice of new Tasks costs one statement for each table, not one per Task.
type records struct {
	// followup_task
	infusionTypes, infusionIDs, milestones, taskIDs, patients, statuses, business, outputs []string
	versions                                                                               []int32
	// followup_task, what the work list reads: of the Task as written (a coordinator's
	// owner and window stay when the scheduler closes their Task)
	sites, currentStatuses, taskOwners []string
	starts, ends                       []*time.Time
	// followup_notice
	owners, noticed, reasons []string
}

// add notes what the scheduler wrote, so the next run can tell its own version from a
// coordinator's, and the work list can find the Task without reading it.
func (r *records) add(v *visit, res *fhir.Resource, version int) {
	r.infusionTypes, r.infusionIDs = append(r.infusionTypes, v.infusionType), append(r.infusionIDs, v.infusionID)
	r.milestones, r.taskIDs, r.patients = append(r.milestones, v.milestone.Code), append(r.taskIDs, res.ID), append(r.patients, v.patient)
	r.statuses, r.business = append(r.statuses, v.status), append(r.business, v.business)
	r.outputs, r.versions = append(r.outputs, v.assessment), append(r.versions, int32(version))
	c := columnsOf(res.Body)
	r.sites, r.currentStatuses, r.taskOwners = append(r.sites, v.site), append(r.currentStatuses, c.status), append(r.taskOwners, c.owner)
	r.starts, r.ends = append(r.starts, c.start), append(r.ends, c.end)
}

// taskColumns are the columns of followup_task that mirror the current Task version.
type taskColumns struct {
	status, owner string
	start, end    *time.Time // the date part of restriction.period; nil when absent
}

// columnsOf reads taskColumns from a Task body. A period bound shorter than a full date (a
// year, a month) counts as absent, and the work list uses the plan's window there instead.
func columnsOf(body map[string]any) taskColumns {
	var c taskColumns
	c.status, _ = body["status"].(string)
	owner, _ := body["owner"].(map[string]any)
	c.owner, _ = owner["reference"].(string)
	restriction, _ := body["restriction"].(map[string]any)
	period, _ := restriction["period"].(map[string]any)
	date := func(key string) *time.Time {
		s, _ := period[key].(string)
		if len(s) < 10 {
			return nil
		}
		t, err := time.Parse(time.DateOnly, s[:10])
		if err != nil {
			return nil
		}
		return &t
	}
	c.start, c.end = date("start"), date("end")
	return c
}

// syncSites files the Tasks of visits whose infusion's site has changed (the infusion names
// another Organization, or the patient's managing organization changed) under the new one.
func syncSites(ctx context.Context, tx pgx.Tx, visits []*visit) error {
	var ids, sites []string
	for _, v := range visits {
		if v.task != nil && v.task.site != v.site {
			ids, sites = append(ids, v.task.id), append(sites, v.site)
			v.task.site = v.site
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE followup_task t SET site_id = u.site
		FROM unnest($1::text[], $2::text[]) AS u(task_id, site) WHERE t.task_id = u.task_id`, ids, sites); err != nil {
		return fmt.Errorf("filing follow-up Tasks under their site: %w", err)
	}
	return nil
}

// notice remembers that a Task's owner must hear of it (new, or newly overdue) in the next
// digest. The key (task, reason) tells each owner once.
func (r *records) notice(w write, reason string) {
	owner, _ := w.res.Body["owner"].(map[string]any)
	ref, _ := owner["reference"].(string)
	if ref == "" || w.v.status != StatusRequested {
		return
	}
	r.owners, r.noticed, r.reasons = append(r.owners, ref), append(r.noticed, w.res.ID), append(r.reasons, reason)
}

// write stores the records: existing says whether the followup_task rows are there to update.
func (r *records) write(ctx context.Context, tx pgx.Tx, existing bool, at time.Time) error {
	batch := &pgx.Batch{}
	if existing {
		// Few, and each found by its key: a statement each keeps that lookup certain.
		for i := range r.taskIDs {
			batch.Queue(`UPDATE followup_task SET status = $4, business_status = $5, output_id = $6, written_version = $7,
				current_version = $7, site_id = $8, current_status = $9, owner = $10, window_start = $11, window_end = $12
				WHERE infusion_type = $1 AND infusion_id = $2 AND milestone = $3`,
				r.infusionTypes[i], r.infusionIDs[i], r.milestones[i], r.statuses[i], r.business[i], r.outputs[i], r.versions[i],
				r.sites[i], r.currentStatuses[i], r.taskOwners[i], r.starts[i], r.ends[i])
		}
	} else if len(r.taskIDs) > 0 {
		// New Tasks, a slice of them: copied, as their resource rows are (fhir.Store.CopyBatch).
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"followup_task"}, []string{"infusion_type", "infusion_id", "milestone",
			"task_id", "patient_id", "status", "business_status", "output_id", "written_version", "current_version",
			"site_id", "current_status", "owner", "window_start", "window_end"}, pgx.CopyFromSlice(len(r.taskIDs), func(i int) ([]any, error) {
			return []any{r.infusionTypes[i], r.infusionIDs[i], r.milestones[i], r.taskIDs[i], r.patients[i], r.statuses[i],
				r.business[i], r.outputs[i], r.versions[i], r.versions[i], r.sites[i], r.currentStatuses[i], r.taskOwners[i], r.starts[i], r.ends[i]}, nil
		})); err != nil {
			return fmt.Errorf("recording follow-up Tasks: %w", err)
		}
	}
	if len(r.noticed) > 0 {
		batch.Queue(`INSERT INTO followup_notice (owner, task_id, reason, noticed_at)
			SELECT o, t, r, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS n(o, t, r)
			ON CONFLICT (task_id, reason) DO NOTHING`, r.owners, r.noticed, r.reasons, at)
	}
	if batch.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("recording follow-up Tasks: %w", err)
	}
	return nil
}

func (sum *Summary) count(status string) {
	switch status {
	case StatusCompleted:
		sum.Completed++
	case StatusCancelled:
		sum.Cancelled++
	}
}

func day(t time.Time) string { return t.Format(time.DateOnly) }

// task is the Task resource for a visit in the given state.
func (s *Tracker) task(v *visit, id string, at time.Time) *fhir.Resource {
	m, status, business := v.milestone, v.status, v.business
	body := map[string]any{
		"resourceType": "Task",
		"identifier": []any{map[string]any{"system": IdentifierSystem,
			"value": v.infusionType + "/" + v.infusionID + "/" + m.Code}},
		"status":      status,
		"intent":      "order",
		"priority":    "routine",
		"code":        map[string]any{"coding": []any{map[string]any{"system": registry.SystemMilestone, "code": m.Code, "display": m.Label}}},
		"for":         map[string]any{"reference": "Patient/" + v.patient},
		"focus":       map[string]any{"reference": v.infusionType + "/" + v.infusionID},
		"authoredOn":  day(v.infused.AddDate(0, 0, m.WindowStart-s.cfg.LeadDays)),
		"restriction": map[string]any{"period": map[string]any{"start": day(v.opens), "end": day(v.closes)}},
		"description": fmt.Sprintf("%s follow-up after the %s infusion of %s: remission assessment between %s and %s (target %s)",
			m.Label, v.product, day(v.infused), day(v.opens), day(v.closes), day(v.infused.AddDate(0, 0, m.TargetDay))),
		"lastModified": at.UTC().Format(time.RFC3339),
	}
	if owner := s.ownerOf(v.site); owner != "" {
		body["owner"] = map[string]any{"reference": owner}
	}
	if business != "" {
		display := map[string]string{Upcoming: "Follow-up visit coming up", Due: "Follow-up visit due", Overdue: "Follow-up visit overdue"}[business]
		body["businessStatus"] = map[string]any{"coding": []any{map[string]any{"system": registry.SystemCartreg, "code": business, "display": display}}}
	}
	switch status {
	case StatusCompleted:
		body["output"] = []any{map[string]any{
			"type":           map[string]any{"text": "remission assessment"},
			"valueReference": map[string]any{"reference": "Observation/" + v.assessment},
		}}
	case StatusCancelled:
		reason := "the patient has died"
		switch {
		case v.dead:
		case v.lost:
			reason = ReasonLost
		case v.withdrawn:
			reason = "the patient has withdrawn from follow-up"
		default:
			reason = "a later CAR-T infusion started a new follow-up sequence"
		}
		body["statusReason"] = map[string]any{"text": reason}
	}
	return &fhir.Resource{Type: "Task", ID: id, Body: body}
}

// ownerOf is who owns a site's Tasks: its coordinator, else the site Organization; "" for
// an infusion with no site.
func (s *Tracker) ownerOf(site string) string {
	if site == "" {
		return ""
	}
	if o, ok := s.cfg.Owners[site]; ok && o != "" {
		return o
	}
	return "Organization/" + site
}

// ParseOwners reads coordinators per site: "org=Practitioner/7,org2=PractitionerRole/3".
func ParseOwners(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		site, owner, ok := strings.Cut(part, "=")
		if !ok || site == "" || !strings.Contains(owner, "/") {
			return nil, fmt.Errorf("coordinator %q: want OrganizationID=Practitioner/ID", part)
		}
		out[strings.TrimPrefix(site, "Organization/")] = owner
	}
	return out, nil
}
