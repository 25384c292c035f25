package followup

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/cartreg/cartreg/fhir"
)

// Resolve turns the sites and patients of q, as a client wrote them, into ids.
//
// A site is named by Organization/id, its id, its name (every site of that name, as the
// registry's outcomes match sites), or an identifier of its Organization (system|value, or a
// value in any system). A patient is named by Patient/id, its id, or an identifier such as
// the MRN (system|value, or a value in any system).
//
// A value that names nothing is a 400 (issue not-found) located at its parameter: an empty
// list would read as "nothing due", and a coordinator must never miss a visit for a typo. So is
// a value that names more than one patient (an MRN issued by two hospitals, say), asking for
// system|value. When limited, sites are those the caller may see, and a patient of none of
// them is not found, as though absent.
func (w *Worklist) Resolve(ctx context.Context, q *Query, sites []string, limited bool) error {
	var siteIDs, patientIDs []string
	for _, v := range q.Sites {
		ids, err := w.resolveSite(ctx, v)
		if err != nil {
			return err
		}
		siteIDs = append(siteIDs, ids...)
	}
	for _, v := range q.Patients {
		id, err := w.resolvePatient(ctx, v, sites, limited)
		if err != nil {
			return err
		}
		patientIDs = append(patientIDs, id)
	}
	q.Sites, q.Patients = siteIDs, patientIDs
	return nil
}

func notFound(param, format string, args ...any) error {
	return fhir.NewOutcome(http.StatusBadRequest, fhir.NotFound, fmt.Sprintf(format, args...), param)
}

// sitesByIDOrNameSQL finds the registry's sites with the id or the name $1, and whether an
// Organization of id $1 exists at all (a site with no infusion yet).
const sitesByIDOrNameSQL = `SELECT organization_id FROM registry_site WHERE organization_id = $1 OR name = $1
UNION
SELECT resource_id FROM ` + fhir.CurrentRelation + ` o WHERE o.resource_type = 'Organization' AND o.resource_id = $1`

func (w *Worklist) resolveSite(ctx context.Context, v string) ([]string, error) {
	const param = "site"
	key, byID := strings.CutPrefix(v, "Organization/")
	rows, err := w.db.Query(ctx, sitesByIDOrNameSQL, key)
	if err != nil {
		return nil, fmt.Errorf("finding site %q: %w", v, err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("finding site %q: %w", v, err)
		}
		if !byID || id == key {
			ids = append(ids, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("finding site %q: %w", v, err)
	}
	if !byID {
		id, err := w.byIdentifier(ctx, param, "Organization", v)
		if err != nil {
			return nil, err
		}
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil, notFound(param, "site=%s: no site has this id, name or identifier", v)
	}
	slices.Sort(ids)
	return ids, nil
}

func (w *Worklist) resolvePatient(ctx context.Context, v string, sites []string, limited bool) (string, error) {
	const param = "patient"
	key, byID := strings.CutPrefix(v, "Patient/")
	var found []string
	if fhir.ValidID(key) {
		current, err := w.s.store.Current(ctx, w.db, "Patient", []string{key})
		if err != nil {
			return "", err
		}
		if _, ok := current[key]; ok {
			found = append(found, key)
		}
	}
	if !byID {
		id, err := w.byIdentifier(ctx, param, "Patient", v)
		if err != nil {
			return "", err
		}
		if id != "" && !slices.Contains(found, id) {
			found = append(found, id)
		}
	}
	if len(found) > 1 {
		return "", badParam(param, "patient=%s is the id of one Patient and an identifier of another: give Patient/%s, or the identifier as system|value", v, v)
	}
	if len(found) == 1 && limited {
		var ok bool
		if err := w.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM registry_infusion WHERE patient_id = $1 AND effective_site_id = ANY($2))
			OR EXISTS (SELECT 1 FROM registry_patient WHERE patient_id = $1 AND managing_org = ANY($2))`, found[0], sites).Scan(&ok); err != nil {
			return "", fmt.Errorf("finding patient %q: %w", v, err)
		}
		if !ok {
			found = nil // another site's patient: as though absent
		}
	}
	if len(found) == 0 {
		return "", notFound(param, "patient=%s: no Patient has this id or identifier", v)
	}
	return found[0], nil
}

// byIdentifier is the one resource of resourceType with the identifier v (system|value, or a
// value in any system), "" for none; several are a 400 asking for system|value.
func (w *Worklist) byIdentifier(ctx context.Context, param, resourceType, v string) (string, error) {
	if w.match == nil {
		return "", nil
	}
	id, err := w.match.MatchOne(ctx, w.db, resourceType, "identifier="+url.QueryEscape(v), param+"="+v)
	var o *fhir.Outcome
	switch {
	case err == nil:
		return id, nil
	case errors.As(err, &o) && o.Status == http.StatusPreconditionFailed:
		return "", badParam(param, "%s=%s: more than one %s has this identifier: give it as system|value", param, v, resourceType)
	case errors.As(err, &o) && o.Status < 500:
		return "", badParam(param, "%s=%s: %s", param, v, o.Error())
	}
	return "", err
}
