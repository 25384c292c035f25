package synth

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/cartreg/cartreg/registry"
)

// daysPerMonth is the mean Gregorian month: trials report in months, the registry in days.
const daysPerMonth = 365.2425 / 12

// curve is a survival function S(t), t in months, of the shape CAR-T outcomes have: a share
// fails at once (primary refractory disease: the event is seen at the first assessment), a
// cured share never has the disease event, and the rest have it at a Weibull rate. Published
// curves plateau (ZUMA-1's overall survival is flat after about two years), which a single
// exponential cannot produce.
type curve struct {
	refractory float64 // share with the event at t = 0
	cure       float64 // share of the others who never have it
	lambda     float64 // Weibull rate (per month) of the rest
	shape      float64 // Weibull shape; 1 is exponential
}

func (c curve) survival(t float64) float64 {
	if t <= 0 {
		return 1
	}
	return (1 - c.refractory) * (c.cure + (1-c.cure)*math.Exp(-math.Pow(c.lambda*t, c.shape)))
}

// quantile is the time at which survival falls to u, in closed form: a patient whose
// survival quantile is u has the event then. 0 for the refractory share, +Inf for the cured.
func (c curve) quantile(u float64) float64 {
	if u >= 1-c.refractory {
		return 0
	}
	if c.cure >= 1 {
		return math.Inf(1)
	}
	x := (u/(1-c.refractory) - c.cure) / (1 - c.cure) // exp(-(λt)^k)
	if x <= 0 {
		return math.Inf(1)
	}
	return math.Pow(-math.Log(x), 1/c.shape) / c.lambda
}

// landmark is a published survival figure: S(Months) = Survival.
type landmark struct{ Months, Survival float64 }

// fitMedian solves for the rate that puts the median at m, with no cured share: for curves
// that keep falling (myeloma after BCMA CAR-T). background (per month) is a competing hazard
// the patients also have, so the curve with it still has its median at m.
func fitMedian(refractory, shape, background, m float64) (curve, error) {
	// (1-r)·exp(-(λm)^k)·exp(-βm) = 1/2
	h := math.Log(2*(1-refractory)) - background*m
	if h <= 0 {
		return curve{}, fmt.Errorf("no curve has median %.1f months with %.0f%% refractory", m, 100*refractory)
	}
	return curve{refractory: refractory, lambda: math.Pow(h, 1/shape) / m, shape: shape}, nil
}

// fitCure solves for the cured share and the rate of the others so that the curve, with the
// background hazard on top, passes through both landmarks (a < b in time). Bisection on the
// cured share; the rate follows from the first landmark in closed form.
func fitCure(refractory, shape, background float64, a, b landmark) (curve, error) {
	target := func(l landmark) float64 { // what the mixture alone must reach
		return l.Survival / ((1 - refractory) * math.Exp(-background*l.Months))
	}
	ta, tb := target(a), target(b)
	if !(0 < tb && tb < ta && ta < 1) {
		return curve{}, fmt.Errorf("landmarks %v and %v cannot be fitted", a, b)
	}
	at := func(cure float64) curve {
		x := (ta - cure) / (1 - cure)
		return curve{refractory: refractory, cure: cure, shape: shape,
			lambda: math.Pow(-math.Log(x), 1/shape) / a.Months}
	}
	miss := func(cure float64) float64 { return at(cure).survival(b.Months)/(1-refractory) - tb }
	lo, hi := 0.0, tb
	if miss(lo) > 0 {
		return curve{}, fmt.Errorf("landmarks %v and %v need a curve that falls faster early on", a, b)
	}
	for range 100 {
		mid := (lo + hi) / 2
		if miss(mid) > 0 {
			hi = mid
		} else {
			lo = mid
		}
	}
	return at((lo + hi) / 2), nil
}

// progressionLandmark turns a published PFS figure (progression or death, whichever comes
// first) into the survival of the time to progression alone, given the OS curve, the
// background hazard and the copula that ties progression to death: P(E > t, D > t) is the
// bivariate normal distribution function at the two survivals' normal scores.
func progressionLandmark(os curve, background float64, l landmark) (landmark, error) {
	joint := l.Survival / math.Exp(-background*l.Months) // P(E > t, disease death > t)
	b := probit(os.survival(l.Months))
	if joint >= phi(b) {
		return landmark{}, fmt.Errorf("PFS %.3f at %.1f months is not below OS there", l.Survival, l.Months)
	}
	lo, hi := -9.0, 9.0
	for range 60 {
		mid := (lo + hi) / 2
		if binormal(mid, b, copula) < joint {
			lo = mid
		} else {
			hi = mid
		}
	}
	return landmark{l.Months, phi((lo + hi) / 2)}, nil
}

// binormal is the standard bivariate normal distribution function with correlation rho:
// ∫ φ(x)·Φ((b − ρx)/√(1−ρ²)) dx from −∞ to a, by Simpson's rule (calibration only).
func binormal(a, b, rho float64) float64 {
	const lo, n = -9.0, 400
	switch {
	case math.IsInf(b, 1):
		return phi(a)
	case a <= lo:
		return 0
	}
	s := math.Sqrt(1 - rho*rho)
	f := func(x float64) float64 { return math.Exp(-x*x/2) / math.Sqrt(2*math.Pi) * phi((b-rho*x)/s) }
	h := (a - lo) / n
	sum := f(lo) + f(a)
	for i := 1; i < n; i++ {
		w := 2.0
		if i%2 == 1 {
			w = 4
		}
		sum += w * f(lo+float64(i)*h)
	}
	return sum * h / 3
}

// probit is the inverse of phi, by bisection (calibration only).
func probit(p float64) float64 {
	if p >= 1 {
		return math.Inf(1)
	}
	lo, hi := -40.0, 40.0
	for range 200 {
		mid := (lo + hi) / 2
		if phi(mid) < p {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

// fitWeibull solves for the Weibull rate and shape through two landmarks, with no cured share.
func fitWeibull(a, b landmark) (curve, error) {
	if !(0 < b.Survival && b.Survival < a.Survival && a.Survival < 1) {
		return curve{}, fmt.Errorf("landmarks %v and %v cannot be fitted", a, b)
	}
	// ln(−ln S(t)) = k·ln λ + k·ln t
	k := (math.Log(-math.Log(b.Survival)) - math.Log(-math.Log(a.Survival))) / (math.Log(b.Months) - math.Log(a.Months))
	return curve{lambda: math.Pow(-math.Log(a.Survival), 1/k) / a.Months, shape: k}, nil
}

// weighted is one choice with its relative weight.
type weighted[T any] struct {
	v T
	w float64
}

// responseModel is how a disease responds: the best response drawn for patients who progress
// early and for the others, and the categories progression is recorded with.
type responseModel struct {
	// early and durable are the best response of patients who progress within earlyMonths and
	// of the others.
	early, durable []weighted[string]
	// refractory is the category at the first assessment when the disease progressed by then;
	// "" when there is no such thing, and nonResponse is where non-responders stay (lupus:
	// active disease).
	refractory, nonResponse string
	// progression is the category progression after a response is recorded with.
	progression string
	// lagM1 and lagM3: responses deepen, so the month-1 and month-3 categories are up to this
	// many ranks worse than the best.
	lagM1, lagM3 int
}

// earlyMonths separates short from durable responses.
const earlyMonths = 6

// diseaseModel is what a disease group's patients are drawn from.
type diseaseModel struct {
	code  string
	share float64 // of the cohort

	// os is survival from the disease, with a background hazard (per month) of dying of other
	// causes on top. pfs is the time to progression alone, fitted so that progression or death,
	// whichever comes first, matches the published PFS.
	os         curve
	background float64
	pfs        curve
	response   responseModel

	male       float64 // share of men
	age        func(r *rand.Rand) float64
	yearsDx    func(r *rand.Rand) float64 // from diagnosis to infusion
	conditions []weighted[conditionCode]
	snomed     *conditionCode // some EHRs code the diagnosis in SNOMED CT only
	priorLines func(r *rand.Rand, infused int) int
	crs, icans float64 // incidence
	autoimmune bool    // CD19 CAR-T in lupus and kin: milder CRS and ICANS, given only since 2021
}

type conditionCode struct{ system, code, display string }

const (
	icd10cm = "http://hl7.org/fhir/sid/icd-10-cm"
	snomed  = "http://snomed.info/sct"
)

// diseaseModels are built (and their curves fitted) once.
var diseaseModels = sync.OnceValues(buildDiseaseModels)

// copula is the correlation (of normal scores) between a patient's progression and death
// times: those who progress early mostly die early, and progression mostly comes first, but
// some die in remission (non-relapse mortality) and some progress and live on.
const copula = 0.95

func buildDiseaseModels() ([]*diseaseModel, error) {
	var errs []error
	cure := func(refractory, shape, background float64, a, b landmark) curve {
		c, err := fitCure(refractory, shape, background, a, b)
		errs = append(errs, err)
		return c
	}
	median := func(refractory, shape, background, m float64) curve {
		c, err := fitMedian(refractory, shape, background, m)
		errs = append(errs, err)
		return c
	}
	// Progression curves are fitted to published PFS, which counts deaths too: the
	// landmarks are first turned into landmarks of progression alone.
	progression := func(os curve, background float64, a, b landmark) (landmark, landmark) {
		pa, err := progressionLandmark(os, background, a)
		errs = append(errs, err)
		pb, err := progressionLandmark(os, background, b)
		errs = append(errs, err)
		return pa, pb
	}
	pfsCure := func(os curve, background, refractory float64, a, b landmark) curve {
		pa, pb := progression(os, background, a, b)
		return cure(refractory, 1, 0, pa, pb)
	}
	pfsWeibull := func(os curve, background float64, a, b landmark) curve {
		pa, pb := progression(os, background, a, b)
		c, err := fitWeibull(pa, pb)
		errs = append(errs, err)
		return c
	}
	// Dying of other causes (and late effects) once cured, per month: about 1%/year after
	// lymphoma (older patients), 0.5% after ALL (younger), 0.2% in lupus.
	const (
		bgLymphoma = 0.010 / 12
		bgALL      = 0.005 / 12
		bgLupus    = 0.002 / 12
	)
	// Every trial figure here and in the models below is sourced in
	// registry/definitions/README.md, "Synthetic cohorts".
	var (
		lbclOS    = cure(0, 1, bgLymphoma, landmark{25.8, 0.5}, landmark{60, 0.426})
		myelomaOS = median(0, 1, 0, 60.7)
		ballOS    = cure(0, 1, bgALL, landmark{12, 0.76}, landmark{36, 0.63})
		flOS      = cure(0, 1, bgLymphoma, landmark{24, 0.88}, landmark{60, 0.75})
		mclOS     = cure(0, 1, bgLymphoma, landmark{46.6, 0.5}, landmark{60, 0.42})
		lupusOS   = curve{cure: 1, lambda: 1, shape: 1}
	)
	if err := errors.Join(errs...); err != nil { // the PFS fits need the OS curves
		return nil, fmt.Errorf("synth: calibrating the outcome model: %w", err)
	}
	models := []*diseaseModel{{
		// ZUMA-1 (axi-cel, LBCL): 5-year OS 42.6%, median OS 25.8 months; a cured fraction plus
		// an exponential. Progression: ZUMA-1 median PFS 5.9 months (Neelapu 2017) and a 5-year
		// PFS near JULIET's 28%.
		code: "lbcl", share: 0.45, // brief's disease mix: LBCL 45%
		os:         lbclOS,
		background: bgLymphoma,
		pfs:        pfsCure(lbclOS, bgLymphoma, 0, landmark{5.9, 0.5}, landmark{60, 0.30}),
		response: responseModel{ // ZUMA-1: ORR 82%, CR 54%
			early:      []weighted[string]{{"lugano-cmr", 25}, {"lugano-pmr", 55}, {"lugano-nmr", 20}},
			durable:    []weighted[string]{{"lugano-cmr", 92}, {"lugano-pmr", 8}},
			refractory: "lugano-pmd", progression: "lugano-pmd", lagM1: 1,
		},
		male: 0.6, age: truncNormal(60, 11, 22, 85), yearsDx: offsetExp(0.4, 1.5, 15),
		conditions: []weighted[conditionCode]{
			{conditionCode{icd10cm, "C83.30", "Diffuse large B-cell lymphoma, unspecified site"}, 40},
			{conditionCode{icd10cm, "C83.38", "Diffuse large B-cell lymphoma, lymph nodes of multiple sites"}, 25},
			{conditionCode{icd10cm, "C83.39", "Diffuse large B-cell lymphoma, extranodal and solid organ sites"}, 12},
			{conditionCode{icd10cm, "C83.33", "Diffuse large B-cell lymphoma, intra-abdominal lymph nodes"}, 8},
			{conditionCode{icd10cm, "C85.22", "Mediastinal (thymic) large B-cell lymphoma, intrathoracic lymph nodes"}, 6},
			{conditionCode{icd10cm, "C83.80", "Other non-follicular lymphoma, unspecified site"}, 9}, // HGBL, transformed FL
		},
		priorLines: lbclLines, crs: 0.85, icans: 0.30,
	}, {
		// CARTITUDE-1 (cilta-cel) median OS 60.7 months, ORR 97.9%; FUMANBA-1
		// (eque-cel) ORR 96%, median PFS 30.5 months, 12-month PFS 78.8%. No plateau: an
		// exponential OS, and a Weibull progression time fitted to both FUMANBA-1 figures.
		code: "myeloma", share: 0.25, // myeloma 25%
		os:  myelomaOS,
		pfs: pfsWeibull(myelomaOS, 0, landmark{12, 0.788}, landmark{30.5, 0.5}),
		response: responseModel{ // CARTITUDE-1: sCR 83% with cilta-cel; ide-cel CR 33%: a mix
			early:      []weighted[string]{{"imwg-vgpr", 28}, {"imwg-pr", 52}, {"imwg-mr", 11}, {"imwg-sd", 9}},
			durable:    []weighted[string]{{"imwg-scr", 50}, {"imwg-cr", 20}, {"imwg-vgpr", 22}, {"imwg-pr", 8}},
			refractory: "imwg-pd", progression: "imwg-pd", lagM1: 2, lagM3: 1,
		},
		male: 0.58, age: truncNormal(62, 8, 35, 84), yearsDx: offsetExp(1, 4, 20),
		conditions: []weighted[conditionCode]{
			{conditionCode{icd10cm, "C90.00", "Multiple myeloma not having achieved remission"}, 55},
			{conditionCode{icd10cm, "C90.02", "Multiple myeloma in relapse"}, 45},
		},
		snomed:     &conditionCode{snomed, "109989006", "Multiple myeloma (disorder)"},
		priorLines: myelomaLines, crs: 0.85, icans: 0.15,
	}, {
		// ELIANA (tisa-cel, B-ALL) 3-year OS 63%; ELIANA's 12-month OS 76% (Maude
		// 2018) shapes the curve. Event-free survival 50% at 12 and 44% at 36 months (ELIANA),
		// with 12% primary refractory: ORR about 81%.
		code: "b-all", share: 0.12, // B-ALL 12%
		os:         ballOS,
		background: bgALL,
		pfs:        pfsCure(ballOS, bgALL, 0.12, landmark{12, 0.50}, landmark{36, 0.44}),
		response: responseModel{
			early:      []weighted[string]{{"all-mrd-neg-cr", 40}, {"all-cr", 35}, {"all-cri", 25}},
			durable:    []weighted[string]{{"all-mrd-neg-cr", 85}, {"all-cr", 10}, {"all-cri", 5}},
			refractory: "all-refractory", progression: "all-relapse", lagM1: 1,
		},
		male: 0.55, age: ballAge, yearsDx: offsetExp(0.3, 1.5, 12),
		conditions: []weighted[conditionCode]{
			{conditionCode{icd10cm, "C91.00", "Acute lymphoblastic leukemia not having achieved remission"}, 40},
			{conditionCode{icd10cm, "C91.02", "Acute lymphoblastic leukemia, in relapse"}, 60},
		},
		snomed:     &conditionCode{snomed, "277571004", "B-cell acute lymphoblastic leukemia (disorder)"},
		priorLines: lines(weighted[int]{1, 25}, weighted[int]{2, 40}, weighted[int]{3, 25}, weighted[int]{4, 10}),
		crs:        0.80, icans: 0.35,
	}, {
		// ZUMA-5 (axi-cel, FL) gives ORR 94%, CR 79%; the survival figures are the model's own,
		// plausible for it: OS 88% at 2 years and 75% at 5, PFS 65% and 50%.
		code: "fl", share: 0.07, // FL 7%
		os:         flOS,
		background: bgLymphoma,
		pfs:        pfsCure(flOS, bgLymphoma, 0, landmark{24, 0.65}, landmark{60, 0.50}),
		response: responseModel{
			early:      []weighted[string]{{"lugano-cmr", 30}, {"lugano-pmr", 55}, {"lugano-nmr", 15}},
			durable:    []weighted[string]{{"lugano-cmr", 95}, {"lugano-pmr", 5}},
			refractory: "lugano-pmd", progression: "lugano-pmd", lagM1: 1,
		},
		male: 0.5, age: truncNormal(60, 10, 30, 85), yearsDx: offsetExp(2, 5, 25),
		conditions: []weighted[conditionCode]{
			{conditionCode{icd10cm, "C82.90", "Follicular lymphoma, unspecified, unspecified site"}, 35},
			{conditionCode{icd10cm, "C82.98", "Follicular lymphoma, unspecified, lymph nodes of multiple sites"}, 30},
			{conditionCode{icd10cm, "C82.18", "Follicular lymphoma grade II, lymph nodes of multiple sites"}, 20},
			{conditionCode{icd10cm, "C82.28", "Follicular lymphoma grade III, unspecified, lymph nodes of multiple sites"}, 15},
		},
		priorLines: lines(weighted[int]{2, 35}, weighted[int]{3, 30}, weighted[int]{4, 20}, weighted[int]{5, 10}, weighted[int]{6, 5}),
		crs:        0.75, icans: 0.20,
	}, {
		// ZUMA-2 (brexu-cel, MCL): ORR 91%, CR 68%, median PFS 25.8 and OS 46.6 months.
		code: "mcl", share: 0.05, // MCL 5%
		os:         mclOS,
		background: bgLymphoma,
		pfs:        pfsCure(mclOS, bgLymphoma, 0, landmark{25.8, 0.5}, landmark{60, 0.28}),
		response: responseModel{
			early:      []weighted[string]{{"lugano-cmr", 30}, {"lugano-pmr", 50}, {"lugano-nmr", 20}},
			durable:    []weighted[string]{{"lugano-cmr", 85}, {"lugano-pmr", 15}},
			refractory: "lugano-pmd", progression: "lugano-pmd", lagM1: 1,
		},
		male: 0.75, age: truncNormal(65, 8, 40, 85), yearsDx: offsetExp(1, 3, 15),
		conditions: []weighted[conditionCode]{
			{conditionCode{icd10cm, "C83.10", "Mantle cell lymphoma, unspecified site"}, 60},
			{conditionCode{icd10cm, "C83.18", "Mantle cell lymphoma, lymph nodes of multiple sites"}, 40},
		},
		priorLines: lines(weighted[int]{1, 10}, weighted[int]{2, 30}, weighted[int]{3, 35}, weighted[int]{4, 17}, weighted[int]{5, 8}),
		crs:        0.90, icans: 0.35,
	}, {
		// CD19 CAR-T in SLE, 8 of 8 in DORIS remission: no disease deaths (only the
		// background), DORIS for nearly all, rare flares (5% at a year, 12% at three).
		code: "sle", share: 0.045, // SLE/autoimmune 6%: three quarters lupus
		os:         lupusOS,
		background: bgLupus,
		pfs:        pfsCure(lupusOS, bgLupus, 0, landmark{12, 0.95}, landmark{36, 0.88}),
		response:   lupusResponse,
		male:       0.1, age: truncNormal(35, 10, 18, 65), yearsDx: offsetExp(2, 8, 30),
		conditions: []weighted[conditionCode]{
			{conditionCode{icd10cm, "M32.14", "Glomerular disease in systemic lupus erythematosus"}, 50},
			{conditionCode{icd10cm, "M32.19", "Other organ or system involvement in systemic lupus erythematosus"}, 20},
			{conditionCode{icd10cm, "M32.9", "Systemic lupus erythematosus, unspecified"}, 30},
		},
		snomed:     &conditionCode{snomed, "55464009", "Systemic lupus erythematosus (disorder)"},
		priorLines: lines(weighted[int]{2, 25}, weighted[int]{3, 35}, weighted[int]{4, 25}, weighted[int]{5, 10}, weighted[int]{6, 5}),
		crs:        0.60, icans: 0.05, autoimmune: true,
	}, {
		// Systemic sclerosis, myositis, vasculitis: treated and assessed like lupus.
		code: "other-autoimmune", share: 0.015,
		os:         lupusOS,
		background: bgLupus,
		pfs:        pfsCure(lupusOS, bgLupus, 0, landmark{12, 0.94}, landmark{36, 0.86}),
		response:   lupusResponse,
		male:       0.3, age: truncNormal(45, 12, 18, 70), yearsDx: offsetExp(1, 5, 25),
		conditions: []weighted[conditionCode]{
			{conditionCode{icd10cm, "M34.0", "Progressive systemic sclerosis"}, 40},
			{conditionCode{icd10cm, "M33.20", "Polymyositis, organ involvement unspecified"}, 20},
			{conditionCode{icd10cm, "M33.90", "Dermatopolymyositis, unspecified, organ involvement unspecified"}, 15},
			{conditionCode{icd10cm, "M31.7", "Microscopic polyangiitis"}, 25},
		},
		priorLines: lines(weighted[int]{2, 30}, weighted[int]{3, 35}, weighted[int]{4, 25}, weighted[int]{5, 10}),
		crs:        0.60, icans: 0.05, autoimmune: true,
	}}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("synth: calibrating the outcome model: %w", err)
	}
	return models, nil
}

// lupusResponse: LLDAS at month 1 for some, DORIS by month 3 for nearly all (Mackensen
// 2022); a flare is the progression event. Patients who do not respond stay "active": there
// is no flare without a remission first.
var lupusResponse = responseModel{
	early:       []weighted[string]{{"sle-doris", 50}, {"sle-lldas", 50}},
	durable:     []weighted[string]{{"sle-doris", 98}, {"sle-lldas", 1.5}, {"sle-active", 0.5}},
	nonResponse: "sle-active", progression: "sle-flare", lagM1: 1,
}

// checkModels makes sure every code the models and product tables name is one the registry's
// code systems define, each category in its disease's scheme and each diagnosis code in its
// disease group: a changed CodeSystem fails generation, never a patient's data.
func checkModels(models []*diseaseModel, terms *registry.Terminology) error {
	for _, m := range models {
		d := terms.Disease(m.code)
		if d == nil {
			return fmt.Errorf("synth: disease group %q is not in the disease-group CodeSystem", m.code)
		}
		r := m.response
		var codes []string
		for _, w := range append(slices.Clone(r.early), r.durable...) {
			codes = append(codes, w.v)
		}
		codes = append(codes, r.progression)
		if r.refractory != "" {
			codes = append(codes, r.refractory)
		} else {
			codes = append(codes, r.nonResponse)
		}
		for _, code := range codes {
			if c := terms.Categories[code]; c == nil || c.Scheme != d.Scheme {
				return fmt.Errorf("synth: %s: %q is not a response category of the %s scheme", m.code, code, d.Scheme)
			}
		}
		conditions := slices.Clone(m.conditions)
		if m.snomed != nil {
			conditions = append(conditions, weighted[conditionCode]{*m.snomed, 0})
		}
		for _, c := range conditions {
			if terms.DiseaseOf(c.v.system, c.v.code) != d {
				return fmt.Errorf("synth: %s: diagnosis %s|%s is not in the disease group", m.code, c.v.system, c.v.code)
			}
		}
	}
	for _, ind := range indications {
		if terms.Products[ind.product] == nil {
			return fmt.Errorf("synth: product %q is not in the cart-product CodeSystem", ind.product)
		}
	}
	return nil
}
