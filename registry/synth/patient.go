package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cartreg/cartreg/registry"
)

// followUpYears is how long visits go on: 15 years, as the FDA asks after gene-modified cell
// products (registry/definitions/README.md, "Follow-up plan"). The registry's default plan
// reports to year 5; later yearly visits are long-term follow-up, unscheduled under that plan.
const followUpYears = 15

// Follow-up as it happens, not as planned (the brief's figures).
const (
	missedVisit = 0.08  // a scheduled visit does not happen
	offWindow   = 0.04  // a visit happens outside its window: unscheduled
	lostShare   = 0.095 // the patient would be lost at some point; ~7% are, as some die first
	sweepDays   = 90    // living patients were last contacted this recently before the cut-off
)

// never is a day that does not come.
const never = math.MaxInt32

// autoimmuneFrom is when CAR-T for lupus began (the first patient, Erlangen, March 2021).
var autoimmuneFrom = month(2021, 3)

func (g *generator) patient(i int) Patient {
	r := g.rng(i)
	p := Patient{Identifier: fmt.Sprintf("synth-%d-%06d", g.opts.Seed, i+1)}
	p.Site = pickIndex(r, g.siteWeight)
	site := g.sites[p.Site]
	m := g.models[pickIndex(r, g.diseaseWeight)]
	p.Disease = m.code
	day0 := g.infusionDate(r, m)

	male := r.Float64() < m.male
	p.Gender = "female"
	if male {
		p.Gender = "male"
	}
	p.Family, p.Given = name(r, site.Country, male)
	age := m.age(r)
	p.BirthDate = day0.AddDate(0, 0, -int(age*365.2425))
	yearsDx := math.Min(m.yearsDx(r), age-1) // diagnosed at one year old at the earliest
	p.DiagnosisDate = day0.AddDate(0, 0, -int(yearsDx*365.2425))
	code := pick(r, m.conditions)
	if m.snomed != nil && r.Float64() < 0.15 {
		code = *m.snomed
	}
	p.ConditionSystem, p.ConditionCode, p.ConditionDisplay = code.system, code.code, code.display

	p.Infusion = g.product(r, m.code, p.Site, day0, age)
	p.Infusion.Date = day0
	p.Infusion.PriorLines = m.priorLines(r, day0.Year())
	p.Infusion.Resource = Procedure
	if r.Float64() < 0.10 { // mCODE-minded EHRs send a MedicationAdministration
		p.Infusion.Resource = MedicationAdministration
	}
	g.outcomes(r, m, &p)
	return p
}

// pickIndex draws an index in proportion to the weights.
func pickIndex(r *rand.Rand, weights []float64) int {
	total := 0.0
	for _, w := range weights {
		total += w
	}
	x := r.Float64() * total
	for i, w := range weights {
		if x < w {
			return i
		}
		x -= w
	}
	return len(weights) - 1
}

// infusionDate spreads infusions from FirstInfusion to AsOf, busier in later years as CAR-T
// use grew with each approval: the density rises linearly, the last day about four times as
// busy as the first. Autoimmune patients are infused from March 2021 when the window allows.
func (g *generator) infusionDate(r *rand.Rand, m *diseaseModel) time.Time {
	from := g.opts.FirstInfusion
	if m.autoimmune && from.Before(autoimmuneFrom) && g.opts.AsOf.After(autoimmuneFrom) {
		from = autoimmuneFrom
	}
	span := daysBetween(from, g.opts.AsOf)
	const a = 0.35 // density a + x on [0, 1]; x below inverts its distribution function
	x := -a + math.Sqrt(a*a+r.Float64()*(2*a+1))
	return from.AddDate(0, 0, min(span, int(x*float64(span+1))))
}

func daysBetween(a, b time.Time) int { return int(b.Sub(a).Hours() / 24) }

// toDay converts months after infusion to a day, never for what does not happen.
func toDay(months float64) int {
	if months*daysPerMonth > 1e6 {
		return never
	}
	return int(math.Round(months * daysPerMonth))
}

// mrd says how often an IMWG category comes with an MRD result, and below which patient
// quantile it is negative: a patient negative at VGPR stays negative at CR.
var mrd = map[string]struct{ tested, negative float64 }{
	"imwg-scr":  {0.75, 0.90},
	"imwg-cr":   {0.70, 0.80},
	"imwg-vgpr": {0.40, 0.35},
	"imwg-pr":   {0.20, 0.05},
}

// outcomes draws what happens after the infusion and records what follow-up would see of it:
// assessments at the plan's visits until progression, the progression, toxicities, death,
// loss to follow-up and the last contact. Nothing is recorded after the cut-off, after the
// patient is lost, or after death.
func (g *generator) outcomes(r *rand.Rand, m *diseaseModel, p *Patient) {
	day0 := p.Infusion.Date
	cut := daysBetween(day0, g.opts.AsOf)

	// Death and progression from the calibrated curves, their survival quantiles tied by a
	// Gaussian copula; deaths from other causes compete with the disease.
	z1, z2 := r.NormFloat64(), r.NormFloat64()
	death := toDay(m.os.quantile(phi(z1)))
	if m.background > 0 {
		death = min(death, toDay(r.ExpFloat64()/m.background))
	}
	death = max(death, 1)
	prog := toDay(m.pfs.quantile(phi(copula*z1 + math.Sqrt(1-copula*copula)*z2)))

	// Loss to follow-up comes at any time of the patient's follow-up, independently of the
	// outcome (so survival estimates censored at the last contact stay unbiased).
	lost := never
	if r.Float64() < lostShare && cut > 20 {
		lost = 20 + r.IntN(cut-20)
	}
	end := min(cut, lost) // the last day anything can be recorded

	type visit struct {
		day    int
		missed bool
	}
	var buf [followUpYears + 2]visit // the plan's milestones: m1, m3, then yearly
	visits := buf[:len(g.plan)]
	for k, ms := range g.plan {
		visits[k] = visit{visitDay(r, ms), r.Float64() < missedVisit}
	}

	resp := m.response
	// Progression by month 1 is primary refractory disease, seen at the month-1 assessment
	// (even if that visit was late or would have been missed).
	refractory := prog <= visits[0].day && resp.refractory != ""
	var best string
	switch {
	case prog <= visits[0].day && resp.refractory == "":
		best, prog = resp.nonResponse, never // no remission, so no flare
	case refractory:
		best, prog = resp.refractory, visits[0].day
	case float64(prog) <= earlyMonths*daysPerMonth:
		best = pick(r, resp.early)
	default:
		best = pick(r, resp.durable)
	}
	scheme := g.terms.Schemes[g.terms.Disease(m.code).Scheme]
	bestCat := g.terms.Categories[best]
	if !bestCat.Response && !bestCat.Progression && resp.refractory == "" {
		prog = never
	}
	bestRank := slices.IndexFunc(scheme, func(c *registry.Category) bool { return c.Code == best })
	worstResponse := 0
	for k, c := range scheme {
		if c.Response {
			worstResponse = k
		}
	}
	// Responses deepen: a partial response at month 1 often becomes complete by month 3.
	lagM1 := r.IntN(resp.lagM1 + 1)
	lagM3 := min(lagM1, r.IntN(resp.lagM3+1))
	mrdQuantile := r.Float64()

	record := func(day int, category string) {
		a := Assessment{Date: day0.AddDate(0, 0, day), Category: category}
		if t, ok := mrd[category]; ok && r.Float64() < t.tested {
			neg := mrdQuantile < t.negative
			a.MRDNegative = &neg
		}
		p.Assessments = append(p.Assessments, a)
	}
	if !refractory {
		for k, v := range visits {
			if v.day >= prog || v.day >= death || v.day > end {
				break
			}
			if v.missed {
				continue
			}
			category := best
			if bestCat.Response && !bestCat.Progression {
				lag := 0
				switch k {
				case 0:
					lag = lagM1
				case 1:
					lag = lagM3
				}
				category = scheme[min(bestRank+lag, worstResponse)].Code
			}
			// IMWG: a stringent complete response needs two consecutive assessments.
			if n := len(p.Assessments); category == "imwg-scr" &&
				(n == 0 || !slices.Contains([]string{"imwg-cr", "imwg-scr"}, p.Assessments[n-1].Category)) {
				category = "imwg-cr"
			}
			record(v.day, category)
		}
	}
	if prog < death && prog <= end {
		category := resp.progression
		if refractory {
			category = resp.refractory
		}
		record(prog, category)
	}

	g.toxicities(r, m, p, min(end, death))

	if death <= end {
		d := day0.AddDate(0, 0, death)
		p.Death = &d
	}
	p.LostToFollowUp = lost < cut && lost < death

	last := 0
	for _, a := range p.Assessments {
		last = max(last, daysBetween(day0, a.Date))
	}
	for _, t := range p.Toxicities {
		last = max(last, daysBetween(day0, t.Date))
	}
	switch {
	case p.Death != nil:
		last = death
	case p.LostToFollowUp:
		last = max(last, lost) // last seen the day they were lost
	default:
		last = max(last, cut-r.IntN(sweepDays+1)) // a contact near the cut-off: known alive
	}
	p.LastContact = day0.AddDate(0, 0, last)
}

// visitDay is when a milestone's visit happens: within its window, most near the target; a
// few outside (a week early or two weeks late), which makes them unscheduled.
func visitDay(r *rand.Rand, m registry.Milestone) int {
	if r.Float64() < offWindow {
		if r.IntN(2) == 0 {
			return m.WindowStart - 1 - r.IntN(7)
		}
		return m.WindowEnd + 1 + r.IntN(14)
	}
	return int(math.Round(triangular(r, float64(m.WindowStart), float64(m.TargetDay), float64(m.WindowEnd))))
}

// toxicities draws CRS and ICANS (ASTCT grades), onset days 1–10, recorded up to day last.
// CRS comes on day 1–3 mostly after CD19 CAR-T, later (median day 7) after BCMA products.
func (g *generator) toxicities(r *rand.Rand, m *diseaseModel, p *Patient, last int) {
	crsMode := 1.5
	if slices.Contains(p.Infusion.Targets, "BCMA") {
		crsMode = 6
	}
	crsGrades := []weighted[int]{{1, 55}, {2, 35}, {3, 8}, {4, 2}} // ~10% of CRS grade 3 or more
	icansGrades := []weighted[int]{{1, 40}, {2, 30}, {3, 25}, {4, 5}}
	if m.autoimmune { // CD19 CAR-T in autoimmune disease: low tumour burden, mild CRS
		crsGrades = []weighted[int]{{1, 90}, {2, 10}}
		icansGrades = []weighted[int]{{1, 100}}
	}
	add := func(kind string, grade, day int) {
		if day <= last {
			p.Toxicities = append(p.Toxicities, Toxicity{Kind: kind, Grade: grade, Date: p.Infusion.Date.AddDate(0, 0, day)})
		}
	}
	crsDay := 0
	if r.Float64() < m.crs {
		crsDay = min(10, 1+int(triangular(r, 0, crsMode, 10)))
		add("crs", pick(r, crsGrades), crsDay)
	}
	if r.Float64() < m.icans {
		day := 3 + r.IntN(8)
		if crsDay > 0 { // ICANS follows CRS by a few days
			day = min(10, crsDay+r.IntN(4))
		}
		add("icans", pick(r, icansGrades), day)
	}
}
