package fhir

import (
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// routeOperation is an operation the CapabilityStatement lists when its route is mounted:
// on every resource type (Type ""), or on one.
type routeOperation struct {
	Type string
	capabilityOperation
}

// operationRoutes maps the routes of $validate and the terminology operations (mounted by
// package terminology) to the R4 OperationDefinitions they implement.
var operationRoutes = map[string]routeOperation{
	"POST /fhir/:type/$validate":        {"", capabilityOperation{Name: "validate", Definition: "http://hl7.org/fhir/OperationDefinition/Resource-validate"}},
	"GET /fhir/CodeSystem/$lookup":      {"CodeSystem", capabilityOperation{Name: "lookup", Definition: "http://hl7.org/fhir/OperationDefinition/CodeSystem-lookup"}},
	"GET /fhir/ValueSet/$expand":        {"ValueSet", capabilityOperation{Name: "expand", Definition: "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"}},
	"GET /fhir/ValueSet/$validate-code": {"ValueSet", capabilityOperation{Name: "validate-code", Definition: "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code"}},
}

// mountedOperations is the operations of operationRoutes whose routes are mounted, that apply
// to resourceType.
func mountedOperations(routes []*echo.Route, resourceType string) []capabilityOperation {
	var out []capabilityOperation
	for _, r := range routes {
		if op, ok := operationRoutes[r.Method+" "+r.Path]; ok && (op.Type == "" || op.Type == resourceType) {
			out = append(out, op.capabilityOperation)
		}
	}
	// echo lists its routes in no fixed order; the statement should not change between runs.
	slices.SortFunc(out, func(a, b capabilityOperation) int { return strings.Compare(a.Name, b.Name) })
	return out
}
