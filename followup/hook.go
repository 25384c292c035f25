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
	if err := recordTasks(ctx, tx, changes); err != nil {
		return err
	}
	var observations, infusionTypes, infusionIDs, patients []string
	for _, c := range changes {
		switch c.Type {
		case "Patient":
			// A new Patient has no Tasks: the scheduler makes them later, for infusions.
			if c.VersionID > 1 || c.Body == nil {
				patients = append(patients, c.ID)
			}
		case "Observation":
			// A new Observation that is no remission assessment is in none of the registry's
			// rows that Tasks follow; a changed one may have been one until now.
			if c.VersionID > 1 || c.Body == nil || registry.IsAssessment(c.Body) {
				observations = append(observations, c.ID)
			}
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

// recordedKey marks the context of a scheduler's run, which records every Task it writes in
// followup_task itself (records.add): the hook need not read them back.
type recordedKey struct{}

// recordTasks mirrors written Tasks' version, status, owner and window into their
// followup_task rows: the work list filters and orders by them, so a coordinator's change
// through the FHIR API or the web pages shows at once, and a scheduler run tells a
// coordinator's version from its own by them. A version the scheduler wrote (written_version) is
// already recorded, and a Task that is no follow-up visit has no row.
func recordTasks(ctx context.Context, tx pgx.Tx, changes []fhir.Change) error {
	if recorded, _ := ctx.Value(recordedKey{}).(bool); recorded {
		return nil
	}
	var ids, statuses, owners []string
	var versions []int32
	var starts, ends []*time.Time
	for _, c := range changes {
		if c.Type != "Task" {
			continue
		}
		var col taskColumns // a deletion's: no status, which is stored as NULL
		if c.Body != nil {
			col = columnsOf(c.Body)
		}
		ids, versions = append(ids, c.ID), append(versions, int32(c.VersionID))
		statuses, owners = append(statuses, col.status), append(owners, col.owner)
		starts, ends = append(starts, col.start), append(ends, col.end)
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE followup_task t SET current_version = u.version, current_status = nullif(u.status, ''),
			owner = u.owner, window_start = u.start, window_end = u."end"
		FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::date[], $6::date[]) AS u(task_id, version, status, owner, start, "end")
		WHERE t.task_id = u.task_id AND t.written_version <> u.version`,
		ids, versions, statuses, owners, starts, ends); err != nil {
		return fmt.Errorf("follow-up: recording Tasks for the work list: %w", err)
	}
	return nil
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
