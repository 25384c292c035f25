package fhir

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cartreg/cartreg/fhir/searchparam"
)

// sqlBuilder collects the numbered arguments of one statement, so values never enter the SQL
// text.
type sqlBuilder struct {
	args    []any
	aliases int
	// base is this server's FHIR base as the client addresses it: a reference to
	// base/Type/id is local.
	base string
}

func (b *sqlBuilder) arg(v any) string {
	b.args = append(b.args, v)
	return "$" + strconv.Itoa(len(b.args))
}

// alias returns a table alias no other part of the statement uses.
func (b *sqlBuilder) alias(prefix string) string {
	b.aliases++
	return prefix + strconv.Itoa(b.aliases)
}

// owner is the resource a condition is about, as SQL expressions: the searched resource
// (r.resource_type, r.resource_id), or the target of a reference in a chain.
type owner struct {
	typeExpr, idExpr string
	types            []string // the resource types it can be
}

// unknownParameterError is a parameter the server does not know at all, which a lenient
// search ignores and reports. Everything else wrong with a query is a 400 even when lenient:
// ignoring a bad modifier or value would widen the result.
type unknownParameterError struct{ outcome *Outcome }

func (e *unknownParameterError) Error() string { return e.outcome.Error() }
func (e *unknownParameterError) Unwrap() error { return e.outcome }

func unknownParameter(resourceTypes []string, key string) error {
	types := strings.Join(resourceTypes, ", ")
	if len(resourceTypes) > 3 {
		types = fmt.Sprintf("all of the %d types searched", len(resourceTypes))
	}
	return &unknownParameterError{NewOutcome(http.StatusBadRequest, NotSupported, fmt.Sprintf("%s is not a search parameter of %s", key, types))}
}

// storedCodes are the index rows' codes a parameter of resourceType is read from: its own,
// or, for a derived parameter (see searchparam.Derived), its sources'; narrowed is the one
// target type a derived reference parameter's rows must point at, or "".
func (s *Searcher) storedCodes(resourceType, code string) (codes []string, narrowed string) {
	if d, ok := s.params.Derived(resourceType, code); ok {
		return d.From, d.TargetType
	}
	return []string{code}, ""
}

// codeCondition is the SQL selecting, among index rows aliased alias, those of parameter code
// for resources of types: code's own rows, or a derived parameter's sources' rows (pointing
// at its one target type, for a narrowed reference). Where the types differ in how code is
// stored, each type gets its own condition.
func (s *Searcher) codeCondition(b *sqlBuilder, alias string, types []string, code string) string {
	type storage struct {
		codes    string
		narrowed string
	}
	var order []storage
	byStorage := map[storage][]string{}
	for _, t := range types {
		codes, narrowed := s.storedCodes(t, code)
		st := storage{strings.Join(codes, ","), narrowed}
		if _, seen := byStorage[st]; !seen {
			order = append(order, st)
		}
		byStorage[st] = append(byStorage[st], t)
	}
	render := func(st storage) string {
		var cond string
		if codes := strings.Split(st.codes, ","); len(codes) > 1 {
			cond = alias + ".code = ANY(" + b.arg(codes) + "::text[])"
		} else {
			cond = alias + ".code = " + b.arg(codes[0])
		}
		if st.narrowed != "" {
			cond += " AND " + alias + ".target_type = " + b.arg(st.narrowed)
		}
		return cond
	}
	if len(order) <= 1 {
		if len(order) == 0 {
			return alias + ".code = " + b.arg(code)
		}
		return "(" + render(order[0]) + ")"
	}
	parts := make([]string, len(order))
	for i, st := range order {
		parts[i] = "(" + alias + ".resource_type = ANY(" + b.arg(byStorage[st]) + "::text[]) AND " + render(st) + ")"
	}
	return "(" + strings.Join(parts, " OR ") + ")"
}

// lookupAll finds code on every type, and its common type.
func (s *Searcher) lookupAll(resourceTypes []string, code string) (searchparam.Type, []*searchparam.Definition, bool) {
	var defs []*searchparam.Definition
	var kind searchparam.Type
	for _, t := range resourceTypes {
		d, ok := s.params.Lookup(t, code)
		if !ok || (kind != "" && d.Type != kind) {
			return "", nil, false
		}
		kind = d.Type
		defs = append(defs, d)
	}
	return kind, defs, len(defs) > 0
}

// checkFilterKey tells whether a filter's key names something searchable, without building SQL.
func (s *Searcher) checkFilterKey(resourceTypes []string, key string) error {
	_, err := s.condition(&sqlBuilder{}, owner{typeExpr: "x", idExpr: "x", types: resourceTypes}, key, []string{""}, true)
	return err
}

// condition is the SQL for one repetition of a filter: key (with modifier or chain) matching
// any of values. With probe set, values are not read: only the key is checked.
func (s *Searcher) condition(b *sqlBuilder, o owner, key string, values []string, probe bool) (string, error) {
	if strings.HasPrefix(key, "_has:") {
		return s.hasCondition(b, o, key, values, probe)
	}
	head, chain, chained := strings.Cut(key, ".")
	code, modifier, _ := strings.Cut(head, ":")

	switch code {
	case "_id":
		if chained || (modifier != "" && modifier != "missing") {
			return "", unknownParameter(o.types, key)
		}
		if probe {
			return "", nil
		}
		if modifier == "missing" {
			return missingLiteral(values), nil
		}
		ids := make([]string, len(values))
		for i, v := range values {
			ids[i] = unescape(v)
		}
		return o.idExpr + " = ANY(" + b.arg(ids) + "::text[])", nil
	case "_lastUpdated":
		if chained || modifier != "" {
			return "", unknownParameter(o.types, key)
		}
		if probe {
			return "", nil
		}
		column := "(SELECT lu.last_updated FROM resource lu WHERE lu.resource_type = " + o.typeExpr + " AND lu.resource_id = " + o.idExpr + ")"
		if o.idExpr == "r.resource_id" {
			column = "r.last_updated"
		}
		return s.orConditions(values, func(v string) (string, error) {
			return dateCondition(b, column, column+" + interval '1 millisecond'", v, s.now())
		})
	}

	kind, defs, ok := s.lookupAll(o.types, code)
	if !ok {
		return "", unknownParameter(o.types, key)
	}
	if chained {
		if kind != searchparam.Reference {
			return "", NewOutcome(http.StatusBadRequest, NotSupported, fmt.Sprintf("%s: only reference parameters can be chained", key))
		}
		return s.chainCondition(b, o, defs, modifier, chain, values, probe)
	}
	table, ok := indexTable[kind]
	if !ok {
		return "", NewOutcome(http.StatusBadRequest, NotSupported, fmt.Sprintf("%s: %s parameters are not supported", key, kind))
	}
	if err := checkModifier(kind, modifier, key); err != nil {
		return "", err
	}
	if probe {
		return "", nil
	}
	codeCond := s.codeCondition(b, "s", o.types, code)
	belongs := "s.resource_type = " + o.typeExpr + " AND s.resource_id = " + o.idExpr + " AND " + codeCond
	if modifier == "missing" {
		exists := "EXISTS (SELECT 1 FROM " + table + " s WHERE " + belongs + ")"
		return s.orConditions(values, func(v string) (string, error) {
			switch v {
			case "true":
				return "NOT " + exists, nil
			case "false":
				return exists, nil
			}
			return "", NewOutcome(http.StatusBadRequest, Value, key+" takes true or false")
		})
	}
	parts := make([]string, len(values))
	allFit := true
	for i, v := range values {
		c, fits, err := s.valueCondition(b, kind, modifier, v, defs)
		if err != nil {
			return "", err
		}
		parts[i] = "(" + c + ")"
		allFit = allFit && fits
	}
	match := strings.Join(parts, " OR ")
	if modifier == "not" {
		return "NOT EXISTS (SELECT 1 FROM " + table + " s WHERE " + belongs + " AND (" + match + "))", nil
	}
	// A lookup no oversized row can match reads the lookup partition alone: PostgreSQL then
	// plans one index scan rather than an Append of both partitions (README › Performance).
	if fits, ok := fitsPartition[table]; ok && allFit {
		table = fits
	}
	return o.in(b, "s.resource_type", "s.resource_id", table+" s", codeCond+" AND ("+match+")"), nil
}

// in is the condition that the owner is among the rows of from (alias.resource_type,
// alias.resource_id) that satisfy where. With one type known, it compares ids alone against
// an id list of that type, which leads the planner to the primary key even before it has
// statistics, instead of a quadratic join.
func (o owner) in(b *sqlBuilder, typeCol, idCol, from, where string) string {
	if len(o.types) == 1 {
		t := b.arg(o.types[0])
		return "(" + o.typeExpr + " = " + t + " AND " + o.idExpr + " IN (SELECT " + idCol + " FROM " + from +
			" WHERE " + typeCol + " = " + t + " AND " + where + "))"
	}
	return "(" + o.typeExpr + ", " + o.idExpr + ") IN (SELECT " + typeCol + ", " + idCol + " FROM " + from +
		" WHERE " + typeCol + " = ANY(" + b.arg(o.types) + "::text[]) AND " + where + ")"
}

func missingLiteral(values []string) string {
	for _, v := range values {
		if v == "false" {
			return "true"
		}
	}
	return "false" // every resource has an id
}

var indexTable = map[searchparam.Type]string{
	searchparam.String: "search_string", searchparam.Token: "search_token", searchparam.Date: "search_date",
	searchparam.Reference: "search_reference", searchparam.Number: "search_number",
	searchparam.Quantity: "search_quantity", searchparam.URI: "search_uri",
}

// Modifiers each type accepts (a reference also takes a resource type as its modifier).
var modifiers = map[searchparam.Type][]string{
	searchparam.String:    {"", "exact", "contains", "missing"},
	searchparam.Token:     {"", "not", "text", "missing"},
	searchparam.Date:      {"", "missing"},
	searchparam.Reference: {"", "missing"},
	searchparam.Number:    {"", "missing"},
	searchparam.Quantity:  {"", "missing"},
	searchparam.URI:       {"", "missing", "below", "above"},
}

func checkModifier(kind searchparam.Type, modifier, key string) error {
	if kind == searchparam.Reference && IsResourceType(modifier) {
		return nil
	}
	for _, m := range modifiers[kind] {
		if m == modifier {
			return nil
		}
	}
	return NewOutcome(http.StatusBadRequest, NotSupported, fmt.Sprintf("%s: the modifier :%s is not supported on %s parameters", key, modifier, kind))
}

func (s *Searcher) orConditions(values []string, one func(string) (string, error)) (string, error) {
	parts := make([]string, 0, len(values))
	for _, v := range values {
		c, err := one(v)
		if err != nil {
			return "", err
		}
		parts = append(parts, "("+c+")")
	}
	return strings.Join(parts, " OR "), nil
}

// valueCondition matches one value against index rows aliased s. fits tells that no
// oversized index row (see oversized.go) can match it.
func (s *Searcher) valueCondition(b *sqlBuilder, kind searchparam.Type, modifier, raw string, defs []*searchparam.Definition) (cond string, fits bool, err error) {
	bad := func(msg string) error {
		return NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("%q: %s", raw, msg))
	}
	switch kind {
	case searchparam.String:
		// Strings stay in both partitions: a prefix or a substring can begin or lie in a long
		// value, and an exact value's normalized form, which decides, can differ in length.
		v := unescape(raw)
		switch modifier {
		case "exact":
			return "s.value = " + b.arg(v), false, nil
		case "contains":
			return "s.normalized LIKE " + b.arg("%"+likeEscape(searchparam.NormalizeString(v))+"%"), false, nil
		}
		return "s.normalized LIKE " + b.arg(likeEscape(searchparam.NormalizeString(v))+"%"), false, nil

	case searchparam.Token:
		if modifier == "text" {
			return "lower(s.display) LIKE " + b.arg(likeEscape(strings.ToLower(unescape(raw)))+"%"), false, nil
		}
		parts := splitEscaped(raw, '|')
		switch len(parts) {
		case 1:
			// Any system, so any length: a long system can carry a short code.
			return "s.value = " + b.arg(unescape(parts[0])), false, nil
		case 2:
			system, code := unescape(parts[0]), unescape(parts[1])
			if code == "" {
				return "s.system = " + b.arg(system), false, nil
			}
			return "s.system = " + b.arg(system) + " AND s.value = " + b.arg(code), !tokenOversized(system, code), nil
		}
		return "", false, bad("a token is code, system|code, |code or system|")

	case searchparam.Date:
		cond, err := dateCondition(b, "s.low", "s.high", raw, s.now())
		return cond, true, err

	case searchparam.Number:
		prefix, number := splitPrefix(raw)
		value, low, high, ok := searchparam.NumberRange(number)
		if !ok {
			return "", false, bad("not a number")
		}
		cond, err := numberCondition(b, prefix, value, low, high)
		return cond, true, err

	case searchparam.Quantity:
		parts := splitEscaped(raw, '|')
		if len(parts) != 1 && len(parts) != 3 {
			return "", false, bad("a quantity is [prefix]number[|system|code]")
		}
		prefix, number := splitPrefix(parts[0])
		value, low, high, ok := searchparam.NumberRange(number)
		if !ok {
			return "", false, bad("not a number")
		}
		cond, err := quantityCondition(b, prefix, value, low, high)
		if err != nil {
			return "", false, err
		}
		cond = "(" + cond + ")"
		if len(parts) == 3 {
			if system := unescape(parts[1]); system != "" {
				cond += " AND s.system = " + b.arg(system)
			}
			if unit := unescape(parts[2]); unit != "" {
				cond += " AND s.unit = " + b.arg(unit)
			}
		}
		return cond, true, nil

	case searchparam.URI:
		v := unescape(raw)
		switch modifier {
		case "below":
			return "s.value LIKE " + b.arg(likeEscape(v)+"%"), false, nil
		case "above":
			// The stored value is a prefix of v, so no longer than v.
			return b.arg(v) + " LIKE replace(replace(replace(s.value, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '%'", !uriOversized(v), nil
		}
		return "s.value = " + b.arg(v), !uriOversized(v), nil

	case searchparam.Reference:
		return s.referenceCondition(b, modifier, unescape(raw), defs)
	}
	return "", false, NewOutcome(http.StatusBadRequest, NotSupported, string(kind)+" parameters are not supported")
}

// referenceCondition reads Type/id, an id alone, an absolute URL on this server or
// elsewhere, or a canonical with |version. A local reference matches relative references and
// absolute ones to this server, never the same Type/id on another server.
func (s *Searcher) referenceCondition(b *sqlBuilder, typeModifier, v string, defs []*searchparam.Definition) (cond string, fits bool, err error) {
	if b.base != "" && strings.HasPrefix(v, b.base+"/") {
		v = strings.TrimPrefix(v, b.base+"/")
	} else if strings.Contains(v, "://") || strings.HasPrefix(v, "urn:") {
		url, version, _ := strings.Cut(v, "|")
		cond := "s.url = " + b.arg(url)
		if version != "" {
			cond += " AND s.version = " + b.arg(version)
		}
		return cond, !referenceOversized(url), nil
	}
	typ, id, hasType := strings.Cut(v, "/")
	if !hasType {
		typ, id = typeModifier, v
	} else if typeModifier != "" && typeModifier != typ {
		return "false", true, nil
	}
	if typ != "" && !IsResourceType(typ) {
		return "", false, NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("%q is not a resource type", typ))
	}
	cond = "s.target_id = " + b.arg(id)
	if typ != "" {
		cond += " AND s.target_type = " + b.arg(typ)
	}
	return cond + " AND " + b.local("s"), !localReferenceOversized(b.base, typ, id), nil
}

// local is the condition that the reference row alias points into this server (see the
// local_reference function, migration 005).
func (b *sqlBuilder) local(alias string) string {
	return "local_reference(" + alias + ".url, " + b.arg(b.base+"/") + ", " + alias + ".target_type, " + alias + ".target_id)"
}

// chainCondition: ref[:Type].rest=value matches resources whose ref points to a resource of
// Type (or any of the reference's targets that have the chained parameter) that matches
// rest=value.
func (s *Searcher) chainCondition(b *sqlBuilder, o owner, defs []*searchparam.Definition, typeModifier, rest string, values []string, probe bool) (string, error) {
	targets := map[string]bool{}
	for _, d := range defs {
		for _, t := range d.Targets {
			if typeModifier == "" || t == typeModifier {
				targets[t] = true
			}
		}
	}
	if typeModifier != "" && !targets[typeModifier] && IsResourceType(typeModifier) {
		targets[typeModifier] = true
	}
	restCode := strings.SplitN(strings.SplitN(rest, ":", 2)[0], ".", 2)[0]
	var candidates []string
	for t := range targets {
		if columnParameters[restCode] || strings.HasPrefix(rest, "_has:") {
			candidates = append(candidates, t)
		} else if _, ok := s.params.Lookup(t, restCode); ok {
			candidates = append(candidates, t)
		}
	}
	if len(candidates) == 0 {
		return "", NewOutcome(http.StatusBadRequest, NotSupported, fmt.Sprintf("%s.%s: no target of %s has a search parameter %s", defs[0].Code, rest, defs[0].Code, restCode))
	}
	sort.Strings(candidates)
	var parts []string
	for _, t := range candidates {
		inner, err := s.condition(b, owner{typeExpr: "c.target_type", idExpr: "c.target_id", types: []string{t}}, rest, values, probe)
		if err != nil {
			return "", err
		}
		if probe {
			continue
		}
		parts = append(parts, "(c.target_type = "+b.arg(t)+" AND "+inner+")")
	}
	if probe {
		return "", nil
	}
	return o.in(b, "c.resource_type", "c.resource_id", "search_reference c", s.codeCondition(b, "c", o.types, defs[0].Code)+" AND "+b.local("c")+" AND ("+strings.Join(parts, " OR ")+")"), nil
}

// hasCondition: _has:Type:ref:rest=value matches resources that a Type points to through its
// reference parameter ref, where that Type matches rest=value.
func (s *Searcher) hasCondition(b *sqlBuilder, o owner, key string, values []string, probe bool) (string, error) {
	parts := strings.SplitN(key, ":", 4)
	if len(parts) != 4 || !IsResourceType(parts[1]) {
		return "", NewOutcome(http.StatusBadRequest, Value, key+": _has is _has:Type:reference:parameter")
	}
	source, ref, rest := parts[1], parts[2], parts[3]
	if d, ok := s.params.Lookup(source, ref); !ok || d.Type != searchparam.Reference {
		return "", NewOutcome(http.StatusBadRequest, NotSupported, fmt.Sprintf("%s: %s is not a reference parameter of %s", key, ref, source))
	}
	// Each level of nesting gets its own alias, so an inner _has can see the outer one.
	alias := b.alias("h")
	inner, err := s.condition(b, owner{typeExpr: alias + ".resource_type", idExpr: alias + ".resource_id", types: []string{source}}, rest, values, probe)
	if err != nil || probe {
		return "", err
	}
	return "EXISTS (SELECT 1 FROM search_reference " + alias + " WHERE " + alias + ".resource_type = " + b.arg(source) +
		" AND " + s.codeCondition(b, alias, []string{source}, ref) + " AND " + alias + ".target_type = " + o.typeExpr +
		" AND " + alias + ".target_id = " + o.idExpr + " AND " + b.local(alias) + " AND " + inner + ")", nil
}

// parseDateRange reads a date or dateTime a client wrote in a query, as the range it covers.
func parseDateRange(s string) (low, high time.Time, err error) {
	low, high, ok := searchparam.DateRange(s)
	if !ok {
		return low, high, NewOutcome(http.StatusBadRequest, Value, fmt.Sprintf("%q is not a FHIR date or dateTime", s))
	}
	return low, high, nil
}

// splitPrefix separates a comparison prefix (eq, ne, gt, lt, ge, le, sa, eb, ap) from a value.
func splitPrefix(v string) (string, string) {
	if len(v) > 2 {
		switch p := v[:2]; p {
		case "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap":
			return p, v[2:]
		}
	}
	return "eq", v
}

// dateCondition compares index ranges [low, high) with the range the search value covers,
// as the specification defines each prefix.
func dateCondition(b *sqlBuilder, low, high, raw string, now time.Time) (string, error) {
	prefix, value := splitPrefix(raw)
	qlo, qhi, err := parseDateRange(value)
	if err != nil {
		return "", err
	}
	// Arguments are added only when used: PostgreSQL cannot type a parameter it never sees.
	lo := func() string { return b.arg(qlo) + "::timestamptz" }
	hi := func() string { return b.arg(qhi) + "::timestamptz" }
	// "low <= hi" follows from the other two (a range's low is never above its high), but it
	// is what bounds an index scan on (…, low, high): without it birthdate=1960-05-05 read
	// every birth date from that day on.
	contained := func() string {
		h := hi()
		return low + " >= " + lo() + " AND " + low + " <= " + h + " AND " + high + " <= " + h
	}
	switch prefix {
	case "eq":
		return contained(), nil
	case "ne":
		return "NOT (" + contained() + ")", nil
	case "gt":
		return high + " > " + hi(), nil
	case "lt":
		return low + " < " + lo(), nil
	case "ge":
		return high + " > " + hi() + " OR (" + contained() + ")", nil
	case "le":
		return low + " < " + lo() + " OR (" + contained() + ")", nil
	case "sa":
		return low + " >= " + hi(), nil
	case "eb":
		return high + " <= " + lo(), nil
	}
	// ap: overlapping the value widened by a tenth of its distance from now (at least a day).
	gap := now.Sub(qlo)
	if gap < 0 {
		gap = -gap
	}
	widen := max(gap/10, 24*time.Hour)
	return low + " < " + b.arg(qhi.Add(widen)) + "::timestamptz AND " + high + " > " + b.arg(qlo.Add(-widen)) + "::timestamptz", nil
}

func numberCondition(b *sqlBuilder, prefix string, value, low, high float64) (string, error) {
	v := func() string { return b.arg(value) + "::float8" }
	switch prefix {
	case "eq":
		return "s.value >= " + b.arg(low) + "::float8 AND s.value < " + b.arg(high) + "::float8", nil
	case "ne":
		return "NOT (s.value >= " + b.arg(low) + "::float8 AND s.value < " + b.arg(high) + "::float8)", nil
	case "gt", "sa":
		return "s.value > " + v(), nil
	case "lt", "eb":
		return "s.value < " + v(), nil
	case "ge":
		return "s.value >= " + v(), nil
	case "le":
		return "s.value <= " + v(), nil
	case "ap":
		d := math.Abs(value) * 0.1
		return "s.value BETWEEN " + b.arg(value-d) + "::float8 AND " + b.arg(value+d) + "::float8", nil
	}
	return "", NewOutcome(http.StatusBadRequest, Value, "unknown prefix "+prefix)
}

// quantityCondition is numberCondition for single quantities, and a range test for Ranges
// (rows whose value is NULL): eq means the range contains the value.
func quantityCondition(b *sqlBuilder, prefix string, value, low, high float64) (string, error) {
	single, err := numberCondition(b, prefix, value, low, high)
	if err != nil {
		return "", err
	}
	v := b.arg(value) + "::float8"
	var ranged string
	switch prefix {
	case "eq", "ap":
		ranged = "s.low <= " + v + " AND s.high >= " + v
	case "ne":
		ranged = "NOT (s.low <= " + v + " AND s.high >= " + v + ")"
	case "gt", "sa":
		ranged = "s.high > " + v
	case "lt", "eb":
		ranged = "s.low < " + v
	case "ge":
		ranged = "s.high >= " + v
	case "le":
		ranged = "s.low <= " + v
	}
	return "(s.value IS NOT NULL AND (" + single + ")) OR (s.value IS NULL AND (" + ranged + "))", nil
}

func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
