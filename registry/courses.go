package registry

import (
	"context"
	"fmt"
	"time"
)

// Course is one infusion of a patient as the registry's projection holds it, with the
// assessments that count from it. It is one patient's data: for operators' tools (cartreg
// demo), never for the researchers' endpoints, which return aggregates only.
type Course struct {
	Patient     string   // Patient id
	Infusion    string   // "Procedure/7" or "MedicationAdministration/7"
	Disease     string   // disease-group code of the first indication; "" when unclassified
	Product     string   // product label
	Targets     []string // target antigens, in code-system order
	InfusedOn   time.Time
	Assessments []Assessment // by day after the infusion
}

// Assessment is a remission assessment placed on the follow-up plan.
type Assessment struct {
	Observation string // Observation id
	Day         *int   // days after the infusion; nil when the projection could not count them
	Milestone   string // the plan's timepoint code; "" when unscheduled
	Category    string // response-category code
}

const coursesSQL = `SELECT i.patient_id, i.resource_type || '/' || i.resource_id, coalesce(i.disease, ''), i.product_label,
	i.targets, i.infused_on, a.observation_id, a.day, coalesce(a.milestone, ''), coalesce(a.category, '')
FROM registry_infusion i
LEFT JOIN registry_assessment a ON a.infusion_type = i.resource_type AND a.infusion_id = i.resource_id
WHERE i.patient_id = ANY($1)
ORDER BY i.patient_id, i.infused_on, i.resource_type, i.resource_id, a.day, a.observation_id`

// Courses returns the infusions of the patients, each with its assessments, by patient id and
// then infusion date, in one query.
func (r *Registry) Courses(ctx context.Context, patients []string) ([]Course, error) {
	rows, err := r.db.Query(ctx, coursesSQL, patients)
	if err != nil {
		return nil, fmt.Errorf("reading the patients' courses: %w", err)
	}
	defer rows.Close()
	var out []Course
	for rows.Next() {
		var c Course
		var a Assessment
		var observation *string
		if err := rows.Scan(&c.Patient, &c.Infusion, &c.Disease, &c.Product, &c.Targets, &c.InfusedOn, &observation,
			&a.Day, &a.Milestone, &a.Category); err != nil {
			return nil, fmt.Errorf("reading the patients' courses: %w", err)
		}
		if n := len(out); n == 0 || out[n-1].Infusion != c.Infusion || out[n-1].Patient != c.Patient {
			out = append(out, c)
		}
		if observation != nil {
			a.Observation = *observation
			last := &out[len(out)-1]
			last.Assessments = append(last.Assessments, a)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the patients' courses: %w", err)
	}
	return out, nil
}
