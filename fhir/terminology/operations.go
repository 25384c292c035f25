package terminology

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/fhir"
)

// Register mounts the terminology operations: CodeSystem/$lookup, ValueSet/$expand and
// ValueSet/$validate-code, at type and instance level, by GET (query parameters) or POST (a
// Parameters body). now stamps expansions.
func (s *Server) Register(e *echo.Echo, now func() time.Time) {
	h := &handlers{s: s, now: now}
	g := fhir.Group(e)
	for _, p := range []string{"/CodeSystem/$lookup", "/CodeSystem/:id/$lookup"} {
		g.GET(p, h.lookup)
		g.POST(p, h.lookup)
	}
	for _, p := range []string{"/ValueSet/$expand", "/ValueSet/:id/$expand"} {
		g.GET(p, h.expand)
		g.POST(p, h.expand)
	}
	for _, p := range []string{"/ValueSet/$validate-code", "/ValueSet/:id/$validate-code"} {
		g.GET(p, h.validateCode)
		g.POST(p, h.validateCode)
	}
}

type handlers struct {
	s   *Server
	now func() time.Time
}

// param is one input parameter: a string value, or a complex one (coding, codeableConcept)
// as JSON; where locates it for an error.
type param struct {
	value   string
	complex json.RawMessage
	where   string
}

// inputs reads an operation's parameters from the query and, for POST, a Parameters body.
func inputs(c echo.Context) (map[string][]param, error) {
	out := map[string][]param{}
	for name, values := range c.QueryParams() {
		if strings.HasPrefix(name, "_") { // _format, _pretty
			continue
		}
		for _, v := range values {
			out[name] = append(out[name], param{value: v, where: name})
		}
	}
	if c.Request().Method != http.MethodPost {
		return out, nil
	}
	raw, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(string(raw)) == "" {
		return out, nil
	}
	var body struct {
		ResourceType string                       `json:"resourceType"`
		Parameter    []map[string]json.RawMessage `json:"parameter"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.ResourceType != "Parameters" {
		return nil, fhir.NewOutcome(http.StatusBadRequest, fhir.Structure, "the body must be a Parameters resource")
	}
	for i, p := range body.Parameter {
		var name string
		_ = json.Unmarshal(p["name"], &name)
		where := fmt.Sprintf("Parameters.parameter[%d]", i)
		got := false
		for key, v := range p {
			if !strings.HasPrefix(key, "value") {
				continue
			}
			got = true
			var str string
			var b bool
			switch {
			case json.Unmarshal(v, &str) == nil:
				out[name] = append(out[name], param{value: str, where: where})
			case json.Unmarshal(v, &b) == nil:
				out[name] = append(out[name], param{value: strconv.FormatBool(b), where: where})
			default:
				var n json.Number
				if json.Unmarshal(v, &n) == nil {
					out[name] = append(out[name], param{value: n.String(), where: where})
				} else {
					out[name] = append(out[name], param{complex: v, where: where})
				}
			}
		}
		if !got {
			return nil, fhir.NewOutcome(http.StatusBadRequest, fhir.Required, fmt.Sprintf("parameter %q has no value", name), where)
		}
	}
	return out, nil
}

// one returns the single value of a parameter ("" when absent), refusing unknown
// parameters and repeats.
func one(in map[string][]param, name string) (string, string, error) {
	ps := in[name]
	switch {
	case len(ps) == 0:
		return "", "", nil
	case len(ps) > 1:
		return "", "", fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, "one "+name+" only", ps[1].where)
	case ps[0].complex != nil:
		return "", "", fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, name+" is a simple value", ps[0].where)
	}
	return ps[0].value, ps[0].where, nil
}

func only(in map[string][]param, allowed ...string) error {
	for name, ps := range in {
		ok := false
		for _, a := range allowed {
			ok = ok || a == name
		}
		if !ok {
			return fhir.NewOutcome(http.StatusBadRequest, fhir.NotSupported,
				fmt.Sprintf("this operation has no parameter %q (it takes %s)", name, strings.Join(allowed, ", ")), ps[0].where)
		}
	}
	return nil
}

type codingJSON struct {
	System  string `json:"system"`
	Version string `json:"version"`
	Code    string `json:"code"`
	Display string `json:"display"`
}

func codings(in map[string][]param, name string) ([]codingJSON, string, error) {
	var out []codingJSON
	where := ""
	for _, p := range in[name] {
		where = p.where
		if p.complex == nil {
			// In a query, a coding is system|code.
			system, code, ok := strings.Cut(p.value, "|")
			if !ok {
				system, code = "", p.value
			}
			out = append(out, codingJSON{System: system, Code: code})
			continue
		}
		if name == "codeableConcept" {
			var cc struct {
				Coding []codingJSON `json:"coding"`
			}
			if err := json.Unmarshal(p.complex, &cc); err != nil {
				return nil, where, fhir.NewOutcome(http.StatusBadRequest, fhir.Structure, "codeableConcept is not a CodeableConcept", p.where)
			}
			out = append(out, cc.Coding...)
			continue
		}
		var c codingJSON
		if err := json.Unmarshal(p.complex, &c); err != nil {
			return nil, where, fhir.NewOutcome(http.StatusBadRequest, fhir.Structure, name+" is not a Coding", p.where)
		}
		out = append(out, c)
	}
	return out, where, nil
}

// lookup is CodeSystem/$lookup: the code system's name and version, the code's display, and
// its properties, parent and children. An unknown system or code is a 404.
func (h *handlers) lookup(c echo.Context) error {
	in, err := inputs(c)
	if err != nil {
		return err
	}
	if err := only(in, "code", "system", "version", "coding", "date", "displayLanguage", "property"); err != nil {
		return err
	}
	system, systemAt, err := one(in, "system")
	if err != nil {
		return err
	}
	code, _, err := one(in, "code")
	if err != nil {
		return err
	}
	cds, codingAt, err := codings(in, "coding")
	if err != nil {
		return err
	}
	switch {
	case len(cds) > 1:
		return fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, "one coding only", codingAt)
	case len(cds) == 1 && code != "":
		return fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, "give code and system, or coding, not both", codingAt)
	case len(cds) == 1:
		system, code, systemAt = cds[0].System, cds[0].Code, codingAt
	}
	var cs *CodeSystem
	if id := c.Param("id"); id != "" {
		if cs = h.s.CodeSystemByID(id); cs == nil {
			return fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("CodeSystem/%s is not known", id))
		}
		if system != "" && system != cs.URL {
			return fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid,
				fmt.Sprintf("system %s is not that of CodeSystem/%s (%s)", system, id, cs.URL), systemAt)
		}
	} else {
		if system == "" {
			return fhir.NewOutcome(http.StatusBadRequest, fhir.Required, "$lookup needs a system (or a coding with one)", "system")
		}
		if cs = h.s.CodeSystem(system); cs == nil {
			return fhir.NewOutcome(http.StatusNotFound, fhir.NotFound,
				fmt.Sprintf("code system %s is not known to this server", system), systemAt)
		}
	}
	if code == "" {
		return fhir.NewOutcome(http.StatusBadRequest, fhir.Required, "$lookup needs a code (or a coding with one)", "code")
	}
	con := cs.Concept(code)
	if con == nil {
		return fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("code system %s has no code %q", cs.URL, code), "code")
	}
	name := cs.Name
	if name == "" {
		name = cs.ID
	}
	out := []any{strParam("name", name)}
	if cs.Version != "" {
		out = append(out, strParam("version", cs.Version))
	}
	if con.Display != "" {
		out = append(out, strParam("display", con.Display))
	}
	out = append(out, map[string]any{"name": "property", "part": []any{codeParam("code", "source"), strParam("value", cs.Source)}})
	if con.parent != nil {
		out = append(out, map[string]any{"name": "property", "part": []any{codeParam("code", "parent"), codeParam("value", con.parent.Code)}})
	}
	for _, child := range con.Children {
		out = append(out, map[string]any{"name": "property", "part": []any{codeParam("code", "child"), codeParam("value", child.Code)}})
	}
	for _, code := range sortedKeys(con.Properties) {
		for _, v := range con.Properties[code] {
			out = append(out, map[string]any{"name": "property", "part": []any{codeParam("code", code), strParam("value", v)}})
		}
	}
	return respond(c, map[string]any{"resourceType": "Parameters", "parameter": out})
}

// valueSet finds the value set an operation is about: by id in the path, or by its url.
func (h *handlers) valueSet(c echo.Context, in map[string][]param) (*ValueSet, error) {
	url, at, err := one(in, "url")
	if err != nil {
		return nil, err
	}
	if id := c.Param("id"); id != "" {
		vs := h.s.ValueSetByID(id)
		if vs == nil {
			return nil, fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("ValueSet/%s is not known", id))
		}
		if url != "" && url != vs.URL {
			return nil, fhir.NewOutcome(http.StatusBadRequest, fhir.Invalid, fmt.Sprintf("url %s is not that of ValueSet/%s (%s)", url, id, vs.URL), at)
		}
		return vs, nil
	}
	if url == "" {
		if len(in["valueSet"]) > 0 {
			return nil, fhir.NewOutcome(http.StatusBadRequest, fhir.NotSupported, "a value set given in the request is not supported: name a published one by url", in["valueSet"][0].where)
		}
		return nil, fhir.NewOutcome(http.StatusBadRequest, fhir.Required, "name the value set: url, or /ValueSet/{id}/"+c.Path()[strings.LastIndex(c.Path(), "$"):], "url")
	}
	vs := h.s.ValueSet(url)
	if vs == nil {
		return nil, fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("value set %s is not known to this server", url), at)
	}
	return vs, nil
}

// expand is ValueSet/$expand: every code of the value set, or those whose code or display
// contains filter (case-insensitively), a page of count from offset.
func (h *handlers) expand(c echo.Context) error {
	in, err := inputs(c)
	if err != nil {
		return err
	}
	if err := only(in, "url", "valueSetVersion", "filter", "count", "offset", "includeDesignations", "activeOnly",
		"includeDefinition", "displayLanguage", "date", "excludeNested"); err != nil {
		return err
	}
	vs, err := h.valueSet(c, in)
	if err != nil {
		return err
	}
	filter, _, err := one(in, "filter")
	if err != nil {
		return err
	}
	offset, err := number(in, "offset", 0)
	if err != nil {
		return err
	}
	all, err := h.s.Expansion(vs)
	if err != nil {
		return err // the server's own definitions are wrong: a 500, logged
	}
	var selected []Coding
	needle := strings.ToLower(filter)
	for _, cd := range all {
		if needle == "" || strings.Contains(strings.ToLower(cd.Code), needle) || strings.Contains(strings.ToLower(cd.Display), needle) {
			selected = append(selected, cd)
		}
	}
	count, err := number(in, "count", len(selected))
	if err != nil {
		return err
	}
	page := selected[min(offset, len(selected)):]
	page = page[:min(count, len(page))]
	contains := make([]any, 0, len(page))
	for _, cd := range page {
		m := map[string]any{"system": cd.System, "code": cd.Code}
		if cd.Version != "" {
			m["version"] = cd.Version
		}
		if cd.Display != "" {
			m["display"] = cd.Display
		}
		if cd.Abstract {
			m["abstract"] = true
		}
		contains = append(contains, m)
	}
	expansion := map[string]any{
		"timestamp": h.now().UTC().Format(time.RFC3339),
		"total":     len(selected),
		"offset":    offset,
	}
	var params []any
	if filter != "" {
		params = append(params, map[string]any{"name": "filter", "valueString": filter})
	}
	if len(in["count"]) > 0 {
		params = append(params, map[string]any{"name": "count", "valueInteger": count})
	}
	if len(in["offset"]) > 0 {
		params = append(params, map[string]any{"name": "offset", "valueInteger": offset})
	}
	if params != nil {
		expansion["parameter"] = params
	}
	if len(contains) > 0 {
		expansion["contains"] = contains
	}
	out := map[string]any{"resourceType": "ValueSet", "url": vs.URL, "status": "active", "expansion": expansion}
	for k, v := range map[string]string{"id": vs.ID, "version": vs.Version, "name": vs.Name, "title": vs.Title} {
		if v != "" {
			out[k] = v
		}
	}
	return respond(c, out)
}

func number(in map[string][]param, name string, fallback int) (int, error) {
	v, at, err := one(in, name)
	if err != nil || v == "" {
		return fallback, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fhir.NewOutcome(http.StatusBadRequest, fhir.Value, fmt.Sprintf("%s %q is not a whole number of 0 or more", name, v), at)
	}
	return n, nil
}

// validateCode is ValueSet/$validate-code: result true when the code (system and code, a
// coding, or any coding of a codeableConcept) is in the value set, else false with a message.
func (h *handlers) validateCode(c echo.Context) error {
	in, err := inputs(c)
	if err != nil {
		return err
	}
	if err := only(in, "url", "valueSetVersion", "system", "systemVersion", "code", "display", "coding",
		"codeableConcept", "date", "abstract", "displayLanguage", "context", "valueSet"); err != nil {
		return err
	}
	vs, err := h.valueSet(c, in)
	if err != nil {
		return err
	}
	system, _, err := one(in, "system")
	if err != nil {
		return err
	}
	code, _, err := one(in, "code")
	if err != nil {
		return err
	}
	display, _, err := one(in, "display")
	if err != nil {
		return err
	}
	var candidates []codingJSON
	if code != "" {
		candidates = append(candidates, codingJSON{System: system, Code: code, Display: display})
	}
	for _, name := range []string{"coding", "codeableConcept"} {
		cds, _, err := codings(in, name)
		if err != nil {
			return err
		}
		candidates = append(candidates, cds...)
	}
	if len(candidates) == 0 {
		return fhir.NewOutcome(http.StatusBadRequest, fhir.Required, "$validate-code needs a code (with its system), a coding or a codeableConcept", "code")
	}
	var result Validation
	var messages []string
	for _, cd := range candidates {
		v, err := h.s.ValidateCode(vs, cd.System, cd.Code, cd.Display)
		if err != nil {
			return err
		}
		if v.Result {
			result = v
			messages = nil
			break
		}
		messages = append(messages, v.Message)
		if result.Display == "" {
			result.Display = v.Display
		}
	}
	out := []any{map[string]any{"name": "result", "valueBoolean": result.Result}}
	if len(messages) > 0 {
		out = append(out, strParam("message", strings.Join(messages, "; ")))
	}
	if result.Display != "" {
		out = append(out, strParam("display", result.Display))
	}
	return respond(c, map[string]any{"resourceType": "Parameters", "parameter": out})
}

func strParam(name, v string) map[string]any  { return map[string]any{"name": name, "valueString": v} }
func codeParam(name, v string) map[string]any { return map[string]any{"name": name, "valueCode": v} }

// respond sends an operation's answer, checked as R4 first: what the server says about
// terminology must itself be valid FHIR.
func respond(c echo.Context, resource map[string]any) error {
	raw, err := json.Marshal(resource)
	if err != nil {
		return err
	}
	res, err := fhir.Parse(raw)
	if err != nil {
		return fmt.Errorf("a terminology answer is not valid R4: %v", err) // the server's fault: not the client's 400
	}
	body, err := res.JSON()
	if err != nil {
		return err
	}
	return fhir.WriteJSON(c, http.StatusOK, body)
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
