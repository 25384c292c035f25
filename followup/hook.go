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

// CodeLostToFollowUp, as a second EpisodeOfCare.type (in the registry's CodeSystem) of a
// finished follow-up episode, says the patient was lost to follow-up rather than withdrew:
// follow-up ends the same way, and the patient's Tasks say which it was.
const CodeLostToFollowUp = registry.CodeLostToFollowUp

// CodeFollowUpEpisode is the EpisodeOfCare.type (in the registry's CodeSystem) of a patient's
// follow-up after CAR-T: finished or cancelled, it is the patient's withdrawal from follow-up.
const CodeFollowUpEpisode = registry.CodeFollowUpEpisode

// Hook returns the store write hook that keeps Tasks in step with the writes that end a visit:
// an assessment completes its Task, a death, a withdrawal or a new infusion cancels open ones,
// in the very transaction that records it, so a coordinator never sees a visit as due that was
// done an hour ago. It must run after the registry's projection, whose facts it reads; now is
// the clock.
func (s *Tracker) Hook(now func() time.Time) fhir.WriteHook { return &hook{s: s, now: now} }

type hook struct {
	s   *Tracker
	now func() time.Time
}

func (h *hook) BeforeCommit(ctx context.Context, tx pgx.Tx, changes []fhir.Change) error {
	var observations, infusionTypes, infusionIDs, patients []string
	for _, c := range changes {
		switch c.Type {
		case "Patient":
			patients = append(patients, c.ID)
		case "Observation":
			observations = append(observations, c.ID)
		case "Procedure", "MedicationAdministration":
			infusionTypes, infusionIDs = append(infusionTypes, c.Type), append(infusionIDs, c.ID)
		case "EpisodeOfCare":
			var err error
			if patients, err = h.projectEpisode(ctx, tx, c, patients); err != nil {
				return err
			}
		}
	}
	if len(observations)+len(infusionIDs)+len(patients) == 0 {
		return nil
	}
	// Whose Tasks may change is what the registry's projection, which ran first, made of the
	// writes: an Observation that is no assessment, or an infusion of a patient without Tasks,
	// costs this one query and nothing more.
	rows, err := tx.Query(ctx, patientsWithTasksSQL, observations, infusionTypes, infusionIDs, patients)
	if err != nil {
		return fmt.Errorf("follow-up: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(ids) == 0 {
		return err
	}
	_, err = h.s.RunPatients(ctx, tx, h.now(), ids)
	return err
}

// patientsWithTasksSQL: the patients of the written assessments ($1), infusions ($2, $3) and
// patients ($4) who have follow-up Tasks, in a fixed order.
const patientsWithTasksSQL = `SELECT DISTINCT p.patient_id FROM (
	SELECT patient_id FROM registry_assessment WHERE observation_id = ANY($1)
	UNION ALL
	SELECT patient_id FROM registry_infusion WHERE (resource_type, resource_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))
	UNION ALL
	SELECT unnest($4::text[])
) p WHERE EXISTS (SELECT 1 FROM followup_task t WHERE t.patient_id = p.patient_id)
ORDER BY 1`

// projectEpisode records or clears a withdrawal from follow-up, adding the patients it
// concerns (before and after) to patients.
func (h *hook) projectEpisode(ctx context.Context, tx pgx.Tx, c fhir.Change, patients []string) ([]string, error) {
	rows, err := tx.Query(ctx, `DELETE FROM followup_withdrawal WHERE episode_id = $1 RETURNING patient_id`, c.ID)
	if err != nil {
		return nil, fmt.Errorf("follow-up withdrawal: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("follow-up withdrawal: %w", err)
	}
	patients = append(patients, ids...)
	if c.Body == nil || !isFollowUpEpisode(c.Body) {
		return patients, nil
	}
	patient := referencedPatient(c.Body, "patient")
	status, _ := c.Body["status"].(string)
	if patient == "" || (status != "finished" && status != "cancelled") {
		return patients, nil
	}
	on := h.s.day(h.now())
	if period, ok := c.Body["period"].(map[string]any); ok {
		if end, ok := period["end"].(string); ok && len(end) >= 10 {
			if t, err := time.Parse(time.DateOnly, end[:10]); err == nil {
				on = t
			}
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO followup_withdrawal (episode_id, patient_id, withdrawn_on, lost) VALUES ($1, $2, $3, $4)`,
		c.ID, patient, on, hasEpisodeType(c.Body, CodeLostToFollowUp)); err != nil {
		return nil, fmt.Errorf("follow-up withdrawal: %w", err)
	}
	return append(patients, patient), nil
}

func isFollowUpEpisode(body map[string]any) bool { return hasEpisodeType(body, CodeFollowUpEpisode) }

// hasEpisodeType says whether an EpisodeOfCare has code of the registry's CodeSystem among its types.
func hasEpisodeType(body map[string]any, code string) bool {
	types, _ := body["type"].([]any)
	for _, t := range types {
		cc, _ := t.(map[string]any)
		codings, _ := cc["coding"].([]any)
		for _, c := range codings {
			coding, _ := c.(map[string]any)
			if coding["system"] == registry.SystemCartreg && coding["code"] == code {
				return true
			}
		}
	}
	return false
}

// referencedPatient is the id of the local Patient a reference element names, or "".
func referencedPatient(body map[string]any, element string) string {
	ref, _ := body[element].(map[string]any)
	s, _ := ref["reference"].(string)
	id, ok := strings.CutPrefix(s, "Patient/")
	if !ok || strings.Contains(id, "/") {
		return ""
	}
	return id
}
