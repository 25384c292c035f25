package fhir

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"
)

// The modes of $validate (R4 value set resource-validation-mode, without "profile", which
// is asked for by naming a profile).
const (
	ValidateCreate = "create"
	ValidateUpdate = "update"
	ValidateDelete = "delete"
)

// validateRequest is what a $validate call asks, from its body and query together.
type validateRequest struct {
	resource []byte // nil when no resource was sent (a delete)
	mode     string
	profile  string
	// where says where each part came from, to locate problems with the request itself.
	where map[string]string
}

// validate answers POST /fhir/{type}/$validate and POST /fhir/{type}/{id}/$validate: it runs
// on the resource every check a write of it would run (the body's size limits, google/fhir's
// parsing and validation, the R4 invariants, the write hooks with the registry's business
// rules, and a named profile's constraints), in a transaction that is rolled back.
//
// The answer is 200 with an OperationOutcome whether the resource passes or not, as R4 says of
// $validate (the status tells whether validation could be done; the issues tell whether the
// resource is valid): one information issue "All OK" when it passes, the issues a write
// would have got otherwise. A request that cannot be validated (an unknown mode or profile, a
// Parameters body that is not one, a delete of what does not exist) is a 4xx.
func (a *API) validate(c echo.Context) error {
	resourceType, id, err := target(c)
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err // a body over the limit: echo's 413
	}
	req, err := readValidateRequest(raw, resourceType, c.QueryParams())
	if err != nil {
		return err
	}
	if req.mode == "" {
		req.mode = ValidateCreate
		if id != "" {
			req.mode = ValidateUpdate
		}
	}
	ctx := c.Request().Context()
	var issues []Issue
	switch req.mode {
	case ValidateDelete:
		issues, err = a.validateDelete(ctx, resourceType, id, req)
	default:
		issues, err = a.validateWrite(ctx, resourceType, id, req)
	}
	if err != nil {
		return err
	}
	if !hasErrors(issues) {
		issues = append(issues, Issue{Severity: Information, Code: Informational,
			Diagnostics: fmt.Sprintf("All OK: a %s of this %s would be accepted (nothing was written)", req.mode, resourceType)})
	}
	body, err := MarshalOutcome(issues, Pretty(c))
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, ContentType, body)
}

// readValidateRequest reads a $validate body (the resource itself, or a Parameters resource
// with resource, mode and profile) and the mode and profile query parameters.
func readValidateRequest(raw []byte, resourceType string, query map[string][]string) (*validateRequest, error) {
	req := &validateRequest{where: map[string]string{}}
	if len(bytes.TrimSpace(raw)) > 0 {
		var head struct {
			ResourceType string `json:"resourceType"`
		}
		// A Parameters body is the operation's parameters, unless Parameters is the type being
		// validated and the body carries no resource parameter.
		if json.Unmarshal(raw, &head) == nil && head.ResourceType == "Parameters" &&
			(resourceType != "Parameters" || bytes.Contains(raw, []byte(`"resource"`))) {
			if err := req.readParameters(raw); err != nil {
				return nil, err
			}
		} else {
			req.resource = raw // parsed later, its problems reported like a write's
		}
	}
	for _, name := range []string{"mode", "profile"} {
		values := query[name]
		if len(values) == 0 {
			continue
		}
		if len(values) > 1 {
			return nil, NewOutcome(http.StatusBadRequest, Invalid, "$validate takes one "+name, name)
		}
		field := &req.mode
		if name == "profile" {
			field = &req.profile
		}
		if *field != "" && *field != values[0] {
			return nil, NewOutcome(http.StatusBadRequest, Invalid,
				fmt.Sprintf("the query's %s %q disagrees with the body's %q", name, values[0], *field), name)
		}
		*field, req.where[name] = values[0], name
	}
	switch req.mode {
	case "", ValidateCreate, ValidateUpdate, ValidateDelete:
	default:
		return nil, NewOutcome(http.StatusBadRequest, Value,
			fmt.Sprintf("$validate mode %q is not one of create, update, delete (to check a profile, name it with profile)", req.mode), req.where["mode"])
	}
	return req, nil
}

func (req *validateRequest) readParameters(raw []byte) error {
	var params struct {
		Parameter []map[string]json.RawMessage `json:"parameter"`
	}
	if err := json.Unmarshal(raw, &params); err != nil {
		return NewOutcome(http.StatusBadRequest, Structure, "the Parameters body cannot be read: "+err.Error(), "Parameters")
	}
	for i, p := range params.Parameter {
		var name string
		_ = json.Unmarshal(p["name"], &name)
		at := fmt.Sprintf("Parameters.parameter[%d]", i)
		value := func(keys ...string) (string, bool) {
			for _, k := range keys {
				var s string
				if v, ok := p[k]; ok && json.Unmarshal(v, &s) == nil {
					return s, true
				}
			}
			return "", false
		}
		switch name {
		case "resource":
			r, ok := p["resource"]
			if !ok || req.resource != nil {
				return NewOutcome(http.StatusBadRequest, Invalid, "$validate takes one resource, in parameter resource's \"resource\"", at)
			}
			req.resource = r
		case "mode":
			v, ok := value("valueCode", "valueString")
			if !ok || req.mode != "" {
				return NewOutcome(http.StatusBadRequest, Invalid, "mode is one valueCode: create, update or delete", at)
			}
			req.mode, req.where["mode"] = v, at
		case "profile":
			v, ok := value("valueUri", "valueCanonical", "valueString")
			if !ok || req.profile != "" {
				return NewOutcome(http.StatusBadRequest, Invalid, "profile is one valueUri, the profile's canonical URL", at)
			}
			req.profile, req.where["profile"] = v, at
		default:
			return NewOutcome(http.StatusBadRequest, NotSupported,
				fmt.Sprintf("$validate has no parameter %q (it takes resource, mode and profile)", name), at+".name")
		}
	}
	return nil
}

// validateWrite checks a create or an update of the resource, returning the issues a write
// would have been refused with.
func (a *API) validateWrite(ctx context.Context, resourceType, id string, req *validateRequest) ([]Issue, error) {
	if req.resource == nil {
		return nil, NewOutcome(http.StatusBadRequest, Required,
			fmt.Sprintf("$validate in mode %s needs the resource, as the body or in parameter resource", req.mode))
	}
	var unknownProfile error
	issues, err := func() ([]Issue, error) {
		if err := a.config.Limits.checkArrays(req.resource, ""); err != nil {
			return nil, err
		}
		res, err := Parse(req.resource)
		if err != nil {
			return nil, err
		}
		if res.Type != resourceType {
			return nil, NewOutcome(http.StatusBadRequest, Invalid,
				fmt.Sprintf("the resource is a %s but the URL is for %s", res.Type, resourceType), "resourceType")
		}
		if req.mode == ValidateUpdate {
			switch {
			case res.ID == "":
				return nil, NewOutcome(http.StatusBadRequest, Required, "an update must carry the resource's id", resourceType+".id")
			case id != "" && res.ID != id:
				return nil, NewOutcome(http.StatusBadRequest, Invalid, fmt.Sprintf("the resource's id %q does not match the URL's %q", res.ID, id), resourceType+".id")
			}
		}
		var issues []Issue
		if req.profile != "" {
			if issues, err = a.profileIssues(ctx, a.store.db, res, req); err != nil {
				unknownProfile = err
				return nil, nil
			}
		}
		return issues, a.store.DryRun(ctx, func(ctx context.Context, tx pgx.Tx) error {
			if req.mode == ValidateUpdate {
				_, err := a.store.Update(ctx, tx, res.Clone(), nil)
				return err
			}
			_, err := a.store.Create(ctx, tx, res.Clone())
			return err
		})
	}()
	if unknownProfile != nil {
		return nil, unknownProfile // the request cannot be answered, whatever the resource
	}
	return reportable(issues, err)
}

// validateDelete checks that the resource exists and that deleting it would be accepted
// (the registry refuses to delete an infusion that assessments follow).
func (a *API) validateDelete(ctx context.Context, resourceType, id string, req *validateRequest) ([]Issue, error) {
	if id == "" {
		return nil, NewOutcome(http.StatusBadRequest, Required,
			fmt.Sprintf("$validate in mode delete names the resource: POST /%s/{id}/$validate", resourceType), req.where["mode"])
	}
	if _, err := a.store.Read(ctx, a.store.db, resourceType, id); err != nil {
		return nil, err // 404 or 410: there is nothing to delete
	}
	err := a.store.DryRun(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := a.store.Delete(ctx, tx, resourceType, id)
		return err
	})
	return reportable(nil, err)
}

// reportable turns the client errors a write would have had into issues of the answer, and
// passes on the server's own failures.
func reportable(issues []Issue, err error) ([]Issue, error) {
	var o *Outcome
	switch {
	case err == nil:
		return issues, nil
	case errors.As(err, &o) && o.Status >= 400 && o.Status < 500:
		return append(issues, o.Issues...), nil
	}
	return nil, err
}

// profileIssues checks res against the profile the request names: a registry profile (or any
// StructureDefinition stored on the server) by its differential's top-level constraints
// (required elements, fixed values, patterns, required extensions); the base definition of
// the resource's type needs nothing more than the R4 checks every write gets. A profile the
// server does not know is a 400 naming it.
func (a *API) profileIssues(ctx context.Context, tx DBTX, res *Resource, req *validateRequest) ([]Issue, error) {
	url, _, _ := strings.Cut(req.profile, "|")
	if url == "http://hl7.org/fhir/StructureDefinition/"+res.Type {
		return nil, nil
	}
	var id string
	err := tx.QueryRow(ctx, `SELECT s.resource_id FROM search_uri s
		WHERE s.resource_type = 'StructureDefinition' AND s.code = 'url' AND s.value = $1
		ORDER BY s.resource_id LIMIT 1`, url).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, NewOutcome(http.StatusBadRequest, NotSupported,
			fmt.Sprintf("profile %q is not known to this server (its profiles are at /fhir/StructureDefinition)", req.profile), req.where["profile"])
	}
	if err != nil {
		return nil, fmt.Errorf("finding profile %s: %w", url, err)
	}
	v, err := a.store.Read(ctx, tx, "StructureDefinition", id)
	if err != nil {
		return nil, err
	}
	var sd profile
	if err := json.Unmarshal(v.JSON, &sd); err != nil {
		return nil, fmt.Errorf("reading profile %s: %w", url, err)
	}
	if sd.Type != res.Type {
		return []Issue{{Severity: Error, Code: Invalid, Expression: []string{res.Type},
			Diagnostics: fmt.Sprintf("profile %s is for %s, not %s", url, sd.Type, res.Type)}}, nil
	}
	return sd.check(res, a.config.InValueSet), nil
}

// profile is what profileIssues reads of a StructureDefinition.
type profile struct {
	URL          string `json:"url"`
	Type         string `json:"type"`
	Differential struct {
		Element []profileElement `json:"element"`
	} `json:"differential"`
}

type profileElement struct {
	Path      string `json:"path"`
	SliceName string `json:"sliceName"`
	Min       *int   `json:"min"`
	Type      []struct {
		Code    string   `json:"code"`
		Profile []string `json:"profile"`
	} `json:"type"`
	Binding *struct {
		Strength string `json:"strength"`
		ValueSet string `json:"valueSet"`
	} `json:"binding"`
	FixedCode              *string          `json:"fixedCode"`
	FixedURI               *string          `json:"fixedUri"`
	FixedString            *string          `json:"fixedString"`
	PatternCodeableConcept *codeableConcept `json:"patternCodeableConcept"`
}

type codeableConcept struct {
	Coding []struct {
		System string `json:"system"`
		Code   string `json:"code"`
	} `json:"coding"`
}

// check applies the constraints of the differential's elements directly under the resource:
// deeper ones are about elements of backbone elements and data types, which the registry's
// business rules check where they matter. inValueSet, when not nil, checks required bindings.
func (p profile) check(res *Resource, inValueSet func(url, system, code string) (bool, error)) []Issue {
	var issues []Issue
	fail := func(path, format string, args ...any) {
		issues = append(issues, Issue{Severity: Error, Code: Invalid, Expression: []string{path},
			Diagnostics: fmt.Sprintf(format, args...) + " (profile " + p.URL + ")"})
	}
	for _, e := range p.Differential.Element {
		name, ok := strings.CutPrefix(e.Path, res.Type+".")
		if !ok || strings.Contains(name, ".") {
			continue
		}
		key, value := elementValue(res.Body, name)
		path := res.Type + "." + key
		if e.SliceName != "" {
			if name == "extension" && e.Min != nil && *e.Min > 0 && len(e.Type) == 1 && len(e.Type[0].Profile) == 1 {
				if !hasExtension(value, e.Type[0].Profile[0]) {
					fail(res.Type+".extension", "the extension %s (%s) is required", e.Type[0].Profile[0], e.SliceName)
				}
			}
			continue
		}
		if value == nil {
			if e.Min != nil && *e.Min > 0 {
				fail(res.Type+"."+name, "%s is required", name)
			}
			continue
		}
		for _, fixed := range []*string{e.FixedCode, e.FixedURI, e.FixedString} {
			if fixed != nil && value != *fixed {
				fail(path, "must be %q, not %v", *fixed, value)
			}
		}
		if b := e.Binding; b != nil && b.Strength == "required" && inValueSet != nil {
			if ok, err := boundCode(value, b.ValueSet, inValueSet); err == nil && !ok {
				fail(path, "must have a code from value set %s", b.ValueSet)
			}
		}
		if e.PatternCodeableConcept != nil && !matchesPattern(value, *e.PatternCodeableConcept) {
			want := make([]string, 0, len(e.PatternCodeableConcept.Coding))
			for _, c := range e.PatternCodeableConcept.Coding {
				want = append(want, strings.TrimSuffix(c.System+"|"+c.Code, "|"))
			}
			fail(path, "must have a coding %s", strings.Join(want, " and "))
		}
	}
	return issues
}

// elementValue finds an element of body by its name in a StructureDefinition, a choice
// ("value[x]") by whichever type it was given in.
func elementValue(body map[string]any, name string) (string, any) {
	if base, ok := strings.CutSuffix(name, "[x]"); ok {
		for k, v := range body {
			if rest, ok := strings.CutPrefix(k, base); ok && rest != "" && rest[0] >= 'A' && rest[0] <= 'Z' {
				return k, v
			}
		}
		return name, nil
	}
	return name, body[name]
}

func hasExtension(value any, url string) bool {
	list, _ := value.([]any)
	return slices.ContainsFunc(list, func(x any) bool {
		m, _ := x.(map[string]any)
		return m["url"] == url
	})
}

// matchesPattern tells whether a CodeableConcept (or a list of them) has every coding of the
// pattern, a pattern coding without a code matching any code of its system.
func matchesPattern(value any, pattern codeableConcept) bool {
	candidates, ok := value.([]any)
	if !ok {
		candidates = []any{value}
	}
	for _, cand := range candidates {
		cc, _ := cand.(map[string]any)
		codings, _ := cc["coding"].([]any)
		all := true
		for _, want := range pattern.Coding {
			if !slices.ContainsFunc(codings, func(x any) bool {
				m, _ := x.(map[string]any)
				return m["system"] == want.System && (want.Code == "" || m["code"] == want.Code)
			}) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// boundCode tells whether a coded value (a CodeableConcept, or a list of them) has a coding in
// the value set: one is enough, as R4 says of a required binding on a CodeableConcept.
func boundCode(value any, url string, inValueSet func(url, system, code string) (bool, error)) (bool, error) {
	candidates, ok := value.([]any)
	if !ok {
		candidates = []any{value}
	}
	for _, cand := range candidates {
		cc, _ := cand.(map[string]any)
		codings, _ := cc["coding"].([]any)
		for _, x := range codings {
			m, _ := x.(map[string]any)
			system, _ := m["system"].(string)
			code, _ := m["code"].(string)
			if ok, err := inValueSet(url, system, code); err != nil || ok {
				return ok, err
			}
		}
	}
	return false, nil
}
