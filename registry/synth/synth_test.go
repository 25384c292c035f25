package synth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/registry"
)

// cutoff is the data cut-off of the tests' cohorts, as of the examples.
var cutoff = time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)

func generate(t testing.TB, o Options) *Cohort {
	t.Helper()
	c, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func terms(t testing.TB) *registry.Terminology {
	t.Helper()
	terms, err := registry.LoadTerminology()
	if err != nil {
		t.Fatal(err)
	}
	return terms
}

// The same options give the same bytes; another seed another cohort; and a patient does not
// depend on how many others are generated.
func TestGenerationIsDeterministic(t *testing.T) {
	opts := Options{Patients: 200, Seed: 42, AsOf: cutoff}
	a, b := generate(t, opts), generate(t, opts)
	other := generate(t, Options{Patients: 200, Seed: 43, AsOf: cutoff})
	bigger := generate(t, Options{Patients: 400, Seed: 42, AsOf: cutoff})
	differs := 0
	for i := range a.Patients {
		ra, err := a.Bundle(i)
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := b.Bundle(i)
		ro, _ := other.Bundle(i)
		rbig, _ := bigger.Bundle(i)
		if !bytes.Equal(ra, rb) {
			t.Fatalf("patient %d: two runs with the same options differ", i)
		}
		if !bytes.Equal(ra, rbig) {
			t.Fatalf("patient %d differs between a cohort of 200 and one of 400", i)
		}
		if !bytes.Equal(ra, ro) {
			differs++
		}
	}
	if differs != len(a.Patients) {
		t.Errorf("seed 43 gives %d of %d patients different from seed 42, want all", differs, len(a.Patients))
	}

	dirA, dirB := t.TempDir(), t.TempDir()
	if err := a.WriteDir(dirA); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteDir(dirB); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dirA, "*"))
	if len(files) != len(a.Patients) || filepath.Base(files[0]) != "patient-000001.json" {
		t.Fatalf("WriteDir wrote %d files (%v…), want %d named patient-000001.json…", len(files), files[:min(1, len(files))], len(a.Patients))
	}
	for _, f := range files {
		x, _ := os.ReadFile(f)
		y, err := os.ReadFile(filepath.Join(dirB, filepath.Base(f)))
		if err != nil || !bytes.Equal(x, y) {
			t.Fatalf("%s differs between two runs (%v)", filepath.Base(f), err)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{
		{Patients: 1},                          // no cut-off
		{Patients: -1, AsOf: cutoff},           // negative size
		{Patients: 1, AsOf: cutoff, Sites: -2}, // negative sites
		{Patients: 1, AsOf: cutoff, FirstInfusion: cutoff.AddDate(0, 0, 1)}, // starts after it ends
	} {
		if _, err := Generate(o); err == nil {
			t.Errorf("Generate(%+v) succeeded", o)
		}
	}
	c := generate(t, Options{Patients: 0, AsOf: time.Date(2026, 11, 22, 23, 30, 0, 0, time.FixedZone("", -5*3600))})
	if !c.Options.AsOf.Equal(cutoff) || !c.Options.FirstInfusion.Equal(cutoff.AddDate(-8, 0, 0)) || len(c.Sites) != 12 {
		t.Errorf("defaults: %+v with %d sites", c.Options, len(c.Sites))
	}
	if _, err := c.Bundle(0); err == nil {
		t.Error("Bundle(0) of an empty cohort succeeded")
	}
	countries := map[string]int{}
	for _, s := range c.Sites {
		countries[s.Country]++
	}
	if countries["US"] < 3 || countries["CN"] < 3 || len(countries) < 5 {
		t.Errorf("12 sites in %v: want the US, China and several European countries", countries)
	}
}

type entry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
	Request  struct {
		Method, URL, IfNoneExist string
	} `json:"request"`
}

var urnUUID = regexp.MustCompile(`^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// references collects every Reference.reference in a decoded resource.
func references(v any, out *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && k == "reference" {
				*out = append(*out, s)
			} else {
				references(e, out)
			}
		}
	case []any:
		for _, e := range x {
			references(e, out)
		}
	}
}

// Every Bundle is a well-formed transaction whose every resource the server's strict R4
// parser accepts, with conditional creates on identifiers and references inside the Bundle.
func TestBundlesAreValidTransactions(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 50
	}
	c := generate(t, Options{Patients: n, Seed: 7, AsOf: cutoff})
	types := map[string]int{}
	for i := range c.Patients {
		raw, err := c.Bundle(i)
		if err != nil {
			t.Fatal(err)
		}
		var b struct {
			ResourceType, Type string
			Entry              []entry
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		if b.ResourceType != "Bundle" || b.Type != "transaction" || len(b.Entry) < 4 {
			t.Fatalf("patient %d: a %s of type %q with %d entries", i, b.ResourceType, b.Type, len(b.Entry))
		}
		if _, err := fhir.Parse(raw); err != nil {
			t.Fatalf("patient %d: the Bundle: %s", i, err)
		}
		fullURLs := map[string]bool{}
		for _, e := range b.Entry {
			if !urnUUID.MatchString(e.FullURL) || fullURLs[e.FullURL] {
				t.Fatalf("patient %d: fullUrl %q: want a name-based urn:uuid unique in the Bundle", i, e.FullURL)
			}
			fullURLs[e.FullURL] = true
		}
		for k, e := range b.Entry {
			where := fmt.Sprintf("patient %d entry[%d]", i, k)
			res, err := fhir.Parse(e.Resource)
			if err != nil {
				t.Fatalf("%s: %s\n%s", where, err, e.Resource)
			}
			types[res.Type]++
			var body map[string]any
			if err := json.Unmarshal(e.Resource, &body); err != nil {
				t.Fatal(err)
			}
			// The identifier the conditional create finds the resource by.
			id := body["identifier"]
			if l, ok := id.([]any); ok {
				id = l[0]
			}
			idm, _ := id.(map[string]any)
			system, _ := idm["system"].(string)
			value, _ := idm["value"].(string)
			wantSystem := IdentifierBase + strings.ToLower(res.Type)
			if res.Type == "Organization" {
				wantSystem = IdentifierBase + "site"
			}
			criteria := "identifier=" + system + "|" + value
			if res.Type == "AdverseEvent" {
				criteria = "_tag=" + system + "|" + value
				if !strings.Contains(string(e.Resource), `"tag": [`) {
					t.Errorf("%s: an AdverseEvent without its identifier as a tag", where)
				}
			}
			if system != wantSystem || value == "" {
				t.Errorf("%s: identifier %s|%s, want system %s", where, system, value, wantSystem)
			}
			if e.Request.Method != "POST" || e.Request.URL != res.Type || e.Request.IfNoneExist != criteria {
				t.Errorf("%s: request %+v, want POST %s ifNoneExist %s", where, e.Request, res.Type, criteria)
			}
			var refs []string
			references(body, &refs)
			for _, r := range refs {
				if !fullURLs[r] {
					t.Errorf("%s: reference %q is not an entry of the Bundle", where, r)
				}
			}
		}
	}
	for _, typ := range []string{"Organization", "Patient", "Condition", "Procedure", "MedicationAdministration", "Observation", "AdverseEvent", "Encounter"} {
		if types[typ] == 0 {
			t.Errorf("no %s in %d Bundles", typ, n)
		}
	}
	t.Logf("%d Bundles: %v", n, types)
}

// Over a large cohort the model never breaks the registry's rules or its own.
func TestNoBusinessRuleIsBroken(t *testing.T) {
	tm := terms(t)
	c := generate(t, Options{Patients: 5000, Seed: 11, AsOf: cutoff})
	o := c.Options
	seen := map[string]bool{}
	for _, p := range c.Patients {
		fail := func(format string, args ...any) {
			t.Helper()
			t.Errorf("%s (%s, infused %s): %s", p.Identifier, p.Disease, date(p.Infusion.Date), fmt.Sprintf(format, args...))
		}
		if seen[p.Identifier] {
			fail("identifier used twice")
		}
		seen[p.Identifier] = true
		inf := p.Infusion.Date
		disease := tm.Disease(p.Disease)
		switch {
		case disease == nil:
			fail("unknown disease group")
			continue
		case tm.DiseaseOf(p.ConditionSystem, p.ConditionCode) != disease:
			fail("condition %s|%s is not in the disease group", p.ConditionSystem, p.ConditionCode)
		case inf.Before(o.FirstInfusion) || inf.After(o.AsOf):
			fail("infused outside %s…%s", date(o.FirstInfusion), date(o.AsOf))
		case !p.BirthDate.Before(p.DiagnosisDate) || p.DiagnosisDate.After(inf):
			fail("born %s, diagnosed %s", date(p.BirthDate), date(p.DiagnosisDate))
		case p.Site < 0 || p.Site >= len(c.Sites):
			fail("site %d", p.Site)
		case p.Gender != "male" && p.Gender != "female", p.Family == "", p.Given == "":
			fail("name or gender missing")
		case p.Infusion.PriorLines < 1 || p.Infusion.PriorLines > 8:
			fail("%d prior lines", p.Infusion.PriorLines)
		case p.Infusion.Resource != Procedure && p.Infusion.Resource != MedicationAdministration:
			fail("infusion as a %q", p.Infusion.Resource)
		case len(p.Infusion.Targets) == 0 || p.Infusion.ProductDisplay == "":
			fail("product %q without targets or name", p.Infusion.Product)
		}
		if prod := tm.Products[p.Infusion.Product]; prod == nil {
			fail("product %q is not in the cart-product CodeSystem", p.Infusion.Product)
		} else if p.Infusion.Product != "investigational" && !slices.Equal(prod.Targets, p.Infusion.Targets) {
			fail("%s targets %v, want %v", p.Infusion.Product, p.Infusion.Targets, prod.Targets)
		}

		limit := o.AsOf // nothing after the cut-off or death
		if p.Death != nil {
			if !p.Death.After(inf) || p.Death.After(o.AsOf) {
				fail("died %s", date(*p.Death))
			}
			limit = *p.Death
			if !p.LastContact.Equal(*p.Death) {
				fail("dead on %s, last contact %s", date(*p.Death), date(p.LastContact))
			}
		}
		last := inf
		progressed := false
		for k, a := range p.Assessments {
			cat := tm.Categories[a.Category]
			switch {
			case cat == nil || cat.Scheme != disease.Scheme:
				fail("assessment %s: %q is not a %s category", date(a.Date), a.Category, disease.Scheme)
				continue
			case !a.Date.After(inf) || a.Date.After(limit):
				fail("assessment on %s", date(a.Date))
			case k > 0 && !a.Date.After(p.Assessments[k-1].Date):
				fail("assessments out of order at %s", date(a.Date))
			case progressed:
				fail("assessed (%s) after progression", a.Category)
			case a.MRDNegative != nil && p.Disease != "myeloma":
				fail("MRD component outside myeloma")
			}
			progressed = progressed || cat.Progression
			last = maxTime(last, a.Date)
		}
		for _, x := range p.Toxicities {
			day := daysBetween(inf, x.Date)
			switch {
			case x.Kind != "crs" && x.Kind != "icans", x.Grade < 1, x.Grade > 4:
				fail("toxicity %+v", x)
			case day < 1 || day > 10 || x.Date.After(limit):
				fail("%s on day %d (%s)", x.Kind, day, date(x.Date))
			}
			last = maxTime(last, x.Date)
		}
		if p.Death != nil {
			last = maxTime(last, *p.Death)
		}
		if p.LastContact.Before(last) || p.LastContact.After(o.AsOf) {
			fail("last contact %s, latest event %s", date(p.LastContact), date(last))
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// km is a Kaplan-Meier estimate: survival after each distinct event time.
type km struct {
	times    []float64
	survival []float64
}

// kaplanMeier estimates survival from (time, event) pairs; event false is censored.
func kaplanMeier(times []float64, events []bool) km {
	idx := make([]int, len(times))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return times[idx[a]] < times[idx[b]] })
	var out km
	s, atRisk := 1.0, len(times)
	for k := 0; k < len(idx); {
		t := times[idx[k]]
		deaths, leaving := 0, 0
		for ; k < len(idx) && times[idx[k]] == t; k++ {
			leaving++
			if events[idx[k]] {
				deaths++
			}
		}
		if deaths > 0 {
			s *= 1 - float64(deaths)/float64(atRisk)
			out.times = append(out.times, t)
			out.survival = append(out.survival, s)
		}
		atRisk -= leaving
	}
	return out
}

func (k km) at(t float64) float64 {
	s := 1.0
	for i, x := range k.times {
		if x > t {
			break
		}
		s = k.survival[i]
	}
	return s
}

func (k km) median() float64 {
	for i, s := range k.survival {
		if s <= 0.5 {
			return k.times[i]
		}
	}
	return math.Inf(1)
}

// survivalOf returns OS and PFS samples, in months, of a disease's patients infused at least
// minMonths before the cut-off. OS: death, censored at the last contact. PFS: progression or
// death, censored at the last assessment without progression (as registry/definitions/README.md,
// "Survival endpoints", defines them).
func survivalOf(c *Cohort, tm *registry.Terminology, disease string, minMonths float64) (osT []float64, osE []bool, pfsT []float64, pfsE []bool) {
	months := func(from, to time.Time) float64 { return float64(daysBetween(from, to)) / daysPerMonth }
	for _, p := range c.Patients {
		if p.Disease != disease || months(p.Infusion.Date, c.Options.AsOf) < minMonths {
			continue
		}
		inf := p.Infusion.Date
		if p.Death != nil {
			osT, osE = append(osT, months(inf, *p.Death)), append(osE, true)
		} else {
			osT, osE = append(osT, months(inf, p.LastContact)), append(osE, false)
		}
		lastPF, progression := inf, time.Time{}
		for _, a := range p.Assessments {
			if tm.Categories[a.Category].Progression {
				progression = a.Date
				break
			}
			lastPF = a.Date
		}
		switch {
		case !progression.IsZero():
			pfsT, pfsE = append(pfsT, months(inf, progression)), append(pfsE, true)
		case p.Death != nil:
			pfsT, pfsE = append(pfsT, months(inf, *p.Death)), append(pfsE, true)
		default:
			pfsT, pfsE = append(pfsT, months(inf, lastPF)), append(pfsE, false)
		}
	}
	return
}

// bestResponses returns, per disease, the best recorded response of each assessed patient
// infused at least a year before the cut-off (responses deepen over months).
func bestResponses(c *Cohort, tm *registry.Terminology) map[string][]*registry.Category {
	out := map[string][]*registry.Category{}
	for _, p := range c.Patients {
		if p.Infusion.Date.AddDate(1, 0, 0).After(c.Options.AsOf) {
			continue
		}
		var best *registry.Category
		for _, a := range p.Assessments {
			if cat := tm.Categories[a.Category]; best == nil || cat.Rank < best.Rank {
				best = cat
			}
		}
		if best != nil {
			out[p.Disease] = append(out[p.Disease], best)
		}
	}
	return out
}

func share[T any](xs []T, f func(T) bool) float64 {
	n := 0
	for _, x := range xs {
		if f(x) {
			n++
		}
	}
	return float64(n) / float64(len(xs))
}

func within(t *testing.T, what string, got, want, tolerance float64) {
	t.Helper()
	t.Logf("%-38s %8.3f (target %.3f ± %.3f)", what, got, want, tolerance)
	if math.Abs(got-want) > tolerance {
		t.Errorf("%s = %.3f, want %.3f ± %.3f", what, got, want, tolerance)
	}
}

// The cohort reproduces the published figures its parameters come from. Infusions from 2018
// to 2040 with a cut-off in 2045, so most patients have five years of potential follow-up.
func TestCalibration(t *testing.T) {
	tm := terms(t)
	c := generate(t, Options{Patients: 20000, Seed: 2026, AsOf: time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC),
		FirstInfusion: time.Date(2018, 1, 1, 0, 0, 0, 0, time.UTC)})

	diseases := map[string]float64{}
	for _, p := range c.Patients {
		diseases[p.Disease]++
	}
	n := float64(len(c.Patients))
	// The brief's mix: LBCL 45%, myeloma 25%, B-ALL 12%, FL 7%, MCL 5%, SLE/autoimmune 6%.
	within(t, "share LBCL", diseases["lbcl"]/n, 0.45, 0.015)
	within(t, "share myeloma", diseases["myeloma"]/n, 0.25, 0.015)
	within(t, "share B-ALL", diseases["b-all"]/n, 0.12, 0.01)
	within(t, "share FL", diseases["fl"]/n, 0.07, 0.008)
	within(t, "share MCL", diseases["mcl"]/n, 0.05, 0.008)
	within(t, "share SLE/autoimmune", (diseases["sle"]+diseases["other-autoimmune"])/n, 0.06, 0.008)

	// LBCL, ZUMA-1: 5-year OS 42.6%, median OS 25.8 months.
	osT, osE, _, _ := survivalOf(c, tm, "lbcl", 60)
	lbcl := kaplanMeier(osT, osE)
	within(t, "LBCL 5-year OS (KM)", lbcl.at(60), 0.426, 0.03)
	within(t, "LBCL median OS, months (KM)", lbcl.median(), 25.8, 4)

	// Myeloma: CARTITUDE-1 median OS 60.7 months; FUMANBA-1 median PFS 30.5, 12-month PFS 78.8%.
	osT, osE, pfsT, pfsE := survivalOf(c, tm, "myeloma", 0)
	mmOS, mmPFS := kaplanMeier(osT, osE), kaplanMeier(pfsT, pfsE)
	within(t, "myeloma median OS, months (KM)", mmOS.median(), 60.7, 6)
	within(t, "myeloma median PFS, months (KM)", mmPFS.median(), 30.5, 4)
	within(t, "myeloma 12-month PFS (KM)", mmPFS.at(12), 0.788, 0.04)

	// B-ALL, ELIANA: 3-year OS 63%.
	osT, osE, _, _ = survivalOf(c, tm, "b-all", 36)
	within(t, "B-ALL 3-year OS (KM)", kaplanMeier(osT, osE).at(36), 0.63, 0.04)

	best := bestResponses(c, tm)
	response := func(c *registry.Category) bool { return c.Response }
	complete := func(c *registry.Category) bool { return c.Complete }
	// CARTITUDE-1 ORR 97.9%, FUMANBA-1 96%.
	within(t, "myeloma ORR", share(best["myeloma"], response), 0.97, 0.02)
	// ZUMA-1: ORR 82%, CR 54% (Neelapu 2017); ELIANA: ORR 81%.
	within(t, "LBCL ORR", share(best["lbcl"], response), 0.80, 0.05)
	within(t, "LBCL CR", share(best["lbcl"], complete), 0.54, 0.06)
	within(t, "B-ALL ORR", share(best["b-all"], response), 0.83, 0.05)
	// CD19 CAR-T in SLE: 8 of 8 in DORIS remission; no deaths to speak of.
	doris := func(c *registry.Category) bool { return c.Code == "sle-doris" }
	within(t, "SLE DORIS remission (best)", share(best["sle"], doris), 0.97, 0.03)
	osT, osE, _, _ = survivalOf(c, tm, "sle", 60)
	within(t, "SLE 5-year OS (KM)", kaplanMeier(osT, osE).at(60), 1, 0.015)

	// Toxicity and follow-up: CRS ~80% (10% of it grade 3+), ICANS ~25%, ~7% lost.
	var crs, crs3, icans float64
	for _, p := range c.Patients {
		for _, x := range p.Toxicities {
			switch {
			case x.Kind == "crs":
				crs++
				if x.Grade >= 3 {
					crs3++
				}
			default:
				icans++
			}
		}
	}
	within(t, "CRS", crs/n, 0.80, 0.04)
	within(t, "CRS grade 3+ among CRS", crs3/crs, 0.10, 0.03)
	within(t, "ICANS", icans/n, 0.25, 0.04)
}

// The models name only codes of the registry's code systems, in the right scheme, and the
// check would see one that is not.
func TestModelsUseTheRegistrysCodes(t *testing.T) {
	tm := terms(t)
	models, err := diseaseModels()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkModels(models, tm); err != nil {
		t.Fatal(err)
	}
	wrongScheme := *models[0]
	wrongScheme.response.progression = "imwg-pd"
	wrongCode := *models[1]
	wrongCode.conditions = []weighted[conditionCode]{{conditionCode{icd10cm, "C83.30", "DLBCL"}, 1}}
	for _, m := range []*diseaseModel{&wrongScheme, &wrongCode} {
		if err := checkModels([]*diseaseModel{m}, tm); err == nil {
			t.Errorf("%s: a wrong code passed the check", m.code)
		}
	}
}

// Assessments fall in the plan's windows mostly, some outside; about 8% of the visits that
// were due did not happen, and about 7% of patients are lost to follow-up.
func TestFollowUpFollowsThePlan(t *testing.T) {
	tm := terms(t)
	c := generate(t, Options{Patients: 5000, Seed: 5, AsOf: cutoff})
	plan := registry.DefaultPlan(followUpYears).Milestones
	inWindow, outside, due, held := 0, 0, 0, 0
	for _, p := range c.Patients {
		// Follow-up visits go on until progression, death, loss or the cut-off.
		end := daysBetween(p.Infusion.Date, p.LastContact)
		var days []int
		for _, a := range p.Assessments {
			day := daysBetween(p.Infusion.Date, a.Date)
			if tm.Categories[a.Category].Progression {
				end = day
				break
			}
			days = append(days, day)
			if slices.ContainsFunc(plan, func(m registry.Milestone) bool { return day >= m.WindowStart && day <= m.WindowEnd }) {
				inWindow++
			} else {
				outside++
			}
		}
		// A visit was due if its window, with the week before and two weeks after that a late or
		// early visit may fall in, ended before follow-up did; it was held if an assessment
		// falls in that span.
		for _, m := range plan {
			if m.WindowEnd+14 >= end {
				break
			}
			due++
			if slices.ContainsFunc(days, func(d int) bool { return d >= m.WindowStart-7 && d <= m.WindowEnd+14 }) {
				held++
			}
		}
	}
	frac := float64(outside) / float64(inWindow+outside)
	missed := 1 - float64(held)/float64(due)
	t.Logf("%d assessments in a window, %d outside (%.1f%%); %d of %d due visits missed (%.1f%%)",
		inWindow, outside, 100*frac, due-held, due, 100*missed)
	if frac < 0.01 || frac > 0.08 {
		t.Errorf("%.1f%% of assessments outside every window, want a few", 100*frac)
	}
	if missed < 0.05 || missed > 0.11 {
		t.Errorf("%.1f%% of due visits missed, want about 8%%", 100*missed)
	}
	lost := share(c.Patients, func(p Patient) bool { return p.LostToFollowUp })
	within(t, "lost to follow-up", lost, 0.07, 0.015)
}

func BenchmarkGenerate100k(b *testing.B) {
	for b.Loop() {
		if _, err := Generate(Options{Patients: 100000, Seed: 1, AsOf: cutoff}); err != nil {
			b.Fatal(err)
		}
	}
}
