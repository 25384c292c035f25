package registry

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// AnalysisColumn is one column of the de-identified analysis file, as its data dictionary
// describes it.
type AnalysisColumn struct {
	Name        string `json:"name"`
	Type        string `json:"type"` // string, integer, boolean
	Description string `json:"description"`
}

// AnalysisDictionary describes every column of the analysis file but the per-milestone ones,
// which AnalysisColumns adds for the configured plan.
var analysisDictionary = []AnalysisColumn{
	{"study_id", "string", "Pseudonym of the patient, new for every export: an HMAC-SHA-256 of the patient's id under a random key that is never stored, so two exports cannot be linked, nor a row to a patient"},
	{"site_code", "string", "Pseudonym of the treating site, new for every export (as study_id)"},
	{"infusion_year", "integer", "Calendar year of the infusion (day 0); the only calendar date in the file"},
	{"disease", "string", "Disease group (registry CodeSystem disease-group), 'unclassified' when not known"},
	{"product", "string", "CAR-T product, by name"},
	{"targets", "string", "Target antigens of the product, joined with '+'"},
	{"age_band", "string", "Age at infusion: <18, 18–39, 40–64, 65–74, 75+ (so no one over 89 is singled out), or unknown"},
	{"prior_lines", "integer", "Lines of therapy before CAR-T; empty when not recorded"},
	{"os_days", "integer", "Overall survival: days from infusion to death, or to last contact when alive"},
	{"os_event", "integer", "1 death, 0 censored"},
	{"pfs_days", "integer", "Progression-free survival: days to progression, relapse or death, or to the last assessment without progression"},
	{"pfs_event", "integer", "1 progression, relapse or death; 0 censored"},
	{"relapse_cause", "integer", "Competing risks on pfs_days: 1 progression or relapse, 2 death without it, 0 censored"},
	{"dor_days", "integer", "Duration of response, responders only: days from first response to progression or death, or censoring; empty for non-responders"},
	{"dor_event", "integer", "1 progression or death after response, 0 censored; empty for non-responders"},
	{"best_response", "string", "Best response category from infusion to first progression (registry CodeSystem response-category); empty when never assessed"},
	{"mrd_negative", "boolean", "A negative MRD result at any assessment; empty when never tested"},
	{"crs_max_grade", "string", "Worst ASTCT grade of CRS after this infusion: 0 none, 1–5, or ungraded"},
	{"icans_max_grade", "string", "Worst ASTCT grade of ICANS after this infusion: 0 none, 1–5, or ungraded"},
	{"follow_up_ended", "string", "lost or withdrawn when follow-up ended early; empty otherwise"},
	{"follow_up_ended_days", "integer", "Days from infusion to that end; empty otherwise"},
}

// AnalysisColumns is the analysis file's data dictionary for plan: the fixed columns, then
// one per milestone.
func AnalysisColumns(plan Plan) []AnalysisColumn {
	out := append([]AnalysisColumn(nil), analysisDictionary...)
	for _, m := range plan.Milestones {
		out = append(out, AnalysisColumn{"response_" + m.Code, "string", fmt.Sprintf(
			"%s (days %d–%d): the response category of the assessment that counts there, or where the patient stood: "+
				"not_yet_due, dead_before, progressed_before, lost, withdrawn, pending or missing (as the response report counts)",
			m.Label, m.WindowStart, m.WindowEnd)})
	}
	return out
}

// analysisSQL reads every selected course with what its row needs; the survival dates are
// those survival reads, the milestones' standing is worked out by standingDays.standing, as the response report's is.
var analysisSQL = `, ` + endedCTE + `
SELECT c.patient_id, coalesce(i.effective_site_id, ''), c.infused_on, c.death_on, c.last_contact_on, c.progression_on,
	c.last_progression_free_on, c.first_response_on, c.next_infused_on, coalesce(c.timepoints, '{}'::jsonb),
	coalesce(i.disease, 'unclassified'), i.product_label, i.targets, i.prior_lines,
	` + ageBandSQL("c.infused_on") + `,
	e.ended_on, e.reason,
	(SELECT array_agg(a.category) FROM registry_assessment a
	 WHERE a.infusion_type = c.resource_type AND a.infusion_id = c.resource_id AND a.day >= 0
	   AND (c.progression_on IS NULL OR a.assessed_on <= c.progression_on)),
	(SELECT bool_or(a.mrd_negative) FROM registry_assessment a
	 WHERE a.infusion_type = c.resource_type AND a.infusion_id = c.resource_id AND a.day >= 0),
	(SELECT CASE WHEN count(*) = 0 THEN '0' ELSE coalesce(max(t.grade)::text, 'ungraded') END FROM registry_toxicity t
	 WHERE t.patient_id = c.patient_id AND t.kind = 'crs' AND t.onset_imputed_on >= c.infused_on
	   AND (c.next_infused_on IS NULL OR t.onset_imputed_on < c.next_infused_on)),
	(SELECT CASE WHEN count(*) = 0 THEN '0' ELSE coalesce(max(t.grade)::text, 'ungraded') END FROM registry_toxicity t
	 WHERE t.patient_id = c.patient_id AND t.kind = 'icans' AND t.onset_imputed_on >= c.infused_on
	   AND (c.next_infused_on IS NULL OR t.onset_imputed_on < c.next_infused_on))
FROM course c
JOIN registry_infusion i ON i.resource_type = c.resource_type AND i.resource_id = c.resource_id
LEFT JOIN registry_patient p ON p.patient_id = c.patient_id
LEFT JOIN ended e ON e.patient_id = c.patient_id AND e.ended_on >= c.infused_on
ORDER BY c.infused_on, c.patient_id`

// Analysis writes the de-identified analysis file of the selected courses as of asOf to emit,
// a row at a time in the order of AnalysisColumns(plan): one row per course (each patient's
// first infusion in the selection), dates as days from the infusion, patients and sites under
// pseudonyms keyed anew for this export. Rows are read from the database as emit takes them,
// so memory does not grow with the cohort: emit must not keep row, which the next one reuses.
// It returns how many rows emit took; an error from emit ends the export with it.
func (r *Registry) Analysis(ctx context.Context, f Filter, asOf time.Time, emit func(row []string) error) (int, error) {
	with, err := courses("", f)
	if err != nil {
		return 0, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return 0, err
	}
	pseudonym := func(kind, id string) string {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(kind + "\x00" + id))
		return hex.EncodeToString(mac.Sum(nil)[:8])
	}
	if r.cfg.Location != nil {
		asOf = asOf.In(r.cfg.Location)
	}
	today := time.Date(asOf.Year(), asOf.Month(), asOf.Day(), 0, 0, 0, 0, time.UTC)
	n := 0
	var row []string
	err = r.analytic(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, with+analysisSQL, f.args()...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var patient, site, disease, product, ageBand, crs, icans string
			var c courseDates
			var timepoints map[string]string
			var targets, categories []string
			var priorLines *int
			var ended *time.Time
			var endReason *string
			var mrd *bool
			if err := rows.Scan(&patient, &site, &c.infused, &c.death, &c.lastContact, &c.progression, &c.lastPF,
				&c.firstResponse, &c.nextInfusion, &timepoints, &disease, &product, &targets, &priorLines, &ageBand,
				&ended, &endReason, &categories, &mrd, &crs, &icans); err != nil {
				return err
			}
			os, _ := c.observation(EndpointOS)
			pfs, _ := c.observation(EndpointPFS)
			relapse := c.competing(IncidenceRelapse, nil)
			row = append(row[:0], pseudonym("patient", patient), "", strconv.Itoa(c.infused.Year()), disease, product,
				joinPlus(targets), ageBand, optInt(priorLines),
				num(os.Time), flag(os.Event), num(pfs.Time), flag(pfs.Event), strconv.Itoa(relapse.Cause))
			if site != "" {
				row[1] = pseudonym("site", site)
			}
			if dor, ok := c.observation(EndpointDOR); ok {
				row = append(row, num(dor.Time), flag(dor.Event))
			} else {
				row = append(row, "", "")
			}
			var best *Category
			for _, code := range categories {
				if cat := r.terms.Categories[code]; cat != nil && (best == nil || cat.Rank < best.Rank) {
					best = cat
				}
			}
			if best != nil {
				row = append(row, best.Code)
			} else {
				row = append(row, "")
			}
			switch {
			case mrd == nil:
				row = append(row, "")
			default:
				row = append(row, strconv.FormatBool(*mrd))
			}
			row = append(row, crs, icans)
			if ended != nil && endReason != nil {
				row = append(row, *endReason, num(days(c.infused, *ended)))
			} else {
				row = append(row, "", "")
			}
			for _, m := range r.cfg.Plan.Milestones {
				row = append(row, milestoneStanding(m, c, timepoints, ended, endReason, today))
			}
			if err := emit(row); err != nil {
				return err
			}
			n++
		}
		return rows.Err()
	})
	if err != nil {
		return n, fmt.Errorf("analysis file: %w", err)
	}
	return n, nil
}

// milestoneStanding is one course's entry at milestone m in the analysis file: the counted
// assessment's category, else where the course stood (standingDays.standing).
func milestoneStanding(m Milestone, c courseDates, timepoints map[string]string, ended *time.Time, reason *string, today time.Time) string {
	if cat, ok := timepoints[m.Code]; ok {
		return cat
	}
	since := func(t *time.Time) pgtype.Int4 {
		if t == nil {
			return pgtype.Int4{}
		}
		return pgtype.Int4{Int32: int32(days(c.infused, *t)), Valid: true}
	}
	d := standingDays{toNow: int32(days(c.infused, today)), toDeath: since(c.death), toProgression: since(c.progression)}
	if reason != nil {
		d.toEnd, d.ended = since(ended), endedAs(*reason)
	}
	return d.standing(m).String()
}

// standingDays are the days from a course's infusion that decide where it stands at a
// milestone without an assessment that counts there: to the day the figures are as of, and
// to death, progression and the end of follow-up (with its reason), each invalid when it has
// not happened.
type standingDays struct {
	toNow                         int32
	toDeath, toProgression, toEnd pgtype.Int4
	ended                         standing // lost or withdrawn, with toEnd
}

// standing is where a course stands at a milestone: assessed there, or, without an
// assessment that counts there, one of the others, as the response report counts them.
type standing uint8

const (
	standingAssessed standing = iota
	standingNotYetDue
	standingDeadBefore
	standingProgressedBefore
	standingLost
	standingWithdrawn
	standingPending
	standingMissing
	numStandings
)

// standingNames are the standings' names in the response report and the analysis file.
var standingNames = [numStandings]string{"assessed", "not_yet_due", "dead_before", "progressed_before", "lost", "withdrawn", "pending", "missing"}

func (s standing) String() string { return standingNames[s] }

// endedAs is the standing of a course whose follow-up ended for reason (lost or withdrawn,
// registry_follow_up_end's only reasons).
func endedAs(reason string) standing {
	if reason == "withdrawn" {
		return standingWithdrawn
	}
	return standingLost
}

// standing is where a course without a counted assessment at m stands there: dead before
// the window closed, not yet due, progressed before it opened, follow-up ended before it
// closed (lost or withdrawn), pending while it is open, or missing. The response report
// counts these and the analysis file lists them: one rule for both.
func (d standingDays) standing(m Milestone) standing {
	first, last := int32(m.WindowStart), int32(m.WindowEnd)
	switch {
	case d.toDeath.Valid && d.toDeath.Int32 <= last:
		return standingDeadBefore
	case d.toNow < first:
		return standingNotYetDue
	case d.toProgression.Valid && d.toProgression.Int32 < first:
		return standingProgressedBefore
	case d.toEnd.Valid && d.toEnd.Int32 <= last:
		return d.ended
	case d.toNow <= last:
		return standingPending
	}
	return standingMissing
}

func joinPlus(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += "+"
		}
		out += v
	}
	return out
}

func optInt(v *int) string {
	if v == nil {
		return ""
	}
	return strconv.Itoa(*v)
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
