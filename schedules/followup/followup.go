// Package followup keeps one FHIR Task per infusion and milestone of the follow-up plan: the
// visits coordinators must not miss.
//
// A run derives what should exist from the registry and makes it so, changing only what
// differs: a missed run is caught up by the next, a repeated run writes nothing. A Task a
// coordinator has changed since the scheduler last wrote it is theirs, and left alone.
package followup

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
	// Owners maps a site (Organization id) to the reference of its coordinator
	// ("Practitioner/7"); a site without one owns its Tasks itself.
	Owners map[string]string
}

// Scheduler derives the follow-up Tasks.
type Scheduler struct {
	cfg   Config
	store *fhir.Store
	plan  registry.Plan
}

// New returns a scheduler for the registry's plan.
func New(cfg Config, store *fhir.Store, plan registry.Plan) *Scheduler {
	return &Scheduler{cfg: cfg, store: store, plan: plan}
}

// Summary counts what a run did.
type Summary struct {
	Created, Updated, Completed, Cancelled, LeftToCoordinator int
}

func (s Summary) String() string {
	return fmt.Sprintf("%d created, %d updated (%d completed, %d cancelled), %d left to coordinators",
		s.Created, s.Updated, s.Completed, s.Cancelled, s.LeftToCoordinator)
}

// chunk is how many infusions one transaction of a run handles: small enough to keep memory
// flat over any registry, large enough that round trips do not dominate.
const chunk = 2000

// Run brings every follow-up Task up to date as of at. It works through the infusions in
// chunks, each in a transaction of its own: a run cut short leaves consistent Tasks, and the
// next run finishes the work. Callers run it under the scheduler's job lock (one replica at a
// time); the unique (infusion, milestone) key would refuse a duplicate Task even without it.
func (s *Scheduler) Run(ctx context.Context, at time.Time) (Summary, error) {
	var sum Summary
	today := time.Date(at.Year(), at.Month(), at.Day(), 0, 0, 0, 0, time.UTC)
	after := [2]string{"", ""}
	for {
		var last [2]string
		var n int
		err := s.store.InTx(ctx, func(tx pgx.Tx) error {
			var err error
			last, n, err = s.runChunk(ctx, tx, today, after, &sum)
			return err
		})
		if err != nil {
			return sum, err
		}
		if n < chunk {
			return sum, nil
		}
		after = last
	}
}

// visit is one (infusion, milestone) and what the scheduler last made of it.
type visit struct {
	infusionType, infusionID, patient, product, site string
	infused, opens, closes                           time.Time
	milestone                                        registry.Milestone
	assessment                                       string // the counted Observation, if any
	dead                                             bool
	superseded                                       bool // a later infusion started a new sequence
	task                                             *recorded
	status, business                                 string // what the Task should say
}

type recorded struct {
	id, status, businessStatus, output string
	written, current                   int
}

// want is the state a visit's Task should be in; ok is false when it should have none.
func (v *visit) want(today time.Time) (status, business string, ok bool) {
	switch {
	case v.assessment != "":
		return StatusCompleted, "", true
	case v.dead, v.superseded:
		return StatusCancelled, "", v.task != nil // no new Task, and the open one is cancelled
	case today.Before(v.opens):
		return StatusRequested, Upcoming, true
	case !today.After(v.closes):
		return StatusRequested, Due, true
	default:
		return StatusRequested, Overdue, true
	}
}

const visitsSQL = `WITH infusion AS (
	SELECT * FROM registry_infusion WHERE (resource_type, resource_id) > ($1, $2)
	ORDER BY resource_type, resource_id LIMIT $3
), plan AS (
	SELECT * FROM unnest($4::text[], $5::int[], $6::int[]) WITH ORDINALITY AS p(code, first_day, last_day, ord)
)
SELECT i.resource_type, i.resource_id, i.patient_id, i.product_label, coalesce(i.effective_site_id, ''), i.infused_on,
	p.ord::int, coalesce(a.observation_id, ''), rp.deceased_on IS NOT NULL,
	i.next_infused_on IS NOT NULL,
	t.task_id, t.status, t.business_status, t.output_id, t.written_version, r.version_id
FROM infusion i CROSS JOIN plan p
LEFT JOIN registry_patient rp ON rp.patient_id = i.patient_id
LEFT JOIN registry_assessment a ON a.counted AND a.infusion_type = i.resource_type AND a.infusion_id = i.resource_id
	AND a.milestone = p.code
LEFT JOIN followup_task t ON t.infusion_type = i.resource_type AND t.infusion_id = i.resource_id AND t.milestone = p.code
LEFT JOIN resource r ON r.resource_type = 'Task' AND r.resource_id = t.task_id
WHERE t.task_id IS NOT NULL OR i.infused_on + p.first_day - $7::int <= $8::date
ORDER BY i.resource_type, i.resource_id, p.ord`

func (s *Scheduler) runChunk(ctx context.Context, tx pgx.Tx, today time.Time, after [2]string, sum *Summary) ([2]string, int, error) {
	var codes []string
	var starts, ends []int32
	for _, m := range s.plan.Milestones {
		codes = append(codes, m.Code)
		starts, ends = append(starts, int32(m.WindowStart)), append(ends, int32(m.WindowEnd))
	}
	var last [2]string
	var n int
	// The infusions of the chunk, counted apart: one with no visit due yet still counts.
	err := tx.QueryRow(ctx, `SELECT resource_type, resource_id, count(*) OVER () FROM (
		SELECT resource_type, resource_id FROM registry_infusion WHERE (resource_type, resource_id) > ($1, $2)
		ORDER BY 1, 2 LIMIT $3) c ORDER BY 1 DESC, 2 DESC LIMIT 1`, after[0], after[1], chunk).Scan(&last[0], &last[1], &n)
	if err == pgx.ErrNoRows {
		return last, 0, nil
	}
	if err != nil {
		return last, 0, fmt.Errorf("follow-up chunk: %w", err)
	}
	rows, err := tx.Query(ctx, visitsSQL, after[0], after[1], chunk, codes, starts, ends, s.cfg.LeadDays, today)
	if err != nil {
		return last, 0, fmt.Errorf("follow-up visits: %w", err)
	}
	var visits []*visit
	for rows.Next() {
		v := &visit{}
		var ord int
		var taskID, status, business, output *string
		var written, current *int
		if err := rows.Scan(&v.infusionType, &v.infusionID, &v.patient, &v.product, &v.site, &v.infused, &ord,
			&v.assessment, &v.dead, &v.superseded, &taskID, &status, &business, &output, &written, &current); err != nil {
			rows.Close()
			return last, 0, err
		}
		v.milestone = s.plan.Milestones[ord-1]
		v.opens = v.infused.AddDate(0, 0, v.milestone.WindowStart)
		v.closes = v.infused.AddDate(0, 0, v.milestone.WindowEnd)
		if taskID != nil {
			v.task = &recorded{id: *taskID, status: *status, businessStatus: *business, output: *output, written: *written}
			if current != nil {
				v.task.current = *current
			}
		}
		visits = append(visits, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return last, 0, fmt.Errorf("follow-up visits: %w", err)
	}
	return last, n, s.apply(ctx, tx, today, visits, sum)
}

// apply writes the Tasks that differ from what they should be.
func (s *Scheduler) apply(ctx context.Context, tx pgx.Tx, today time.Time, visits []*visit, sum *Summary) error {
	var creates, updates []*fhir.Resource
	var created, updated []*visit
	for _, v := range visits {
		status, business, ok := v.want(today)
		if !ok {
			continue
		}
		v.status, v.business = status, business
		if v.task == nil {
			res := s.task(v, fhir.NewID(), status, business, today)
			creates, created = append(creates, res), append(created, v)
			continue
		}
		if v.task.current != v.task.written {
			sum.LeftToCoordinator++
			continue
		}
		if v.task.status == status && v.task.businessStatus == business && v.task.output == v.assessment {
			continue
		}
		updates, updated = append(updates, s.task(v, v.task.id, status, business, today)), append(updated, v)
	}
	if len(updates) > 0 {
		// A coordinator may have changed a Task since the visits were read: lock the Tasks and
		// drop those that are no longer the scheduler's.
		ids := make([]string, len(updated))
		for i, v := range updated {
			ids[i] = v.task.id
		}
		current := map[string]int{}
		rows, err := tx.Query(ctx, `SELECT resource_id, version_id FROM resource WHERE resource_type = 'Task'
			AND resource_id = ANY($1) ORDER BY resource_id FOR UPDATE`, ids)
		if err != nil {
			return fmt.Errorf("locking follow-up Tasks: %w", err)
		}
		for rows.Next() {
			var id string
			var version int
			if err := rows.Scan(&id, &version); err != nil {
				rows.Close()
				return err
			}
			current[id] = version
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("locking follow-up Tasks: %w", err)
		}
		keepRes, keepVisits := updates[:0], updated[:0]
		for i, v := range updated {
			if current[v.task.id] != v.task.written {
				sum.LeftToCoordinator++
				continue
			}
			keepRes, keepVisits = append(keepRes, updates[i]), append(keepVisits, v)
		}
		updates, updated = keepRes, keepVisits
	}

	batch := &pgx.Batch{}
	if len(creates) > 0 {
		versions, err := s.store.CreateBatch(ctx, tx, creates)
		if err != nil {
			return fmt.Errorf("creating follow-up Tasks: %w", err)
		}
		for i, v := range created {
			s.record(batch, v, creates[i].ID, versions[i].VersionID, false)
			sum.Created++
			sum.count(v.status)
		}
	}
	if len(updates) > 0 {
		versions, err := s.store.PutBatch(ctx, tx, updates)
		if err != nil {
			return fmt.Errorf("updating follow-up Tasks: %w", err)
		}
		for i, v := range updated {
			s.record(batch, v, v.task.id, versions[i].VersionID, true)
			sum.Updated++
			sum.count(v.status)
		}
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

// record notes what the scheduler wrote, so the next run can tell its own version from a
// coordinator's.
func (s *Scheduler) record(batch *pgx.Batch, v *visit, taskID string, version int, existing bool) {
	status, business := v.status, v.business
	if existing {
		batch.Queue(`UPDATE followup_task SET status = $4, business_status = $5, output_id = $6, written_version = $7
			WHERE infusion_type = $1 AND infusion_id = $2 AND milestone = $3`,
			v.infusionType, v.infusionID, v.milestone.Code, status, business, v.assessment, version)
		return
	}
	batch.Queue(`INSERT INTO followup_task (infusion_type, infusion_id, milestone, task_id, patient_id, status,
		business_status, output_id, written_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		v.infusionType, v.infusionID, v.milestone.Code, taskID, v.patient, status, business, v.assessment, version)
}

func day(t time.Time) string { return t.Format(time.DateOnly) }

// task is the Task resource for a visit in the given state.
func (s *Scheduler) task(v *visit, id, status, business string, today time.Time) *fhir.Resource {
	m := v.milestone
	owner := "Organization/" + v.site
	if o, ok := s.cfg.Owners[v.site]; ok && o != "" {
		owner = o
	}
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
		"lastModified": today.Format(time.RFC3339),
	}
	if v.site != "" {
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
		if !v.dead {
			reason = "a later CAR-T infusion started a new follow-up sequence"
		}
		body["statusReason"] = map[string]any{"text": reason}
	}
	return &fhir.Resource{Type: "Task", ID: id, Body: body}
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
