package fhir

import (
	"fmt"
	"net/http"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
)

// everythingQuery is the record of one patient, or of every patient when patientID is empty:
// the patients; the members of their compartment, as the R4 CompartmentDefinition draws it
// ($8, $9: the compartment's resource types and the parameter of each through which a
// resource belongs, one pair per parameter); and what those resources point at
// (practitioners, organizations, medications, encounters), except other patients.
// References count only when local. Ordered by type and id, for keyset paging.
const everythingQuery = `
WITH members AS (
    SELECT r.resource_type, r.resource_id FROM resource r
    WHERE r.resource_type = 'Patient' AND ($1 = '' OR r.resource_id = $1) AND NOT r.deleted
  UNION
    SELECT s.resource_type, s.resource_id
    FROM search_reference s
    JOIN unnest($8::text[], $9::text[]) AS c(resource_type, code) USING (resource_type, code)
    WHERE s.target_type = 'Patient' AND ($1 = '' OR s.target_id = $1)
      AND local_reference(s.url, $2, s.target_type, s.target_id)
), referenced AS (
    SELECT s.target_type AS resource_type, s.target_id AS resource_id
    FROM search_reference s JOIN members m USING (resource_type, resource_id)
    WHERE s.target_type <> '' AND s.target_type <> 'Patient'
      AND local_reference(s.url, $2, s.target_type, s.target_id)
), everything AS (
    SELECT * FROM members UNION SELECT * FROM referenced
)
SELECT r.resource_type, r.resource_id, r.version_id, r.last_updated, v.body
FROM everything e
JOIN resource r USING (resource_type, resource_id)
JOIN resource_version v USING (resource_type, resource_id, version_id)
WHERE NOT r.deleted
  AND ($3::text[] IS NULL OR r.resource_type = ANY($3::text[]))
  AND ($4::timestamptz IS NULL OR r.last_updated >= $4::timestamptz)
  AND (r.resource_type, r.resource_id) > ($5, $6)
ORDER BY r.resource_type, r.resource_id
LIMIT $7`

// everything answers GET /fhir/Patient/{id}/$everything and GET /fhir/Patient/$everything,
// with _type, _since and _count, in pages.
func (a *API) everything(c echo.Context) error {
	ctx := c.Request().Context()
	patientID := c.Param("id")
	if patientID != "" {
		if !ValidID(patientID) {
			return NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("%q is not a valid resource id", patientID))
		}
		if _, err := a.store.Read(ctx, a.store.db, "Patient", patientID); err != nil {
			return err
		}
	}
	q := c.QueryParams()
	count, err := parseCount(q.Get("_count"), a.config.DefaultCount, a.config.MaxCount)
	if err != nil {
		return err
	}
	types, err := parseTypes(q.Get("_type"))
	if err != nil {
		return err
	}
	var since any
	if s := q.Get("_since"); s != "" {
		low, _, err := parseDateRange(s)
		if err != nil {
			return err
		}
		since = low
	}
	after := [2]string{"", ""}
	if s := q.Get("_cursor"); s != "" {
		at, err := decodeCursor(s)
		if err != nil {
			return err
		}
		if len(at.Keys) > 0 { // $everything pages by type and id alone
			return badCursor()
		}
		after = [2]string{at.Type, at.ID}
	}
	base := a.baseURL(c)
	memberTypes, memberParams := everythingMembers()
	var versions []*Version
	err = a.search.readLimited(ctx, func(db Querier) error {
		rows, err := db.Query(ctx, everythingQuery, pgx.QueryExecModeExec,
			patientID, base+"/", types, since, after[0], after[1], count+1, memberTypes, memberParams)
		if err == nil {
			versions, err = pgx.CollectRows(rows, scanVersion)
		}
		if err != nil {
			return fmt.Errorf("collecting the patient record: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}

	b := newBundle("searchset", a.now())
	b.Link = []bundleLink{{Relation: "self", URL: pageURL(base, c, nil)}}
	if len(versions) > count {
		versions = versions[:count]
		last := versions[len(versions)-1]
		b.Link = append(b.Link, bundleLink{Relation: "next", URL: pageURL(base, c, map[string]string{"_cursor": cursor{Type: last.Type, ID: last.ID}.encode()})})
	}
	for _, v := range versions {
		b.Entry = append(b.Entry, bundleEntry{FullURL: base + "/" + v.Path(), Resource: v.JSON, Search: &entrySearch{Mode: "match"}})
	}
	return b.send(c)
}

// everythingMembers lists the Patient compartment as (type, parameter) pairs for
// everythingQuery. Patient's own parameter (link) is left out: $everything never returns
// another patient, and the patient is there already.
func everythingMembers() (types, params []string) {
	comp := PatientCompartment()
	for _, t := range comp.Types() {
		if t == comp.Code {
			continue
		}
		ps, _ := comp.Params(t)
		for _, p := range storedCompartmentParams(t, comp.Code, ps) {
			types, params = append(types, t), append(params, p)
		}
	}
	return types, params
}
