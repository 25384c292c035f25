package synth

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/registry"
)

// LoadDirect writes a cohort straight into the registry tables, with the derived columns the
// projection would give them except the plan's timepoints (Registry.Start assigns those, as
// after a change of plan): how benchmarks get 100,000 patients into a database in seconds
// rather than hours. The registry's TestDirectLoadMatchesTheAPI checks it against the API.
func LoadDirect(ctx context.Context, db *pgxpool.Pool, c *Cohort, terms *registry.Terminology) error {
	var sites, patients, conditions, infusions, assessments, toxicities [][]any
	for i, s := range c.Sites {
		sites = append(sites, []any{fmt.Sprintf("s%d", i), s.Name})
	}
	for i, p := range c.Patients {
		pid, cid, iid := fmt.Sprintf("p%d", i), fmt.Sprintf("c%d", i), fmt.Sprintf("i%d", i)
		site := fmt.Sprintf("s%d", p.Site)
		last := p.Infusion.Date
		later := func(t time.Time) {
			if t.After(last) {
				last = t
			}
		}
		var firstResponse, progression, lastPF *time.Time
		for k, a := range p.Assessments {
			cat := terms.Categories[a.Category]
			on := a.Date
			later(on)
			if cat.Progression && progression == nil {
				progression = &on
			}
			if cat.Response && firstResponse == nil {
				firstResponse = &on
			}
			day := int(on.Sub(p.Infusion.Date).Hours() / 24)
			assessments = append(assessments, []any{fmt.Sprintf("a%d_%d", i, k), pid, on, a.Category, cid,
				p.Infusion.Resource + "/" + iid, a.MRDNegative, p.Infusion.Resource, iid, day})
		}
		for _, a := range p.Assessments {
			if cat := terms.Categories[a.Category]; !cat.Progression && (progression == nil || a.Date.Before(*progression)) {
				on := a.Date
				lastPF = &on
			}
		}
		for k, x := range p.Toxicities {
			later(x.Date)
			toxicities = append(toxicities, []any{fmt.Sprintf("t%d_%d", i, k), pid, x.Kind, x.Grade, x.Date, x.Date, p.Infusion.Resource + "/" + iid})
		}
		if p.Death != nil {
			later(*p.Death)
		}
		later(p.LastContact) // the Bundle's follow-up Encounter; outcomes read only the date
		product, label := p.Infusion.Product, terms.Products[p.Infusion.Product].Display
		if product == "investigational" {
			product, label = "other:"+strings.ToLower(p.Infusion.ProductDisplay), p.Infusion.ProductDisplay
		}
		targets := terms.OrderTargets(p.Infusion.Targets)
		patients = append(patients, []any{pid, p.Death, site, last, p.BirthDate})
		conditions = append(conditions, []any{cid, pid, p.Disease})
		infusions = append(infusions, []any{p.Infusion.Resource, iid, pid, p.Infusion.Date, product, label, targets,
			[]string{cid}, site, p.Infusion.PriorLines, p.Disease, site, 1, p.Death, last, firstResponse, progression, lastPF})
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		for _, t := range []struct {
			table   string
			columns []string
			rows    [][]any
		}{
			{"registry_site", []string{"organization_id", "name"}, sites},
			{"registry_patient", []string{"patient_id", "deceased_on", "managing_org", "last_contact_on", "birth_on"}, patients},
			{"registry_condition", []string{"condition_id", "patient_id", "disease"}, conditions},
			{"registry_infusion", []string{"resource_type", "resource_id", "patient_id", "infused_on", "product", "product_label",
				"targets", "condition_ids", "site_id", "prior_lines", "disease", "effective_site_id", "sequence", "death_on",
				"last_contact_on", "first_response_on", "progression_on", "last_progression_free_on"}, infusions},
			{"registry_assessment", []string{"observation_id", "patient_id", "assessed_on", "category", "condition_id",
				"infusion_ref", "mrd_negative", "infusion_type", "infusion_id", "day"}, assessments},
			{"registry_toxicity", []string{"adverse_event_id", "patient_id", "kind", "grade", "onset_on", "onset_imputed_on", "infusion_ref"}, toxicities},
		} {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{t.table}, t.columns, pgx.CopyFromRows(t.rows)); err != nil {
				return fmt.Errorf("%s: %w", t.table, err)
			}
		}
		if err := registry.DataChanged(ctx, tx); err != nil {
			return err
		}
		// The plan's timepoints are assigned the way a changed plan is applied at start-up.
		_, err := tx.Exec(ctx, `DELETE FROM registry_state WHERE key = 'plan'`)
		return err
	})
}
