package access

import (
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
)

// definitionTypes hold the specification's and the registry's definitions, never patient
// data: anyone signed in may read them.
var definitionTypes = []string{
	"StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap", "SearchParameter", "CapabilityStatement",
	"OperationDefinition", "CompartmentDefinition", "NamingSystem", "ImplementationGuide", "StructureMap",
}

// staffTypes describe the network, not its patients: a coordinator may read them.
var staffTypes = []string{"Organization", "Practitioner", "PractitionerRole", "Location", "Medication", "Device"}

func (pol *Policy) routes() map[string]rule {
	fhirRead := pol.fhirInstance(auth.Read)
	return map[string]rule{
		// FHIR: whole-server interactions need wildcard scopes.
		"GET /fhir":                         wildcard(auth.Search),
		"GET /fhir/_history":                wildcard(auth.Read),
		"POST /fhir":                        bundle,
		"GET /fhir/Patient/$everything":     wildcard(auth.Read),
		"GET /fhir/Patient/:id/$everything": pol.everything,
		// FHIR: a type.
		"GET /fhir/:type":                   typeLevel(auth.Search),
		"GET /fhir/:type/_search":           typeLevel(auth.Search),
		"POST /fhir/:type/_search":          typeLevel(auth.Search),
		"GET /fhir/:type/_history":          typeLevel(auth.Read),
		"POST /fhir/:type":                  typeLevel(auth.Create),
		"PUT /fhir/:type":                   typeLevel(auth.Update),
		"PATCH /fhir/:type":                 typeLevel(auth.Update),
		"DELETE /fhir/:type":                typeLevel(auth.Delete),
		"GET /fhir/:type/:id":               fhirRead,
		"GET /fhir/:type/:id/_history":      fhirRead,
		"GET /fhir/:type/:id/_history/:vid": fhirRead,
		// FHIR: a patient's compartment, and operations the API answers 404 to.
		"GET /fhir/:type/:id/:compartment":          pol.compartment,
		"GET /fhir/:type/:id/:compartment/_search":  pol.compartment,
		"POST /fhir/:type/:id/:compartment/_search": pol.compartment,
		"POST /fhir/:type/:id/:compartment":         anyone,
		"POST /fhir/:type/:id":                      anyone,
		"PUT /fhir/:type/:id":                       pol.fhirInstance(auth.Update),
		"PATCH /fhir/:type/:id":                     pol.fhirInstance(auth.Update),
		"DELETE /fhir/:type/:id":                    pol.fhirInstance(auth.Delete),
		// $validate writes nothing, but answers as a write would: it needs the write's scope.
		"POST /fhir/:type/$validate":     typeLevel(auth.Create),
		"POST /fhir/:type/:id/$validate": pol.fhirInstance(auth.Update),
		// Terminology operations read definitions only.
		"GET /fhir/CodeSystem/$lookup":           anyone,
		"POST /fhir/CodeSystem/$lookup":          anyone,
		"GET /fhir/CodeSystem/:id/$lookup":       anyone,
		"POST /fhir/CodeSystem/:id/$lookup":      anyone,
		"GET /fhir/ValueSet/$expand":             anyone,
		"POST /fhir/ValueSet/$expand":            anyone,
		"GET /fhir/ValueSet/:id/$expand":         anyone,
		"POST /fhir/ValueSet/:id/$expand":        anyone,
		"GET /fhir/ValueSet/$validate-code":      anyone,
		"POST /fhir/ValueSet/$validate-code":     anyone,
		"GET /fhir/ValueSet/:id/$validate-code":  anyone,
		"POST /fhir/ValueSet/:id/$validate-code": anyone,
		// Bulk Data export: the handlers check each type against the scopes, and that a job
		// is the principal's own.
		"GET /fhir/$export":                 bulkExport,
		"POST /fhir/$export":                bulkExport,
		"GET /fhir/Patient/$export":         bulkExport,
		"POST /fhir/Patient/$export":        bulkExport,
		"GET /fhir/Group/:id/$export":       bulkExport,
		"POST /fhir/Group/:id/$export":      bulkExport,
		"GET /fhir/$export-status/:job":     bulkExport,
		"DELETE /fhir/$export-status/:job":  bulkExport,
		"GET /fhir/$export-file/:job/:file": bulkExport,
		// The audit trail.
		"GET /fhir/AuditEvent":     adminOnly,
		"GET /fhir/AuditEvent/:id": adminOnly,
		// The registry.
		"GET /registry/plan":                       anyone,
		"GET /registry/outcomes/response":          outcomes,
		"GET /registry/outcomes/response.svg":      outcomes,
		"GET /registry/outcomes/survival":          outcomes,
		"GET /registry/outcomes/survival.svg":      outcomes,
		"GET /registry/export/analysis":            outcomes,
		"GET /registry/export/analysis/dictionary": outcomes,
		"GET /registry/outcomes/toxicity":          outcomes,
		"GET /registry/outcomes/incidence":         outcomes,
		"GET /registry/outcomes/best-response":     outcomes,
		"GET /registry/outcomes/best-response.svg": outcomes,
		"GET /registry/outcomes/incidence.svg":     outcomes,
		"GET /registry/outcomes/toxicity.svg":      outcomes,
		// Follow-up.
		"GET /worklist":              worklist,
		"HEAD /worklist":             worklist,
		"GET /worklist.ics":          worklist,
		"HEAD /worklist.ics":         worklist,
		"GET /follow-up/Patient/:id": pol.followUp,
		// The web pages (package web): the session middleware has put the person's principal
		// on the request. Signing in is public (Public); a coordinator's page reaches only
		// their sites, as the pages check with the same site test as here.
		"GET /":                           anyone,
		"POST /signout":                   anyone,
		"GET /work":                       worklist,
		"GET /work.csv":                   worklist,
		"POST /work/tasks/:id/missed":     worklist,
		"POST /work/tasks/:id/note":       worklist,
		"POST /work/tasks/:id/visited":    worklist,
		"POST /work/tasks/:id/reschedule": worklist,
		"POST /work/tasks/:id/reassign":   worklist,
		"POST /work/patients/:id/lost":    worklist,
		"POST /work/feed":                 worklist,
		"POST /work/feed/revoke":          worklist,
		"GET /patients/:id":               worklist,
		"GET /outcomes":                   outcomes,
		"GET /outcomes/response.csv":      outcomes,
		"GET /outcomes/survival.csv":      outcomes,
		"GET /outcomes/response.svg":      outcomes,
		"GET /outcomes/survival.svg":      outcomes,
		"GET /status":                     adminOnly,
	}
}

func anyone(echo.Context, *auth.Principal) error { return nil }

// serverWritten answers every interaction with AuditEvents but their search and read: the
// audit trail is the server's to write, and its history is the hash chain.
func serverWritten() error {
	return fhir.NewOutcome(http.StatusMethodNotAllowed, fhir.NotSupported,
		"AuditEvents are written by the server alone; search them at /fhir/AuditEvent")
}

func adminOnly(c echo.Context, p *auth.Principal) error {
	if p.Role == auth.RoleAdmin {
		return nil
	}
	return forbidden("%s is for administrators", c.Path())
}

// wildcard is an interaction over every resource type: system/*.<access>.
func wildcard(access auth.Access) rule {
	return func(c echo.Context, p *auth.Principal) error {
		if (p.Role == auth.RoleEHR || p.Role == auth.RoleAdmin) && p.Scopes.Allows("*", access) {
			return nil
		}
		return forbidden("%s %s needs system/*.%s", c.Request().Method, c.Path(), access)
	}
}

// bundle lets a transaction or batch through to the Bundle engine, whose Guard checks every
// entry against the scopes.
func bundle(c echo.Context, p *auth.Principal) error {
	if p.Role == auth.RoleEHR || p.Role == auth.RoleAdmin {
		return nil
	}
	return forbidden("transactions and batches are for EHR clients")
}

// typeLevel is a search, a type's history, or a create or conditional write: the EHR's and
// the administrator's, as their scopes allow; anyone may search the definitions.
func typeLevel(access auth.Access) rule {
	return func(c echo.Context, p *auth.Principal) error {
		typ := c.Param("type")
		if !fhir.IsResourceType(typ) {
			return nil // the API answers 404 for what is not a resource type
		}
		if typ == "AuditEvent" {
			return serverWritten()
		}
		if access&(auth.Read|auth.Search) != 0 && slices.Contains(definitionTypes, typ) {
			return nil
		}
		return scoped(c, p, typ, access)
	}
}

func scoped(c echo.Context, p *auth.Principal, typ string, access auth.Access) error {
	switch p.Role {
	case auth.RoleEHR, auth.RoleAdmin:
		if p.Scopes.Allows(typ, access) {
			return nil
		}
		return forbidden("the token's scopes do not allow %s on %s (system/%s.%s)", accessName(access), typ, typ, access)
	case auth.RoleCoordinator:
		return forbidden("coordinators find their patients' follow-up through /worklist; FHIR %s of %s is for EHR clients", accessName(access), typ)
	}
	return forbidden("%s may not use %s %s", p.Role, c.Request().Method, c.Path())
}

// fhirInstance is an interaction on one resource: by scope for the EHR and the
// administrator; for a coordinator, their sites' patients' resources only (and of writes,
// only Task updates).
func (pol *Policy) fhirInstance(access auth.Access) rule {
	return func(c echo.Context, p *auth.Principal) error {
		typ, id := c.Param("type"), c.Param("id")
		if !fhir.IsResourceType(typ) || strings.HasPrefix(id, "$") {
			return nil // the API answers 404 for what is not a resource type, or an operation it lacks
		}
		if typ == "AuditEvent" {
			return serverWritten()
		}
		if access == auth.Read && slices.Contains(definitionTypes, typ) {
			return nil
		}
		if p.Role != auth.RoleCoordinator {
			return scoped(c, p, typ, access)
		}
		if !p.Scopes.Allows(typ, access) {
			return forbidden("the token's scopes do not allow %s on %s", accessName(access), typ)
		}
		if access != auth.Read && typ != "Task" {
			return forbidden("coordinators change follow-up Tasks only")
		}
		if access == auth.Read && slices.Contains(staffTypes, typ) {
			return nil
		}
		return pol.inSitesOr404(c, p, typ, id)
	}
}

func (pol *Policy) inSitesOr404(c echo.Context, p *auth.Principal, typ, id string) error {
	if len(p.Sites) == 0 {
		return notFound(typ, id)
	}
	ok, err := pol.inSites(c.Request().Context(), typ, id, p.Sites)
	if err != nil {
		return err
	}
	if !ok {
		return notFound(typ, id)
	}
	return nil
}

// everything is Patient/{id}/$everything: every type's read for the EHR; for a coordinator,
// their own sites' patients.
func (pol *Policy) everything(c echo.Context, p *auth.Principal) error {
	if p.Role == auth.RoleCoordinator {
		return pol.inSitesOr404(c, p, "Patient", c.Param("id"))
	}
	return wildcard(auth.Read)(c, p)
}

// compartment is a search of one patient's compartment (GET /fhir/Patient/{id}/{type}): as the
// type's search for the EHR and the administrator; for a coordinator, their own sites'
// patients only (404 for another's), without _include or _revinclude, which could bring in
// what is not the patient's; never a researcher. What the API answers with a 404 (an operation
// it does not have, a type outside the compartment) passes to it.
//
// The routes after it, POST to an instance or to its compartment, are only ever answered
// with an error by the API, which names the operation asked for.
func (pol *Policy) compartment(c echo.Context, p *auth.Principal) error {
	owner, member := c.Param("type"), c.Param("compartment")
	if owner != "Patient" || !fhir.IsResourceType(member) {
		return nil
	}
	if _, ok := fhir.PatientCompartment().Params(member); !ok {
		return nil
	}
	if p.Role != auth.RoleCoordinator {
		return scoped(c, p, member, auth.Search)
	}
	if !p.Scopes.Allows(member, auth.Search) {
		return forbidden("the token's scopes do not allow search on %s", member)
	}
	params := c.QueryParams()
	if c.Request().Method == http.MethodPost {
		form, err := c.FormParams() // the query's parameters and the body's
		if err != nil {
			return fhir.NewOutcome(http.StatusBadRequest, fhir.Structure, "POST _search takes an application/x-www-form-urlencoded body")
		}
		params = form
	}
	for key := range params {
		if strings.HasPrefix(key, "_include") || strings.HasPrefix(key, "_revinclude") {
			return forbidden("%s: a coordinator's compartment search returns the patient's own resources only", key)
		}
	}
	return pol.inSitesOr404(c, p, "Patient", c.Param("id"))
}

// bulkExport is Bulk Data $export: EHR clients and administrators, whose read scopes the
// export is then limited to. Researchers may not (it is patient-level data), nor
// coordinators: an export is not narrowed to their sites.
func bulkExport(c echo.Context, p *auth.Principal) error {
	if p.Role == auth.RoleEHR || p.Role == auth.RoleAdmin {
		return nil
	}
	return forbidden("bulk export is for EHR clients and administrators with system/*.read (or system/<Type>.read) scopes")
}

func outcomes(c echo.Context, p *auth.Principal) error {
	if p.Role == auth.RoleAdmin || (p.Role == auth.RoleResearcher && p.Scopes.Has(auth.ScopeOutcomesRead)) {
		return nil
	}
	return forbidden("outcomes are for researchers")
}

// worklist is the coordinators' (limited to their sites by the work list itself, which reads
// the principal) and the administrator's.
func worklist(c echo.Context, p *auth.Principal) error {
	switch {
	case p.Role == auth.RoleAdmin:
		return nil
	case p.Role == auth.RoleCoordinator && p.Scopes.Has(auth.ScopeWorklistRead):
		return nil
	}
	return forbidden("the work list is for coordinators")
}

func (pol *Policy) followUp(c echo.Context, p *auth.Principal) error {
	if err := worklist(c, p); err != nil {
		return err
	}
	if p.Role == auth.RoleCoordinator {
		return pol.inSitesOr404(c, p, "Patient", c.Param("id"))
	}
	return nil
}

func accessName(a auth.Access) string {
	switch a {
	case auth.Read:
		return "read"
	case auth.Search:
		return "search"
	case auth.Create:
		return "create"
	case auth.Update:
		return "update"
	case auth.Delete:
		return "delete"
	}
	return a.String()
}
