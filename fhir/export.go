package fhir

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ExportQuery is one page of a bulk export ($export) of one resource type, read in id order
// so that the next page starts after the last id written: a cursor that survives a restart.
type ExportQuery struct {
	Type string
	// AsOf is the export's transactionTime: each resource is exported as its version current at
	// that instant, so resources written later are left out and resources changed or deleted
	// later are exported as they were. It is what lets an export that resumes after a restart
	// read the same data as one that did not stop.
	AsOf time.Time
	// Since, when set, keeps only versions written after it (the _since parameter).
	Since *time.Time
	// Filters are _typeFilter searches of this type ("Observation?code=…" or just the query):
	// a resource is exported when it matches any of them; none exports every resource. They
	// are evaluated against the current search indexes.
	Filters []string
	// Compartment limits the export to the Patient compartment: of the Patients in Patients,
	// or of every patient when Patients is nil.
	Compartment bool
	Patients    []string
	// Base is the FHIR base the export's client addressed: references to it are local. ""
	// is the searcher's configured base.
	Base string
	// After is the last id of the previous page; "" starts at the beginning.
	After string
	Limit int
}

// CheckExportFilter checks a _typeFilter value ("Observation?code=…") as the export will run
// it, and returns the resource type it filters.
func (s *Searcher) CheckExportFilter(criteria string) (string, error) {
	return s.CheckCriteria(criteria)
}

// ExportPage reads one page of an export: at most q.Limit resources, in id order.
func (s *Searcher) ExportPage(ctx context.Context, db DBTX, q ExportQuery) ([]*Version, error) {
	if !IsResourceType(q.Type) {
		return nil, fmt.Errorf("export of %q: not a resource type", q.Type)
	}
	b := &sqlBuilder{base: s.baseURL}
	if q.Base != "" {
		b.base = strings.TrimSuffix(q.Base, "/")
	}
	typ := b.arg(q.Type)
	conds := []string{"r.resource_type = " + typ, "r.resource_id > " + b.arg(q.After), "v.body IS NOT NULL"}
	if q.Since != nil {
		conds = append(conds, "v.last_updated > "+b.arg(*q.Since))
	}
	if q.Compartment {
		conds = append(conds, "("+exportCompartment(b, "r", q.Type, q.Patients)+")")
	}
	var alternatives []string
	for _, criteria := range q.Filters {
		if !strings.Contains(criteria, "?") {
			criteria = q.Type + "?" + criteria
		}
		resourceType, sq, err := s.parseCriteria(criteria)
		if err != nil {
			// Checked at kick-off, so the server's search limits changed since: the client's
			// filter can no longer run, which is theirs to hear of.
			return nil, NewOutcome(http.StatusBadRequest, NotSupported, fmt.Sprintf("_typeFilter %q: %v", criteria, err), "_typeFilter")
		}
		if resourceType != q.Type {
			return nil, fmt.Errorf("_typeFilter %q is not of %s", criteria, q.Type)
		}
		all := []string{"true"}
		o := owner{typeExpr: "r.resource_type", idExpr: "r.resource_id", types: []string{q.Type}}
		for _, f := range sq.filters {
			for _, values := range f.values {
				c, err := s.condition(b, o, f.key, values, false)
				if err != nil {
					return nil, err
				}
				all = append(all, "("+c+")")
			}
		}
		alternatives = append(alternatives, "("+strings.Join(all, " AND ")+")")
	}
	if len(alternatives) > 0 {
		conds = append(conds, "("+strings.Join(alternatives, " OR ")+")")
	}
	// The version as of AsOf: the current one unless the resource changed since, which one
	// probe of the versions' primary key finds either way.
	sqlText := `SELECT r.resource_type, r.resource_id, v.version_id, v.last_updated, v.body
FROM resource r
CROSS JOIN LATERAL (
    SELECT x.version_id, x.last_updated, x.body FROM resource_version x
    WHERE x.resource_type = r.resource_type AND x.resource_id = r.resource_id
      AND x.version_id <= r.version_id AND x.last_updated <= ` + b.arg(q.AsOf) + `
    ORDER BY x.version_id DESC LIMIT 1) v
WHERE ` + strings.Join(conds, " AND ") + `
ORDER BY r.resource_id
LIMIT ` + b.arg(max(q.Limit, 1))
	rows, err := db.Query(ctx, sqlText, append([]any{pgx.QueryExecModeExec}, b.args...)...)
	if err != nil {
		return nil, fmt.Errorf("reading a page of the %s export: %w", q.Type, err)
	}
	versions, err := pgx.CollectRows(rows, scanVersion)
	if err != nil {
		return nil, fmt.Errorf("reading a page of the %s export: %w", q.Type, err)
	}
	return versions, nil
}

// exportCompartment is the condition that the resource alias (with resource_type and
// resource_id columns), of resourceType, is in the Patient compartment of one of patients, or
// of any patient when patients is nil: the same condition as a compartment search, from the
// R4 CompartmentDefinition. A type outside the compartment has no member.
func exportCompartment(b *sqlBuilder, alias, resourceType string, patients []string) string {
	comp := PatientCompartment()
	params, ok := comp.Params(resourceType)
	if !ok {
		return "false"
	}
	scope := &compartmentScope{code: comp.Code, ids: patients, params: storedCompartmentParams(resourceType, comp.Code, params)}
	return scope.condition(b, owner{typeExpr: alias + ".resource_type", idExpr: alias + ".resource_id", types: []string{resourceType}})
}
