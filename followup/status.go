package followup

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir"
)

// FiveYearsDays is the follow-up spoken of as cure: a milestone whose target is this many days
// after infusion or later, reached alive and progression-free, is five-year survival.
const FiveYearsDays = 5 * 365

// PatientStatus is one patient's follow-up, sequence by sequence (each infusion starts one).
type PatientStatus struct {
	Patient   string     `json:"patient"`
	AsOf      string     `json:"as_of"`
	Sequences []Sequence `json:"sequences"`
	// FiveYearSurvivalReached: some sequence has reached five years alive without
	// progression.
	FiveYearSurvivalReached bool `json:"five_year_survival_reached"`
}

// Sequence is the follow-up after one infusion.
type Sequence struct {
	Infusion  string `json:"infusion"`
	InfusedOn string `json:"infused_on"`
	Product   string `json:"product"`
	Site      string `json:"site,omitempty"`
	// State is "in follow-up", or why it ended: "died", "withdrawn", "lost to follow-up", "progressed" (still
	// followed, but no further milestone can be reached progression-free) or "re-treated".
	State string `json:"state"`
	// LastReached is the last milestone the patient reached alive and without progression: an
	// assessment without progression on or after its window opened (the evidence PFS is
	// censored at), and no progression, death or new infusion before the window.
	LastReached             *MilestoneState  `json:"last_milestone_reached"`
	FiveYearSurvivalReached bool             `json:"five_year_survival_reached"`
	Milestones              []MilestoneState `json:"milestones"`
}

// MilestoneState is one milestone of a sequence.
type MilestoneState struct {
	Code        string `json:"code"`
	Label       string `json:"label"`
	Target      string `json:"target"`
	WindowStart string `json:"window_start"`
	WindowEnd   string `json:"window_end"`
	Task        string `json:"task,omitempty"`
	TaskStatus  string `json:"task_status,omitempty"`
	Response    string `json:"response,omitempty"` // the category of the assessment that counts there
}

// StateLost is a Sequence's State once its patient is lost to follow-up.
const StateLost = "lost to follow-up"

const statusSQL = `SELECT i.resource_type || '/' || i.resource_id, i.infused_on, i.product_label,
	coalesce(i.effective_site_id, ''), i.death_on, i.last_progression_free_on, i.progression_on, i.next_infused_on, i.timepoints,
	(SELECT min(withdrawn_on) FROM followup_withdrawal w WHERE w.patient_id = i.patient_id),
	EXISTS (SELECT 1 FROM followup_withdrawal w WHERE w.patient_id = i.patient_id AND w.lost),
	coalesce((SELECT jsonb_object_agg(t.milestone, t.task_id)
		FROM followup_task t WHERE t.infusion_type = i.resource_type AND t.infusion_id = i.resource_id), '{}')
FROM registry_infusion i WHERE i.patient_id = $1
ORDER BY i.infused_on, i.resource_type, i.resource_id`

// Status is a patient's follow-up as of at; ok is false when the registry has no infusion of
// the patient.
func (s *Tracker) Status(ctx context.Context, db fhir.DBTX, patient string, at time.Time) (*PatientStatus, bool, error) {
	today := s.day(at)
	rows, err := db.Query(ctx, statusSQL, patient)
	if err != nil {
		return nil, false, fmt.Errorf("follow-up status: %w", err)
	}
	defer rows.Close()
	// The rows first, then the current status of all their Tasks in one read of the store.
	type infusionRow struct {
		sq                                                 Sequence
		infused                                            time.Time
		died, progressionFree, progressed, next, withdrawn *time.Time
		lost                                               bool
		timepoints                                         map[string]string
		tasks                                              map[string]string // milestone -> Task id
	}
	var infusions []infusionRow
	var taskIDs []string
	for rows.Next() {
		var r infusionRow
		if err := rows.Scan(&r.sq.Infusion, &r.infused, &r.sq.Product, &r.sq.Site, &r.died, &r.progressionFree, &r.progressed,
			&r.next, &r.timepoints, &r.withdrawn, &r.lost, &r.tasks); err != nil {
			return nil, false, err
		}
		infusions = append(infusions, r)
		for _, id := range r.tasks {
			taskIDs = append(taskIDs, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("follow-up status: %w", err)
	}
	rows.Close()
	current, err := s.store.Current(ctx, db, "Task", taskIDs)
	if err != nil {
		return nil, false, fmt.Errorf("follow-up status: %w", err)
	}
	out := &PatientStatus{Patient: "Patient/" + patient, AsOf: day(today), Sequences: []Sequence{}}
	for _, r := range infusions {
		sq, infused, timepoints := r.sq, r.infused, r.timepoints
		died, progressionFree, progressed, next, withdrawn := r.died, r.progressionFree, r.progressed, r.next, r.withdrawn
		sq.InfusedOn = day(infused)
		// before reports whether t is set and on or before d.
		before := func(t *time.Time, d time.Time) bool { return t != nil && !t.After(d) }
		for _, m := range s.plan.Milestones {
			opens := infused.AddDate(0, 0, m.WindowStart)
			ms := MilestoneState{Code: m.Code, Label: m.Label, Target: day(infused.AddDate(0, 0, m.TargetDay)),
				WindowStart: day(opens), WindowEnd: day(infused.AddDate(0, 0, m.WindowEnd)), Response: timepoints[m.Code]}
			if task, ok := current[r.tasks[m.Code]]; ok { // a deleted Task is none
				ms.Task = "Task/" + task.ID
				var body struct{ Status string }
				_ = json.Unmarshal(task.JSON, &body) // the store holds valid FHIR JSON
				ms.TaskStatus = body.Status
			}
			sq.Milestones = append(sq.Milestones, ms)
			reached := !opens.After(today) && progressionFree != nil && !progressionFree.Before(opens) &&
				!before(died, opens) && !before(progressed, opens) && !before(next, opens)
			if reached {
				last := ms
				sq.LastReached = &last
				if m.TargetDay >= FiveYearsDays {
					sq.FiveYearSurvivalReached = true
				}
			}
		}
		switch {
		case died != nil:
			sq.State = "died"
		case withdrawn != nil && r.lost:
			sq.State = StateLost
		case withdrawn != nil:
			sq.State = "withdrawn"
		case next != nil:
			sq.State = "re-treated"
		case progressed != nil:
			sq.State = "progressed"
		default:
			sq.State = "in follow-up"
		}
		out.FiveYearSurvivalReached = out.FiveYearSurvivalReached || sq.FiveYearSurvivalReached
		out.Sequences = append(out.Sequences, sq)
	}
	return out, len(out.Sequences) > 0, nil
}

func (w *Worklist) getStatus(c echo.Context) error {
	st, ok, err := w.s.Status(c.Request().Context(), w.db, c.Param("id"), w.now())
	if err != nil {
		return err
	}
	if !ok {
		return fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("the registry has no CAR-T infusion of Patient/%s", c.Param("id")))
	}
	c.Response().Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	enc := json.NewEncoder(c.Response())
	if fhir.Pretty(c) {
		enc.SetIndent("", "  ")
	}
	c.Response().WriteHeader(http.StatusOK)
	return enc.Encode(st)
}
