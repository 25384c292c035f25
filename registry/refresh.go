package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
)

// A patient's registry facts, as refresh loads them.
type patientFacts struct {
	deceasedOn, deceasedUntil *time.Time // the range of days the death may be on; until nil when one day
	managingOrg               *string
	lastContactOn             *time.Time     // as stored
	patientStored             bool           // whether registry_patient has the patient's row
	doses                     []*infusionRow // every infusion, in date order
	infusions                 []*infusionRow // derived: the first dose of each course, in date order
	assessments               []*assessmentRow
	toxicities                []*toxicityRow
	contacts                  []time.Time       // Encounters
	diseases                  map[string]string // condition id -> disease group
	// otherParts are the resources assessments are partOf that exist and are no CAR-T infusion
	// of anyone (the imaging procedure a response was read from).
	otherParts map[string]bool
	// derived
	death *time.Time // the day counted as the death's
}

type infusionRow struct {
	typ, id, product string
	on               time.Time
	conditions       []string
	site             *string
	stored           *string // the course (Type/id) a registry_dose row was stored under; nil for registry_infusion
	// derived
	course                              *infusionRow   // the first dose of the course, when this is a later one
	later                               []*infusionRow // a course's later doses, on its first
	sequence                            int
	disease, effectiveSite              *string
	next, death                         *time.Time
	firstResponse, progression, lastPFS *time.Time
	timepoints                          map[string]string // milestone code -> category of the assessment counted there
}

func (i *infusionRow) ref() string { return i.typ + "/" + i.id }

type toxicityRow struct {
	id          string
	from        time.Time
	until       *time.Time // nil when the onset date is full
	infusionRef *string
	// derived
	onset time.Time
}

type assessmentRow struct {
	id, category string
	on           time.Time
	condition    *string
	infusionRef  *string
	fresh        *assessmentFact // what this transaction writes, for a row store inserts
	// derived
	infusion  *infusionRow
	day       int     // days after the infusion
	milestone *string // the plan's timepoint, nil when unscheduled
	counted   bool    // the assessment that counts at its infusion's milestone
}

// refresh re-derives one patient's registry rows from the patient's facts and checks the
// business rules against them. changed names the resources this transaction wrote, so that an
// issue blames the resource the client sent where it can.
// fresh are the patient's assessments this transaction writes, which are not stored yet.
// bumpVersion moves the registry's data version with the patient's rows (a transaction does
// it once).
func (p *Projection) refresh(ctx context.Context, tx pgx.Tx, patient string, changed map[string]bool, fresh []*assessmentFact, bumpVersion bool) ([]fhir.Issue, error) {
	f, err := loadFacts(ctx, tx, patient)
	if err != nil {
		return nil, err
	}
	f.addFresh(fresh)
	if err := f.findOtherParts(ctx, tx); err != nil {
		return nil, err
	}
	issues := p.derive(patient, f, changed)
	if len(issues) > 0 {
		return issues, nil
	}
	return nil, p.store(ctx, tx, patient, f, bumpVersion)
}

// patientLockSQL takes the transaction's lock on one patient's registry rows.
const patientLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended('cartreg.registry.patient:' || $1, 0))`

func loadFacts(ctx context.Context, tx pgx.Tx, patient string) (*patientFacts, error) {
	f := &patientFacts{diseases: map[string]string{}}
	batch := &pgx.Batch{}
	// One writer at a time per patient: derived rows are computed from all of the patient's
	// facts, so a concurrent writer must see this one's facts before computing its own. The
	// lock goes first in the batch: the reads after it run once it is held, each with a fresh
	// snapshot (read committed), so they see the last holder's commit.
	batch.Queue(patientLockSQL, patient)
	batch.Queue(`SELECT deceased_on, deceased_until, managing_org, last_contact_on FROM registry_patient WHERE patient_id = $1`, patient).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&f.deceasedOn, &f.deceasedUntil, &f.managingOrg, &f.lastContactOn)
		if err == pgx.ErrNoRows {
			return nil
		}
		f.patientStored = err == nil
		return err
	})
	batch.Queue(`SELECT resource_type, resource_id, infused_on, condition_ids, site_id, product, NULL FROM registry_infusion
		WHERE patient_id = $1
		UNION ALL
		SELECT resource_type, resource_id, infused_on, condition_ids, site_id, product, course_type || '/' || course_id
		FROM registry_dose WHERE patient_id = $1
		ORDER BY infused_on, resource_type, resource_id`, patient).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			i := &infusionRow{}
			if err := rows.Scan(&i.typ, &i.id, &i.on, &i.conditions, &i.site, &i.product, &i.stored); err != nil {
				return err
			}
			f.doses = append(f.doses, i)
		}
		return rows.Err()
	})
	batch.Queue(`SELECT observation_id, category, assessed_on, condition_id, infusion_ref FROM registry_assessment
		WHERE patient_id = $1 ORDER BY assessed_on, observation_id`, patient).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			a := &assessmentRow{}
			if err := rows.Scan(&a.id, &a.category, &a.on, &a.condition, &a.infusionRef); err != nil {
				return err
			}
			f.assessments = append(f.assessments, a)
		}
		return rows.Err()
	})
	batch.Queue(`SELECT adverse_event_id, onset_on, onset_until, infusion_ref FROM registry_toxicity WHERE patient_id = $1
		ORDER BY adverse_event_id`, patient).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			t := &toxicityRow{}
			if err := rows.Scan(&t.id, &t.from, &t.until, &t.infusionRef); err != nil {
				return err
			}
			f.toxicities = append(f.toxicities, t)
		}
		return rows.Err()
	})
	batch.Queue(`SELECT contact_on FROM registry_contact WHERE patient_id = $1`, patient).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var t time.Time
			if err := rows.Scan(&t); err != nil {
				return err
			}
			f.contacts = append(f.contacts, t)
		}
		return rows.Err()
	})
	batch.Queue(`SELECT condition_id, disease FROM registry_condition WHERE patient_id = $1`, patient).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var id string
			var disease *string
			if err := rows.Scan(&id, &disease); err != nil {
				return err
			}
			if disease != nil {
				f.diseases[id] = *disease
			}
		}
		return rows.Err()
	})
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return nil, fmt.Errorf("loading registry facts of Patient/%s: %w", patient, err)
	}
	return f, nil
}

// addFresh adds the assessments this transaction writes to those loaded, in the order loaded
// rows come in (date, then id).
func (f *patientFacts) addFresh(fresh []*assessmentFact) {
	if len(fresh) == 0 {
		return
	}
	for _, a := range fresh {
		f.assessments = append(f.assessments, &assessmentRow{id: a.ID, category: a.Category, on: a.On,
			condition: nullable(a.Condition), infusionRef: nullable(a.InfusionRef), fresh: a})
	}
	sort.SliceStable(f.assessments, func(i, j int) bool {
		a, b := f.assessments[i], f.assessments[j]
		if !a.on.Equal(b.on) {
			return a.on.Before(b.on)
		}
		return a.id < b.id
	})
}

// findOtherParts finds which of the resources the patient's assessments are partOf, and that
// are none of the patient's infusions, exist and are no CAR-T infusion of anyone: an
// assessment partOf one of them follows the latest infusion as if it had no partOf. One partOf
// a deleted infusion, or another patient's, is not among them, and stays a broken rule.
func (f *patientFacts) findOtherParts(ctx context.Context, tx pgx.Tx) error {
	own := map[string]bool{}
	for _, d := range f.doses {
		own[d.ref()] = true
	}
	var refs []string
	for _, a := range f.assessments {
		if a.infusionRef != nil && !own[*a.infusionRef] {
			refs = append(refs, *a.infusionRef)
		}
	}
	f.otherParts = map[string]bool{}
	if len(refs) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT ref FROM unnest($1::text[]) AS ref
		WHERE EXISTS (SELECT 1 FROM `+fhir.CurrentRelation+` c
			WHERE c.resource_type = split_part(ref, '/', 1) AND c.resource_id = split_part(ref, '/', 2))
		AND NOT EXISTS (SELECT 1 FROM registry_infusion i
			WHERE i.resource_type = split_part(ref, '/', 1) AND i.resource_id = split_part(ref, '/', 2))
		AND NOT EXISTS (SELECT 1 FROM registry_dose d
			WHERE d.resource_type = split_part(ref, '/', 1) AND d.resource_id = split_part(ref, '/', 2))`, refs)
	if err != nil {
		return fmt.Errorf("reading what assessments are part of: %w", err)
	}
	for rows.Next() {
		var ref string
		if err := rows.Scan(&ref); err != nil {
			rows.Close()
			return err
		}
		f.otherParts[ref] = true
	}
	rows.Close()
	return rows.Err()
}

func date(t time.Time) string { return t.Format("2006-01-02") }

// derive links assessments to infusions and computes each infusion's follow-up facts,
// returning the business rules the facts break.
func (p *Projection) derive(patient string, f *patientFacts, changed map[string]bool) []fhir.Issue {
	var issues []fhir.Issue
	blame := func(resource, expression, format string, args ...any) {
		is := fhir.Issue{Severity: fhir.Error, Code: fhir.BusinessRule, Resource: resource,
			Diagnostics: resource + ": " + fmt.Sprintf(format, args...)}
		if changed[resource] {
			is.Expression = []string{expression}
		}
		issues = append(issues, is)
	}

	f.foldCourses()
	byRef := map[string]*infusionRow{}
	for _, dose := range f.doses {
		if dose.course != nil {
			byRef[dose.ref()] = dose.course
		} else {
			byRef[dose.ref()] = dose
		}
	}
	for n, inf := range f.infusions {
		inf.sequence = n + 1
		if n+1 < len(f.infusions) {
			inf.next = &f.infusions[n+1].on
		}
		// The course's first dose speaks for it; a later dose fills in what it leaves out.
		course := append([]*infusionRow{inf}, inf.later...)
	disease:
		for _, dose := range course {
			for _, c := range dose.conditions {
				if d, ok := f.diseases[c]; ok {
					inf.disease = &d
					break disease
				}
			}
		}
		for _, dose := range course {
			if inf.effectiveSite = dose.site; inf.effectiveSite != nil {
				break
			}
		}
		if inf.effectiveSite == nil {
			inf.effectiveSite = f.managingOrg
		}
	}
	f.imputeDates(byRef)
	if f.deceasedOn != nil {
		until, written := *f.deceasedOn, date(*f.deceasedOn)
		if f.deceasedUntil != nil {
			until, written = *f.deceasedUntil, written+" to "+date(*f.deceasedUntil)
		}
		for _, inf := range f.doses {
			if !until.Before(inf.on) {
				inf.death = f.death
				continue
			}
			patientRef := "Patient/" + patient
			if changed[patientRef] || !changed[inf.ref()] {
				blame(patientRef, "Patient.deceasedDateTime", "the death date %s is before the CAR-T infusion %s on %s",
					written, inf.ref(), date(inf.on))
			} else {
				blame(inf.ref(), inf.typ+".performed", "the infusion date %s is after the patient's death on %s",
					date(inf.on), written)
			}
		}
	}

	for _, a := range f.assessments {
		ref := "Observation/" + a.id
		switch {
		case a.infusionRef != nil && !f.otherParts[*a.infusionRef]:
			a.infusion = byRef[*a.infusionRef]
			if a.infusion == nil {
				blame(ref, "Observation.partOf", "partOf %s is not a CAR-T infusion of Patient/%s", *a.infusionRef, patient)
				continue
			}
		case len(f.infusions) == 0:
			blame(ref, "Observation.subject", "Patient/%s has no CAR-T infusion: a remission assessment follows one", patient)
			continue
		default:
			for _, inf := range f.infusions {
				if !inf.on.After(a.on) {
					a.infusion = inf
				}
			}
			if a.infusion == nil {
				a.infusion = f.infusions[0] // reported just below as dated before it
			}
		}
		if a.on.Before(a.infusion.on) {
			blame(ref, "Observation.effective", "the assessment date %s is before the CAR-T infusion %s on %s",
				date(a.on), a.infusion.ref(), date(a.infusion.on))
			continue
		}
		cat := p.terms.Categories[a.category]
		condition := ""
		if a.condition != nil {
			condition = *a.condition
		} else if len(a.infusion.conditions) > 0 {
			condition = a.infusion.conditions[0]
		}
		disease := p.terms.Disease(f.diseases[condition])
		if disease != nil && cat != nil && !p.terms.InValueSet(ValueSetResponseOf(disease.Scheme), SystemResponse, cat.Code) {
			blame(ref, "Observation.value", "%s (%s) is a %s category, but Condition/%s is %s, assessed by %s",
				cat.Code, cat.Display, p.terms.SchemeNames[cat.Scheme], condition, disease.Display, p.terms.SchemeNames[disease.Scheme])
		}
	}
	if len(issues) > 0 {
		return issues
	}

	for _, a := range f.assessments {
		inf, cat := a.infusion, p.terms.Categories[a.category]
		if cat.Progression && inf.progression == nil {
			on := a.on
			inf.progression = &on
		}
		if cat.Response && inf.firstResponse == nil {
			on := a.on
			inf.firstResponse = &on
		}
	}
	for _, a := range f.assessments {
		inf, cat := a.infusion, p.terms.Categories[a.category]
		if !cat.Progression && (inf.progression == nil || a.on.Before(*inf.progression)) {
			on := a.on
			inf.lastPFS = &on
		}
	}
	p.assignTimepoints(f)
	return nil
}

// assignTimepoints gives each assessment its day and milestone, marks the one that counts at
// each infusion's milestone, and collects those onto the infusion: what assignMilestones,
// markCounted and collectTimepoints do in SQL when the plan changes, done here so that a write
// stores each row once with its final values. The two must agree
// (TestTimepointsAssignedOnWriteAreThoseAPlanChangeAssigns).
func (p *Projection) assignTimepoints(f *patientFacts) {
	for _, inf := range f.infusions {
		inf.timepoints = map[string]string{}
	}
	type slot struct {
		infusion *infusionRow
		code     string
	}
	counted := map[slot]*assessmentRow{}
	for _, a := range f.assessments {
		a.day = int(a.on.Sub(a.infusion.on).Hours() / 24)
		a.milestone, a.counted = nil, false
		m, ok := p.plan.milestoneOn(a.day)
		if !ok {
			continue
		}
		code := m.Code
		a.milestone = &code
		k := slot{a.infusion, code}
		if b := counted[k]; b == nil || countsBefore(a, b, m.TargetDay) {
			counted[k] = a
		}
	}
	for k, a := range counted {
		a.counted = true
		k.infusion.timepoints[k.code] = a.category
	}
}

// countsBefore says whether assessment a counts at a milestone rather than b: nearer the
// target day, the later on a tie, then the first by id (markCounted's order).
func countsBefore(a, b *assessmentRow, target int) bool {
	da, db := abs(a.day-target), abs(b.day-target)
	switch {
	case da != db:
		return da < db
	case a.day != b.day:
		return a.day > b.day
	}
	return a.id < b.id
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// courseDays is how many days after a course's first dose the same product may be given again
// within the course: one infusion recorded twice, or a dose split over consecutive days.
const courseDays = 3

// foldCourses groups the patient's doses into courses: a dose of the product of an earlier
// course's first dose, at most courseDays after it, is part of that course; any other dose
// begins a course of its own. Doses are in date order, so a course's first dose is its earliest
// (on one day, in the order of resource type and id that every outcome query also uses).
func (f *patientFacts) foldCourses() {
	f.infusions = nil
	for _, dose := range f.doses {
		dose.course, dose.later = nil, nil
		for k := len(f.infusions) - 1; k >= 0; k-- {
			first := f.infusions[k]
			if first.product == dose.product && !dose.on.After(first.on.AddDate(0, 0, courseDays)) {
				dose.course = first
				first.later = append(first.later, dose)
				break
			}
		}
		if dose.course == nil {
			f.infusions = append(f.infusions, dose)
		}
	}
}

// imputeDates picks the day counted for each date known only to the month or year (see
// impute): a toxicity's onset, no earlier than the infusion it follows (the one it names, else
// the latest one that can precede it); then the death, no earlier than the last day the
// patient is known alive.
func (f *patientFacts) imputeDates(byRef map[string]*infusionRow) {
	for _, t := range f.toxicities {
		until := t.from
		if t.until != nil {
			until = *t.until
		}
		var floor *time.Time
		if t.infusionRef != nil && byRef[*t.infusionRef] != nil {
			floor = &byRef[*t.infusionRef].on
		} else {
			for _, inf := range f.infusions {
				if !inf.on.After(until) {
					floor = &inf.on
				}
			}
		}
		t.onset = impute(t.from, until, floor)
	}
	f.death = nil
	if f.deceasedOn != nil {
		until := *f.deceasedOn
		if f.deceasedUntil != nil {
			until = *f.deceasedUntil
		}
		death := impute(*f.deceasedOn, until, f.lastAlive())
		f.death = &death
	}
}

// lastAlive is the latest day of a registry event that shows the patient alive: an infusion,
// assessment, toxicity onset or encounter. Run after the toxicities' onsets are imputed.
func (f *patientFacts) lastAlive() *time.Time {
	var dates []time.Time
	for _, i := range f.doses {
		dates = append(dates, i.on)
	}
	for _, a := range f.assessments {
		dates = append(dates, a.on)
	}
	for _, t := range f.toxicities {
		dates = append(dates, t.onset)
	}
	dates = append(dates, f.contacts...)
	if len(dates) == 0 {
		return nil
	}
	sort.Slice(dates, func(i, j int) bool { return dates[i].After(dates[j]) })
	return &dates[0]
}

// lastContact is the latest dated registry event of the patient, the death included: the
// date survival is censored at while the patient is alive.
func (f *patientFacts) lastContact() *time.Time {
	last := f.lastAlive()
	if f.death != nil && (last == nil || f.death.After(*last)) {
		last = f.death
	}
	return last
}

// assignMilestones sets each assessment's timepoint from its day: the milestone whose window
// holds the day, the nearest target first where windows overlap; NULL (unscheduled) when none.
// It, markCounted and collectTimepoints reassign every row when the plan changes; a write
// computes the same for one patient in Go (assignTimepoints).
const assignMilestones = `UPDATE registry_assessment a SET milestone = (
	SELECT p.code FROM unnest($1::text[], $2::int[], $3::int[], $4::int[]) AS p(code, target, first_day, last_day)
	WHERE a.day BETWEEN p.first_day AND p.last_day
	ORDER BY abs(a.day - p.target), p.target LIMIT 1)`

// markCounted marks, for each infusion and milestone, the assessment that counts there: the
// one nearest the target day, the later one on a tie (CIBMTR reports the contact closest to
// the timepoint), so outcome queries need no ranking of their own. Run after assignMilestones.
// Ids compare byte by byte (COLLATE "C"), as Go compares them in assignTimepoints, whatever
// the database's collation.
const markCounted = `WITH ranked AS (
	SELECT a.observation_id, a.milestone IS NOT NULL AND row_number() OVER (
		PARTITION BY a.infusion_type, a.infusion_id, a.milestone
		ORDER BY abs(a.day - p.target), a.day DESC, a.observation_id COLLATE "C") = 1 AS counted
	FROM registry_assessment a LEFT JOIN unnest($1::text[], $2::int[]) AS p(code, target) ON p.code = a.milestone)
UPDATE registry_assessment a SET counted = r.counted FROM ranked r
WHERE a.observation_id = r.observation_id AND a.counted <> r.counted`

// collectTimepoints copies each infusion's counted assessments onto it, milestone by milestone,
// so the response report reads one row per patient and joins nothing. Run after markCounted.
const collectTimepoints = `UPDATE registry_infusion i SET timepoints = t.timepoints
FROM (
	SELECT i.resource_type, i.resource_id, coalesce(jsonb_object_agg(a.milestone, a.category)
		FILTER (WHERE a.observation_id IS NOT NULL), '{}') AS timepoints
	FROM registry_infusion i LEFT JOIN registry_assessment a
		ON a.counted AND a.infusion_type = i.resource_type AND a.infusion_id = i.resource_id
	GROUP BY 1, 2) t
WHERE i.resource_type = t.resource_type AND i.resource_id = t.resource_id AND i.timepoints <> t.timepoints`

func (p *Projection) store(ctx context.Context, tx pgx.Tx, patient string, f *patientFacts, bumpVersion bool) error {
	last := f.lastContact()
	batch := &pgx.Batch{}
	if bumpVersion {
		batch.Queue(bumpDataVersionSQL)
	}
	// A dose whose role changed moves between registry_infusion (a course's first dose, which
	// has follow-up) and registry_dose (a later dose of a course), before the derived columns
	// are written.
	for _, d := range f.doses {
		switch {
		case d.course == nil && d.stored != nil:
			batch.Queue(`WITH d AS (DELETE FROM registry_dose WHERE resource_type = $1 AND resource_id = $2
				RETURNING resource_type, resource_id, patient_id, infused_on, product, product_label, targets, condition_ids, site_id, prior_lines)
				INSERT INTO registry_infusion (resource_type, resource_id, patient_id, infused_on, product, product_label, targets,
					condition_ids, site_id, prior_lines) SELECT * FROM d`, d.typ, d.id)
		case d.course != nil && d.stored == nil:
			batch.Queue(`WITH d AS (DELETE FROM registry_infusion WHERE resource_type = $1 AND resource_id = $2
				RETURNING resource_type, resource_id, patient_id, infused_on, product, product_label, targets, condition_ids, site_id, prior_lines)
				INSERT INTO registry_dose (resource_type, resource_id, patient_id, infused_on, product, product_label, targets,
					condition_ids, site_id, prior_lines, course_type, course_id) SELECT d.*, $3, $4 FROM d`, d.typ, d.id, d.course.typ, d.course.id)
		case d.course != nil && *d.stored != d.course.ref():
			batch.Queue(`UPDATE registry_dose SET course_type = $3, course_id = $4 WHERE resource_type = $1 AND resource_id = $2`,
				d.typ, d.id, d.course.typ, d.course.id)
		}
	}
	// Each row is written once, with its final values, and only when they changed: a
	// patient's new fact changes little of what was derived from the others. The updates
	// name the patient, so that even the generic plan a connection keeps from a new, empty
	// table reads the patient's rows by index rather than the whole table.
	if len(f.infusions) > 0 {
		n := len(f.infusions)
		types, ids, timepoints := make([]string, n), make([]string, n), make([]string, n)
		diseases, sites := make([]*string, n), make([]*string, n)
		sequences := make([]int32, n)
		next, death, first, progression, lastPFS := make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n),
			make([]*time.Time, n), make([]*time.Time, n)
		for k, i := range f.infusions {
			tp, err := json.Marshal(i.timepoints)
			if err != nil {
				return err
			}
			types[k], ids[k], timepoints[k] = i.typ, i.id, string(tp)
			diseases[k], sites[k], sequences[k] = i.disease, i.effectiveSite, int32(i.sequence)
			next[k], death[k], first[k], progression[k], lastPFS[k] = i.next, i.death, i.firstResponse, i.progression, i.lastPFS
		}
		batch.Queue(`UPDATE registry_infusion i SET disease = u.disease, effective_site_id = u.site, sequence = u.sequence,
			next_infused_on = u.next, death_on = u.death, last_contact_on = $12, first_response_on = u.first_response,
			progression_on = u.progression, last_progression_free_on = u.last_pfs, timepoints = u.timepoints::jsonb
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::date[], $7::date[], $8::date[], $9::date[],
			$10::date[], $11::text[]) AS u(type, id, disease, site, sequence, next, death, first_response, progression, last_pfs, timepoints)
		WHERE i.patient_id = $13 AND i.resource_type = u.type AND i.resource_id = u.id
		AND (i.disease, i.effective_site_id, i.sequence, i.next_infused_on, i.death_on, i.last_contact_on, i.first_response_on,
			i.progression_on, i.last_progression_free_on, i.timepoints)
		IS DISTINCT FROM (u.disease, u.site, u.sequence, u.next, u.death, $12::date, u.first_response, u.progression, u.last_pfs,
			u.timepoints::jsonb)`,
			types, ids, diseases, sites, sequences, next, death, first, progression, lastPFS, timepoints, last, patient)
	}
	if len(f.toxicities) > 0 {
		ids, onsets := make([]string, len(f.toxicities)), make([]time.Time, len(f.toxicities))
		for k, t := range f.toxicities {
			ids[k], onsets[k] = t.id, t.onset
		}
		batch.Queue(`UPDATE registry_toxicity t SET onset_imputed_on = u.onset
			FROM unnest($1::text[], $2::date[]) AS u(id, onset)
			WHERE t.patient_id = $3 AND t.adverse_event_id = u.id AND t.onset_imputed_on IS DISTINCT FROM u.onset`, ids, onsets, patient)
	}
	var stored, fresh assessmentColumns
	for _, a := range f.assessments {
		if a.fresh != nil {
			fresh.add(a)
		} else {
			stored.add(a)
		}
	}
	if len(stored.ids) > 0 {
		batch.Queue(`UPDATE registry_assessment a SET infusion_type = u.infusion_type, infusion_id = u.infusion_id, day = u.day,
			milestone = u.milestone, counted = u.counted
		FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bool[])
			AS u(id, infusion_type, infusion_id, day, milestone, counted)
		WHERE a.patient_id = $7 AND a.observation_id = u.id
		AND (a.infusion_type, a.infusion_id, a.day, a.milestone, a.counted)
		IS DISTINCT FROM (u.infusion_type, u.infusion_id, u.day, u.milestone, u.counted)`,
			stored.ids, stored.infusionTypes, stored.infusionIDs, stored.days, stored.milestones, stored.counted, patient)
	}
	if len(fresh.ids) > 0 {
		batch.Queue(`INSERT INTO registry_assessment (observation_id, infusion_type, infusion_id, day, milestone, counted,
			patient_id, assessed_on, category, condition_id, infusion_ref, mrd_negative)
		SELECT u.id, u.infusion_type, u.infusion_id, u.day, u.milestone, u.counted, $7, a.assessed_on, a.category, a.condition_id, a.infusion_ref, a.mrd_negative
		FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bool[])
			WITH ORDINALITY AS u(id, infusion_type, infusion_id, day, milestone, counted, n)
		JOIN unnest($8::date[], $9::text[], $10::text[], $11::text[], $12::bool[])
			WITH ORDINALITY AS a(assessed_on, category, condition_id, infusion_ref, mrd_negative, n) USING (n)`,
			fresh.ids, fresh.infusionTypes, fresh.infusionIDs, fresh.days, fresh.milestones, fresh.counted,
			patient, fresh.on, fresh.categories, fresh.conditions, fresh.infusionRefs, fresh.mrdNegative)
	}
	if !f.patientStored || !sameDay(f.lastContactOn, last) {
		batch.Queue(`INSERT INTO registry_patient (patient_id, last_contact_on) VALUES ($1, $2)
			ON CONFLICT (patient_id) DO UPDATE SET last_contact_on = excluded.last_contact_on`, patient, last)
	}
	if batch.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("storing registry rows of Patient/%s: %w", patient, err)
	}
	return nil
}

// assessmentColumns are assessment rows as the parallel arrays store sends.
type assessmentColumns struct {
	ids, infusionTypes, infusionIDs []string
	days                            []int32
	milestones                      []*string
	counted                         []bool
	// the facts of a fresh row
	on                       []time.Time
	categories               []string
	conditions, infusionRefs []*string
	mrdNegative              []*bool
}

func (c *assessmentColumns) add(a *assessmentRow) {
	c.ids, c.infusionTypes, c.infusionIDs = append(c.ids, a.id), append(c.infusionTypes, a.infusion.typ), append(c.infusionIDs, a.infusion.id)
	c.days, c.milestones, c.counted = append(c.days, int32(a.day)), append(c.milestones, a.milestone), append(c.counted, a.counted)
	if a.fresh != nil {
		c.on, c.categories = append(c.on, a.on), append(c.categories, a.category)
		c.conditions, c.infusionRefs = append(c.conditions, a.condition), append(c.infusionRefs, a.infusionRef)
		c.mrdNegative = append(c.mrdNegative, a.fresh.MRDNegative)
	}
}

func sameDay(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// ApplyPlan reassigns every stored assessment's timepoint when the plan differs from the one
// they were assigned by (a changed configuration). Safe to run from several replicas at once.
func (p *Projection) ApplyPlan(ctx context.Context, store *fhir.Store) error {
	return store.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('cartreg.registry.plan', 0))`); err != nil {
			return err
		}
		var current string
		err := tx.QueryRow(ctx, `SELECT value FROM registry_state WHERE key = 'plan'`).Scan(&current)
		if err != nil && err != pgx.ErrNoRows {
			return err
		}
		if current == p.plan.Digest() {
			return nil
		}
		if err := DataChanged(ctx, tx); err != nil {
			return err
		}
		codes, targets, starts, ends := p.plan.columns()
		if _, err := tx.Exec(ctx, assignMilestones, codes, targets, starts, ends); err != nil {
			return fmt.Errorf("assigning timepoints: %w", err)
		}
		if _, err := tx.Exec(ctx, markCounted, codes, targets); err != nil {
			return fmt.Errorf("marking the assessments that count: %w", err)
		}
		if _, err := tx.Exec(ctx, collectTimepoints); err != nil {
			return fmt.Errorf("collecting timepoints: %w", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO registry_state (key, value) VALUES ('plan', $1)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, p.plan.Digest())
		return err
	})
}
