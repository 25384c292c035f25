package synth

import (
	"math/rand/v2"
	"time"
)

// region is where a site is, for which products it can use.
type region int

const (
	us region = iota
	europe
	china
)

func regionOf(country string) region {
	switch country {
	case "US":
		return us
	case "CN":
		return china
	}
	return europe
}

// indication is a product's commercial use for a disease in a region, from a date. The dates
// follow the cart-product CodeSystem's approval property (US 2017 for axi-cel and tisa-cel …,
// China 2021 for relma-cel, 2023 eque-cel and inati-cel, 2024 zevor-cel) with the later
// label extensions and the EU's and China's own approvals, to the month. Before a product is
// available its patients are treated in trials: a hospital in China in 2018 infuses
// investigational CD19 CAR-T cells, as in the example patients' reports
// (registry/definitions/README.md, "Example patients").
type indication struct {
	product, disease string
	region           region
	since            time.Time
	weight           float64
	minAge, maxAge   float64 // the label's ages (tisa-cel in ALL up to 25; adults only for brexu-cel, obe-cel, inati-cel)
}

func month(y int, m time.Month) time.Time { return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC) }

var indications = []indication{
	// Large B-cell lymphoma.
	{"axi-cel", "lbcl", us, month(2017, 10), 45, 18, 120},
	{"tisa-cel", "lbcl", us, month(2018, 5), 20, 18, 120},
	{"liso-cel", "lbcl", us, month(2021, 2), 35, 18, 120},
	{"axi-cel", "lbcl", europe, month(2018, 8), 50, 18, 120},
	{"tisa-cel", "lbcl", europe, month(2018, 8), 30, 18, 120},
	{"liso-cel", "lbcl", europe, month(2022, 4), 20, 18, 120},
	{"axi-cel", "lbcl", china, month(2021, 6), 40, 18, 120},
	{"relma-cel", "lbcl", china, month(2021, 9), 60, 18, 120},
	// Follicular lymphoma.
	{"axi-cel", "fl", us, month(2021, 3), 50, 18, 120},
	{"tisa-cel", "fl", us, month(2022, 5), 30, 18, 120},
	{"liso-cel", "fl", us, month(2024, 5), 20, 18, 120},
	{"axi-cel", "fl", europe, month(2022, 6), 50, 18, 120},
	{"tisa-cel", "fl", europe, month(2022, 5), 50, 18, 120},
	{"relma-cel", "fl", china, month(2022, 10), 100, 18, 120},
	// Mantle cell lymphoma.
	{"brexu-cel", "mcl", us, month(2020, 7), 85, 18, 120},
	{"liso-cel", "mcl", us, month(2024, 5), 15, 18, 120},
	{"brexu-cel", "mcl", europe, month(2020, 12), 100, 18, 120},
	{"relma-cel", "mcl", china, month(2023, 6), 100, 18, 120},
	// B-cell ALL: tisa-cel for children and young adults, brexu-cel and obe-cel for adults.
	{"tisa-cel", "b-all", us, month(2017, 8), 100, 0, 25},
	{"brexu-cel", "b-all", us, month(2021, 10), 70, 26, 120},
	{"obe-cel", "b-all", us, month(2024, 11), 30, 26, 120},
	{"tisa-cel", "b-all", europe, month(2018, 8), 100, 0, 25},
	{"brexu-cel", "b-all", europe, month(2022, 9), 80, 26, 120},
	{"obe-cel", "b-all", europe, month(2025, 7), 20, 26, 120},
	{"inati-cel", "b-all", china, month(2023, 11), 100, 26, 120},
	// Multiple myeloma.
	{"ide-cel", "myeloma", us, month(2021, 3), 40, 18, 120},
	{"cilta-cel", "myeloma", us, month(2022, 2), 60, 18, 120},
	{"ide-cel", "myeloma", europe, month(2021, 8), 40, 18, 120},
	{"cilta-cel", "myeloma", europe, month(2022, 5), 60, 18, 120},
	{"eque-cel", "myeloma", china, month(2023, 6), 50, 18, 120},
	{"zevor-cel", "myeloma", china, month(2024, 2), 30, 18, 120},
	{"cilta-cel", "myeloma", china, month(2024, 8), 20, 18, 120},
}

// trial is an investigational product: a trial's or a hospital's own, with no code.
type trial struct {
	display string
	targets []string
}

var (
	trialCD19     = trial{"Anti-CD19 CAR-T cells (investigational, phase 1/2 trial)", []string{"CD19"}}
	trialCD19CD20 = trial{"CD19/CD20 bispecific CAR-T cells (investigational)", []string{"CD19", "CD20"}}
	trialCD19BCMA = trial{"CD19/BCMA compound CAR-T cells (investigational, dual target)", []string{"CD19", "BCMA"}}
	trialCD19CD22 = trial{"CD19/CD22 bispecific CAR-T cells (investigational)", []string{"CD19", "CD22"}}
	trialCD22     = trial{"Anti-CD22 CAR-T cells (investigational)", []string{"CD22"}}
	trialBCMA     = trial{"Anti-BCMA CAR-T cells (investigational, phase 1/2 trial)", []string{"BCMA"}}
	trialGPRC5D   = trial{"Anti-GPRC5D CAR-T cells (investigational)", []string{"GPRC5D"}}
	trialLupus    = trial{"Anti-CD19 CAR-T cells for autoimmune disease (investigational)", []string{"CD19"}}
	// Example patient 4 (registry/definitions/README.md, "Example patients"): a CD19/BCMA
	// compound CAR-T in lupus, in China.
	trialLupusDual = trial{"CD19/BCMA compound CAR-T cells for autoimmune disease (investigational)", []string{"CD19", "BCMA"}}
)

// trials a disease's patients may be in; dual-target ones mostly in China, where most of them
// run.
func trialsFor(disease string, r region) []weighted[trial] {
	dual := 3.0
	if r == china {
		dual = 15
	}
	switch disease {
	case "myeloma":
		return []weighted[trial]{{trialBCMA, 70}, {trialCD19BCMA, dual}, {trialGPRC5D, 12}}
	case "b-all":
		return []weighted[trial]{{trialCD19, 60}, {trialCD19CD22, 30}, {trialCD22, 10}}
	case "sle", "other-autoimmune":
		return []weighted[trial]{{trialLupus, 85}, {trialLupusDual, dual}}
	case "lbcl":
		return []weighted[trial]{{trialCD19, 75}, {trialCD19CD20, 12}, {trialCD19BCMA, dual}}
	}
	return []weighted[trial]{{trialCD19, 85}, {trialCD19CD20, 15}}
}

// ex02Trial is the hospital-developed product against the new target Ex02 of example patient 5
// (registry/definitions/README.md, "Example patients"), named after the hospital that makes it.
func ex02Trial(site Site) trial {
	return trial{"Ex02 CAR-T cells (" + site.Name + ", hospital-developed, investigational)", []string{"Ex02"}}
}

// product chooses the product a patient receives: one available at the site's region on the
// infusion date for the disease and age, else a trial. Trials go on after approval (5% of
// patients in the US and Europe, 15% in China), autoimmune disease is trial-only, and the
// Ex02 hospital puts an eighth of its ALL and LBCL patients on its own product.
func (g *generator) product(r *rand.Rand, disease string, site int, on time.Time, age float64) Infusion {
	reg := regionOf(g.sites[site].Country)
	var choices []weighted[string]
	for _, ind := range indications {
		if ind.disease == disease && ind.region == reg && !on.Before(ind.since) && age >= ind.minAge && age <= ind.maxAge {
			choices = append(choices, weighted[string]{ind.product, ind.weight})
		}
	}
	trialShare := 0.05
	if reg == china {
		trialShare = 0.15
	}
	if site == g.ex02Site && (disease == "b-all" || disease == "lbcl") && r.Float64() < 0.12 {
		return g.trialInfusion(ex02Trial(g.sites[site]))
	}
	if len(choices) == 0 || r.Float64() < trialShare {
		return g.trialInfusion(pick(r, trialsFor(disease, reg)))
	}
	code := pick(r, choices)
	p := g.terms.Products[code]
	return Infusion{Product: code, ProductDisplay: p.Display, Targets: append([]string(nil), p.Targets...)}
}

func (g *generator) trialInfusion(t trial) Infusion {
	return Infusion{Product: "investigational", ProductDisplay: t.display, Targets: append([]string(nil), t.targets...)}
}

// Prior lines of therapy. Second-line CAR-T in LBCL from 2022 (ZUMA-7, TRANSFORM) and
// earlier-line myeloma from 2024 (CARTITUDE-4, KarMMa-3) bring the counts down in later years.
func lbclLines(r *rand.Rand, year int) int {
	if year >= 2022 && r.Float64() < 0.35 {
		return 1
	}
	return pick(r, []weighted[int]{{2, 40}, {3, 33}, {4, 15}, {5, 8}, {6, 4}})
}

func myelomaLines(r *rand.Rand, year int) int {
	if year >= 2024 && r.Float64() < 0.4 {
		return pick(r, []weighted[int]{{1, 30}, {2, 40}, {3, 30}})
	}
	return pick(r, []weighted[int]{{3, 10}, {4, 22}, {5, 25}, {6, 20}, {7, 13}, {8, 10}})
}

func lines(choices ...weighted[int]) func(*rand.Rand, int) int {
	return func(r *rand.Rand, _ int) int { return pick(r, choices) }
}
