package followup

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/registry"
)

// CodeFollowUpEpisode is the EpisodeOfCare.type (in the registry's CodeSystem) of a patient's
// follow-up after CAR-T: finished or cancelled, it is the patient's withdrawal from follow-up.
const CodeFollowUpEpisode = "car-t-follow-up"

// Hook returns the store write hook that keeps Tasks in step with the writes that end a visit:
// an assessment completes its Task, a death, a withdrawal or a new infusion cancels open ones,
// in the very transaction that records it, so a coordinator never sees a visit as due that was
// done an hour ago. It must run after the registry's projection, whose facts it reads; now is
// the clock.
func (s *Scheduler) Hook(now func() time.Time) fhir.WriteHook { return &hook{s: s, now: now} }

type hook struct {
	s   *Scheduler
	now func() time.Time
}

func (h *hook) BeforeCommit(ctx context.Context, tx pgx.Tx, changes []fhir.Change) error {
	patients := map[string]bool{}
	for _, c := range changes {
		switch c.Type {
		case "Patient":
			patients[c.ID] = true
		case "Observation", "Procedure", "MedicationAdministration":
			if id := referencedPatient(c.Body, "subject"); id != "" {
				patients[id] = true
			}
		case "EpisodeOfCare":
			if err := h.projectEpisode(ctx, tx, c, patients); err != nil {
				return err
			}
		}
	}
	if len(patients) == 0 {
		return nil
	}
	ids := make([]string, 0, len(patients))
	for id := range patients {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	_, err := h.s.RunPatients(ctx, tx, h.now(), ids)
	return err
}

// projectEpisode records or clears a withdrawal from follow-up.
func (h *hook) projectEpisode(ctx context.Context, tx pgx.Tx, c fhir.Change, patients map[string]bool) error {
	rows, err := tx.Query(ctx, `DELETE FROM followup_withdrawal WHERE episode_id = $1 RETURNING patient_id`, c.ID)
	if err != nil {
		return fmt.Errorf("follow-up withdrawal: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("follow-up withdrawal: %w", err)
	}
	for _, id := range ids {
		patients[id] = true
	}
	if c.Body == nil || !isFollowUpEpisode(c.Body) {
		return nil
	}
	patient := referencedPatient(c.Body, "patient")
	status, _ := c.Body["status"].(string)
	if patient == "" || (status != "finished" && status != "cancelled") {
		return nil
	}
	on := h.s.day(h.now())
	if period, ok := c.Body["period"].(map[string]any); ok {
		if end, ok := period["end"].(string); ok && len(end) >= 10 {
			if t, err := time.Parse(time.DateOnly, end[:10]); err == nil {
				on = t
			}
		}
	}
	patients[patient] = true
	if _, err := tx.Exec(ctx, `INSERT INTO followup_withdrawal (episode_id, patient_id, withdrawn_on) VALUES ($1, $2, $3)`,
		c.ID, patient, on); err != nil {
		return fmt.Errorf("follow-up withdrawal: %w", err)
	}
	return nil
}

func isFollowUpEpisode(body map[string]any) bool {
	types, _ := body["type"].([]any)
	for _, t := range types {
		cc, _ := t.(map[string]any)
		codings, _ := cc["coding"].([]any)
		for _, c := range codings {
			coding, _ := c.(map[string]any)
			if coding["system"] == registry.SystemCartreg && coding["code"] == CodeFollowUpEpisode {
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
