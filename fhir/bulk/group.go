package bulk

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cartreg/cartreg/fhir"
)

// CohortSystem is the code system of the Group characteristics that define a registry
// cohort (Group.characteristic.code):
//
//   - cohort-disease: valueCodeableConcept, a disease-group code (lbcl, myeloma, …) as its
//     coding's code, or its text
//   - cohort-product: valueCodeableConcept, a cart-product code or a product's name
//   - cohort-target: valueCodeableConcept, a target antigen's code or name
//   - cohort-site: valueReference to the site's Organization
//   - cohort-infused: valuePeriod, the infusion dates (start and end inclusive, either open)
//
// Each characteristic selects patients with an infusion that has it; several of one code
// match any of them, different codes all at once. exclude=true is not supported.
const CohortSystem = "http://cartreg.org/fhir/CodeSystem/cartreg"

// The characteristic codes of CohortSystem.
const (
	codeDisease = "cohort-disease"
	codeProduct = "cohort-product"
	codeTarget  = "cohort-target"
	codeSite    = "cohort-site"
	codeInfused = "cohort-infused"
)

type codeableConcept struct {
	Coding []struct {
		System string `json:"system"`
		Code   string `json:"code"`
	} `json:"coding"`
	Text string `json:"text"`
}

type group struct {
	Actual *bool `json:"actual"`
	Member []struct {
		Entity struct {
			Reference string `json:"reference"`
		} `json:"entity"`
		Inactive bool `json:"inactive"`
	} `json:"member"`
	Characteristic []struct {
		Code                 codeableConcept  `json:"code"`
		ValueCodeableConcept *codeableConcept `json:"valueCodeableConcept"`
		ValueReference       *struct {
			Reference string `json:"reference"`
		} `json:"valueReference"`
		ValuePeriod *struct {
			Start string `json:"start"`
			End   string `json:"end"`
		} `json:"valuePeriod"`
		Exclude bool `json:"exclude"`
	} `json:"characteristic"`
}

// groupMembers is the ids of the Patients a Group stands for, as of now: its active members
// that are local Patients, or, for a Group that is not actual, the registry cohort its
// characteristics define.
func (x *Exporter) groupMembers(ctx context.Context, base, id string) ([]string, error) {
	v, err := x.store.Read(ctx, x.store.DB(), "Group", id)
	if err != nil {
		return nil, err
	}
	var g group
	if err := json.Unmarshal(v.JSON, &g); err != nil {
		return nil, fmt.Errorf("reading Group/%s: %w", id, err)
	}
	if g.Actual != nil && !*g.Actual {
		return x.cohortMembers(ctx, id, &g)
	}
	out := []string{}
	seen := map[string]bool{}
	for _, m := range g.Member {
		ref := strings.TrimPrefix(m.Entity.Reference, base+"/")
		pid, ok := strings.CutPrefix(ref, "Patient/")
		if !ok || m.Inactive || !fhir.ValidID(pid) || seen[pid] {
			continue
		}
		seen[pid] = true
		out = append(out, pid)
	}
	return out, nil
}

func (x *Exporter) cohortMembers(ctx context.Context, id string, g *group) ([]string, error) {
	if x.cohort == nil {
		return nil, fhir.NewOutcome(http.StatusUnprocessableEntity, fhir.NotSupported, "this server resolves no cohort Groups", "Group.actual")
	}
	if len(g.Characteristic) == 0 {
		return nil, fhir.NewOutcome(http.StatusUnprocessableEntity, fhir.BusinessRule,
			fmt.Sprintf("Group/%s is not actual and has no characteristic: it defines no cohort", id), "Group.characteristic")
	}
	var c Cohort
	for i, ch := range g.Characteristic {
		loc := fmt.Sprintf("Group.characteristic[%d]", i)
		bad := func(format string, args ...any) error {
			return fhir.NewOutcome(http.StatusUnprocessableEntity, fhir.NotSupported, fmt.Sprintf("Group/%s: ", id)+fmt.Sprintf(format, args...), loc)
		}
		if ch.Exclude {
			return nil, bad("exclude=true is not supported in a cohort")
		}
		code := ""
		for _, cd := range ch.Code.Coding {
			if cd.System == CohortSystem {
				code = cd.Code
			}
		}
		text := func() (string, error) {
			if ch.ValueCodeableConcept == nil {
				return "", bad("%s takes a valueCodeableConcept", code)
			}
			for _, cd := range ch.ValueCodeableConcept.Coding {
				if cd.Code != "" {
					return cd.Code, nil
				}
			}
			if ch.ValueCodeableConcept.Text != "" {
				return ch.ValueCodeableConcept.Text, nil
			}
			return "", bad("%s has neither a code nor a text", code)
		}
		switch code {
		case codeDisease, codeProduct, codeTarget:
			v, err := text()
			if err != nil {
				return nil, err
			}
			dst := map[string]*[]string{codeDisease: &c.Diseases, codeProduct: &c.Products, codeTarget: &c.Targets}[code]
			*dst = append(*dst, v)
		case codeSite:
			if ch.ValueReference == nil {
				return nil, bad("cohort-site takes a valueReference to an Organization")
			}
			org, ok := strings.CutPrefix(ch.ValueReference.Reference, "Organization/")
			if !ok || !fhir.ValidID(org) {
				return nil, bad("cohort-site takes a valueReference to an Organization")
			}
			c.Sites = append(c.Sites, org)
		case codeInfused:
			if ch.ValuePeriod == nil || c.InfusedFrom != nil || c.InfusedTo != nil {
				return nil, bad("cohort-infused takes one valuePeriod")
			}
			for _, e := range []struct {
				s   string
				dst **time.Time
			}{{ch.ValuePeriod.Start, &c.InfusedFrom}, {ch.ValuePeriod.End, &c.InfusedTo}} {
				if e.s == "" {
					continue
				}
				if len(e.s) < 10 {
					return nil, bad("cohort-infused: %q is not a full date", e.s)
				}
				t, err := time.Parse("2006-01-02", e.s[:10])
				if err != nil {
					return nil, bad("cohort-infused: %q is not a date", e.s)
				}
				*e.dst = &t
			}
		default:
			return nil, bad("characteristic code is not one of %s#%s, %s, %s, %s, %s", CohortSystem, codeDisease, codeProduct, codeTarget, codeSite, codeInfused)
		}
	}
	ids, err := x.cohort(ctx, c)
	if err != nil {
		return nil, err
	}
	if ids == nil {
		ids = []string{}
	}
	return ids, nil
}
