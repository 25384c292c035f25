package fhir

import (
	"bytes"
	"encoding/json"
	"net/http"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir/searchparam"
)

// interactionRoutes names the FHIR interaction each route pattern implements. The
// CapabilityStatement lists an interaction only if its route is registered.
var interactionRoutes = map[string]string{
	"GET /fhir/:type/:id":               "read",
	"GET /fhir/:type/:id/_history/:vid": "vread",
	"PUT /fhir/:type/:id":               "update",
	"PATCH /fhir/:type/:id":             "patch",
	"DELETE /fhir/:type/:id":            "delete",
	"GET /fhir/:type/:id/_history":      "history-instance",
	"GET /fhir/:type/_history":          "history-type",
	"POST /fhir/:type":                  "create",
	"GET /fhir/:type":                   "search-type",
	"GET /fhir":                         "search-system",
	"GET /fhir/_history":                "history-system",
	"POST /fhir":                        "transaction",
	"PUT /fhir/:type":                   "conditional-update",
	"DELETE /fhir/:type":                "conditional-delete",
	"PATCH /fhir/:type":                 "conditional-patch",
	"GET /fhir/:type/:id/:compartment":  "search-compartment",
}

// supportedInteractions reads the routes echo has, in the order FHIR lists interactions.
func supportedInteractions(routes []*echo.Route) map[string]bool {
	have := map[string]bool{}
	for _, r := range routes {
		if name, ok := interactionRoutes[r.Method+" "+r.Path]; ok {
			have[name] = true
		}
	}
	return have
}

var typeLevelOrder = []string{"read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"}

// Search parameters that apply to every type, handled by the search engine itself rather
// than through an index table.
var commonSearchParams = []capabilitySearchParam{
	{Name: "_id", Type: "token", Definition: "http://hl7.org/fhir/SearchParameter/Resource-id"},
	{Name: "_lastUpdated", Type: "date", Definition: "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"},
}

type capabilitySearchParam struct {
	Name          string `json:"name"`
	Definition    string `json:"definition,omitempty"`
	Type          string `json:"type"`
	Documentation string `json:"documentation,omitempty"`
}

type capabilityInteraction struct {
	Code string `json:"code"`
}

type capabilityResource struct {
	Type              string                  `json:"type"`
	Interaction       []capabilityInteraction `json:"interaction"`
	Versioning        string                  `json:"versioning"`
	ReadHistory       bool                    `json:"readHistory"`
	UpdateCreate      bool                    `json:"updateCreate"`
	ConditionalCreate bool                    `json:"conditionalCreate"`
	ConditionalRead   string                  `json:"conditionalRead"`
	ConditionalUpdate bool                    `json:"conditionalUpdate"`
	ConditionalDelete string                  `json:"conditionalDelete"`
	SearchInclude     []string                `json:"searchInclude,omitempty"`
	SearchRevInclude  []string                `json:"searchRevInclude,omitempty"`
	SearchParam       []capabilitySearchParam `json:"searchParam,omitempty"`
	Operation         []capabilityOperation   `json:"operation,omitempty"`
	SupportedProfile  []string                `json:"supportedProfile,omitempty"`
}

type capabilityOperation struct {
	Name       string `json:"name"`
	Definition string `json:"definition"`
}

func systemInteractions(have map[string]bool) []capabilityInteraction {
	var out []capabilityInteraction
	for _, code := range []string{"transaction", "batch", "search-system", "history-system"} {
		if have[code] || (code == "batch" && have["transaction"]) {
			out = append(out, capabilityInteraction{Code: code})
		}
	}
	return out
}

// UnsupportedLister is implemented by a parameter registry that knows what it left out.
type UnsupportedLister interface {
	Unsupported() []searchparam.Unsupported
}

// capabilityStatement is an API's statement, built at its first request.
type capabilityStatement struct {
	once sync.Once
	json []byte
	err  error
}

// capabilities answers GET /fhir/metadata with a CapabilityStatement derived from what the
// server really does: the resource types google/fhir knows, the routes Register mounts, and
// the search parameters the registry indexes. It is built once.
func (a *API) capabilities(c echo.Context) error {
	cs := a.capability
	cs.once.Do(func() { cs.json, cs.err = a.buildCapabilityStatement(c.Echo().Routes()) })
	if cs.err != nil {
		return cs.err
	}
	// The statement is built once, but its implementation.url is the base as this request
	// reaches the server (the configured one when there is one).
	base, err := json.Marshal(a.baseURL(c))
	if err != nil {
		return err
	}
	quoted, _ := json.Marshal(implementationURLPlaceholder)
	return writeJSON(c, http.StatusOK, bytes.Replace(cs.json, quoted, base, 1))
}

// implementationURLPlaceholder stands for the base URL in the statement as built: a valid
// URL, so the statement validates, that no real base can be.
const implementationURLPlaceholder = "urn:cartreg:implementation-url"

// softwareVersion is the version the CapabilityStatement gives: the configured one, else the
// build's (its module version, or the commit it was built from).
func (a *API) softwareVersion() string {
	if a.config.SoftwareVersion != "" {
		return a.config.SoftwareVersion
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var revision, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	if revision != "" && modified == "true" {
		revision += "-modified"
	}
	return revision
}

func (a *API) buildCapabilityStatement(routes []*echo.Route) ([]byte, error) {
	have := supportedInteractions(routes)
	ops := registeredOperations(routes)
	conditionalDelete := "not-supported"
	if have["conditional-delete"] {
		conditionalDelete = "single"
	}
	var resources []capabilityResource
	for _, t := range ResourceTypes() {
		r := capabilityResource{
			Type: t, Versioning: "versioned", ReadHistory: have["vread"], UpdateCreate: have["update"],
			ConditionalCreate: have["create"], ConditionalRead: "not-supported", ConditionalUpdate: have["conditional-update"],
			ConditionalDelete: conditionalDelete,
			SearchParam:       append([]capabilitySearchParam(nil), commonSearchParams...),
		}
		for _, code := range typeLevelOrder {
			if have[code] {
				r.Interaction = append(r.Interaction, capabilityInteraction{Code: code})
			}
		}
		for _, op := range ops {
			if op.on(t) {
				r.Operation = append(r.Operation, capabilityOperation{Name: op.Name, Definition: op.Definition})
			}
		}
		slices.SortFunc(r.Operation, func(a, b capabilityOperation) int { return strings.Compare(a.Name, b.Name) })
		r.SupportedProfile = a.config.SupportedProfiles[t]
		for _, d := range a.search.params.ForType(t) {
			if columnParameters[d.Code] { // listed once, among the common parameters
				continue
			}
			r.SearchParam = append(r.SearchParam, capabilitySearchParam{Name: d.Code, Definition: d.URL, Type: string(d.Type), Documentation: d.Description})
			if d.Type == searchparam.Reference {
				r.SearchInclude = append(r.SearchInclude, t+":"+d.Code)
			}
		}
		resources = append(resources, r)
	}
	// _revinclude works from any reference parameter that can point at the type.
	revByTarget := map[string][]string{}
	for _, t := range ResourceTypes() {
		for _, d := range a.search.params.ForType(t) {
			if d.Type == searchparam.Reference {
				for _, target := range d.Targets {
					revByTarget[target] = append(revByTarget[target], t+":"+d.Code)
				}
			}
		}
	}
	for i := range resources {
		rev := revByTarget[resources[i].Type]
		sort.Strings(rev)
		resources[i].SearchRevInclude = rev
	}

	doc := "Search: string (:exact, :contains), token (:not, :text), date, number, quantity and uri (:below, :above) " +
		"parameters with every prefix; :missing; reference parameters with :Type, chaining and _has; _include and " +
		"_revinclude (with :iterate); _sort, _count, _total, _summary, _elements; keyset paging. Not supported: XML; " +
		"_text, _content, _query, _list, _filter; token :in, :below, :above, :of-type; reference :identifier; " +
		"composite parameters"
	if lister, ok := a.search.params.(UnsupportedLister); ok {
		var left []string
		for _, u := range lister.Unsupported() {
			left = append(left, u.Code+" ("+strings.Join(u.Resources, ", ")+")")
		}
		sort.Strings(left)
		if len(left) > 0 {
			doc += "; and these definitions, which are composite or special or have no expression: " + strings.Join(left, ", ")
		}
	}
	software := map[string]any{"name": "cartreg"}
	if v := a.softwareVersion(); v != "" {
		software["version"] = v
	}
	rest := map[string]any{
		"mode":          "server",
		"documentation": doc,
		"resource":      resources,
		"interaction":   systemInteractions(have),
		"searchParam":   commonSearchParams,
	}
	var systemOps []capabilityOperation
	for _, op := range ops {
		if op.System {
			systemOps = append(systemOps, capabilityOperation{Name: op.Name, Definition: op.Definition})
		}
	}
	if len(systemOps) > 0 {
		rest["operation"] = systemOps
	}
	if have["search-compartment"] {
		rest["compartment"] = []string{PatientCompartment().URL}
	}
	var instantiates []string
	if slices.ContainsFunc(ops, func(op Operation) bool { return op.Name == "export" && op.System }) {
		instantiates = append(instantiates, "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data")
	}
	if a.config.Security != nil {
		rest["security"] = a.config.Security
	}
	statement := map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         a.now().UTC().Format("2006-01-02"), // when this statement was generated
		"publisher":    "cartreg",
		"kind":         "instance",
		"software":     software,
		// An instance's statement describes the installation (R4 cpb-14); its url is the
		// base each request names, put in by capabilities.
		"implementation": map[string]any{"description": "cartreg, a FHIR R4 outcomes registry for CAR-T cell therapy",
			"url": implementationURLPlaceholder},
		"fhirVersion": "4.0.1",
		"format":      []string{"application/fhir+json", "json"},
		"patchFormat": []string{"application/json-patch+json"},
		"rest":        []any{rest},
	}
	if instantiates != nil {
		statement["instantiates"] = instantiates
	}
	raw, err := json.Marshal(statement)
	if err != nil {
		return nil, err
	}
	res, err := Parse(raw) // what we publish must itself be valid R4
	if err != nil {
		return nil, err
	}
	return res.JSON()
}
