package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sort"
)

// Milestone is one timepoint of the follow-up plan, in days after the infusion (day 0).
type Milestone struct {
	Code        string `json:"code"` // follow-up-milestone code: m1, m3, y1 …
	Label       string `json:"label"`
	TargetDay   int    `json:"target_day"`
	WindowStart int    `json:"window_start"`
	WindowEnd   int    `json:"window_end"`
}

// Plan is the follow-up plan: data, not code, so a site can follow another schedule.
type Plan struct {
	Milestones []Milestone `json:"milestones"`
}

// DefaultPlan is the registry's plan (registry/definitions/README.md, "Follow-up plan"):
// month 1 (days 23–45), month 3 (76–104), then yearly at 365·N ± 30 days for the given number
// of years (5 by default; long-term follow-up of gene-modified cells asks for 15).
func DefaultPlan(years int) Plan {
	p := Plan{Milestones: []Milestone{
		{Code: "m1", Label: "Month 1", TargetDay: 30, WindowStart: 23, WindowEnd: 45},
		{Code: "m3", Label: "Month 3", TargetDay: 90, WindowStart: 76, WindowEnd: 104},
	}}
	for n := 1; n <= years; n++ {
		p.Milestones = append(p.Milestones, Milestone{
			Code: fmt.Sprintf("y%d", n), Label: fmt.Sprintf("Year %d", n),
			TargetDay: 365 * n, WindowStart: 365*n - 30, WindowEnd: 365*n + 30,
		})
	}
	return p
}

// PlanPresets are the follow-up plans a site can choose by name instead of writing one
// (registry/definitions/README.md, "Follow-up plan", gives their sources).
var PlanPresets = map[string]func() Plan{
	// default: month 1, month 3, then yearly to year 5.
	"default": func() Plan { return DefaultPlan(5) },
	// ltfu15: the default plan's timepoints continued yearly to 15 years, the long-term
	// follow-up regulators ask of gene-modified cell products.
	"ltfu15": func() Plan { return DefaultPlan(15) },
	// cibmtr: CIBMTR's cellular therapy follow-up (form 4100): day 100 (±15), month 6 (±30),
	// year 1 (days 365–425), then yearly ±30 days to 15 years.
	"cibmtr": CIBMTRPlan,
}

// CIBMTRPlan is the follow-up schedule of CIBMTR's cellular therapy forms, to 15 years.
func CIBMTRPlan() Plan {
	p := Plan{Milestones: []Milestone{
		{Code: "d100", Label: "Day 100", TargetDay: 100, WindowStart: 85, WindowEnd: 115},
		{Code: "m6", Label: "Month 6", TargetDay: 183, WindowStart: 153, WindowEnd: 213},
		{Code: "y1", Label: "Year 1", TargetDay: 365, WindowStart: 365, WindowEnd: 425},
	}}
	for n := 2; n <= 15; n++ {
		p.Milestones = append(p.Milestones, Milestone{
			Code: fmt.Sprintf("y%d", n), Label: fmt.Sprintf("Year %d", n),
			TargetDay: 365 * n, WindowStart: 365*n - 30, WindowEnd: 365*n + 30,
		})
	}
	return p
}

// PlanNamed is the preset called name, or the plan in the JSON file at that path.
func PlanNamed(nameOrPath string) (Plan, error) {
	if preset, ok := PlanPresets[nameOrPath]; ok {
		return preset(), nil
	}
	return LoadPlan(nameOrPath)
}

// LoadPlan reads a plan from a JSON file ({"milestones":[{"code":…,"label":…,"target_day":…,
// "window_start":…,"window_end":…}]}).
func LoadPlan(path string) (Plan, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Plan{}, err
	}
	var p Plan
	if err := json.Unmarshal(raw, &p); err != nil {
		return Plan{}, fmt.Errorf("follow-up plan %s: %w", path, err)
	}
	return p, p.Validate()
}

// Validate checks that every milestone has a code and a window around its target day.
func (p Plan) Validate() error {
	if len(p.Milestones) == 0 {
		return fmt.Errorf("follow-up plan has no milestones")
	}
	seen := map[string]bool{}
	for _, m := range p.Milestones {
		switch {
		case m.Code == "":
			return fmt.Errorf("follow-up plan: a milestone has no code")
		case seen[m.Code]:
			return fmt.Errorf("follow-up plan: milestone %s appears twice", m.Code)
		case m.WindowStart > m.TargetDay || m.TargetDay > m.WindowEnd || m.WindowStart < 0:
			return fmt.Errorf("follow-up plan: milestone %s: window %d–%d must contain target day %d and start at day 0 or later",
				m.Code, m.WindowStart, m.WindowEnd, m.TargetDay)
		}
		seen[m.Code] = true
	}
	sort.SliceStable(p.Milestones, func(i, j int) bool { return p.Milestones[i].TargetDay < p.Milestones[j].TargetDay })
	return nil
}

// Digest identifies the plan, so stored timepoints are reassigned when it changes.
func (p Plan) Digest() string {
	raw, _ := json.Marshal(p)
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:8])
}

// Milestone returns the plan's milestone with that code.
func (p Plan) Milestone(code string) (Milestone, bool) {
	for _, m := range p.Milestones {
		if m.Code == code {
			return m, true
		}
	}
	return Milestone{}, false
}

// milestoneOn is the milestone whose window holds day, the nearest target first where windows
// overlap, then the earlier target (assignMilestones' order); false when the day is unscheduled.
func (p Plan) milestoneOn(day int) (Milestone, bool) {
	var best Milestone
	found := false
	for _, m := range p.Milestones {
		if day < m.WindowStart || day > m.WindowEnd {
			continue
		}
		if !found || abs(day-m.TargetDay) < abs(day-best.TargetDay) ||
			abs(day-m.TargetDay) == abs(day-best.TargetDay) && m.TargetDay < best.TargetDay {
			best, found = m, true
		}
	}
	return best, found
}

// columns are the plan as parallel arrays, for SQL that joins against it.
func (p Plan) columns() (codes []string, targets, starts, ends []int32) {
	for _, m := range p.Milestones {
		codes = append(codes, m.Code)
		targets = append(targets, int32(m.TargetDay))
		starts = append(starts, int32(m.WindowStart))
		ends = append(ends, int32(m.WindowEnd))
	}
	return
}
