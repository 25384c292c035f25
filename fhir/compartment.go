package fhir

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir/searchparam"
)

// The R4 CompartmentDefinition of the Patient compartment, as HL7 publishes it (source and
// licence in compartments/README.md).
//
//go:embed compartments/CompartmentDefinition-patient.json
var patientCompartmentJSON []byte

// PatientCompartmentURL is the canonical URL of the R4 Patient CompartmentDefinition, as the
// CapabilityStatement names it.
const PatientCompartmentURL = "http://hl7.org/fhir/CompartmentDefinition/patient"

// Compartment is a CompartmentDefinition: for each resource type in it, the search parameters
// whose reference to the compartment's owner (a Patient) puts a resource in the compartment.
type Compartment struct {
	// Code is the owner's resource type: "Patient".
	Code string
	// URL is the definition's canonical URL.
	URL    string
	params map[string][]string
}

// Params returns the search parameters through which a resource of resourceType belongs to
// the compartment, and false when the type is not in the compartment at all.
func (c *Compartment) Params(resourceType string) ([]string, bool) {
	p, ok := c.params[resourceType]
	return p, ok
}

// Types lists the resource types in the compartment, sorted.
func (c *Compartment) Types() []string {
	out := make([]string, 0, len(c.params))
	for t := range c.params {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// ParseCompartmentDefinition reads a CompartmentDefinition resource. Types listed without
// parameters are not in the compartment, as the specification says.
func ParseCompartmentDefinition(raw []byte) (*Compartment, error) {
	var def struct {
		ResourceType string `json:"resourceType"`
		URL          string `json:"url"`
		Code         string `json:"code"`
		Resource     []struct {
			Code  string   `json:"code"`
			Param []string `json:"param"`
		} `json:"resource"`
	}
	if err := json.Unmarshal(raw, &def); err != nil {
		return nil, fmt.Errorf("reading a CompartmentDefinition: %w", err)
	}
	if def.ResourceType != "CompartmentDefinition" || !IsResourceType(def.Code) {
		return nil, fmt.Errorf("not a CompartmentDefinition of a resource type: %s %q", def.ResourceType, def.Code)
	}
	c := &Compartment{Code: def.Code, URL: def.URL, params: map[string][]string{}}
	for _, r := range def.Resource {
		if !IsResourceType(r.Code) {
			return nil, fmt.Errorf("CompartmentDefinition %s: %q is not a resource type", def.URL, r.Code)
		}
		if len(r.Param) > 0 {
			c.params[r.Code] = slices.Clone(r.Param)
		}
	}
	return c, nil
}

var patientCompartment = sync.OnceValue(func() *Compartment {
	c, err := ParseCompartmentDefinition(patientCompartmentJSON)
	if err != nil {
		panic(err) // embedded data, checked by the tests
	}
	return c
})

// PatientCompartment is the R4 Patient compartment, as its CompartmentDefinition draws it.
func PatientCompartment() *Compartment { return patientCompartment() }

// storedCompartmentParams are the index codes through which a resource of resourceType
// belongs to a compartment of ownerType, given the compartment's parameters of that type: a
// derived parameter (see searchparam.Derived) is read from its sources, whose rows pointing
// at ownerType are exactly its own; one narrowed to another type can never point at the
// owner, and is left out. The store indexes with the default registry, so it is asked here.
func storedCompartmentParams(resourceType, ownerType string, params []string) []string {
	var out []string
	for _, p := range params {
		d, ok := searchparam.Default().Derived(resourceType, p)
		switch {
		case !ok:
			out = append(out, p)
		case d.TargetType == "" || d.TargetType == ownerType:
			out = append(out, d.From...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// compartmentScope limits a search to the members of one compartment: resources whose
// reference parameters (any of params) point at the owner, Code/ID, on this server.
type compartmentScope struct {
	code string
	// ids are the owners whose compartments count; nil is every owner of type code (a bulk
	// export of all patients' compartments).
	ids    []string
	params []string
}

// condition is the SQL selecting the compartment's members among the resources o stands for.
// The owner is a member of its own compartment (Patient/1/Patient finds patient 1, and the
// patients its link parameter joins to it), as $everything starts with the patient.
func (cs *compartmentScope) condition(b *sqlBuilder, o owner) string {
	// Every argument made is used: PostgreSQL cannot type a parameter the statement never names.
	code, ids := b.arg(cs.code), ""
	target := "s.target_type = " + code
	if cs.ids != nil {
		ids = b.arg(cs.ids) + "::text[]"
		target += " AND s.target_id = ANY(" + ids + ")"
	}
	members := o.in(b, "s.resource_type", "s.resource_id", "search_reference s",
		"s.code = ANY("+b.arg(cs.params)+"::text[]) AND "+target+" AND "+b.local("s"))
	if slices.Contains(o.types, cs.code) {
		self := o.typeExpr + " = " + code
		if ids != "" {
			self += " AND " + o.idExpr + " = ANY(" + ids + ")"
		}
		members = "(" + members + " OR (" + self + "))"
	}
	return members
}

// compartmentSearch answers GET /fhir/Patient/{id}/{type}?… (and its _search forms): the
// search of type limited to the patient's compartment, so it finds what
// GET /fhir/{type}?{param}=Patient/{id} finds for each of the compartment's parameters of
// type, together. Paging links come back to the same URL.
//
// The route is /fhir/:type/:id/:compartment, so the same handler answers the operations the
// server does not have at instance level (/fhir/Observation/1/$lastn) and compartments it does
// not support (/fhir/Encounter/1/Observation), each with a 404 that says so.
func (a *API) compartmentSearch(c echo.Context) error {
	owner, id, member := c.Param("type"), c.Param("id"), c.Param("compartment")
	if strings.HasPrefix(member, "$") {
		return operationNotSupported(member, owner, "instance")
	}
	if _, _, err := target(c); err != nil {
		return err
	}
	comp := PatientCompartment()
	if owner != comp.Code {
		return NewOutcome(http.StatusNotFound, NotSupported,
			fmt.Sprintf("the %s compartment is not supported: compartment searches are in the Patient compartment only (GET /fhir/Patient/{id}/{type})", owner))
	}
	if member == "*" {
		return NewOutcome(http.StatusNotFound, NotSupported,
			"a search of every type in the Patient compartment (Patient/{id}/*) is not supported: name a type, or use Patient/{id}/$everything")
	}
	if !IsResourceType(member) {
		return NewOutcome(http.StatusNotFound, NotSupported, fmt.Sprintf("%q is not an R4 resource type", member))
	}
	params, ok := comp.Params(member)
	if !ok {
		return NewOutcome(http.StatusNotFound, NotSupported,
			fmt.Sprintf("%s is not in the R4 Patient compartment (%s): search it with GET /fhir/%s?…", member, comp.URL, member))
	}
	return a.doSearch(c, []string{member}, &compartmentScope{code: comp.Code, ids: []string{id}, params: storedCompartmentParams(member, comp.Code, params)})
}
