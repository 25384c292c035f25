// Package synth generates a realistic, synthetic CAR-T cohort: patients treated at sites in
// several countries, their infusions, remission assessments along the follow-up plan,
// toxicities and deaths, with outcomes calibrated to published trials (ZUMA-1, CARTITUDE-1,
// FUMANBA-1, ELIANA, the CD19 CAR-T lupus series; sources in registry/definitions/README.md,
// "Synthetic cohorts"). Each patient becomes one FHIR R4 transaction Bundle written to the
// registry's conventions (the same README), so a cohort of any size can be loaded through the
// API to exercise the registry, its outcome reports and its performance.
//
// Generation is deterministic: the same Options give byte-identical Bundles. Every patient
// draws from a random stream of its own (PCG seeded from Seed and the patient's index), so
// patient i is the same whatever the cohort size, and nothing reads the clock: the data
// cut-off is an option.
package synth

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cartreg/cartreg/registry"
)

// Options say what cohort to generate.
type Options struct {
	// Patients is the cohort size.
	Patients int
	// Seed selects the cohort: the same seed and options give the same patients.
	Seed uint64
	// AsOf is the data cut-off: nothing is dated after it. Required (there is no default, so
	// that output never depends on when it was generated).
	AsOf time.Time
	// FirstInfusion is the earliest infusion date; zero means AsOf minus 8 years.
	FirstInfusion time.Time
	// Sites is the number of treating sites; zero means 12.
	Sites int
}

// Cohort is a generated cohort: the sites and the patients treated there.
type Cohort struct {
	// Options are the options the cohort was generated with, defaults filled in.
	Options  Options
	Sites    []Site
	Patients []Patient
}

// Site is a treating site (a FHIR Organization).
type Site struct {
	Identifier, Name, Country, City string // Country: ISO 3166 code (US, CN, DE …)
}

// Patient is one synthetic patient and everything the registry records about them. Dates are
// UTC midnights: the registry counts follow-up in days.
type Patient struct {
	Identifier            string
	Family, Given, Gender string
	BirthDate             time.Time
	Disease               string // disease-group code (registry CodeSystem disease-group)
	ConditionCode         string // ICD-10-CM mostly, SNOMED CT for some
	ConditionSystem       string
	ConditionDisplay      string
	DiagnosisDate         time.Time
	Site                  int // index into Cohort.Sites
	Infusion              Infusion
	Assessments           []Assessment // in date order
	Toxicities            []Toxicity   // in date order
	Death                 *time.Time
	LostToFollowUp        bool
	LastContact           time.Time
}

// Infusion is the CAR-T infusion, day 0 of follow-up.
type Infusion struct {
	Date           time.Time
	Product        string // cart-product code; "investigational" for trial and hospital products
	ProductDisplay string
	Targets        []string // target-antigen codes, or another antigen such as "Ex02"
	PriorLines     int
	Resource       string // "Procedure" or "MedicationAdministration"
}

// Assessment is a remission assessment.
type Assessment struct {
	Date        time.Time
	Category    string // response-category code, from the scheme of the patient's disease
	MRDNegative *bool  // myeloma only, when MRD was tested
}

// Toxicity is a CRS or ICANS episode, graded by the ASTCT consensus.
type Toxicity struct {
	Kind  string // "crs" or "icans"
	Grade int    // 1–4
	Date  time.Time
}

// Resource types of an infusion.
const (
	Procedure                = "Procedure"
	MedicationAdministration = "MedicationAdministration"
)

// terminology is the registry's own reading of its code systems: categories, schemes,
// products and targets come from the same files the server publishes, so generated data can
// never drift from what the registry accepts.
var terminology = sync.OnceValues(registry.LoadTerminology)

// Generate generates a cohort.
func Generate(o Options) (*Cohort, error) {
	if err := o.normalize(); err != nil {
		return nil, err
	}
	terms, err := terminology()
	if err != nil {
		return nil, err
	}
	models, err := diseaseModels()
	if err != nil {
		return nil, err
	}
	if err := checkModels(models, terms); err != nil {
		return nil, err
	}
	g := &generator{
		opts:   o,
		terms:  terms,
		models: models,
		plan:   registry.DefaultPlan(followUpYears).Milestones,
		sites:  makeSites(o.Sites),
	}
	g.prepare()
	c := &Cohort{Options: o, Sites: g.sites, Patients: make([]Patient, o.Patients)}
	for i := range c.Patients {
		c.Patients[i] = g.patient(i)
	}
	return c, nil
}

func (o *Options) normalize() error {
	switch {
	case o.Patients < 0:
		return fmt.Errorf("synth: %d patients: must be zero or more", o.Patients)
	case o.Sites < 0:
		return fmt.Errorf("synth: %d sites: must be zero (the default, 12) or more", o.Sites)
	case o.AsOf.IsZero():
		return errors.New("synth: AsOf (the data cut-off) is required")
	}
	if o.Sites == 0 {
		o.Sites = 12
	}
	o.AsOf = dateOf(o.AsOf)
	if o.FirstInfusion.IsZero() {
		o.FirstInfusion = o.AsOf.AddDate(-8, 0, 0)
	}
	o.FirstInfusion = dateOf(o.FirstInfusion)
	if o.FirstInfusion.After(o.AsOf) {
		return fmt.Errorf("synth: first infusion %s is after the cut-off %s",
			o.FirstInfusion.Format(time.DateOnly), o.AsOf.Format(time.DateOnly))
	}
	return nil
}

// dateOf is t's calendar date (in t's own location) as a UTC midnight.
func dateOf(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// generator holds what every patient is drawn from.
type generator struct {
	opts       Options
	terms      *registry.Terminology
	models     []*diseaseModel
	plan       []registry.Milestone
	sites      []Site
	siteWeight []float64
	// diseaseWeight is each model's share of the cohort.
	diseaseWeight []float64
	ex02Site      int // the hospital that developed its own Ex02 product (-1: none)

	pcg  *rand.PCG
	rand *rand.Rand // over pcg
}

func (g *generator) prepare() {
	g.pcg = rand.NewPCG(0, 0)
	g.rand = rand.New(g.pcg)
	// Site volumes differ: a few large centres treat most patients (weight 1/sqrt(rank)).
	g.siteWeight = make([]float64, len(g.sites))
	for i := range g.sites {
		g.siteWeight[i] = 1 / math.Sqrt(float64(i+1))
	}
	for _, m := range g.models {
		g.diseaseWeight = append(g.diseaseWeight, m.share)
	}
	// The hospital-developed target antigen Ex02 of example patient 5
	// (registry/definitions/README.md, "Example patients"): one Chinese hospital.
	g.ex02Site = -1
	for i, s := range g.sites {
		if s.Country == "CN" {
			g.ex02Site = i
			break
		}
	}
}

// rng is patient i's own random stream: PCG seeded from the seed and the index, each mixed
// by SplitMix64 so that neighbouring seeds and indexes give unrelated streams. The one
// generator is reseeded for each patient (math/rand/v2's Rand keeps no state of its own).
func (g *generator) rng(i int) *rand.Rand {
	s := splitmix64(g.opts.Seed)
	g.pcg.Seed(s, splitmix64(s^splitmix64(uint64(i)+1)))
	return g.rand
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
