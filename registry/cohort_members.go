package registry

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// CohortPatients lists the ids of the patients with an infusion the filter selects (any of
// their infusions, not only the first), in id order: the members of a Group defined by a
// registry cohort, for bulk export. The conditions are those of the outcome queries.
func (r *Registry) CohortPatients(ctx context.Context, f Filter) ([]string, error) {
	rows, err := r.db.Query(ctx, `SELECT DISTINCT i.patient_id
		FROM registry_infusion i LEFT JOIN registry_site s ON s.organization_id = i.effective_site_id
		WHERE ($1::text[] IS NULL OR i.disease = ANY($1))
		  AND ($2::text[] IS NULL OR i.product = ANY($2) OR i.product_label = ANY($2))
		  AND ($3::text[] IS NULL OR i.targets && $3)
		  AND ($4::text[] IS NULL OR i.effective_site_id = ANY($4) OR s.name = ANY($4))
		  AND ($5::date IS NULL OR i.infused_on >= $5)
		  AND ($6::date IS NULL OR i.infused_on <= $6)
		ORDER BY i.patient_id`, f.args()...)
	if err != nil {
		return nil, fmt.Errorf("listing a cohort's patients: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing a cohort's patients: %w", err)
	}
	return ids, nil
}
