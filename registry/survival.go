package registry

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"golang.org/x/sync/errgroup"

	"github.com/cartreg/cartreg/registry/stats"
)

// Endpoints of survival analysis, with their censoring as registry/definitions/README.md
// ("Survival endpoints") defines them.
const (
	EndpointOS  = "os"  // death from any cause; censored at last contact
	EndpointPFS = "pfs" // progression, relapse or death; censored at the last assessment without progression
	EndpointDOR = "dor" // among responders, from first response to progression or death
)

// Landmarks are the times (days) survival is reported at: 1, 2 and 5 years.
var Landmarks = []int{365, 730, 1825}

// CurvePoint is one step of a Kaplan-Meier curve.
type CurvePoint struct {
	TDays    float64  `json:"t_days"`
	AtRisk   int      `json:"at_risk"`
	Events   int      `json:"events"`
	Censored int      `json:"censored"`
	Survival float64  `json:"survival"`
	Lower    *float64 `json:"lower"`
	Upper    *float64 `json:"upper"`
}

// Estimate is a survival probability with its 95% confidence interval.
type Estimate struct {
	Survival *float64 `json:"survival"`
	Lower    *float64 `json:"lower"`
	Upper    *float64 `json:"upper"`
}

// SurvivalGroup is one group's Kaplan-Meier analysis. A group of fewer than MinCell patients
// is not listed, exactly as a group of none; a listed group with fewer than MinCell patients
// for the endpoint (DOR counts responders only), none included, has n, events and curve
// empty.
type SurvivalGroup struct {
	Group              string               `json:"group"`
	N                  *int                 `json:"n"`
	Events             *int                 `json:"events"`
	MedianDays         *float64             `json:"median_days"`
	MedianCI           [2]*float64          `json:"median_ci"`
	Landmarks          map[string]*Estimate `json:"landmarks"`
	MedianFollowUpDays *float64             `json:"median_follow_up_days"`
	MedianFollowUpCI   [2]*float64          `json:"median_follow_up_ci"`
	Curve              []CurvePoint         `json:"curve"`
}

// SurvivalReport answers GET /registry/outcomes/survival.
type SurvivalReport struct {
	Endpoint string          `json:"endpoint"`
	GroupBy  string          `json:"group_by,omitempty"`
	MinCell  int             `json:"min_cell"`
	RoundTo  int             `json:"round_to"` // counts are multiples of it (1: exact)
	Groups   []SurvivalGroup `json:"groups"`
	// LogRank tests equal survival across the groups shown, when there are two or more.
	LogRank *LogRank `json:"log_rank,omitempty"`
}

// LogRank is the log-rank test across groups (survival::survdiff's, rho = 0).
type LogRank struct {
	ChiSquare float64  `json:"chi_square"`
	DF        int      `json:"df"`
	P         *float64 `json:"p"`
}

// survivalSQL reads each course's dates as days since dayZero: decoding a date into a
// time.Time normalises a calendar date, a tenth of the report's time in Go, where a day
// number is an integer the report adds to dayZero.
const survivalSQL = `
SELECT ` + survivalColumns + `
FROM course c`

// survivalColumns are what survival reads of a course c: its group, the patient's hash and
// the dates as day numbers, in courseDateCells' order.
const survivalColumns = `c.g, ` + patientHashSQL + `, c.infused_on - DATE '2000-01-01', c.death_on - DATE '2000-01-01',
	c.last_contact_on - DATE '2000-01-01', c.progression_on - DATE '2000-01-01', c.last_progression_free_on - DATE '2000-01-01',
	c.first_response_on - DATE '2000-01-01', c.next_infused_on - DATE '2000-01-01'`

// dayZero is the day survivalSQL counts days from.
var dayZero = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func dayNumber(n int32) time.Time { return dayZero.Add(time.Duration(n) * 24 * time.Hour) }

// courseDates are one course's dates, as survival needs them.
type courseDates struct {
	infused                                 time.Time
	death, lastContact, progression, lastPF *time.Time
	firstResponse, nextInfusion             *time.Time
}

// courseDateCells receive a course's dates as day numbers (survivalSQL): the infusion's,
// then the nullable ones.
type courseDateCells struct {
	infused pgtype.Int4
	dates   [6]pgtype.Int4
	times   [6]time.Time
}

// targets are the cells for rows.Scan, in survivalSQL's order after the patient: infusion,
// death, last contact, progression, last progression-free, first response, next infusion.
func (d *courseDateCells) targets() []any {
	return []any{&d.infused, &d.dates[0], &d.dates[1], &d.dates[2], &d.dates[3], &d.dates[4], &d.dates[5]}
}

// into sets c from the cells, its dates pointing at the cells' own: c is valid only until
// the cells are scanned into again, which spares an allocation a course.
func (d *courseDateCells) into(c *courseDates) {
	c.infused = dayNumber(d.infused.Int32)
	for i, p := range [6]**time.Time{&c.death, &c.lastContact, &c.progression, &c.lastPF, &c.firstResponse, &c.nextInfusion} {
		*p = nil
		if d.dates[i].Valid {
			d.times[i] = dayNumber(d.dates[i].Int32)
			*p = &d.times[i]
		}
	}
}

func days(from, to time.Time) float64 { return math.Round(to.Sub(from).Hours() / 24) }

// observation is the course's time to event or censoring for an endpoint; ok is false when
// the course does not count (DOR of a non-responder).
func (c courseDates) observation(endpoint string) (stats.Observation, bool) {
	if endpoint == EndpointOS {
		if c.death != nil {
			return stats.Observation{Time: days(c.infused, *c.death), Event: true}, true
		}
		last := c.infused
		if c.lastContact != nil && c.lastContact.After(last) {
			last = *c.lastContact
		}
		return stats.Observation{Time: days(c.infused, last)}, true
	}
	start := c.infused
	if endpoint == EndpointDOR {
		if c.firstResponse == nil {
			return stats.Observation{}, false
		}
		start = *c.firstResponse
	}
	if event, _ := c.progressionOrDeath(); event != nil {
		return stats.Observation{Time: days(start, *event), Event: true}, true
	}
	censor := start
	if c.lastPF != nil && c.lastPF.After(censor) {
		censor = *c.lastPF
	}
	return stats.Observation{Time: days(start, censor)}, true
}

// progressionOrDeath is the event that ends progression-free survival, and whether it was a
// death (without progression before it). A death counts for this course unless a later
// infusion came first: then the course's follow-up ended at that infusion, without an event.
func (c courseDates) progressionOrDeath() (event *time.Time, death bool) {
	event = c.progression
	if c.death != nil && (c.nextInfusion == nil || !c.nextInfusion.Before(*c.death)) && (event == nil || c.death.Before(*event)) {
		return c.death, true
	}
	return event, false
}

// Survival estimates the endpoint's Kaplan-Meier curve for each group of the selected courses,
// with the median follow-up by reverse Kaplan-Meier (on overall survival's censoring).
func (r *Registry) Survival(ctx context.Context, f Filter, endpoint, groupBy string) (*SurvivalReport, error) {
	report, _, err := r.survival(ctx, f, endpoint, groupBy)
	return report, err
}

// survival is Survival with the cohort of each published group.
func (r *Registry) survival(ctx context.Context, f Filter, endpoint, groupBy string) (*SurvivalReport, []cohort, error) {
	switch endpoint {
	case EndpointOS, EndpointPFS, EndpointDOR:
	default:
		return nil, nil, fmt.Errorf("endpoint=%s: want os, pfs or dor", endpoint)
	}
	with, err := courses(groupBy, f)
	if err != nil {
		return nil, nil, err
	}
	t := newSurvivalTally(endpoint)
	key := reportKey("survival", f, groupBy, endpoint)
	var version int64
	var cached *cachedReport
	err = r.analytic(ctx, func(tx pgx.Tx) error {
		var err error
		if version, cached, err = r.reports.lookup(ctx, tx, key, true); err != nil || cached != nil {
			return err
		}
		rows, err := tx.Query(ctx, with+survivalSQL, f.args()...)
		if err != nil {
			return err
		}
		defer rows.Close()
		var g pgtype.DriverBytes
		var patient int64
		var c courseDates
		var cells courseDateCells
		dest := append([]any{&g, &patient}, cells.targets()...)
		for rows.Next() {
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			cells.into(&c)
			t.add(g, patient, &c)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("survival query: %w", err)
	}
	if cached != nil {
		return cached.report.(*SurvivalReport), cached.cohorts, nil
	}
	report, published := r.survivalReport(t, groupBy)
	r.reports.add(key, version, report, published, true)
	return report, published, nil
}

// survivalTally keeps, group by group, each course's observation for the endpoint and for
// overall survival (the median follow-up's) as it is read, and the patients' hashes: two
// small values a course, with nothing for the collector to follow.
type survivalTally struct {
	endpoint string
	groups   map[string]*groupObservations
}

type groupObservations struct {
	obs, followUp []stats.Observation
	members       cohort
}

func newSurvivalTally(endpoint string) *survivalTally {
	return &survivalTally{endpoint: endpoint, groups: map[string]*groupObservations{}}
}

// add counts the course c of group g; g may be the driver's bytes and c the scan's cells:
// neither is kept.
func (t *survivalTally) add(g []byte, patient int64, c *courseDates) {
	group := t.groups[string(g)] // looked up without copying the bytes
	if group == nil {
		group = &groupObservations{}
		t.groups[string(g)] = group
	}
	if o, ok := c.observation(t.endpoint); ok {
		group.obs = append(group.obs, o)
	}
	os, _ := c.observation(EndpointOS)
	group.followUp = append(group.followUp, os)
	group.members = append(group.members, patient)
}

// survivalReport is the report of what t kept, with the cohort of each group it publishes.
func (r *Registry) survivalReport(t *survivalTally, groupBy string) (*SurvivalReport, []cohort) {
	report := &SurvivalReport{Endpoint: t.endpoint, GroupBy: groupBy, MinCell: r.cfg.MinCell, RoundTo: max(r.cfg.RoundTo, 1), Groups: []SurvivalGroup{}}
	var names []string
	for g, data := range t.groups {
		if r.cfg.MinCell <= 1 || len(data.members) >= r.cfg.MinCell {
			names = append(names, g)
		}
	}
	// Each group's curves on a core of its own: once the scan is over, PostgreSQL leaves
	// the machine to them, and a report by product has twenty of them.
	groups := make([]SurvivalGroup, len(names))
	published := make([]cohort, len(names))
	var work errgroup.Group
	work.SetLimit(runtime.GOMAXPROCS(0))
	for i, g := range names {
		work.Go(func() error {
			data := t.groups[g]
			published[i] = data.members.sorted()
			groups[i] = r.survivalGroup(g, data.obs, data.followUp)
			return nil
		})
	}
	_ = work.Wait() // the goroutines return no error

	compared := map[string][]stats.Observation{} // the groups shown, for the log-rank test
	for i, group := range groups {
		if group.N != nil && *group.N > 0 {
			compared[names[i]] = t.groups[names[i]].obs
		}
		report.Groups = append(report.Groups, group)
	}
	sortGroups(report.Groups, func(g SurvivalGroup) int {
		if g.N == nil {
			return 0
		}
		return *g.N
	}, func(g SurvivalGroup) string { return g.Group })
	if len(compared) >= 2 {
		// In the report's order, so that the same data give the same digits.
		var groups [][]stats.Observation
		for _, g := range report.Groups {
			if obs, ok := compared[g.Group]; ok {
				groups = append(groups, obs)
			}
		}
		lr := stats.LogRankTest(groups)
		if lr.DF > 0 {
			report.LogRank = &LogRank{ChiSquare: lr.ChiSquare, DF: lr.DF, P: number(lr.P)}
		}
	}
	return report, published
}

func number(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func (r *Registry) survivalGroup(name string, obs, followUp []stats.Observation) SurvivalGroup {
	g := SurvivalGroup{Group: name, Landmarks: map[string]*Estimate{}, Curve: []CurvePoint{}}
	small := func(n int) bool { return r.cfg.MinCell > 1 && n > 0 && n < r.cfg.MinCell }
	if len(obs) == 0 || small(len(obs)) {
		if r.cfg.MinCell <= 1 {
			zero := 0
			g.N, g.Events = &zero, &zero
		}
		return g
	}
	curve := stats.KaplanMeier(obs, 0.95)
	n, events := curve.N, curve.Events
	g.N = r.roundedPtr(&n)
	if !small(events) && !small(n-events) {
		g.Events = r.roundedPtr(&events)
	}
	median := curve.Median(0.95)
	g.MedianDays, g.MedianCI = number(median.Estimate), [2]*float64{number(median.Lower), number(median.Upper)}
	g.Curve = r.publishedCurve(curve.Steps)
	firstEvent := math.Inf(1)
	for _, s := range curve.Steps {
		if s.Events > 0 {
			firstEvent = s.Time
			break
		}
	}
	last := 0.0
	if len(curve.Steps) > 0 {
		last = curve.Steps[len(curve.Steps)-1].Time
	}
	for _, t := range Landmarks {
		key, at := strconv.Itoa(t), float64(t)
		switch {
		case at > last:
			g.Landmarks[key] = nil // beyond follow-up: not estimable
		case r.cfg.MinCell <= 1:
			s, lo, hi := curve.At(at)
			g.Landmarks[key] = &Estimate{Survival: number(s), Lower: number(lo), Upper: number(hi)}
		default:
			// Read off the published curve, never the exact one: between its pooled steps
			// or past its end, the exact estimate would count the few events the pooling
			// and the cut hide.
			i := publishedBefore(len(g.Curve), func(i int) float64 { return g.Curve[i].TDays }, at, firstEvent)
			switch {
			case i == noEventsYet:
				one := 1.0
				g.Landmarks[key] = &Estimate{Survival: &one}
			case i < 0:
				g.Landmarks[key] = nil
			default:
				p := g.Curve[i]
				s := p.Survival
				g.Landmarks[key] = &Estimate{Survival: &s, Lower: p.Lower, Upper: p.Upper}
			}
		}
	}
	fu := stats.MedianFollowUp(followUp, 0.95)
	g.MedianFollowUpDays, g.MedianFollowUpCI = number(fu.Estimate), [2]*float64{number(fu.Lower), number(fu.Upper)}
	return g
}

// noEventsYet is publishedBefore's answer for a time before any event at all.
const noEventsYet = -2

// publishedBefore finds where a landmark at time at is read on a published curve of n points
// (time(i) ascending): the last point at or before it, provided the curve goes on past it;
// noEventsYet when at is before the first event of the exact curve (the estimate is then
// exactly its start); -1 when the published curve cannot tell: before its first point with
// events already behind, or past its last point, where the cut or the last pooled block
// hides what happened.
func publishedBefore(n int, time func(int) float64, at, firstEvent float64) int {
	if at < firstEvent {
		return noEventsYet
	}
	if n == 0 || at > time(n-1) {
		return -1
	}
	i := -1
	for j := 0; j < n && time(j) <= at; j++ {
		i = j
	}
	return i
}
