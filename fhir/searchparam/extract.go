package searchparam

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/cartreg/cartreg/fhir/fhirpath"
)

// Extract computes the index values of a resource of type resourceType, decoded from JSON
// with json.Decoder.UseNumber: for every supported parameter of the type, the values its
// expression selects, converted by parameter type and FHIR type. Values that cannot be
// converted (a date that does not parse, a Quantity without a value, a string parameter
// pointing at a type with no text) are skipped: search never rejects a valid resource. An
// error means the resource is not of that type or an expression failed to evaluate.
// Identical values of one parameter are kept once.
func (r *Registry) Extract(resourceType string, resource map[string]any) (Values, error) {
	return r.extract(resourceType, resource, nil, false)
}

// ExtractExcept is what a store indexes: Extract without the parameters whose codes skip
// holds (those a store answers from columns of its own) and without the derived ones (see
// Derived), whose expressions are then not evaluated at all.
func (r *Registry) ExtractExcept(resourceType string, resource map[string]any, skip map[string]bool) (Values, error) {
	return r.extract(resourceType, resource, skip, true)
}

func (r *Registry) extract(resourceType string, resource map[string]any, skip map[string]bool, skipDerived bool) (Values, error) {
	tp, ok := r.byType[resourceType]
	if !ok {
		return Values{}, fmt.Errorf("searchparam: unknown resource type %q", resourceType)
	}
	root, err := fhirpath.ResourceNode(resource)
	if err != nil {
		return Values{}, fmt.Errorf("searchparam: %w", err)
	}
	if root.Type != resourceType {
		return Values{}, fmt.Errorf("searchparam: resource is a %s, not a %s", root.Type, resourceType)
	}
	var v Values
	for i, def := range tp.defs {
		if skip[def.Code] {
			continue
		}
		if _, derived := tp.derived[def.Code]; derived && skipDerived {
			continue
		}
		nodes, err := tp.exprs[i].EvaluateNode(root)
		if err != nil {
			return Values{}, fmt.Errorf("searchparam: %s:%s: %w", resourceType, def.Code, err)
		}
		if len(nodes) == 0 {
			continue
		}
		switch def.Type {
		case String:
			v.Strings = collect(v.Strings, nodes, def, appendStrings)
		case Token:
			v.Tokens = collect(v.Tokens, nodes, def, appendTokens)
		case Date:
			v.Dates = collect(v.Dates, nodes, def, appendDates)
		case Reference:
			v.References = collect(v.References, nodes, def, appendReferences)
		case Number:
			v.Numbers = collect(v.Numbers, nodes, def, appendNumbers)
		case Quantity:
			v.Quantities = collect(v.Quantities, nodes, def, appendQuantities)
		case URI:
			v.URIs = collect(v.URIs, nodes, def, appendURIs)
		}
	}
	return v, nil
}

// collect appends the values add makes of each node, then drops repeats among them.
func collect[T comparable](s []T, nodes []fhirpath.Node, def *Definition, add func([]T, *Definition, fhirpath.Node) []T) []T {
	start := len(s)
	for _, n := range nodes {
		s = add(s, def, n)
	}
	return dedupe(s, start)
}

// dedupe drops the repeats among s[start:], the values of one parameter, keeping the first
// of each. Most parameters have a handful of values, for which a scan of those kept beats a
// map; past smallDedupe values a map keeps the cost linear, so a resource with 100,000
// identifiers costs 100,000 lookups rather than 5 billion comparisons.
func dedupe[T comparable](s []T, start int) []T {
	if len(s)-start > smallDedupe {
		return dedupeMap(s, start)
	}
	out := start
	for i := start; i < len(s); i++ {
		dup := false
		for j := start; j < out; j++ {
			if s[j] == s[i] {
				dup = true
				break
			}
		}
		if !dup {
			s[out] = s[i]
			out++
		}
	}
	return s[:out]
}

// smallDedupe is how many values dedupe compares pairwise before it turns to a map.
const smallDedupe = 16

func dedupeMap[T comparable](s []T, start int) []T {
	seen := make(map[T]struct{}, len(s)-start)
	out := start
	for i := start; i < len(s); i++ {
		if _, dup := seen[s[i]]; dup {
			continue
		}
		seen[s[i]] = struct{}{}
		s[out] = s[i]
		out++
	}
	return s[:out]
}

// Helpers reading a complex value's properties.

func object(n fhirpath.Node) map[string]any {
	m, _ := n.Value.(map[string]any)
	return m
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func strs(m map[string]any, key string) []string {
	switch v := m[key].(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, item := range v {
			if s, ok := item.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func objects(m map[string]any, key string) []map[string]any {
	switch v := m[key].(type) {
	case map[string]any:
		return []map[string]any{v}
	case []any:
		out := make([]map[string]any, 0, len(v))
		for _, item := range v {
			if o, ok := item.(map[string]any); ok {
				out = append(out, o)
			}
		}
		return out
	}
	return nil
}

// primitiveText is a primitive's value as text: strings as they are, numbers as written,
// booleans as "true" and "false".
func primitiveText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return string(v), true
	case bool:
		if v {
			return "true", true
		}
		return "false", true
	}
	return "", false
}

// string: a primitive, or the parts of a HumanName or an Address.

func appendStrings(out []StringValue, def *Definition, n fhirpath.Node) []StringValue {
	code := def.Code
	add := func(s string) {
		if strings.TrimSpace(s) != "" {
			out = append(out, StringValue{Code: code, Value: s, Normalized: NormalizeString(s)})
		}
	}
	switch {
	case n.Type == "HumanName":
		m := object(n)
		add(str(m, "family"))
		for _, key := range []string{"given", "prefix", "suffix"} {
			for _, s := range strs(m, key) {
				add(s)
			}
		}
		add(str(m, "text"))
	case n.Type == "Address":
		m := object(n)
		for _, s := range strs(m, "line") {
			add(s)
		}
		for _, key := range []string{"city", "district", "state", "postalCode", "country", "text"} {
			add(str(m, key))
		}
	default:
		if s, ok := n.Value.(string); ok {
			add(s)
		}
	}
	return out
}

// token: a code, Coding, CodeableConcept, Identifier, ContactPoint or a Reference's
// identifier.

func appendTokens(out []TokenValue, def *Definition, n fhirpath.Node) []TokenValue {
	code := def.Code
	switch n.Type {
	case "Coding":
		return appendCoding(out, code, object(n), "")
	case "CodeableConcept":
		m := object(n)
		text := str(m, "text")
		codings := objects(m, "coding")
		for _, c := range codings {
			out = appendCoding(out, code, c, text)
		}
		if len(codings) == 0 && text != "" {
			out = append(out, TokenValue{Code: code, Text: text})
		}
		return out
	case "Identifier":
		return appendIdentifier(out, code, object(n))
	case "ContactPoint":
		if value := str(object(n), "value"); value != "" {
			out = append(out, TokenValue{Code: code, Value: value})
		}
		return out
	case "Reference":
		if id, ok := object(n)["identifier"].(map[string]any); ok {
			return appendIdentifier(out, code, id)
		}
		return out
	}
	if s, ok := primitiveText(n.Value); ok && s != "" {
		out = append(out, TokenValue{Code: code, Value: s})
	}
	return out
}

// appendCoding adds a Coding; text, a CodeableConcept's, comes before the Coding's display.
func appendCoding(out []TokenValue, code string, c map[string]any, text string) []TokenValue {
	if text == "" {
		text = str(c, "display")
	}
	t := TokenValue{Code: code, System: str(c, "system"), Value: str(c, "code"), Text: text}
	if t.System == "" && t.Value == "" && t.Text == "" {
		return out
	}
	return append(out, t)
}

func appendIdentifier(out []TokenValue, code string, id map[string]any) []TokenValue {
	t := TokenValue{Code: code, System: str(id, "system"), Value: str(id, "value")}
	if typ, ok := id["type"].(map[string]any); ok {
		t.Text = str(typ, "text")
	}
	if t.System == "" && t.Value == "" {
		return out
	}
	return append(out, t)
}

// date: a date, dateTime, instant, Period or Timing.

func appendDates(out []DateValue, def *Definition, n fhirpath.Node) []DateValue {
	code := def.Code
	switch n.Type {
	case "Period":
		if d, ok := period(code, object(n)); ok {
			out = append(out, d)
		}
	case "Timing":
		m := object(n)
		for _, e := range strs(m, "event") {
			if low, high, ok := DateRange(e); ok {
				out = append(out, DateValue{Code: code, Low: low, High: high})
			}
		}
		if repeat, ok := m["repeat"].(map[string]any); ok {
			if bounds, ok := repeat["boundsPeriod"].(map[string]any); ok {
				if d, ok := period(code, bounds); ok {
					out = append(out, d)
				}
			}
		}
	case "date", "dateTime", "instant":
		if s, ok := n.Value.(string); ok {
			if low, high, ok := DateRange(s); ok {
				out = append(out, DateValue{Code: code, Low: low, High: high})
			}
		}
	}
	return out
}

// period is the span from the start of start's precision to the end of end's; a missing
// end is open. A Period with neither (or with one that does not parse) gives nothing.
func period(code string, m map[string]any) (DateValue, bool) {
	d := DateValue{Code: code, Low: MinTime, High: MaxTime}
	start, end := str(m, "start"), str(m, "end")
	if start == "" && end == "" {
		return d, false
	}
	if start != "" {
		low, _, ok := DateRange(start)
		if !ok {
			return d, false
		}
		d.Low = low
	}
	if end != "" {
		_, high, ok := DateRange(end)
		if !ok {
			return d, false
		}
		d.High = high
	}
	return d, true
}

// reference: a Reference, a canonical or uri, or an inline resource.

func appendReferences(out []ReferenceValue, def *Definition, n fhirpath.Node) []ReferenceValue {
	code := def.Code
	switch {
	case n.Type == "Reference":
		ref := str(object(n), "reference")
		if ref == "" || ref[0] == '#' {
			// Only an identifier or a display, or a reference to a contained resource:
			// contained resources are not indexed, so there is nothing a search could
			// name.
			return out
		}
		rv := ReferenceValue{Code: code}
		rv.Type, rv.ID = fhirpath.SplitReference(ref)
		if rv.Type == "" || isAbsolute(ref) {
			rv.URL = ref
		}
		return append(out, rv)
	case isURIType(n.Type):
		s, _ := n.Value.(string)
		if s == "" {
			return out
		}
		rv := ReferenceValue{Code: code, URL: s}
		if i := strings.LastIndexByte(s, '|'); i >= 0 {
			rv.URL, rv.Version = s[:i], s[i+1:]
		}
		return append(out, rv)
	case fhirpath.IsResourceType(n.Type):
		// A resource in place of a reference: Bundle.entry[0].resource for Bundle's
		// composition and message. It stands for its type and id, and only when of a
		// target type, which is what tells a document's Composition (or a message's
		// MessageHeader) from the first entry of any other Bundle.
		if id := str(object(n), "id"); id != "" && (len(def.Targets) == 0 || contains(def.Targets, n.Type)) {
			out = append(out, ReferenceValue{Code: code, Type: n.Type, ID: id})
		}
	}
	return out
}

// isURIType tells the primitive types that hold a URI.
func isURIType(typ string) bool {
	switch typ {
	case "uri", "url", "canonical", "oid", "uuid":
		return true
	}
	return false
}

func contains(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

func isAbsolute(ref string) bool {
	return strings.Contains(ref, "://") || strings.HasPrefix(ref, "urn:")
}

// number: a decimal or an integer.

func appendNumbers(out []NumberValue, def *Definition, n fhirpath.Node) []NumberValue {
	code := def.Code
	num, ok := n.Value.(json.Number)
	if !ok {
		return out
	}
	if value, low, high, ok := NumberRange(string(num)); ok {
		out = append(out, NumberValue{Code: code, Value: value, Low: low, High: high})
	}
	return out
}

// quantity: a Quantity (and its profiles Age, Duration, ...), Money or Range.

// moneySystem is the code system of Money's currency, for value|system|code searches.
const moneySystem = "urn:iso:std:iso:4217"

func appendQuantities(out []QuantityValue, def *Definition, n fhirpath.Node) []QuantityValue {
	code := def.Code
	m := object(n)
	switch {
	case n.Type == "Money":
		if value, ok := number(m["value"]); ok {
			q := QuantityValue{Code: code, Value: value, Low: value, High: value, Unit: str(m, "currency")}
			if q.Unit != "" {
				q.System = moneySystem
			}
			out = append(out, q)
		}
	case n.Type == "Range":
		low, lowOK := m["low"].(map[string]any)
		high, highOK := m["high"].(map[string]any)
		q := QuantityValue{Code: code, Low: math.Inf(-1), High: math.Inf(1)}
		var lowValue, highValue float64
		if lowOK {
			lowValue, lowOK = number(low["value"])
		}
		if highOK {
			highValue, highOK = number(high["value"])
		}
		switch {
		case lowOK && highOK:
			q.Low, q.High, q.Value = lowValue, highValue, lowValue+(highValue-lowValue)/2
		case lowOK:
			q.Low, q.Value = lowValue, lowValue
		case highOK:
			q.High, q.Value = highValue, highValue
		default:
			return out
		}
		// The units are those of whichever end has them (they must agree).
		for _, end := range []map[string]any{low, high} {
			if q.System == "" && q.Unit == "" && end != nil {
				q.System, q.Unit = str(end, "system"), quantityUnit(end)
			}
		}
		out = append(out, q)
	case fhirpath.TypeIs(n.Type, "Quantity"):
		value, ok := number(m["value"])
		if !ok {
			return out
		}
		q := QuantityValue{Code: code, Value: value, Low: value, High: value, System: str(m, "system"), Unit: quantityUnit(m)}
		// "<5 mg" is any amount up to 5 mg.
		switch str(m, "comparator") {
		case "<", "<=":
			q.Low = math.Inf(-1)
		case ">", ">=":
			q.High = math.Inf(1)
		}
		out = append(out, q)
	}
	return out
}

// quantityUnit is the coded unit, else the human-readable one.
func quantityUnit(m map[string]any) string {
	if c := str(m, "code"); c != "" {
		return c
	}
	return str(m, "unit")
}

func number(v any) (float64, bool) {
	num, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := num.Float64()
	return f, err == nil && !math.IsInf(f, 0)
}

// uri: a uri, url, canonical, oid or uuid.

func appendURIs(out []URIValue, def *Definition, n fhirpath.Node) []URIValue {
	code := def.Code
	if s, ok := n.Value.(string); ok && s != "" {
		out = append(out, URIValue{Code: code, Value: s})
	}
	return out
}
