package registry

import (
	"context"
	"fmt"
)

// inSitesSQL finds the patient a resource concerns (a Patient itself; a follow-up Task's
// patient; otherwise the Patient its subject or patient reference names) and asks whether
// one of the sites treats them: it infused them, or manages them.
const inSitesSQL = `
WITH patients AS (
    SELECT $2::text AS patient_id WHERE $1 = 'Patient'
    UNION
    SELECT patient_id FROM followup_task WHERE $1 = 'Task' AND task_id = $2
    UNION
    SELECT target_id FROM search_reference
     WHERE resource_type = $1 AND resource_id = $2 AND code IN ('patient', 'subject')
       AND target_type = 'Patient'
)
SELECT EXISTS (
    SELECT 1 FROM patients p
     WHERE EXISTS (SELECT 1 FROM registry_patient rp WHERE rp.patient_id = p.patient_id AND rp.managing_org = ANY($3))
        OR EXISTS (SELECT 1 FROM registry_infusion ri WHERE ri.patient_id = p.patient_id AND ri.effective_site_id = ANY($3))
)`

// InSites says whether the resource resourceType/id concerns a patient treated or managed by
// one of sites (Organization ids). Coordinators see only such resources.
func (r *Registry) InSites(ctx context.Context, resourceType, id string, sites []string) (bool, error) {
	var ok bool
	if err := r.db.QueryRow(ctx, inSitesSQL, resourceType, id, sites).Scan(&ok); err != nil {
		return false, fmt.Errorf("checking the sites of %s/%s: %w", resourceType, id, err)
	}
	return ok, nil
}
