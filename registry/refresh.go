package registry

import (
	"context"
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
	// derived
	infusion *infusionRow
}

// refresh re-derives one patient's registry rows from the patient's facts and checks the
// business rules against them. changed names the resources this transaction wrote, so that an
// issue blames the resource the client sent where it can. bumpVersion moves the registry's
// data version with the patient's rows (a transaction does it once).
func (p *Projection) refresh(ctx context.Context, tx pgx.Tx, patient string, changed map[string]bool, bumpVersion bool) ([]fhir.Issue, error) {
	f, err := loadFacts(ctx, tx, patient)
	if err != nil {
		return nil, err
	}
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
	batch.Queue(`SELECT deceased_on, deceased_until, managing_org FROM registry_patient WHERE patient_id = $1`, patient).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&f.deceasedOn, &f.deceasedUntil, &f.managingOrg)
		if err == pgx.ErrNoRows {
			return nil
		}
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
	return nil
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
// One statement serves one patient at write time and every row when the plan changes.
const assignMilestones = `UPDATE registry_assessment a SET milestone = (
	SELECT p.code FROM unnest($1::text[], $2::int[], $3::int[], $4::int[]) AS p(code, target, first_day, last_day)
	WHERE a.day BETWEEN p.first_day AND p.last_day
	ORDER BY abs(a.day - p.target), p.target LIMIT 1)`

// markCounted marks, for each infusion and milestone, the assessment that counts there: the
// one nearest the target day, the later one on a tie (CIBMTR reports the contact closest to
// the timepoint), so outcome queries need no ranking of their own. Run after assignMilestones,
// on the same rows: scope is the condition on registry_assessment a that picks them.
//
// Each scope is a statement of its own, not one statement with "$3 IS NULL OR
// a.patient_id = $3": PostgreSQL may cache a generic plan for that form, which scans every
// row however few it needs, and writes run this once per Bundle.
func markCounted(scope string) string {
	return `WITH ranked AS (
	SELECT a.observation_id, a.milestone IS NOT NULL AND row_number() OVER (
		PARTITION BY a.infusion_type, a.infusion_id, a.milestone
		ORDER BY abs(a.day - p.target), a.day DESC, a.observation_id) = 1 AS counted
	FROM registry_assessment a LEFT JOIN unnest($1::text[], $2::int[]) AS p(code, target) ON p.code = a.milestone
	WHERE ` + scope + `)
UPDATE registry_assessment a SET counted = r.counted FROM ranked r
WHERE a.observation_id = r.observation_id AND a.counted <> r.counted`
}

// collectTimepoints copies each infusion's counted assessments onto it, milestone by milestone,
// so the response report reads one row per patient and joins nothing. Run after markCounted;
// scope is the condition on registry_infusion i that picks the infusions.
func collectTimepoints(scope string) string {
	return `UPDATE registry_infusion i SET timepoints = t.timepoints
FROM (
	SELECT i.resource_type, i.resource_id, coalesce(jsonb_object_agg(a.milestone, a.category)
		FILTER (WHERE a.observation_id IS NOT NULL), '{}') AS timepoints
	FROM registry_infusion i LEFT JOIN registry_assessment a
		ON a.counted AND a.infusion_type = i.resource_type AND a.infusion_id = i.resource_id
	WHERE ` + scope + `
	GROUP BY 1, 2) t
WHERE i.resource_type = t.resource_type AND i.resource_id = t.resource_id AND i.timepoints <> t.timepoints`
}

// The statements for one patient's rows, the write path's, and for every row, a plan change's.
var (
	markCountedForPatient       = markCounted("a.patient_id = $3")
	markCountedForAll           = markCounted("true")
	collectTimepointsForPatient = collectTimepoints("i.patient_id = $1")
	collectTimepointsForAll     = collectTimepoints("true")
)

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
	for _, i := range f.infusions {
		batch.Queue(`UPDATE registry_infusion SET disease = $3, effective_site_id = $4, sequence = $5, next_infused_on = $6,
			death_on = $7, last_contact_on = $8, first_response_on = $9, progression_on = $10, last_progression_free_on = $11
			WHERE resource_type = $1 AND resource_id = $2`,
			i.typ, i.id, i.disease, i.effectiveSite, i.sequence, i.next, i.death, last, i.firstResponse, i.progression, i.lastPFS)
	}
	for _, t := range f.toxicities {
		batch.Queue(`UPDATE registry_toxicity SET onset_imputed_on = $2 WHERE adverse_event_id = $1
			AND onset_imputed_on IS DISTINCT FROM $2`, t.id, t.onset)
	}
	for _, a := range f.assessments {
		day := int(a.on.Sub(a.infusion.on).Hours() / 24)
		batch.Queue(`UPDATE registry_assessment SET infusion_type = $2, infusion_id = $3, day = $4 WHERE observation_id = $1`,
			a.id, a.infusion.typ, a.infusion.id, day)
	}
	if len(f.assessments) > 0 {
		codes, targets, starts, ends := p.plan.columns()
		batch.Queue(assignMilestones+` WHERE a.patient_id = $5`, codes, targets, starts, ends, patient)
		batch.Queue(markCountedForPatient, codes, targets, patient)
	}
	batch.Queue(collectTimepointsForPatient, patient)
	batch.Queue(`INSERT INTO registry_patient (patient_id, last_contact_on) VALUES ($1, $2)
		ON CONFLICT (patient_id) DO UPDATE SET last_contact_on = excluded.last_contact_on`, patient, last)
	if err := tx.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("storing registry rows of Patient/%s: %w", patient, err)
	}
	return nil
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
		if _, err := tx.Exec(ctx, markCountedForAll, codes, targets); err != nil {
			return fmt.Errorf("marking the assessments that count: %w", err)
		}
		if _, err := tx.Exec(ctx, collectTimepointsForAll); err != nil {
			return fmt.Errorf("collecting timepoints: %w", err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO registry_state (key, value) VALUES ('plan', $1)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, p.plan.Digest())
		return err
	})
}
