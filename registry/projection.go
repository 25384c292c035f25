package registry

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
)

// Projection keeps the registry tables in step with the FHIR data. It is the FHIR store's
// write hook: every transaction that writes a registry resource updates the facts read from
// it, then re-derives everything about each patient concerned (which infusion an assessment
// follows, its day and timepoint, progression and last contact) and checks the registry's
// business rules, before the transaction commits. A broken rule is a 422 and nothing is
// written.
type Projection struct {
	terms *Terminology
	plan  Plan
	base  string
}

// NewProjection returns the projection for a plan; base is the server's FHIR base URL, so
// absolute references to it count as local.
func NewProjection(terms *Terminology, plan Plan, base string) *Projection {
	if base != "" && !strings.HasSuffix(base, "/") {
		base += "/"
	}
	return &Projection{terms: terms, plan: plan, base: base}
}

// Plan is the follow-up plan timepoints are assigned by.
func (p *Projection) Plan() Plan { return p.plan }

// Terminology is the registry's terminology.
func (p *Projection) Terminology() *Terminology { return p.terms }

var watched = map[string]bool{
	"Patient": true, "Organization": true, "Condition": true, "Procedure": true,
	"MedicationAdministration": true, "Observation": true, "AdverseEvent": true, "Encounter": true,
	"EpisodeOfCare": true,
}

// BeforeCommit implements fhir.WriteHook.
func (p *Projection) BeforeCommit(ctx context.Context, tx pgx.Tx, changes []fhir.Change) error {
	r := &reader{terms: p.terms, base: p.base}
	batch := &pgx.Batch{}
	touched := map[string]bool{}
	changed := map[string]bool{}
	fresh := map[string][]*assessmentFact{} // by patient: assessments this transaction writes
	// unattached: rows the outcome reports read (sites, ends of follow-up) changed without
	// re-deriving any patient, so the data version moves here rather than in a refresh.
	unattached := false
	for _, c := range changes {
		if !watched[c.Type] {
			continue
		}
		changed[c.Type+"/"+c.ID] = true
		// A resource's first version has no registry row from an earlier one to remove.
		first := c.VersionID == 1
		switch c.Type {
		case "Patient":
			if c.Body == nil {
				touched[c.ID] = true
				batch.Queue(`DELETE FROM registry_patient WHERE patient_id = $1`, c.ID)
				continue
			}
			f := r.patient(c.ID, c.Body)
			// A new Patient alone has nothing to derive but a death's day as its last
			// contact: without one, the row written here is the whole of it. A fact of the
			// Patient in the same transaction touches it.
			if !first || f.DeceasedOn != nil {
				touched[c.ID] = true
			}
			batch.Queue(`INSERT INTO registry_patient (patient_id, deceased_on, deceased_until, managing_org, birth_on) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (patient_id) DO UPDATE SET deceased_on = excluded.deceased_on, deceased_until = excluded.deceased_until,
					managing_org = excluded.managing_org, birth_on = excluded.birth_on`,
				f.ID, f.DeceasedOn, f.DeceasedUntil, nullable(f.ManagingOrg), f.BirthOn)
		case "Organization":
			unattached = true
			if c.Body == nil {
				batch.Queue(`DELETE FROM registry_site WHERE organization_id = $1`, c.ID)
				continue
			}
			name := str(c.Body, "name")
			if name == "" {
				name = "Organization/" + c.ID
			}
			batch.Queue(`INSERT INTO registry_site (organization_id, name) VALUES ($1, $2)
				ON CONFLICT (organization_id) DO UPDATE SET name = excluded.name`, c.ID, name)
		case "Condition":
			if !first {
				batch.Queue(`DELETE FROM registry_condition WHERE condition_id = $1 RETURNING patient_id`, c.ID)
			}
			if c.Body == nil {
				continue
			}
			if f := r.condition(c.ID, c.Body); f != nil {
				touched[f.Patient] = true
				batch.Queue(`INSERT INTO registry_condition (condition_id, patient_id, disease) VALUES ($1, $2, $3)`, f.ID, f.Patient, f.Disease)
			}
		case "Procedure", "MedicationAdministration":
			if !first {
				batch.Queue(`DELETE FROM registry_infusion WHERE resource_type = $1 AND resource_id = $2 RETURNING patient_id`, c.Type, c.ID)
				batch.Queue(`DELETE FROM registry_dose WHERE resource_type = $1 AND resource_id = $2 RETURNING patient_id`, c.Type, c.ID)
			}
			if c.Body == nil {
				continue
			}
			if f := r.infusion(c.Type, c.ID, c.Body); f != nil && f.Patient != "" {
				touched[f.Patient] = true
				batch.Queue(`INSERT INTO registry_infusion (resource_type, resource_id, patient_id, infused_on, product,
					product_label, targets, condition_ids, site_id, prior_lines) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
					f.Type, f.ID, f.Patient, f.On, f.Product, f.ProductLabel, nonNil(f.Targets), nonNil(f.Conditions), nullable(f.Site), f.PriorLines)
			}
		case "Observation":
			if !first {
				batch.Queue(`DELETE FROM registry_assessment WHERE observation_id = $1 RETURNING patient_id`, c.ID)
			}
			if c.Body == nil {
				continue
			}
			// Written by store with its derived columns, once they are known: one write
			// of the row instead of an insert and the updates that complete it.
			if f := r.assessment(c.ID, c.Body); f != nil && f.Patient != "" && f.Category != "" {
				touched[f.Patient] = true
				fresh[f.Patient] = append(fresh[f.Patient], f)
			}
		case "AdverseEvent":
			if !first {
				batch.Queue(`DELETE FROM registry_toxicity WHERE adverse_event_id = $1 RETURNING patient_id`, c.ID)
			}
			if c.Body == nil {
				continue
			}
			if f := r.toxicity(c.ID, c.Body); f != nil && f.Patient != "" {
				touched[f.Patient] = true
				batch.Queue(`INSERT INTO registry_toxicity (adverse_event_id, patient_id, kind, grade, onset_on, onset_until, infusion_ref)
					VALUES ($1, $2, $3, $4, $5, $6, $7)`, f.ID, f.Patient, f.Kind, f.Grade, f.On, f.Until, nullable(f.InfusionRef))
			}
		case "EpisodeOfCare":
			unattached = true
			if !first {
				batch.Queue(`DELETE FROM registry_follow_up_end WHERE episode_id = $1`, c.ID)
			}
			if c.Body == nil {
				continue
			}
			if f := r.followUpEnd(c.ID, c.Body); f != nil {
				batch.Queue(`INSERT INTO registry_follow_up_end (episode_id, patient_id, ended_on, reason) VALUES ($1, $2, $3, $4)`,
					f.ID, f.Patient, f.On, f.Reason)
			}
		case "Encounter":
			if !first {
				batch.Queue(`DELETE FROM registry_contact WHERE encounter_id = $1 RETURNING patient_id`, c.ID)
			}
			if c.Body == nil {
				continue
			}
			if f := r.contact(c.ID, c.Body); f != nil {
				touched[f.Patient] = true
				batch.Queue(`INSERT INTO registry_contact (encounter_id, patient_id, contact_on) VALUES ($1, $2, $3)`, f.ID, f.Patient, f.On)
			}
		}
	}
	if len(r.issues) > 0 {
		return &fhir.Outcome{Status: http.StatusUnprocessableEntity, Issues: r.issues}
	}
	// The data version moves with any change the outcome reports can see, once: here for
	// unattached rows, else in the first patient's refresh below. An Observation that is no
	// assessment, or a new Patient alone (in no course yet), moves nothing.
	if unattached {
		batch.Queue(bumpDataVersionSQL)
	}
	if batch.Len() > 0 {
		if err := p.sendCollecting(ctx, tx, batch, touched); err != nil {
			return err
		}
	}

	patients := make([]string, 0, len(touched))
	for id := range touched {
		patients = append(patients, id)
	}
	sort.Strings(patients) // a fixed lock order: two writers never wait on each other in a cycle
	var issues []fhir.Issue
	for i, id := range patients {
		found, err := p.refresh(ctx, tx, id, changed, fresh[id], i == 0 && !unattached)
		if err != nil {
			return err
		}
		issues = append(issues, found...)
	}
	if len(issues) > 0 {
		return &fhir.Outcome{Status: http.StatusUnprocessableEntity, Issues: issues}
	}
	return nil
}

// sendCollecting runs the batch, adding the patients of deleted facts (the RETURNING rows) to
// touched: a fact that moved to another patient, or went away, changes its old patient too.
func (p *Projection) sendCollecting(ctx context.Context, tx pgx.Tx, batch *pgx.Batch, touched map[string]bool) error {
	results := tx.SendBatch(ctx, batch)
	for _, q := range batch.QueuedQueries {
		if !strings.Contains(q.SQL, "RETURNING patient_id") {
			if _, err := results.Exec(); err != nil {
				results.Close()
				return fmt.Errorf("registry projection: %w", err)
			}
			continue
		}
		rows, err := results.Query()
		if err != nil {
			results.Close()
			return fmt.Errorf("registry projection: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				results.Close()
				return err
			}
			touched[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			results.Close()
			return fmt.Errorf("registry projection: %w", err)
		}
	}
	return results.Close()
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
