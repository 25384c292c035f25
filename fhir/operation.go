package fhir

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// Operation is a FHIR operation the server implements, as the CapabilityStatement lists it.
type Operation struct {
	// Name is the operation's name without its "$": "everything".
	Name string
	// Definition is the canonical URL of its OperationDefinition.
	Definition string
	// System says it is invoked on the whole server: /fhir/$name.
	System bool
	// Types are the resource types it is invoked on, at type or instance level
	// (/fhir/Type/$name, /fhir/Type/{id}/$name); AllTypes for every one.
	Types []string
	// Routes are the routes that implement it ("GET /fhir/Patient/:id/$everything"): the
	// CapabilityStatement lists the operation only when one of them is registered, so a row
	// here never claims what the server does not do.
	Routes []string
}

// AllTypes in Operation.Types stands for every resource type.
const AllTypes = "*"

// operations is every operation the server may have. To add one, register its routes and
// add its row here; the CapabilityStatement then lists it (rest.operation for a system-level
// operation, rest.resource[].operation for each type) and the 404 for an operation at the
// wrong level or type says where it is.
var operations = []Operation{
	{
		Name: "everything", Definition: "http://hl7.org/fhir/OperationDefinition/Patient-everything",
		Types:  []string{"Patient"},
		Routes: []string{"GET /fhir/Patient/:id/$everything", "GET /fhir/Patient/$everything"},
	},
	{
		Name: "validate", Definition: "http://hl7.org/fhir/OperationDefinition/Resource-validate",
		Types:  []string{AllTypes},
		Routes: []string{"POST /fhir/:type/$validate", "POST /fhir/:type/:id/$validate"},
	},
	// Bulk Data export (package fhir/bulk): at system level, and for a Patient or a Group.
	{
		Name: "export", Definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
		System: true, Routes: []string{"GET /fhir/$export"},
	},
	{
		Name: "export", Definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
		Types: []string{"Patient"}, Routes: []string{"GET /fhir/Patient/$export"},
	},
	{
		Name: "export", Definition: "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
		Types: []string{"Group"}, Routes: []string{"GET /fhir/Group/:id/$export"},
	},
	// The terminology operations, mounted by package terminology.
	{
		Name: "lookup", Definition: "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup",
		Types:  []string{"CodeSystem"},
		Routes: []string{"GET /fhir/CodeSystem/$lookup", "GET /fhir/CodeSystem/:id/$lookup"},
	},
	{
		Name: "expand", Definition: "http://hl7.org/fhir/OperationDefinition/ValueSet-expand",
		Types:  []string{"ValueSet"},
		Routes: []string{"GET /fhir/ValueSet/$expand", "GET /fhir/ValueSet/:id/$expand"},
	},
	{
		Name: "validate-code", Definition: "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code",
		Types:  []string{"ValueSet"},
		Routes: []string{"GET /fhir/ValueSet/$validate-code", "GET /fhir/ValueSet/:id/$validate-code"},
	},
}

// registeredOperations are the rows of operations with at least one route in routes.
func registeredOperations(routes []*echo.Route) []Operation {
	have := map[string]bool{}
	for _, r := range routes {
		have[r.Method+" "+r.Path] = true
	}
	var out []Operation
	for _, op := range operations {
		for _, r := range op.Routes {
			if have[r] {
				out = append(out, op)
				break
			}
		}
	}
	return out
}

// on says whether op is invoked on resources of type t.
func (op Operation) on(t string) bool {
	return slices.Contains(op.Types, AllTypes) || slices.Contains(op.Types, t)
}

// operationNotSupported is the 404 for an operation the server does not have where it was
// asked for: name is as written ("$graphql"), resourceType the type it was invoked on ("" at
// system level), level "system", "type" or "instance".
func operationNotSupported(name, resourceType, level string) error {
	bare := strings.TrimPrefix(name, "$")
	where := "on the whole server"
	if resourceType != "" {
		where = "on " + resourceType
		if level == "instance" {
			where += " instances"
		}
	}
	for _, op := range operations {
		if op.Name != bare {
			continue
		}
		var at []string
		if op.System {
			at = append(at, "/fhir/$"+op.Name)
		}
		for _, t := range op.Types {
			if t == AllTypes {
				t = "{type}"
			}
			at = append(at, "/fhir/"+t+"/$"+op.Name, "/fhir/"+t+"/{id}/$"+op.Name)
		}
		return NewOutcome(http.StatusNotFound, NotSupported,
			fmt.Sprintf("operation %s is not supported %s: it is at %s", name, where, strings.Join(at, ", ")))
	}
	return NewOutcome(http.StatusNotFound, NotSupported,
		fmt.Sprintf("operation %s is not supported %s: the operations this server has are listed in its CapabilityStatement (GET /fhir/metadata)", name, where))
}

// typePost answers POST /fhir/{type}/{x}: an operation the server does not have
// (POST /fhir/Patient/$match), or a POST to an instance, which FHIR has no use for.
func (a *API) typePost(c echo.Context) error {
	if _, _, err := target(c); err != nil {
		return err
	}
	return NewOutcome(http.StatusMethodNotAllowed, NotSupported,
		"POST creates at /fhir/"+c.Param("type")+"; an existing resource is updated with PUT")
}

// instancePost answers POST /fhir/{type}/{id}/{x}: an instance-level operation the server does
// not have, or a POST to what is only searched.
func (a *API) instancePost(c echo.Context) error {
	if name := c.Param("compartment"); strings.HasPrefix(name, "$") {
		return operationNotSupported(name, c.Param("type"), "instance")
	}
	if _, _, err := target(c); err != nil {
		return err
	}
	return NewOutcome(http.StatusMethodNotAllowed, NotSupported,
		"a compartment is searched with GET, or with POST to its _search")
}
