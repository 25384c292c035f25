package registry

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/registry/stats"
)

// The events whose cumulative incidence /registry/outcomes/incidence reports, each with
// death as the competing event.
const (
	// IncidenceRelapse is progression or relapse; its competing event, death without
	// progression first, is non-relapse mortality.
	IncidenceRelapse = "relapse"
)

// incidenceEvents are the events the report takes, with the landmarks (days) reported for
// each: relapse as survival is reported, the safety events over the 15 years of long-term
// follow-up.
var incidenceEvents = map[string][]int{
	IncidenceRelapse:         {365, 730, 1825},
	KindSubsequentMalignancy: {365, 1825, 3650, 5475},
	KindTCellMalignancy:      {365, 1825, 3650, 5475},
	KindInfection:            {90, 365, 1825},
	KindProlongedCytopenia:   {90, 365},
}

// IncidencePoint is one step of the cumulative incidence curves.
type IncidencePoint struct {
	TDays     float64 `json:"t_days"`
	AtRisk    int     `json:"at_risk"`
	Events    int     `json:"events"`
	Competing int     `json:"competing"`
	Censored  int     `json:"censored"`
	// Incidence is the cumulative incidence of the event; CompetingIncidence that of death
	// without it.
	Incidence          float64 `json:"incidence"`
	CompetingIncidence float64 `json:"competing_incidence"`
}

// IncidenceLandmark is both cumulative incidences at one time, each with its 95% interval.
type IncidenceLandmark struct {
	Incidence *Estimate `json:"incidence"`
	Competing *Estimate `json:"competing"`
}

// IncidenceGroup is one group's competing-risks analysis.
type IncidenceGroup struct {
	Group     string                        `json:"group"`
	N         *int                          `json:"n"`
	Events    *int                          `json:"events"`
	Competing *int                          `json:"competing"`
	Landmarks map[string]*IncidenceLandmark `json:"landmarks"`
	Curve     []IncidencePoint              `json:"curve"`
}

// IncidenceReport answers GET /registry/outcomes/incidence.
type IncidenceReport struct {
	Event   string           `json:"event"`
	GroupBy string           `json:"group_by,omitempty"`
	MinCell int              `json:"min_cell"`
	RoundTo int              `json:"round_to"`
	Groups  []IncidenceGroup `json:"groups"`
}

// The first event of kind $7 in each course: on or after its infusion, before the next.
const incidenceSQL = `
SELECT c.g, c.infused_on, c.death_on, c.last_contact_on, c.progression_on, c.last_progression_free_on,
	c.next_infused_on,
	(SELECT min(t.onset_imputed_on) FROM registry_toxicity t
	 WHERE t.patient_id = c.patient_id AND t.kind = $7 AND t.onset_imputed_on >= c.infused_on
	   AND (c.next_infused_on IS NULL OR t.onset_imputed_on < c.next_infused_on))
FROM course c`

// competing is the course's time to the event (cause 1), to death without it (cause 2), or
// to censoring (cause 0). Relapse is censored as progression-free survival is, at the last
// assessment without progression; a safety event at the last contact, or the next infusion
// if that came first, since it starts another course.
func (c courseDates) competing(event string, firstEvent *time.Time) stats.CompetingObservation {
	if event == IncidenceRelapse {
		if at, death := c.progressionOrDeath(); at != nil {
			cause := 1
			if death {
				cause = 2
			}
			return stats.CompetingObservation{Time: days(c.infused, *at), Cause: cause}
		}
		censor := c.infused
		if c.lastPF != nil && c.lastPF.After(censor) {
			censor = *c.lastPF
		}
		return stats.CompetingObservation{Time: days(c.infused, censor)}
	}
	if firstEvent != nil {
		return stats.CompetingObservation{Time: days(c.infused, *firstEvent), Cause: 1}
	}
	if c.death != nil && (c.nextInfusion == nil || !c.nextInfusion.Before(*c.death)) {
		return stats.CompetingObservation{Time: days(c.infused, *c.death), Cause: 2}
	}
	censor := c.infused
	if c.lastContact != nil && c.lastContact.After(censor) {
		censor = *c.lastContact
	}
	if c.nextInfusion != nil && c.nextInfusion.Before(censor) {
		censor = *c.nextInfusion
	}
	return stats.CompetingObservation{Time: days(c.infused, censor)}
}

// Incidence estimates the cumulative incidence of event (IncidenceRelapse or a safety event
// kind) with death as the competing event, by group (Aalen-Johansen; Gray's variance).
func (r *Registry) Incidence(ctx context.Context, f Filter, event, groupBy string) (*IncidenceReport, error) {
	report, _, err := r.incidence(ctx, f, event, groupBy)
	return report, err
}

// incidence is Incidence with the cohort of each published group.
func (r *Registry) incidence(ctx context.Context, f Filter, event, groupBy string) (*IncidenceReport, []cohort, error) {
	landmarks, ok := incidenceEvents[event]
	if !ok {
		return nil, nil, fmt.Errorf("event=%s: want relapse, %s, %s, %s or %s", event,
			KindSubsequentMalignancy, KindTCellMalignancy, KindInfection, KindProlongedCytopenia)
	}
	with, err := courses(groupBy, f)
	if err != nil {
		return nil, nil, err
	}
	byGroup := map[string][]stats.CompetingObservation{}
	var members map[string]cohort
	err = r.analytic(ctx, func(tx pgx.Tx) error {
		var err error
		if members, err = r.groupCohorts(ctx, tx, with, f.args()); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, with+incidenceSQL, append(f.args(), event)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g string
			var c courseDates
			var first *time.Time
			if err := rows.Scan(&g, &c.infused, &c.death, &c.lastContact, &c.progression, &c.lastPF, &c.nextInfusion, &first); err != nil {
				return err
			}
			byGroup[g] = append(byGroup[g], c.competing(event, first))
		}
		return rows.Err()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("incidence query: %w", err)
	}
	report := &IncidenceReport{Event: event, GroupBy: groupBy, MinCell: r.cfg.MinCell, RoundTo: max(r.cfg.RoundTo, 1), Groups: []IncidenceGroup{}}
	var published []cohort
	for g, obs := range byGroup {
		if r.cfg.MinCell > 1 && len(obs) < r.cfg.MinCell {
			continue // not listed, as a group of none is not
		}
		published = append(published, members[g])
		report.Groups = append(report.Groups, r.incidenceGroup(g, obs, landmarks))
	}
	sortGroups(report.Groups, func(g IncidenceGroup) int { return len(byGroup[g.Group]) }, func(g IncidenceGroup) string { return g.Group })
	return report, published, nil
}

func (r *Registry) incidenceGroup(name string, obs []stats.CompetingObservation, landmarks []int) IncidenceGroup {
	inc := stats.CumulativeIncidence(obs, 2)
	n := inc.N
	g := IncidenceGroup{Group: name, N: r.roundedPtr(&n), Landmarks: map[string]*IncidenceLandmark{}, Curve: []IncidencePoint{}}
	events, competing := inc.Events[0], inc.Events[1]
	// Event and competing counts and the censored rest add up to n: hide a small one, and
	// with it another, so none can be had by subtraction.
	c := newCells()
	c.set("n", n)
	c.set("events", events)
	c.set("competing", competing)
	c.set("censored", n-events-competing)
	c.sumOf("n", "events", "competing", "censored")
	c.suppress(r.cfg.MinCell)
	g.Events, g.Competing = r.roundedPtr(c.get("events")), r.roundedPtr(c.get("competing"))

	g.Curve = r.publishedIncidence(inc.Steps)
	firstEvent, last := math.Inf(1), 0.0
	for _, s := range inc.Steps {
		if s.Events[0]+s.Events[1] > 0 && math.IsInf(firstEvent, 1) {
			firstEvent = s.Time
		}
		last = s.Time
	}
	for _, t := range landmarks {
		key, at := strconv.Itoa(t), float64(t)
		estimate := func(cause int) *Estimate {
			f, lo, hi := inc.At(at, cause, 0.95)
			return &Estimate{Survival: number(f), Lower: number(lo), Upper: number(hi)}
		}
		switch {
		case at > last:
			g.Landmarks[key] = nil
		case r.cfg.MinCell <= 1:
			g.Landmarks[key] = &IncidenceLandmark{Incidence: estimate(1), Competing: estimate(2)}
		default:
			// As for survival: read off the published curve only (its intervals are the
			// exact ones at that point's time).
			i := publishedBefore(len(g.Curve), func(i int) float64 { return g.Curve[i].TDays }, at, firstEvent)
			switch {
			case i == noEventsYet:
				zero := 0.0
				g.Landmarks[key] = &IncidenceLandmark{Incidence: &Estimate{Survival: &zero}, Competing: &Estimate{Survival: &zero}}
			case i < 0:
				g.Landmarks[key] = nil
			default:
				at = g.Curve[i].TDays
				g.Landmarks[key] = &IncidenceLandmark{Incidence: estimate(1), Competing: estimate(2)}
			}
		}
	}
	return g
}

// CSV is the report as one row per curve step, each group's summary repeated.
func (rep *IncidenceReport) CSV() [][]string {
	rows := [][]string{{"event", "group", "n", "events", "competing", "t_days", "at_risk", "events_at_t", "competing_at_t",
		"censored_at_t", "incidence", "competing_incidence"}}
	for _, g := range rep.Groups {
		summary := []string{rep.Event, g.Group, cell(g.N), cell(g.Events), cell(g.Competing)}
		if len(g.Curve) == 0 {
			rows = append(rows, append(summary, "", "", "", "", "", "", ""))
		}
		for _, p := range g.Curve {
			inc, comp := p.Incidence, p.CompetingIncidence
			rows = append(rows, append(append([]string(nil), summary...), strconv.FormatFloat(p.TDays, 'g', -1, 64),
				strconv.Itoa(p.AtRisk), strconv.Itoa(p.Events), strconv.Itoa(p.Competing), strconv.Itoa(p.Censored),
				cell(&inc), cell(&comp)))
		}
	}
	return rows
}

// publishedIncidence is the curve as researchers see it, pooled as publishedCurve pools a
// survival curve: with suppression on, steps are merged until each holds at least MinCell
// events of either kind, a published step being the exact estimates at the block's last
// time with the number at risk at its start; the curve stops where fewer than MinCell
// remain at risk; counts are rounded.
func (r *Registry) publishedIncidence(steps []stats.IncidenceStep) []IncidencePoint {
	out := []IncidencePoint{}
	point := func(s stats.IncidenceStep, atRisk, events, competing, censored int) IncidencePoint {
		return IncidencePoint{TDays: s.Time, AtRisk: r.rounded(atRisk), Events: r.rounded(events), Competing: r.rounded(competing),
			Censored: r.rounded(censored), Incidence: s.Incidence[0], CompetingIncidence: s.Incidence[1]}
	}
	if r.cfg.MinCell <= 1 {
		for _, s := range steps {
			out = append(out, point(s, s.AtRisk, s.Events[0], s.Events[1], s.Censored))
		}
		return out
	}
	atRisk, events, competing, censored := 0, 0, 0, 0
	for _, s := range steps {
		if s.AtRisk < r.cfg.MinCell {
			break
		}
		if events == 0 && competing == 0 && censored == 0 {
			atRisk = s.AtRisk
		}
		events += s.Events[0]
		competing += s.Events[1]
		censored += s.Censored
		if events+competing >= r.cfg.MinCell {
			out = append(out, point(s, atRisk, events, competing, censored))
			events, competing, censored = 0, 0, 0
		}
	}
	return out
}
